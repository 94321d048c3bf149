//! Where a test server keeps its state: SQLite and a local folder by
//! default, or the PostgreSQL and S3 servers that `scripts/test-services.sh`
//! starts on loopback.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use sqlx::Connection;

/// The PostgreSQL and S3 servers for distributed-mode tests.
#[derive(Debug, Clone)]
pub struct Services {
    /// A PostgreSQL URL whose user may create databases.
    pub postgres: String,
    /// `s3://bucket`.
    pub s3: String,
    /// The `AWS_*` variables that reach the S3 server, for child processes.
    pub aws_env: Vec<(String, String)>,
}

impl Services {
    /// The servers named by `ENVSTORE_TEST_DATABASE` and `ENVSTORE_TEST_STORE`,
    /// or the ones `scripts/test-services.sh start` starts (once per process).
    pub fn get() -> &'static Services {
        static SERVICES: OnceLock<Services> = OnceLock::new();
        SERVICES.get_or_init(|| {
            if let (Ok(postgres), Ok(s3)) = (
                std::env::var("ENVSTORE_TEST_DATABASE"),
                std::env::var("ENVSTORE_TEST_STORE"),
            ) && postgres.starts_with("postgres")
            {
                let aws_env = std::env::vars()
                    .filter(|(key, _)| key.starts_with("AWS_"))
                    .collect();
                return Services {
                    postgres,
                    s3,
                    aws_env,
                };
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-services.sh");
            let output = Command::new("bash")
                .arg(&script)
                .arg("start")
                .output()
                .expect("scripts/test-services.sh runs");
            assert!(
                output.status.success(),
                "scripts/test-services.sh start failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let mut postgres = String::new();
            let mut s3 = String::new();
            let mut aws_env = Vec::new();
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let Some((key, value)) = line.trim_start_matches("export ").split_once('=') else {
                    continue;
                };
                match key {
                    "ENVSTORE_TEST_DATABASE" => postgres = value.to_owned(),
                    "ENVSTORE_TEST_STORE" => s3 = value.to_owned(),
                    aws if aws.starts_with("AWS_") => {
                        aws_env.push((aws.to_owned(), value.to_owned()))
                    }
                    _ => {}
                }
            }
            Services {
                postgres,
                s3,
                aws_env,
            }
        })
    }

    /// A fresh database and store prefix, so tests never see each other.
    pub async fn fresh_backend(&self) -> Backend {
        let name = format!("envstore_{}", uuid_like());
        let mut admin = sqlx::PgConnection::connect(&self.postgres)
            .await
            .expect("PostgreSQL answers");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("a test database is created");
        let mut database = url::Url::parse(&self.postgres).expect("a PostgreSQL URL");
        database.set_path(&format!("/{name}"));
        let store = url::Url::parse(&format!(
            "{}/{}",
            self.s3.trim_end_matches('/'),
            uuid_like()
        ))
        .expect("an S3 URL");
        Backend {
            database: database.to_string(),
            store,
        }
    }
}

/// A database URL and a store URL for one test server.
#[derive(Debug, Clone)]
pub struct Backend {
    pub database: String,
    pub store: url::Url,
}

impl Backend {
    /// PostgreSQL and S3 when `ENVSTORE_TEST_DATABASE` names PostgreSQL (the
    /// `AWS_*` variables must then be set, as `.ci/run` does); otherwise
    /// SQLite and a folder under `data_dir`.
    pub async fn from_env(data_dir: &Path) -> Self {
        match std::env::var("ENVSTORE_TEST_DATABASE") {
            Ok(url) if url.starts_with("postgres") => Services::get().fresh_backend().await,
            _ => Self::embedded(data_dir),
        }
    }

    pub fn embedded(data_dir: &Path) -> Self {
        let data_dir = fs_err::canonicalize(data_dir).expect("an absolute data folder");
        Self {
            database: format!("sqlite://{}", data_dir.join("envstore.db").display()),
            store: url::Url::from_directory_path(data_dir.join("artifacts")).expect("a store URL"),
        }
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}_{nanos:x}_{count}", std::process::id())
}

//! Fresh databases for the unit tests: SQLite always, and PostgreSQL as
//! well when `ENVSTORE_TEST_DATABASE` names a server (what
//! `eval "$(scripts/test-services.sh start)"` exports). Each test gets its
//! own database, so tests running at once never see each other's rows.
//! Used by this crate's unit tests and by integration tests here and above
//! (hidden from the docs: not for the service itself).
#![allow(clippy::unwrap_used)] // test support: a failure to set up is the test's failure

use std::ops::Deref;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::{Database, Dialect};

/// The variable naming the PostgreSQL server the tests may use.
pub const POSTGRES_VARIABLE: &str = "ENVSTORE_TEST_DATABASE";

/// An empty database of one dialect, not yet opened by [`Database`].
pub struct TestDatabase {
    pub dialect: Dialect,
    /// What [`Database::connect`] takes.
    pub url: String,
    /// SQLite: the folder of the file, removed on drop.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the server's URL and the database's name, dropped when
    /// the test ends.
    server: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn sqlite() -> Self {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("envstore.db").display());
        Self {
            dialect: Dialect::Sqlite,
            url,
            _dir: Some(dir),
            server: None,
        }
    }

    /// A new database on the test server; None (and a note saying the
    /// PostgreSQL half skipped) when no server is named.
    pub async fn postgres() -> Option<Self> {
        let server = match std::env::var(POSTGRES_VARIABLE) {
            Ok(server) if server.starts_with("postgres") => server,
            _ => {
                eprintln!(
                    "skipped on PostgreSQL: {POSTGRES_VARIABLE} names no server \
                     (eval \"$(scripts/test-services.sh start)\")"
                );
                return None;
            }
        };
        sqlx::any::install_default_drivers();
        let name = format!("envstore_test_{}", uuid::Uuid::new_v4().simple());
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&server)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (base, _) = server.rsplit_once('/').unwrap();
        Some(Self {
            dialect: Dialect::Postgres,
            url: format!("{base}/{name}"),
            _dir: None,
            server: Some((server, name)),
        })
    }

    /// SQLite, then PostgreSQL when a server is named.
    pub async fn each_dialect() -> Vec<Self> {
        let mut databases = vec![Self::sqlite().await];
        databases.extend(Self::postgres().await);
        databases
    }

    /// A plain pool on the empty database, without migrations.
    pub async fn blank_pool(&self) -> AnyPool {
        let url = match self.dialect {
            Dialect::Sqlite => format!("{}?mode=rwc", self.url),
            Dialect::Postgres => self.url.clone(),
        };
        AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap()
    }

    /// The database opened (and migrated) by [`Database::connect`].
    pub async fn open(self) -> TestDb {
        let db = Database::connect(&self.url).await.unwrap();
        TestDb { db, test: self }
    }

    /// Drops a PostgreSQL database; a SQLite folder goes with `self`.
    pub async fn finish(self) {
        let Some((server, name)) = &self.server else {
            return;
        };
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(server)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
    }
}

/// An opened test database; derefs to the [`Database`].
pub struct TestDb {
    pub db: Database,
    pub test: TestDatabase,
}

impl TestDb {
    pub fn dialect(&self) -> Dialect {
        self.test.dialect
    }

    /// Closes the pool and drops the database (PostgreSQL).
    pub async fn finish(self) {
        self.db.close().await;
        self.test.finish().await;
    }
}

impl Deref for TestDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

/// A migrated database of each dialect (PostgreSQL when a server is named).
pub async fn databases() -> Vec<TestDb> {
    let mut opened = Vec::new();
    for test in TestDatabase::each_dialect().await {
        opened.push(test.open().await);
    }
    opened
}

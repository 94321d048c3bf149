//! The database: one code path over SQLite (the embedded default) and
//! PostgreSQL, chosen by the URL. Queries use `$N` placeholders, which both
//! dialects accept; the few statements that differ are chosen per dialect.

mod access;
mod audit;
mod browse;
mod builds;
mod cache;
mod jobs;
mod leases;
mod lifecycle;
mod migrate;
mod namespaces;
mod usage;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use audit::AuditEntry;
pub use browse::{BuildEntry, EnvironmentEntry, NamespaceEntry};
pub use access::{NewToken, TokenRecord, token_digest};
pub use builds::{
    BuildOutcome, BuildRecord, CurrentLock, EnvironmentRecord, LockRecord, SubmittedBuild, SucceededEnvironment,
};
pub use cache::ACCESS_CACHE_TTL;
pub use jobs::{ClaimedJob, JobListener};
pub use lifecycle::{CollectableBuild, Deleted, DeletedEnvironment};
pub use usage::{BuildCounts, NamespaceUsage, Quota, SharedPrefix, UsageFigures, UsageReport};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL '{0}' (expected sqlite://path or postgres://…)")]
    UnsupportedUrl(String),
    #[error("failed to connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("failed to make the database file '{}' private to the service user", .0.display())]
    Private(std::path::PathBuf, #[source] std::io::Error),
    #[error("failed to apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} was not found")]
    NotFound(String),
    #[error("the database holds an invalid value in {column}: {reason}")]
    Corrupt { column: &'static str, reason: String },
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    /// Shared by every clone, so a write through any of them invalidates it.
    access: Arc<cache::AccessCache>,
    locks: Arc<cache::LockCache>,
    /// Downloads counted in memory until the next flush.
    downloads: Arc<usage::DownloadCounts>,
}

impl Database {
    /// Connects to `sqlite://path` (the file is created) or `postgres://…`
    /// and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            if let Some(path) = sqlite_file(rest) {
                make_private(&path)?;
            }
            let separator = if rest.contains('?') { '&' } else { '?' };
            (Dialect::Sqlite, format!("{url}{separator}mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_owned())
        } else {
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        };
        let max_connections = match dialect {
            // One writer at a time is what SQLite allows; more connections only
            // queue on its lock.
            Dialect::Sqlite => 4,
            Dialect::Postgres => 16,
        };
        let connect_url = url.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            // Checking a connection before each use costs a round trip to its
            // worker thread per query; a SQLite file cannot drop a connection
            // the way a PostgreSQL server can, so only PostgreSQL pays it.
            .test_before_acquire(dialect == Dialect::Postgres)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *connection).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *connection).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *connection).await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(DbError::Connect)?;
        let database = Self {
            pool,
            dialect,
            url,
            access: Arc::new(cache::AccessCache::new(ACCESS_CACHE_TTL)),
            locks: Arc::new(cache::LockCache::default()),
            downloads: Arc::new(usage::DownloadCounts::default()),
        };
        database.migrate().await?;
        if let Some(path) = database.url.strip_prefix("sqlite:").and_then(sqlite_file) {
            // The WAL and shared-memory files exist by now; SQLite gives them
            // the database file's mode, but ones left by an older version
            // may be readable by others.
            make_private(&path)?;
        }
        Ok(database)
    }

    /// The same database with access data trusted for `ttl` instead of
    /// [`ACCESS_CACHE_TTL`] (zero: always ask the database). Clones made
    /// before share the old cache.
    pub fn with_access_cache_ttl(mut self, ttl: Duration) -> Self {
        self.access = Arc::new(cache::AccessCache::new(ttl));
        self
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether the database answers; for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// The file a `sqlite:` URL (after the scheme) names, if it names one.
fn sqlite_file(rest: &str) -> Option<std::path::PathBuf> {
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// Creates the database file readable and writable by the service user
/// only, before SQLite opens it, and takes every other permission away from
/// it and from its `-wal` and `-shm` files: they hold token digests, specs
/// and the audit log.
fn make_private(database: &std::path::Path) -> Result<(), DbError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let failed = |path: &std::path::Path| {
        let path = path.to_owned();
        move |error| DbError::Private(path, error)
    };
    if !database.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(database)
            .map_err(failed(database))?;
    }
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = database.as_os_str().to_owned();
    shm.push("-shm");
    for path in [database.to_path_buf(), wal.into(), shm.into()] {
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            result => result.map_err(failed(&path))?,
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch: the unit of every time column.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

fn get<T>(row: &AnyRow, column: &'static str) -> Result<T, DbError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    Ok(row.try_get(column)?)
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &'static str, text: &str) -> Result<T, DbError> {
    serde_json::from_str(text).map_err(|error| DbError::Corrupt {
        column,
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_database_and_its_wal_are_readable_by_the_service_user_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envstore.db");
        let db = Database::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        db.create_namespace(&"team".parse().unwrap()).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("envstore.db{suffix}"));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }

        // A database an older version left readable is made private on open.
        drop(db);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _db = Database::connect(&format!("sqlite:{}?mode=rwc", path.display())).await.unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(sqlite_file(":memory:"), None);
    }
}

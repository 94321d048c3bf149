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
mod packages;
mod progress;
pub mod schema;
// Always built, not behind a feature: a `testing` feature turned on by
// tests would change this crate for every crate above it in a test build,
// and CI would compile them all twice.
#[doc(hidden)]
pub mod testing;
mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use access::{NewToken, TokenRecord, token_digest};
pub use audit::AuditEntry;
pub use browse::{BuildEntry, EnvironmentEntry, NamespaceEntry};
pub use builds::{
    BuildOutcome, BuildRecord, CurrentLock, EnvironmentRecord, IDEMPOTENCY_TTL, IdempotencyKey,
    LockRecord, StoredAnswer, Submission, SubmittedBuild, SubmittedSpec, SucceededEnvironment,
};
pub use cache::ACCESS_CACHE_TTL;
pub use jobs::{AttemptLog, ClaimedJob, JobListener};
pub use lifecycle::{CollectableBuild, Deleted, DeletedEnvironment};
pub use packages::{NameMatch, PackageKey, PackageMatch};
pub use progress::{AttemptLogSince, BuildChangeListener};
pub use usage::{
    BuildCounts, BuildGroup, HeldLock, NamespaceUsage, Quota, SharedPrefix, UsageFacts,
    UsageFigures, UsageNamespace, UsageReport,
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL '{0}' (expected sqlite://path or postgres://…)")]
    UnsupportedUrl(String),
    #[error("failed to connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("failed to make the database file '{}' private to the service user", .0.display())]
    Private(std::path::PathBuf, #[source] std::io::Error),
    #[error("failed to lock '{}' to apply database migrations", .0.display())]
    MigrationLock(std::path::PathBuf, #[source] std::io::Error),
    #[error("failed to apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} was not found")]
    NotFound(String),
    #[error("the database holds an invalid value in {column}: {reason}")]
    Corrupt {
        column: &'static str,
        reason: String,
    },
    /// The database cannot be reached or cannot write just now (server
    /// down or restarting, connections refused or reset, pool exhausted for
    /// the whole timeout, a full, read-only or locked database file): worth
    /// retrying in a few seconds, never a bug of the request.
    #[error("the database does not answer: {reason}")]
    Unavailable {
        reason: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        match unavailable_reason(&error) {
            Some(reason) => Self::Unavailable {
                reason,
                source: error,
            },
            None => Self::Query(error),
        }
    }
}

impl DbError {
    /// Whether retrying later may succeed: the database did not answer.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Why `error` means the database cannot be reached or written just now,
/// or None when it is about the query itself.
fn unavailable_reason(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::PoolTimedOut => {
            Some("no database connection could be had within the timeout".to_owned())
        }
        sqlx::Error::PoolClosed => Some("the connection pool is closed".to_owned()),
        sqlx::Error::Io(io) => Some(format!("the connection failed: {io}")),
        sqlx::Error::Tls(tls) => Some(format!("the TLS connection failed: {tls}")),
        sqlx::Error::WorkerCrashed => Some("the database connection's worker stopped".to_owned()),
        sqlx::Error::Database(database) => {
            let code = database.code()?;
            if database
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                let reason = sqlite_unavailable(code.parse().ok()?)?;
                suspect_sqlite_connections();
                Some(format!("{reason} ({})", database.message()))
            } else {
                let reason = postgres_unavailable(&code)?;
                Some(format!(
                    "{reason} (SQLSTATE {code}: {})",
                    database.message()
                ))
            }
        }
        _ => None,
    }
}

/// Connections to check before their next use, after SQLite said it could
/// not write: a connection whose write failed on a full disk can be left
/// inside its transaction, holding the file's write lock, so every other
/// writer gets "database is locked" until the process restarts. Checking
/// costs a `BEGIN`/`ROLLBACK` per acquire, so it is done only for a while
/// after such an error (the pool hands idle connections out in turn, so a
/// few rounds reach each of them).
static SQLITE_CHECKS_DUE: AtomicU32 = AtomicU32::new(0);

/// Rounds of checks over the pool's connections after an error.
const SQLITE_CHECK_ROUNDS: u32 = 4;

fn suspect_sqlite_connections() {
    SQLITE_CHECKS_DUE.store(
        SQLITE_CHECK_ROUNDS * SQLITE_MAX_CONNECTIONS,
        Ordering::Relaxed,
    );
}

/// Whether a SQLite connection is fit to hand out: not left inside a
/// transaction (then `BEGIN` fails). Only checked while checks are due.
async fn sqlite_connection_is_clean(
    connection: &mut sqlx::AnyConnection,
) -> Result<bool, sqlx::Error> {
    let due = SQLITE_CHECKS_DUE
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |due| {
            due.checked_sub(1)
        })
        .is_ok();
    if !due {
        return Ok(true);
    }
    if sqlx::query("BEGIN")
        .execute(&mut *connection)
        .await
        .is_err()
    {
        tracing::warn!("closing a database connection left inside a failed transaction");
        return Ok(false);
    }
    sqlx::query("ROLLBACK").execute(&mut *connection).await?;
    Ok(true)
}

/// SQLite allows one writer at a time; more connections only queue on its
/// lock.
const SQLITE_MAX_CONNECTIONS: u32 = 4;

/// SQLite result codes (primary code in the low byte of the extended one)
/// that say the file cannot be written now, not that the query is wrong.
fn sqlite_unavailable(code: i32) -> Option<&'static str> {
    match code & 0xff {
        5 => Some("the database file is busy: another writer holds it"),
        6 => Some("a table of the database file is locked"),
        8 => Some("the database file is read-only"),
        10 => Some("the disk under the database file reported an I/O error"),
        13 => Some("the disk holding the database file is full"),
        14 => Some("the database file cannot be opened"),
        _ => None,
    }
}

/// PostgreSQL SQLSTATEs that say the server is going away, starting, out
/// of room or connections, or only reads (a standby after a failover).
fn postgres_unavailable(code: &str) -> Option<&'static str> {
    match code {
        "57P01" => Some("the database server is shutting down"),
        "57P02" => Some("the database server crashed"),
        "57P03" => Some("the database server is starting or cannot take connections now"),
        "53100" => Some("the database server's disk is full"),
        "53200" => Some("the database server is out of memory"),
        "53300" => Some("the database server has no free connection slots"),
        "25006" => Some("the database server only accepts reads (a standby?)"),
        code if code.starts_with("08") => Some("the connection to the database server failed"),
        _ => None,
    }
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
    /// and applies pending migrations, with [`DEFAULT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        Self::connect_with_timeout(url, DEFAULT_TIMEOUT).await
    }

    /// [`Self::connect`], where a query waits at most `timeout` for a
    /// connection (PostgreSQL: connecting included) before it fails as
    /// [`DbError::Unavailable`]. Starting waits up to [`STARTUP_WAIT`] for a
    /// database that is still coming up.
    pub async fn connect_with_timeout(url: &str, timeout: Duration) -> Result<Self, DbError> {
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
            Dialect::Sqlite => SQLITE_MAX_CONNECTIONS,
            Dialect::Postgres => 16,
        };
        let connect_url = url.clone();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            // Checking a connection before each use costs a round trip to its
            // worker thread per query; a SQLite file cannot drop a connection
            // the way a PostgreSQL server can, so only PostgreSQL pays it.
            .test_before_acquire(dialect == Dialect::Postgres)
            .before_acquire(move |connection, _| {
                Box::pin(async move {
                    match dialect {
                        Dialect::Sqlite => sqlite_connection_is_clean(connection).await,
                        Dialect::Postgres => Ok(true),
                    }
                })
            })
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *connection)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *connection)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *connection)
                            .await?;
                    }
                    Ok(())
                })
            })
            .acquire_timeout(timeout)
            .connect_lazy(&connect_url)
            .map_err(DbError::Connect)?;
        wait_for_first_connection(&pool).await?;
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

    /// Closes every connection; later queries fail as
    /// [`DbError::Unavailable`]. For shutdown (and tests of an outage).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database takes a write, committed: a database that
    /// answers reads but cannot write (a full disk, a read-only standby or
    /// file, a lock held too long) is not ready. One row, rewritten.
    pub async fn check_writable(&self) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO readiness_probe (id, checked_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the database answers; for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// How long a query waits for a database connection unless configured
/// otherwise: long enough for a busy pool, short enough that a request
/// fails fast (503) when the database is down instead of hanging.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long starting waits for the database to accept a first connection:
/// services started together may find it still starting.
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// Tries the first connection until it works or [`STARTUP_WAIT`] passed;
/// errors other than "does not answer" (a wrong password, say) end at once.
async fn wait_for_first_connection(pool: &AnyPool) -> Result<(), DbError> {
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    loop {
        match pool.acquire().await {
            Ok(_) => return Ok(()),
            Err(error)
                if unavailable_reason(&error).is_some()
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(error = %error, "the database does not answer yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(DbError::Connect(error)),
        }
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
    use fs_err::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;

    let failed = |path: &std::path::Path| {
        let path = path.to_owned();
        move |error| DbError::Private(path, error)
    };
    if !database.exists() {
        fs_err::OpenOptions::new()
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
        match fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
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

fn parse_json<T: serde::de::DeserializeOwned>(
    column: &'static str,
    text: &str,
) -> Result<T, DbError> {
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
        fs_err::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Two processes started together on a new file (`serve` and `worker`
    /// from one compose file): each connection applies the migrations, and
    /// without a turn each the second failed on a table the first made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn services_started_together_on_a_new_file_take_turns_migrating() {
        for round in 0..4 {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("envstore.db").display());
            let (first, second) = tokio::join!(
                tokio::spawn({
                    let url = url.clone();
                    async move { Database::connect(&url).await }
                }),
                tokio::spawn({
                    let url = url.clone();
                    async move { Database::connect(&url).await }
                })
            );
            for started in [first.unwrap(), second.unwrap()] {
                let db = started.unwrap_or_else(|error| {
                    panic!("round {round}: {}", envstore_core::error_chain(&error))
                });
                db.create_namespace(&format!("team-{round}").parse().unwrap())
                    .await
                    .ok();
            }
        }
    }

    /// SQLite only: about the database file itself.
    #[tokio::test]
    async fn the_database_and_its_wal_are_readable_by_the_service_user_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envstore.db");
        let db = Database::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        db.create_namespace(&"team".parse().unwrap()).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("envstore.db{suffix}"));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }

        // A database an older version left readable is made private on open.
        drop(db);
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _db = Database::connect(&format!("sqlite:{}?mode=rwc", path.display()))
            .await
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(sqlite_file(":memory:"), None);
    }

    #[test]
    fn postgres_states_of_a_server_going_away_or_full_are_unavailable() {
        for code in [
            "57P01", "57P02", "57P03", "08006", "08001", "08000", "53100", "53300", "25006",
        ] {
            assert!(postgres_unavailable(code).is_some(), "{code}");
        }
        // Mistakes of the query itself stay query errors.
        for code in ["23505", "42P01", "22P02", "40001", "42601"] {
            assert_eq!(postgres_unavailable(code), None, "{code}");
        }
        // Extended SQLite codes carry the primary code in their low byte.
        assert!(sqlite_unavailable(13).is_some(), "SQLITE_FULL");
        assert!(
            sqlite_unavailable(8 | (1 << 8)).is_some(),
            "SQLITE_READONLY_RECOVERY"
        );
        assert!(
            sqlite_unavailable(10 | (3 << 8)).is_some(),
            "SQLITE_IOERR_WRITE"
        );
        assert!(sqlite_unavailable(5).is_some(), "SQLITE_BUSY");
        assert_eq!(
            sqlite_unavailable(19 | (8 << 8)),
            None,
            "SQLITE_CONSTRAINT_UNIQUE"
        );
        assert_eq!(sqlite_unavailable(1), None, "SQLITE_ERROR");
    }

    /// SQLite only: a read-only file; a standby's read-only SQLSTATE is
    /// covered by `postgres_states_of_a_server_going_away_or_full_are_unavailable`.
    #[tokio::test]
    async fn a_read_only_sqlite_file_is_unavailable_and_a_bad_query_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envstore.db");
        let db = Database::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let bad = sqlx::query("SELECT no_such_column FROM namespaces")
            .execute(&db.pool)
            .await
            .unwrap_err();
        assert!(matches!(DbError::from(bad), DbError::Query(_)));

        // A second pool on the same file, opened read-only: what a file
        // system remounted read-only gives.
        let read_only = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}?mode=ro", path.display()))
            .await
            .unwrap();
        let error = sqlx::query("INSERT INTO namespaces (name, created_at) VALUES ('team', 0)")
            .execute(&read_only)
            .await
            .unwrap_err();
        let error = DbError::from(error);
        assert!(error.is_unavailable(), "{error:?}");
        assert!(error.to_string().contains("read-only"), "{error}");
    }

    #[tokio::test]
    async fn a_refused_postgres_fails_fast_as_unavailable() {
        sqlx::any::install_default_drivers();
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy(&format!("postgres://envstore@127.0.0.1:{port}/envstore"))
            .unwrap();
        let started = std::time::Instant::now();
        let error = DbError::from(sqlx::query("SELECT 1").execute(&pool).await.unwrap_err());
        assert!(error.is_unavailable(), "{error:?}");
        // Generous: the point is "not sqlx's 30 s default".
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_closed_pool_is_unavailable() {
        for db in testing::databases().await {
            db.ping().await.unwrap();
            db.close().await;
            assert!(
                db.ping().await.unwrap_err().is_unavailable(),
                "{:?}",
                db.dialect()
            );
            db.finish().await;
        }
    }
}

//! Where a database's schema stands against the migrations this binary
//! carries, read without changing anything: what `envstore migrate --status`
//! and `--dry-run` show, and what an upgrade checks before it applies.
//!
//! sqlx keeps one row per applied migration in `_sqlx_migrations` (version,
//! description, when, success, sha384 of the text, nanoseconds taken). Each
//! migration this binary knows is then applied, pending, or applied with
//! another text (a released file was edited); a row this binary does not
//! know was written by a newer envstore. sqlx refuses to migrate, and so to
//! start, in the last two cases; [`SchemaStatus::problems`] says why first.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

use crate::{DEFAULT_TIMEOUT, DbError, Dialect};

/// Where one migration stands in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Applied, with the text this binary carries.
    Applied,
    /// Known to this binary, not applied yet.
    Pending,
    /// Applied with another text than this binary's file of that version:
    /// a released migration was edited.
    Modified,
    /// Applied by a newer envstore: this binary does not know it.
    Unknown,
    /// Started and did not finish (sqlx recorded it as unsuccessful).
    Failed,
}

impl MigrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Pending => "pending",
            Self::Modified => "modified",
            Self::Unknown => "unknown",
            Self::Failed => "failed",
        }
    }
}

/// One migration, known to this binary or recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationEntry {
    pub version: i64,
    /// This binary's description; the database's for an unknown one.
    pub description: String,
    pub state: MigrationState,
    /// When it was applied, as the database's clock wrote it (UTC on
    /// SQLite, the session's time zone on PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// How long applying it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_ms: Option<i64>,
}

/// Every migration this binary knows and every one the database recorded,
/// by version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaStatus {
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// False for a SQLite file that does not exist yet (nothing was read
    /// and nothing was created).
    pub exists: bool,
    pub migrations: Vec<MigrationEntry>,
    /// Versions `envstore migrate` would apply, in order.
    pub pending: Vec<i64>,
    /// Why this binary must not migrate (or serve) this database; empty
    /// when it may.
    pub problems: Vec<String>,
}

impl SchemaStatus {
    /// The migrations in `state`.
    pub fn in_state(&self, state: MigrationState) -> impl Iterator<Item = &MigrationEntry> {
        self.migrations
            .iter()
            .filter(move |migration| migration.state == state)
    }

    /// Nothing pending and nothing wrong.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.problems.is_empty()
    }

    /// The status as a person reads it: one line per migration, then what
    /// it comes to.
    pub fn table(&self) -> String {
        let mut text = String::new();
        let known = self
            .migrations
            .iter()
            .filter(|migration| migration.state != MigrationState::Unknown)
            .count();
        let _ = writeln!(
            text,
            "database: {}{}; this envstore knows {known} migrations",
            self.database,
            if self.exists {
                ""
            } else {
                " (the file does not exist yet)"
            }
        );
        let _ = writeln!(
            text,
            "{:>7}  {:<8}  {:<32}  DESCRIPTION",
            "VERSION", "STATE", "APPLIED AT"
        );
        for migration in &self.migrations {
            let _ = writeln!(
                text,
                "{:>7}  {:<8}  {:<32}  {}",
                migration.version,
                migration.state.as_str(),
                migration.applied_at.as_deref().unwrap_or("-"),
                migration.description
            );
        }
        let _ = writeln!(text, "{}", self.summary());
        text
    }

    /// One line: up to date, or how many are pending and what to run.
    pub fn summary(&self) -> String {
        if !self.problems.is_empty() {
            return format!(
                "this envstore cannot migrate this database ({} problem{}, below)",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" }
            );
        }
        match self.pending.len() {
            0 => "up to date: no migration is pending".to_owned(),
            count => format!(
                "{count} pending ({}): `envstore migrate` applies {}, as does `envstore serve` or `envstore worker` when it starts",
                versions(&self.pending),
                if count == 1 { "it" } else { "them" }
            ),
        }
    }
}

fn versions(versions: &[i64]) -> String {
    versions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `_sqlx_migrations` row, its time as text and its flag as an integer so
/// that both dialects decode the same through `Any`.
#[derive(sqlx::FromRow)]
struct AppliedRow {
    version: i64,
    description: String,
    applied_at: String,
    success: i64,
    checksum: Vec<u8>,
    execution_time: i64,
}

/// Where `url`'s database stands against this binary's migrations. Reads
/// only: a SQLite file is opened read-only, and one that does not exist is
/// reported as such and not created.
pub async fn status(url: &str) -> Result<SchemaStatus, DbError> {
    let dialect = dialect_of(url)?;
    let applied = match open(url, dialect, Access::Read).await? {
        Some(pool) => {
            let rows = applied_rows(&pool, dialect).await;
            pool.close().await;
            Some(rows?)
        }
        None => None,
    };
    Ok(compare(dialect, applied))
}

/// Applies this binary's migrations up to version `last` and no further:
/// the schema an older release left, for tests of upgrades and for staged
/// roll-outs. Creates a SQLite file (private to the service user) when
/// there is none.
pub async fn migrate_to(url: &str, last: i64) -> Result<(), DbError> {
    let dialect = dialect_of(url)?;
    let pool = open(url, dialect, Access::Write)
        .await?
        .ok_or_else(|| DbError::NotFound(format!("the database file of '{url}'")))?;
    let result = Migrator::with_migrations(crate::migrate::migrations(dialect))
        .run_to(last, &pool)
        .await
        .map_err(DbError::Migrate);
    pool.close().await;
    result
}

fn dialect_of(url: &str) -> Result<Dialect, DbError> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Dialect::Postgres)
    } else {
        Err(DbError::UnsupportedUrl(url.to_owned()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// A one-connection pool on the database, without migrating it. None for
/// a SQLite file that does not exist when only reading.
async fn open(url: &str, dialect: Dialect, access: Access) -> Result<Option<AnyPool>, DbError> {
    sqlx::any::install_default_drivers();
    let url = match dialect {
        Dialect::Sqlite => {
            let rest = url.strip_prefix("sqlite:").unwrap_or_default();
            if let Some(path) = crate::sqlite_file(rest) {
                match access {
                    Access::Read if !path.exists() => return Ok(None),
                    Access::Read => {}
                    Access::Write => crate::make_private(&path)?,
                }
            }
            let separator = if rest.contains('?') { '&' } else { '?' };
            let mode = match access {
                Access::Read => "ro",
                Access::Write => "rwc",
            };
            format!("{url}{separator}mode={mode}")
        }
        Dialect::Postgres => url.to_owned(),
    };
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(DEFAULT_TIMEOUT)
        .connect_lazy(&url)
        .map_err(DbError::Connect)?;
    crate::wait_for_first_connection(&pool).await?;
    Ok(Some(pool))
}

/// The rows of `_sqlx_migrations`, or none when the table does not exist
/// (a database no envstore migrated).
async fn applied_rows(pool: &AnyPool, dialect: Dialect) -> Result<Vec<AppliedRow>, DbError> {
    // sqlx names the table unqualified, so PostgreSQL finds it through the
    // search path, as `to_regclass` does.
    let exists = match dialect {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Dialect::Postgres => {
            "SELECT CAST(CASE WHEN to_regclass('_sqlx_migrations') IS NULL THEN 0 ELSE 1 END AS BIGINT)"
        }
    };
    let exists: i64 = sqlx::query_scalar(exists).fetch_one(pool).await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as::<_, AppliedRow>(
        "SELECT version, description, CAST(installed_on AS TEXT) AS applied_at, \
         CAST(CASE WHEN success THEN 1 ELSE 0 END AS BIGINT) AS success, checksum, execution_time \
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await?)
}

/// This binary's migrations for `dialect` set against the applied rows
/// (None: the SQLite file does not exist).
fn compare(dialect: Dialect, applied: Option<Vec<AppliedRow>>) -> SchemaStatus {
    let exists = applied.is_some();
    let mut applied: BTreeMap<i64, AppliedRow> = applied
        .unwrap_or_default()
        .into_iter()
        .map(|row| (row.version, row))
        .collect();
    let mut migrations = Vec::new();
    for known in crate::migrate::migrations(dialect) {
        let entry = match applied.remove(&known.version) {
            None => MigrationEntry {
                version: known.version,
                description: known.description.to_string(),
                state: MigrationState::Pending,
                applied_at: None,
                execution_ms: None,
            },
            Some(row) => MigrationEntry {
                version: known.version,
                description: known.description.to_string(),
                state: if row.success == 0 {
                    MigrationState::Failed
                } else if row.checksum != *known.checksum {
                    MigrationState::Modified
                } else {
                    MigrationState::Applied
                },
                applied_at: Some(row.applied_at),
                execution_ms: Some(row.execution_time / 1_000_000),
            },
        };
        migrations.push(entry);
    }
    for row in applied.into_values() {
        migrations.push(MigrationEntry {
            version: row.version,
            description: row.description,
            state: MigrationState::Unknown,
            applied_at: Some(row.applied_at),
            execution_ms: Some(row.execution_time / 1_000_000),
        });
    }
    migrations.sort_by_key(|migration| migration.version);
    let pending = migrations
        .iter()
        .filter(|migration| migration.state == MigrationState::Pending)
        .map(|migration| migration.version)
        .collect();
    let problems = problems(&migrations);
    SchemaStatus {
        database: match dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        },
        exists,
        migrations,
        pending,
        problems,
    }
}

/// What stops this binary from migrating: each sentence says what happened
/// and what to do.
fn problems(migrations: &[MigrationEntry]) -> Vec<String> {
    let newest_known = migrations
        .iter()
        .filter(|migration| migration.state != MigrationState::Unknown)
        .map(|migration| migration.version)
        .max()
        .unwrap_or_default();
    let mut problems = Vec::new();
    for migration in migrations {
        let named = format!(
            "migration {} ({})",
            migration.version, migration.description
        );
        match migration.state {
            MigrationState::Applied | MigrationState::Pending => {}
            MigrationState::Unknown => problems.push(format!(
                "{named} was applied by a newer envstore: this one knows migrations up to {newest_known} only. \
                 Run the newer envstore against this database (or restore the backup taken before the upgrade); \
                 an older one must not serve it"
            )),
            MigrationState::Modified => problems.push(format!(
                "{named} was applied with another text than this envstore's: a released migration was edited. \
                 Restore the released file of that version; never edit one, add a new migration instead"
            )),
            MigrationState::Failed => problems.push(format!(
                "{named} started and did not finish: check the schema by hand, then remove its row from \
                 `_sqlx_migrations` and run `envstore migrate` again"
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;

    fn row(version: i64, checksum: Vec<u8>, success: i64) -> AppliedRow {
        AppliedRow {
            version,
            description: format!("from elsewhere {version}"),
            applied_at: "2026-01-01 00:00:00".to_owned(),
            success,
            checksum,
            execution_time: 2_500_000,
        }
    }

    fn checksum(dialect: Dialect, version: i64) -> Vec<u8> {
        crate::migrate::migrations(dialect)
            .into_iter()
            .find(|migration| migration.version == version)
            .unwrap()
            .checksum
            .into_owned()
    }

    #[test]
    fn each_migration_is_applied_pending_modified_failed_or_unknown() {
        let dialect = Dialect::Sqlite;
        let known = crate::migrate::migrations(dialect).len() as i64;
        let future = known + 1;
        let status = compare(
            dialect,
            Some(vec![
                row(1, checksum(dialect, 1), 1),
                row(2, vec![0; 48], 1),
                row(3, checksum(dialect, 3), 0),
                row(future, vec![1; 48], 1),
            ]),
        );
        let state = |version: i64| {
            status
                .migrations
                .iter()
                .find(|migration| migration.version == version)
                .unwrap()
                .state
        };
        assert_eq!(state(1), MigrationState::Applied);
        assert_eq!(state(2), MigrationState::Modified);
        assert_eq!(state(3), MigrationState::Failed);
        assert_eq!(state(4), MigrationState::Pending);
        assert_eq!(state(future), MigrationState::Unknown);
        assert_eq!(status.pending, (4..=known).collect::<Vec<_>>());
        assert_eq!(status.problems.len(), 3, "{:#?}", status.problems);
        assert!(status.problems[2].contains(&format!(
            "migration {future} (from elsewhere {future}) was applied by a newer envstore"
        )));
        assert!(!status.is_current());
        assert_eq!(status.migrations[0].execution_ms, Some(2));
        let table = status.table();
        assert!(table.contains("cannot migrate"), "{table}");

        let fresh = compare(dialect, None);
        assert!(!fresh.exists);
        assert_eq!(fresh.pending.len() as i64, known);
        assert!(fresh.problems.is_empty());
    }

    #[tokio::test]
    async fn status_reads_without_writing_and_migrate_to_stops_at_its_version() {
        for test in TestDatabase::each_dialect().await {
            let known = crate::migrate::migrations(test.dialect).len();
            let before = status(&test.url).await.unwrap();
            assert_eq!(before.pending.len(), known, "{:?}", test.dialect);
            if test.dialect == Dialect::Sqlite {
                assert!(!before.exists);
                let file = test.url.strip_prefix("sqlite://").unwrap();
                assert!(
                    !std::path::Path::new(file).exists(),
                    "reading the status created the file"
                );
            }

            migrate_to(&test.url, 3).await.unwrap();
            let old = status(&test.url).await.unwrap();
            assert!(old.exists);
            assert_eq!(
                old.in_state(MigrationState::Applied)
                    .map(|migration| migration.version)
                    .collect::<Vec<_>>(),
                [1, 2, 3]
            );
            assert_eq!(old.pending.len(), known - 3);
            assert!(old.problems.is_empty());
            assert!(old.migrations[0].applied_at.is_some());
            assert_eq!(
                status(&test.url).await.unwrap(),
                old,
                "{:?}: reading changes nothing",
                test.dialect
            );

            let db = crate::Database::connect(&test.url).await.unwrap();
            db.close().await;
            let now = status(&test.url).await.unwrap();
            assert!(now.is_current(), "{:#?}", now);
            assert!(now.table().contains("up to date"));
            test.finish().await;
        }
    }
}

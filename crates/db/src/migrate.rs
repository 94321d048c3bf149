use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::{Database, DbError, Dialect};

/// Migrations are compiled into the binary, so a deployed `envstore` needs no
/// files beside it. The two folders are kept in step: same versions, same
/// meaning, each in its own dialect.
const SQLITE: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../../migrations/sqlite/0001_initial.sql")),
    (2, "prefix leases", include_str!("../../../migrations/sqlite/0002_prefix_leases.sql")),
    (3, "access", include_str!("../../../migrations/sqlite/0003_access.sql")),
    (4, "audit", include_str!("../../../migrations/sqlite/0004_audit.sql")),
    (5, "policy", include_str!("../../../migrations/sqlite/0005_policy.sql")),
    (6, "cancel", include_str!("../../../migrations/sqlite/0006_cancel.sql")),
    (7, "lifecycle", include_str!("../../../migrations/sqlite/0007_lifecycle.sql")),
    (8, "usage", include_str!("../../../migrations/sqlite/0008_usage.sql")),
    (9, "build status index", include_str!("../../../migrations/sqlite/0009_build_status_index.sql")),
    (10, "build submitter", include_str!("../../../migrations/sqlite/0010_build_submitter.sql")),
    (11, "token parents", include_str!("../../../migrations/sqlite/0011_token_parents.sql")),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../../migrations/postgres/0001_initial.sql")),
    (2, "prefix leases", include_str!("../../../migrations/postgres/0002_prefix_leases.sql")),
    (3, "access", include_str!("../../../migrations/postgres/0003_access.sql")),
    (4, "audit", include_str!("../../../migrations/postgres/0004_audit.sql")),
    (5, "policy", include_str!("../../../migrations/postgres/0005_policy.sql")),
    (6, "cancel", include_str!("../../../migrations/postgres/0006_cancel.sql")),
    (7, "lifecycle", include_str!("../../../migrations/postgres/0007_lifecycle.sql")),
    (8, "usage", include_str!("../../../migrations/postgres/0008_usage.sql")),
    (9, "build status index", include_str!("../../../migrations/postgres/0009_build_status_index.sql")),
    (10, "build submitter", include_str!("../../../migrations/postgres/0010_build_submitter.sql")),
    (11, "token parents", include_str!("../../../migrations/postgres/0011_token_parents.sql")),
];

impl Database {
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrations = match self.dialect {
            Dialect::Sqlite => SQLITE,
            Dialect::Postgres => POSTGRES,
        };
        let migrator = Migrator::with_migrations(
            migrations
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        SqlStr::from_static(sql),
                        false,
                    )
                })
                .collect(),
        );
        migrator.run(&self.pool).await.map_err(DbError::Migrate)
    }
}

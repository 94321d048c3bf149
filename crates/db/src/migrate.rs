use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::{Database, DbError, Dialect};

/// Migrations are compiled into the binary, so a deployed `envstore` needs no
/// files beside it. The two folders are kept in step: same versions, same
/// meaning, each in its own dialect.
const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "prefix leases",
        include_str!("../../../migrations/sqlite/0002_prefix_leases.sql"),
    ),
    (
        3,
        "access",
        include_str!("../../../migrations/sqlite/0003_access.sql"),
    ),
    (
        4,
        "audit",
        include_str!("../../../migrations/sqlite/0004_audit.sql"),
    ),
    (
        5,
        "policy",
        include_str!("../../../migrations/sqlite/0005_policy.sql"),
    ),
    (
        6,
        "cancel",
        include_str!("../../../migrations/sqlite/0006_cancel.sql"),
    ),
    (
        7,
        "lifecycle",
        include_str!("../../../migrations/sqlite/0007_lifecycle.sql"),
    ),
    (
        8,
        "usage",
        include_str!("../../../migrations/sqlite/0008_usage.sql"),
    ),
    (
        9,
        "build status index",
        include_str!("../../../migrations/sqlite/0009_build_status_index.sql"),
    ),
    (
        10,
        "build submitter",
        include_str!("../../../migrations/sqlite/0010_build_submitter.sql"),
    ),
    (
        11,
        "token parents",
        include_str!("../../../migrations/sqlite/0011_token_parents.sql"),
    ),
    (
        12,
        "build seq",
        include_str!("../../../migrations/sqlite/0012_build_seq.sql"),
    ),
    (
        13,
        "idempotency and readiness",
        include_str!("../../../migrations/sqlite/0013_idempotency_and_readiness.sql"),
    ),
    (
        14,
        "attempts",
        include_str!("../../../migrations/sqlite/0014_attempts.sql"),
    ),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "prefix leases",
        include_str!("../../../migrations/postgres/0002_prefix_leases.sql"),
    ),
    (
        3,
        "access",
        include_str!("../../../migrations/postgres/0003_access.sql"),
    ),
    (
        4,
        "audit",
        include_str!("../../../migrations/postgres/0004_audit.sql"),
    ),
    (
        5,
        "policy",
        include_str!("../../../migrations/postgres/0005_policy.sql"),
    ),
    (
        6,
        "cancel",
        include_str!("../../../migrations/postgres/0006_cancel.sql"),
    ),
    (
        7,
        "lifecycle",
        include_str!("../../../migrations/postgres/0007_lifecycle.sql"),
    ),
    (
        8,
        "usage",
        include_str!("../../../migrations/postgres/0008_usage.sql"),
    ),
    (
        9,
        "build status index",
        include_str!("../../../migrations/postgres/0009_build_status_index.sql"),
    ),
    (
        10,
        "build submitter",
        include_str!("../../../migrations/postgres/0010_build_submitter.sql"),
    ),
    (
        11,
        "token parents",
        include_str!("../../../migrations/postgres/0011_token_parents.sql"),
    ),
    (
        12,
        "build seq",
        include_str!("../../../migrations/postgres/0012_build_seq.sql"),
    ),
    (
        13,
        "idempotency and readiness",
        include_str!("../../../migrations/postgres/0013_idempotency_and_readiness.sql"),
    ),
    (
        14,
        "attempts",
        include_str!("../../../migrations/postgres/0014_attempts.sql"),
    ),
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

#[cfg(test)]
mod tests {
    use sqlx::any::AnyPoolOptions;

    use super::*;

    fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
        Migrator::with_migrations(
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
        )
    }

    #[tokio::test]
    async fn existing_builds_are_numbered_in_created_at_then_id_order() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("envstore.db").display()
        );
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let before = SQLITE
            .iter()
            .position(|&(version, ..)| version == 12)
            .unwrap();
        migrator(&SQLITE[..before]).run(&pool).await.unwrap();
        for statement in [
            "INSERT INTO namespaces (name, created_at) VALUES ('team', 0)",
            "INSERT INTO environments (namespace, name, created_at) VALUES ('team', 'env', 0)",
            "INSERT INTO specs (spec_hash, canonical, created_at) VALUES ('s', '{}', 0)",
            "INSERT INTO builds (id, namespace, environment, spec_hash, status, created_at) VALUES \
             ('c', 'team', 'env', 's', 'succeeded', 5), ('b', 'team', 'env', 's', 'succeeded', 5), \
             ('a', 'team', 'env', 's', 'succeeded', 9)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        migrator(SQLITE).run(&pool).await.unwrap();
        let rows = sqlx::query("SELECT id, seq FROM builds ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
        let numbered: Vec<(String, i64)> = rows
            .iter()
            .map(|row| {
                (
                    crate::get(row, "id").unwrap(),
                    crate::get(row, "seq").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            numbered,
            [
                ("b".to_owned(), 1),
                ("c".to_owned(), 2),
                ("a".to_owned(), 3)
            ]
        );
        let last: i64 = crate::get(
            &sqlx::query("SELECT last FROM build_seq")
                .fetch_one(&pool)
                .await
                .unwrap(),
            "last",
        )
        .unwrap();
        assert_eq!(last, 3, "new builds are numbered after the old ones");
    }
}

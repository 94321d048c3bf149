//! The schema's migrations, compiled into the binary so a deployed
//! `envstore` needs no files beside it.
//!
//! `crates/db/migrations/NNNN_name.sql` is a migration both dialects run.
//! Where the dialects really differ, `migrations/sqlite/NNNN_name.sql` or
//! `migrations/postgres/NNNN_name.sql` replaces the shared file of that
//! version on its dialect (or stands alone when there is no shared one).
//! sqlx records each applied migration's version and checksum (sha384 of
//! its text) in `_sqlx_migrations` and refuses a database whose applied
//! migrations changed: a file once released is never edited.

use std::collections::BTreeMap;

use sqlx::migrate::{MigrateError, Migration, Migrator};

use crate::{Database, DbError, Dialect};

/// Every file of each folder, embedded once by sqlx's macro.
static SHARED: Migrator = sqlx::migrate!("./migrations");
static SQLITE_OWN: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_OWN: Migrator = sqlx::migrate!("migrations/postgres");

/// The migrations `dialect` runs, by version: the shared ones, each replaced
/// by the dialect's own file of the same version where it has one.
pub(crate) fn migrations(dialect: Dialect) -> Vec<Migration> {
    let own = match dialect {
        Dialect::Sqlite => &SQLITE_OWN,
        Dialect::Postgres => &POSTGRES_OWN,
    };
    with_overrides(&SHARED.migrations, &own.migrations)
}

/// Waits for and holds an exclusive lock on `<database>.migrating`, the
/// turn of this process to migrate a SQLite file; `None` for a database in
/// memory. sqlx takes no lock on SQLite, so two services started together
/// on a new file both applied migration 1 and the second failed ("table
/// namespaces already exists"). The lock is a file of its own: closing
/// any descriptor of the database file itself would drop SQLite's locks.
async fn sqlite_migration_turn(url: &str) -> Result<Option<fs_err::File>, DbError> {
    let Some(database) = url.strip_prefix("sqlite:").and_then(crate::sqlite_file) else {
        return Ok(None);
    };
    let mut path = database.into_os_string();
    path.push(".migrating");
    let path = std::path::PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        use fs_err::os::unix::fs::OpenOptionsExt;
        let file = match fs_err::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            // A database on a read-only mount (a reader such as `kernels
            // sync`): nothing can be migrated there, so there is no turn to
            // take; sqlx says so if a migration is pending.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                tracing::debug!(path = %path.display(), %error, "no migration lock on a read-only folder");
                return Ok(None);
            }
            Err(error) => return Err(DbError::MigrationLock(path.clone(), error)),
        };
        file.file()
            .lock()
            .map_err(|error| DbError::MigrationLock(path, error))?;
        Ok(Some(file))
    })
    .await
    .map_err(|join| DbError::MigrationLock(std::path::PathBuf::new(), std::io::Error::other(join)))?
}

fn with_overrides(shared: &[Migration], own: &[Migration]) -> Vec<Migration> {
    let mut by_version: BTreeMap<i64, Migration> = shared
        .iter()
        .map(|migration| (migration.version, migration.clone()))
        .collect();
    for migration in own {
        by_version.insert(migration.version, migration.clone());
    }
    by_version.into_values().collect()
}

impl Database {
    /// Applies pending migrations (on PostgreSQL under sqlx's advisory
    /// lock, on SQLite under a lock file of ours, so concurrent starts wait
    /// for one another). Refuses a database
    /// migrated by a newer envstore or whose applied migrations were edited;
    /// `envstore migrate --status` says which.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let _turn = match self.dialect {
            Dialect::Sqlite => sqlite_migration_turn(&self.url).await?,
            Dialect::Postgres => None,
        };
        Migrator::with_migrations(migrations(self.dialect))
            .run(&self.pool)
            .await
            .map_err(|error| {
                match &error {
                    MigrateError::VersionMissing(version) => tracing::error!(
                        version,
                        "the database was migrated by a newer envstore (migration {version} is unknown to this one): \
                         run that version or a newer one, or restore the backup taken before the upgrade"
                    ),
                    MigrateError::VersionMismatch(version) => tracing::error!(
                        version,
                        "migration {version} was applied with another text than this envstore's: a released migration was edited"
                    ),
                    _ => {}
                }
                DbError::Migrate(error)
            })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::migrate::MigrationType;

    use super::*;
    use crate::testing::TestDatabase;

    /// What releases before the single migrations folder recorded in
    /// `_sqlx_migrations`: (version, description, sha384 of the SQLite
    /// file, of the PostgreSQL file), computed from the two folders they
    /// embedded. Databases they migrated must keep opening.
    const RELEASED: &[(i64, &str, &str, &str)] = &[
        (
            1,
            "initial",
            "8623be422acbafac06971d50309153143496625df357e903605bbff480a66cad7c6db2aecfffeba6f672339c5cb9ff4a",
            "8623be422acbafac06971d50309153143496625df357e903605bbff480a66cad7c6db2aecfffeba6f672339c5cb9ff4a",
        ),
        (
            2,
            "prefix leases",
            "3b2f2707ca36d36cf991b16a9dfe3b5c0c9858a31f13050dce9a2ce55c28dfbdf0ba68ebb0aece70a7430a4fc7b52b5b",
            "3b2f2707ca36d36cf991b16a9dfe3b5c0c9858a31f13050dce9a2ce55c28dfbdf0ba68ebb0aece70a7430a4fc7b52b5b",
        ),
        (
            3,
            "access",
            "0783101cd05e6cd33b320464e194f79111a24729d2143d83e6d4c54456483340897ca1e1ff5475ba178b4a4b024c09b6",
            "0783101cd05e6cd33b320464e194f79111a24729d2143d83e6d4c54456483340897ca1e1ff5475ba178b4a4b024c09b6",
        ),
        (
            4,
            "audit",
            "254f2b2ec8c247a1ae29e5876cd7d4ac021f9c0da218025272f1e18bf11463c301571816f1a17f773dc8600f373343b2",
            "254f2b2ec8c247a1ae29e5876cd7d4ac021f9c0da218025272f1e18bf11463c301571816f1a17f773dc8600f373343b2",
        ),
        (
            5,
            "policy",
            "eb927f48af49eb5d8053cbabc8460fc18a11cac4f5f60d815f6fbb13eb08603ac7c086a04e5acd207ce975f97e50e343",
            "eb927f48af49eb5d8053cbabc8460fc18a11cac4f5f60d815f6fbb13eb08603ac7c086a04e5acd207ce975f97e50e343",
        ),
        (
            6,
            "cancel",
            "34584d098931c27be3b34f5abd83f063779484533c9d7a7b309be53f74bee8407ca96dd9155df714606a82903f8bf844",
            "34584d098931c27be3b34f5abd83f063779484533c9d7a7b309be53f74bee8407ca96dd9155df714606a82903f8bf844",
        ),
        (
            7,
            "lifecycle",
            "9b953a83385ebd7cc22d688b2bf6cd91875d659839ae0137a45f5cd7c57bd4dd4dc87b629571613d5bbcc25a6f5e336a",
            "9b953a83385ebd7cc22d688b2bf6cd91875d659839ae0137a45f5cd7c57bd4dd4dc87b629571613d5bbcc25a6f5e336a",
        ),
        (
            8,
            "usage",
            "f4f83ca30e8a4504cbeaf648960eb3918db5cbc6568e0c73d11e43ca594cdcbd62d4f63754597fefc30bf89865ff0895",
            "f4f83ca30e8a4504cbeaf648960eb3918db5cbc6568e0c73d11e43ca594cdcbd62d4f63754597fefc30bf89865ff0895",
        ),
        (
            9,
            "build status index",
            "49d6653758315c6a5dfb2be07f4a1d5a37f72118ef178e4775b020535019479c108431f717a942d879d537506742b4e0",
            "49d6653758315c6a5dfb2be07f4a1d5a37f72118ef178e4775b020535019479c108431f717a942d879d537506742b4e0",
        ),
        (
            10,
            "build submitter",
            "2987b169a5c4755d21f8936400b8ac1f2fc504da76f737130ffd066ae59a4592112571483182b7252c0768bbc345f620",
            "2987b169a5c4755d21f8936400b8ac1f2fc504da76f737130ffd066ae59a4592112571483182b7252c0768bbc345f620",
        ),
        (
            11,
            "token parents",
            "1a6a2d93e10d497285fa1ca9b628e181827b4460a9f7bdea29e202ac37f5eccdbd2b0695aa2c9d3b8d48cf1de7640340",
            "1a6a2d93e10d497285fa1ca9b628e181827b4460a9f7bdea29e202ac37f5eccdbd2b0695aa2c9d3b8d48cf1de7640340",
        ),
        (
            12,
            "build seq",
            "abc1cb83c9219b4b9ea17ae84f95a3762fe7af57d2998e90d3f72d9b76ef3310908c720e60af7b443e377a01d7d55abf",
            "cb633104daf05b2c08b9960b948459ad07e1ba26a3bf9b6c3cce9ad976592bbdf864cd02d617aaf39646a17dfef03a23",
        ),
        (
            13,
            "idempotency and readiness",
            "ef83cbeae8d69f725e09d23e133cc3504962d9993ae98911464819cd7ed57d8f69cb385aec2c3e6f7ad5b376c11ae50a",
            "ef83cbeae8d69f725e09d23e133cc3504962d9993ae98911464819cd7ed57d8f69cb385aec2c3e6f7ad5b376c11ae50a",
        ),
        (
            14,
            "attempts",
            "d70ba4b4c37d49b467afc608a4ba7360097ce393b1f1fa7c3e34a7170b1f1f99bcd740538b4489240f45aa1879604567",
            "d70ba4b4c37d49b467afc608a4ba7360097ce393b1f1fa7c3e34a7170b1f1f99bcd740538b4489240f45aa1879604567",
        ),
    ];

    fn released(dialect: Dialect) -> Vec<(i64, String, String)> {
        RELEASED
            .iter()
            .map(|&(version, description, sqlite, postgres)| {
                let checksum = match dialect {
                    Dialect::Sqlite => sqlite,
                    Dialect::Postgres => postgres,
                };
                (version, description.to_owned(), checksum.to_owned())
            })
            .collect()
    }

    fn embedded(dialect: Dialect) -> Vec<(i64, String, String)> {
        migrations(dialect)
            .iter()
            .map(|migration| {
                let checksum: String = migration
                    .checksum
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                (
                    migration.version,
                    migration.description.to_string(),
                    checksum,
                )
            })
            .collect()
    }

    #[test]
    fn every_released_migration_is_embedded_unchanged_for_its_dialect() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let embedded = embedded(dialect);
            let released = released(dialect);
            assert_eq!(
                embedded[..released.len()],
                released[..],
                "{dialect:?}: a released migration was changed or renamed"
            );
            let versions: Vec<i64> = embedded.iter().map(|(version, ..)| *version).collect();
            let expected: Vec<i64> = (1..=i64::try_from(versions.len()).unwrap()).collect();
            assert_eq!(
                versions, expected,
                "{dialect:?}: versions 1, 2, 3, … once each"
            );
        }
        assert_eq!(
            embedded(Dialect::Sqlite).len(),
            embedded(Dialect::Postgres).len(),
            "both dialects have every version"
        );
    }

    fn migration(version: i64, description: &'static str, sql: &'static str) -> Migration {
        Migration::new(
            version,
            Cow::Borrowed(description),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(sql),
            false,
        )
    }

    #[test]
    fn a_dialect_file_replaces_the_shared_one_on_its_dialect_only() {
        let shared = [
            migration(1, "initial", "CREATE TABLE a (id BIGINT)"),
            migration(2, "counter", "CREATE TABLE counter (last BIGINT)"),
        ];
        let postgres = [migration(2, "counter", "CREATE SEQUENCE counter")];
        let sql = |migrations: Vec<Migration>| -> Vec<String> {
            migrations
                .iter()
                .map(|migration| migration.sql.as_str().to_owned())
                .collect()
        };
        assert_eq!(
            sql(with_overrides(&shared, &postgres)),
            ["CREATE TABLE a (id BIGINT)", "CREATE SEQUENCE counter"]
        );
        assert_eq!(
            sql(with_overrides(&shared, &[])),
            [
                "CREATE TABLE a (id BIGINT)",
                "CREATE TABLE counter (last BIGINT)"
            ]
        );

        // The folders as they are: version 12 differs, the rest is shared.
        let twelve = |dialect| {
            migrations(dialect)
                .into_iter()
                .find(|migration| migration.version == 12)
                .unwrap()
                .sql
                .as_str()
                .to_owned()
        };
        assert!(twelve(Dialect::Sqlite).contains("CREATE TABLE build_seq"));
        assert!(twelve(Dialect::Postgres).contains("CREATE SEQUENCE builds_seq"));
        let one = |dialect| migrations(dialect)[0].sql.as_str().to_owned();
        assert_eq!(one(Dialect::Sqlite), one(Dialect::Postgres));
    }

    /// A migrator that records what a release before the single folder
    /// recorded: its checksums, over the same statements.
    fn as_released(dialect: Dialect) -> Migrator {
        let released = released(dialect);
        let migrations = migrations(dialect)
            .into_iter()
            .filter_map(|mut migration| {
                let (.., checksum) = released
                    .iter()
                    .find(|(version, ..)| *version == migration.version)?;
                let bytes: Vec<u8> = (0..checksum.len())
                    .step_by(2)
                    .map(|at| u8::from_str_radix(&checksum[at..at + 2], 16).unwrap())
                    .collect();
                migration.checksum = Cow::Owned(bytes);
                Some(migration)
            })
            .collect();
        Migrator::with_migrations(migrations)
    }

    #[tokio::test]
    async fn a_database_migrated_by_an_earlier_release_opens() {
        for test in TestDatabase::each_dialect().await {
            let pool = test.blank_pool().await;
            as_released(test.dialect).run(&pool).await.unwrap();
            pool.close().await;
            let db = Database::connect(&test.url).await.unwrap_or_else(|error| {
                panic!("{:?}: {}", test.dialect, envstore_core::error_chain(&error))
            });
            db.ping().await.unwrap();
            test.finish().await;
        }
    }

    #[tokio::test]
    async fn existing_builds_are_numbered_in_created_at_then_id_order() {
        for test in TestDatabase::each_dialect().await {
            let pool = test.blank_pool().await;
            let all = migrations(test.dialect);
            let before: Vec<Migration> = all
                .iter()
                .filter(|migration| migration.version < 12)
                .cloned()
                .collect();
            Migrator::with_migrations(before).run(&pool).await.unwrap();
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
            Migrator::with_migrations(all).run(&pool).await.unwrap();
            let numbered: Vec<(String, i64)> =
                sqlx::query_as("SELECT id, seq FROM builds ORDER BY seq")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            assert_eq!(
                numbered,
                [
                    ("b".to_owned(), 1),
                    ("c".to_owned(), 2),
                    ("a".to_owned(), 3)
                ],
                "{:?}",
                test.dialect
            );
            // SQLite keeps the last number in a row, PostgreSQL in a sequence.
            let next = match test.dialect {
                Dialect::Sqlite => "SELECT last + 1 FROM build_seq",
                Dialect::Postgres => "SELECT nextval('builds_seq')",
            };
            let next: i64 = sqlx::query_scalar(next).fetch_one(&pool).await.unwrap();
            assert_eq!(
                next, 4,
                "{:?}: new builds are numbered after the old ones",
                test.dialect
            );
            pool.close().await;
            test.finish().await;
        }
    }
}

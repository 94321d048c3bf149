//! Which environments hold a package: an index of every lock's packages
//! (`lock_packages`, one row per lock, platform and package record), filled
//! in the transaction that stores the lock, so the search conda-store calls
//! "package search" is one indexed query instead of a read of every lock's
//! JSON. Locks stored before the index were back-filled by its migration.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{Database, DbError};

/// One package of one environment's current build, for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageMatch {
    pub namespace: String,
    pub environment: String,
    /// Whether the namespace is readable without a token.
    pub public_read: bool,
    pub build_id: String,
    pub lock_hash: String,
    pub platform: String,
    pub name: String,
    pub version: String,
    pub build: String,
}

impl PackageMatch {
    /// Where the next page of a search resumes after this match.
    pub fn key(&self) -> PackageKey {
        PackageKey {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            environment: self.environment.clone(),
            platform: self.platform.clone(),
            version: self.version.clone(),
            build: self.build.clone(),
        }
    }
}

/// The order of a package search, and its cursor: package name, then
/// namespace, environment, platform, version and build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageKey {
    pub name: String,
    pub namespace: String,
    pub environment: String,
    pub platform: String,
    pub version: String,
    pub build: String,
}

/// How a package search matches names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    /// The name as it is.
    Exact,
    /// Every name that starts with it.
    Prefix,
}

/// The `(platform, name, version, build)` of each package record in a
/// lock's `packages` JSON (`{"<platform>": [{"name": …, …}, …]}`); anything
/// else in it is skipped.
fn records(packages: &Value) -> BTreeSet<(String, String, String, String)> {
    let text = |record: &Value, field: &str| record[field].as_str().unwrap_or_default().to_owned();
    let Some(platforms) = packages.as_object() else {
        return BTreeSet::new();
    };
    platforms
        .iter()
        .filter_map(|(platform, records)| Some((platform, records.as_array()?)))
        .flat_map(|(platform, records)| {
            records
                .iter()
                .filter(|record| record["name"].as_str().is_some_and(|name| !name.is_empty()))
                .map(move |record| {
                    (
                        platform.clone(),
                        text(record, "name"),
                        text(record, "version"),
                        text(record, "build"),
                    )
                })
        })
        .collect()
}

/// Indexes the packages of a lock just stored, in the transaction that
/// stores it (so a lock is never without its rows).
pub(crate) async fn insert_lock_packages(
    connection: &mut sqlx::AnyConnection,
    lock_hash: &str,
    packages: &Value,
) -> Result<(), DbError> {
    for (platform, name, version, build) in records(packages) {
        sqlx::query(
            "INSERT INTO lock_packages (lock_hash, platform, name, version, build) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(lock_hash)
        .bind(platform)
        .bind(name)
        .bind(version)
        .bind(build)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// The `LIKE` pattern of names starting with `prefix` (`%`, `_` and `\`
/// in it matched literally).
fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::new();
    for character in prefix.chars() {
        if matches!(character, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('%');
    pattern
}

/// A search hit as read.
#[derive(sqlx::FromRow)]
struct PackageRow {
    name: String,
    namespace: String,
    environment: String,
    platform: String,
    version: String,
    build: String,
    public_read: i64,
    build_id: String,
    lock_hash: String,
}

impl Database {
    /// The packages named `name` (or, with [`NameMatch::Prefix`], whose
    /// name starts with it) in the current builds of live environments, in
    /// [`PackageKey`] order strictly after `after`, at most `limit`. Who may
    /// see which namespace is the caller's to decide (`public_read` comes
    /// with each match).
    pub async fn environments_with_package(
        &self,
        name: &str,
        matching: NameMatch,
        after: Option<&PackageKey>,
        limit: i64,
    ) -> Result<Vec<PackageMatch>, DbError> {
        let (condition, needle) = match matching {
            NameMatch::Exact => ("lock_packages.name = $1", name.to_owned()),
            NameMatch::Prefix => (
                "lock_packages.name LIKE $1 ESCAPE '\\'",
                prefix_pattern(name),
            ),
        };
        let after = after.cloned().unwrap_or_default();
        let rows = sqlx::query_as::<_, PackageRow>(sqlx::AssertSqlSafe(format!(
            "SELECT lock_packages.name AS name, environments.namespace AS namespace, \
             environments.name AS environment, lock_packages.platform AS platform, \
             lock_packages.version AS version, lock_packages.build AS build, \
             namespaces.public_read AS public_read, builds.id AS build_id, builds.lock_hash AS lock_hash \
             FROM lock_packages \
             JOIN builds ON builds.lock_hash = lock_packages.lock_hash \
             JOIN environments ON environments.current_build_id = builds.id \
             JOIN namespaces ON namespaces.name = environments.namespace \
             WHERE {condition} AND builds.status = 'succeeded' \
             AND environments.deleted_at IS NULL AND namespaces.deleted_at IS NULL \
             AND (lock_packages.name, environments.namespace, environments.name, \
                  lock_packages.platform, lock_packages.version, lock_packages.build) \
                 > ($2, $3, $4, $5, $6, $7) \
             ORDER BY lock_packages.name, environments.namespace, environments.name, \
                      lock_packages.platform, lock_packages.version, lock_packages.build \
             LIMIT $8"
        )))
        .bind(needle)
        .bind(after.name)
        .bind(after.namespace)
        .bind(after.environment)
        .bind(after.platform)
        .bind(after.version)
        .bind(after.build)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| PackageMatch {
                namespace: row.namespace,
                environment: row.environment,
                public_read: row.public_read != 0,
                build_id: row.build_id,
                lock_hash: row.lock_hash,
                platform: row.platform,
                name: row.name,
                version: row.version,
                build: row.build,
            })
            .collect())
    }

    /// Every subject that holds a token, for the server admins' listing of
    /// all tokens (`GET /api/v1/tokens?all=true`, one `tokens_of` each).
    pub async fn token_subjects(&self) -> Result<Vec<String>, DbError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT subject FROM tokens ORDER BY subject")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use envstore_core::{
        BuildStatus, ChannelAllowlist, ContentHash, EnvironmentSpec, NamedChannel, NamespaceName,
        SpecFormat,
    };
    use rattler_conda_types::Subdir;
    use serde_json::json;
    use sqlx::migrate::Migrator;

    use super::*;
    use crate::BuildOutcome;
    use crate::testing::{TestDatabase, databases};

    fn spec(dependency: &str) -> envstore_core::CanonicalSpec {
        let allowlist = ChannelAllowlist::new(vec![
            NamedChannel::parse("demo=http://127.0.0.1:9/demo").expect("a channel"),
        ]);
        let text = format!("channels: [demo]\ndependencies: [{dependency}]\n");
        EnvironmentSpec::parse(text.as_bytes(), SpecFormat::Yaml)
            .expect("a spec")
            .canonicalize(&allowlist, Subdir::Linux64)
            .expect("a canonical spec")
    }

    fn package(name: &str, version: &str) -> Value {
        json!({ "name": name, "version": version, "build": "h0_0", "subdir": "linux-64",
                "url": format!("http://127.0.0.1:9/demo/linux-64/{name}-{version}-h0_0.conda") })
    }

    /// Builds `namespace/environment` to a lock of `packages` (`status`
    /// decides whether it becomes current); returns the build id.
    async fn build(
        db: &Database,
        namespace: &str,
        environment: &str,
        packages: Value,
        status: BuildStatus,
    ) -> String {
        let namespace: NamespaceName = namespace.parse().expect("a name");
        if !db.namespace_exists(&namespace).await.expect("asked") {
            db.create_namespace(&namespace).await.expect("created");
        }
        let id = db
            .submit_build(
                &namespace,
                &environment.parse().expect("a name"),
                &spec("python"),
                None,
            )
            .await
            .expect("submitted")
            .build
            .id;
        let lock = ContentHash::of(packages.to_string().as_bytes());
        db.insert_lock(
            &lock,
            &["linux-64".to_owned()],
            &packages,
            &Default::default(),
        )
        .await
        .expect("stored");
        let outcome = BuildOutcome {
            status,
            lock_hash: (status == BuildStatus::Succeeded).then_some(lock),
            lock_reused: false,
            prefix_reused: false,
            phases: Vec::new(),
            error: None,
        };
        db.finish_build(&id, &outcome).await.expect("finished");
        id
    }

    fn found(matches: &[PackageMatch]) -> Vec<String> {
        matches
            .iter()
            .map(|hit| {
                format!(
                    "{} {} {}/{} {}",
                    hit.name, hit.version, hit.namespace, hit.environment, hit.platform
                )
            })
            .collect()
    }

    #[test]
    fn only_package_records_are_indexed() {
        let packages = json!({
            "linux-64": [package("numpy", "2.0"), { "version": "1" }, "text", package("numpy", "2.0")],
            "win-64": { "not": "a list" },
            "osx-64": [package("zlib", "1.3")],
        });
        let rows: Vec<String> = records(&packages)
            .into_iter()
            .map(|(platform, name, version, build)| format!("{platform} {name} {version} {build}"))
            .collect();
        assert_eq!(rows, ["linux-64 numpy 2.0 h0_0", "osx-64 zlib 1.3 h0_0"]);
        assert!(records(&json!([])).is_empty());
        assert_eq!(prefix_pattern("py_%"), "py\\_\\%%");
    }

    #[tokio::test]
    async fn packages_find_the_current_builds_that_hold_them() {
        for db in databases().await {
            let numpy_2 = json!({ "linux-64": [package("numpy", "2.0"), package("python", "3.11")],
                                  "osx-arm64": [package("numpy", "2.0")] });
            let analysis = build(&db, "team", "analysis", numpy_2, BuildStatus::Succeeded).await;
            build(
                &db,
                "public",
                "old",
                json!({ "linux-64": [package("numpy", "1.26"), package("numba", "0.60")] }),
                BuildStatus::Succeeded,
            )
            .await;
            db.set_public_read(&"public".parse().expect("a name"), true)
                .await
                .expect("set");
            // A later build of `old` that failed does not replace what it holds.
            build(
                &db,
                "public",
                "old",
                json!({ "linux-64": [package("numpy", "9.9")] }),
                BuildStatus::Failed,
            )
            .await;
            // An environment with no current build holds nothing yet.
            build(
                &db,
                "team",
                "broken",
                json!({ "linux-64": [package("numpy", "8.8")] }),
                BuildStatus::Failed,
            )
            .await;

            let exact = db
                .environments_with_package("numpy", NameMatch::Exact, None, 10)
                .await
                .expect("searched");
            assert_eq!(
                found(&exact),
                [
                    "numpy 1.26 public/old linux-64",
                    "numpy 2.0 team/analysis linux-64",
                    "numpy 2.0 team/analysis osx-arm64",
                ]
            );
            assert!(exact[0].public_read && !exact[1].public_read);
            assert_eq!(exact[1].build_id, analysis);
            assert_eq!(exact[1].build, "h0_0");

            let prefix = db
                .environments_with_package("num", NameMatch::Prefix, None, 10)
                .await
                .expect("searched");
            assert_eq!(
                found(&prefix)[0],
                "numba 0.60 public/old linux-64",
                "names in order"
            );
            assert_eq!(prefix.len(), 4);
            assert!(
                db.environments_with_package("num", NameMatch::Exact, None, 10)
                    .await
                    .expect("searched")
                    .is_empty()
            );
            assert!(
                db.environments_with_package("n_m", NameMatch::Prefix, None, 10)
                    .await
                    .expect("searched")
                    .is_empty(),
                "'_' is no wildcard"
            );

            // Pages resume after their last match and never overlap.
            let mut paged = Vec::new();
            let mut after: Option<PackageKey> = None;
            loop {
                let page = db
                    .environments_with_package("num", NameMatch::Prefix, after.as_ref(), 1)
                    .await
                    .expect("a page");
                let Some(last) = page.last() else { break };
                after = Some(last.key());
                paged.extend(page);
                assert!(paged.len() <= prefix.len(), "paging ends");
            }
            assert_eq!(found(&paged), found(&prefix));
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn the_migration_indexes_the_locks_stored_before_it() {
        for test in TestDatabase::each_dialect().await {
            let pool = test.blank_pool().await;
            let all = crate::migrate::migrations(test.dialect);
            let before: Vec<_> = all
                .iter()
                .filter(|migration| migration.version < 16)
                .cloned()
                .collect();
            Migrator::with_migrations(before).run(&pool).await.unwrap();
            let packages = json!({ "linux-64": [package("numpy", "2.0"), package("python", "3.11")],
                                   "noarch": [package("six", "1.16"), { "no": "name" }] });
            for (hash, packages) in [("a", packages.to_string()), ("b", "[]".to_owned())] {
                sqlx::query(
                    "INSERT INTO locks (lock_hash, platforms, packages, created_at) VALUES ($1, '[]', $2, 0)",
                )
                .bind(hash)
                .bind(packages)
                .execute(&pool)
                .await
                .unwrap();
            }
            Migrator::with_migrations(all).run(&pool).await.unwrap();
            let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
                "SELECT lock_hash, platform, name, version, build FROM lock_packages \
                 ORDER BY lock_hash, platform, name",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let rows: Vec<String> = rows
                .into_iter()
                .map(|(lock, platform, name, version, build)| {
                    format!("{lock} {platform} {name} {version} {build}")
                })
                .collect();
            assert_eq!(
                rows,
                [
                    "a linux-64 numpy 2.0 h0_0",
                    "a linux-64 python 3.11 h0_0",
                    "a noarch six 1.16 h0_0",
                ],
                "{:?}",
                test.dialect
            );
            pool.close().await;
            test.finish().await;
        }
    }
}

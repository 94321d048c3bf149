//! Pages of the listings that grow without bound (namespaces, the
//! environments of a namespace, the builds of an environment), for the API's
//! `?limit=&after=&q=` and the web UI. Each page is one query, ordered by a
//! key the next page resumes after, and narrowed by a case-insensitive
//! substring. The same SQL runs on SQLite and PostgreSQL.

use envstore_core::{BuildStatus, EnvironmentName, NamespaceName};

use crate::builds::{BUILD_COLUMNS, BuildRow, parse_status};
use crate::{BuildRecord, Database, DbError};

/// One namespace of a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceEntry {
    pub name: String,
    pub created_at: i64,
    /// Whether the namespace is readable without a token.
    pub public_read: bool,
}

/// One environment of a listing page, with the state of its current build
/// and of its latest one (which differ while a new build runs, or after a
/// rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentEntry {
    pub name: String,
    pub created_at: i64,
    pub current_build_id: Option<String>,
    pub current_status: Option<BuildStatus>,
    pub latest_build_id: Option<String>,
    pub latest_status: Option<BuildStatus>,
    pub latest_created_at: Option<i64>,
}

/// One build of an environment's history, with who submitted it.
#[derive(Debug, Clone)]
pub struct BuildEntry {
    pub build: BuildRecord,
    /// The subject whose submission created the build, recorded with it;
    /// None for a build submitted without one (or older than the record,
    /// with no audit entry to recover it from).
    pub submitted_by: Option<String>,
}

/// The `LIKE` pattern that finds `search` anywhere in a lowercased column:
/// `%` and `_` in the search are matched literally.
fn contains_pattern(search: Option<&str>) -> String {
    let mut pattern = String::from("%");
    for character in search.unwrap_or_default().to_lowercase().chars() {
        if matches!(character, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(character);
    }
    pattern.push('%');
    pattern
}

/// A `namespaces` row of a listing page.
#[derive(sqlx::FromRow)]
struct NamespaceRow {
    name: String,
    created_at: i64,
    public_read: i64,
}

impl From<NamespaceRow> for NamespaceEntry {
    fn from(row: NamespaceRow) -> Self {
        Self {
            name: row.name,
            created_at: row.created_at,
            public_read: row.public_read != 0,
        }
    }
}

/// An environment joined with its current and latest builds.
#[derive(sqlx::FromRow)]
struct EnvironmentEntryRow {
    name: String,
    created_at: i64,
    current_build_id: Option<String>,
    current_status: Option<String>,
    latest_build_id: Option<String>,
    latest_status: Option<String>,
    latest_created_at: Option<i64>,
}

impl TryFrom<EnvironmentEntryRow> for EnvironmentEntry {
    type Error = DbError;

    fn try_from(row: EnvironmentEntryRow) -> Result<Self, DbError> {
        Ok(Self {
            name: row.name,
            created_at: row.created_at,
            current_build_id: row.current_build_id,
            current_status: row
                .current_status
                .map(|status| parse_status("current_status", &status))
                .transpose()?,
            latest_build_id: row.latest_build_id,
            latest_status: row
                .latest_status
                .map(|status| parse_status("latest_status", &status))
                .transpose()?,
            latest_created_at: row.latest_created_at,
        })
    }
}

/// A `builds` row with its submitter.
#[derive(sqlx::FromRow)]
struct BuildEntryRow {
    #[sqlx(flatten)]
    build: BuildRow,
    submitted_by: Option<String>,
}

impl TryFrom<BuildEntryRow> for BuildEntry {
    type Error = DbError;

    fn try_from(row: BuildEntryRow) -> Result<Self, DbError> {
        Ok(Self {
            build: BuildRecord::try_from(row.build)?,
            submitted_by: row.submitted_by,
        })
    }
}

impl Database {
    /// Namespaces ordered by name, strictly after `after` (`""`: from the
    /// start), whose name contains `search`, at most `limit`.
    pub async fn namespaces_page(
        &self,
        after: &str,
        search: Option<&str>,
        limit: i64,
    ) -> Result<Vec<NamespaceEntry>, DbError> {
        let rows = sqlx::query_as::<_, NamespaceRow>(
            "SELECT name, created_at, public_read FROM namespaces \
             WHERE deleted_at IS NULL AND name > $1 AND LOWER(name) LIKE $2 ESCAPE '\\' \
             ORDER BY name LIMIT $3",
        )
        .bind(after)
        .bind(contains_pattern(search))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(NamespaceEntry::from).collect())
    }

    /// The environments of `namespace` ordered by name, strictly after
    /// `after` (`""`: from the start), whose name contains `search`, at most
    /// `limit`.
    pub async fn environments_page(
        &self,
        namespace: &NamespaceName,
        after: &str,
        search: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EnvironmentEntry>, DbError> {
        let rows = sqlx::query_as::<_, EnvironmentEntryRow>(
            "SELECT environments.name AS name, environments.created_at AS created_at, \
             environments.current_build_id AS current_build_id, current_build.status AS current_status, \
             latest.id AS latest_build_id, latest.status AS latest_status, latest.created_at AS latest_created_at \
             FROM environments \
             LEFT JOIN builds current_build ON current_build.id = environments.current_build_id \
             LEFT JOIN builds latest ON latest.id = ( \
                 SELECT id FROM builds WHERE builds.namespace = environments.namespace \
                 AND builds.environment = environments.name AND builds.deleted_at IS NULL \
                 ORDER BY builds.seq DESC LIMIT 1) \
             WHERE environments.namespace = $1 AND environments.deleted_at IS NULL \
             AND environments.name > $2 AND LOWER(environments.name) LIKE $3 ESCAPE '\\' \
             ORDER BY environments.name LIMIT $4",
        )
        .bind(namespace.as_str())
        .bind(after)
        .bind(contains_pattern(search))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(EnvironmentEntry::try_from).collect()
    }

    /// The builds of one environment, newest first, older than the build
    /// `after` (None: from the newest), whose id, status or submitter
    /// contains `search`, at most `limit`.
    pub async fn builds_page(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
        after: Option<&str>,
        search: Option<&str>,
        limit: i64,
    ) -> Result<Vec<BuildEntry>, DbError> {
        let rows = sqlx::query_as::<_, BuildEntryRow>(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM ( \
                 SELECT {BUILD_COLUMNS}, submitted_by \
                 FROM builds WHERE namespace = $1 AND environment = $2 AND deleted_at IS NULL \
             ) AS history \
             WHERE ($3 = '' OR seq < (SELECT seq FROM builds WHERE id = $3)) \
             AND (LOWER(id) LIKE $4 ESCAPE '\\' OR LOWER(status) LIKE $4 ESCAPE '\\' \
                  OR LOWER(COALESCE(submitted_by, '')) LIKE $4 ESCAPE '\\') \
             ORDER BY seq DESC LIMIT $5"
        )))
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .bind(after.unwrap_or_default())
        .bind(contains_pattern(search))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(BuildEntry::try_from).collect()
    }
}

#[cfg(test)]
mod tests {
    use envstore_core::{ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
    use rattler_conda_types::Subdir;

    use super::*;
    use crate::testing::databases;

    #[test]
    fn searches_match_wildcards_literally() {
        assert_eq!(contains_pattern(None), "%%");
        assert_eq!(contains_pattern(Some("Team_ML")), "%team\\_ml%");
        assert_eq!(contains_pattern(Some("50%\\")), "%50\\%\\\\%");
    }

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

    #[tokio::test]
    async fn namespaces_page_on_and_search_by_substring() {
        for database in databases().await {
            for name in ["alpha", "team-ml", "team_ml2", "Team-Web", "zeta"] {
                database
                    .create_namespace(&name.parse().expect("a name"))
                    .await
                    .expect("created");
            }
            let names = |entries: Vec<NamespaceEntry>| {
                entries
                    .into_iter()
                    .map(|entry| entry.name)
                    .collect::<Vec<_>>()
            };
            let first = names(database.namespaces_page("", None, 2).await.expect("a page"));
            assert_eq!(first.len(), 2);
            let second = names(
                database
                    .namespaces_page(&first[1], None, 10)
                    .await
                    .expect("a page"),
            );
            assert_eq!(first.len() + second.len(), 5);
            assert!(!second.contains(&first[1]), "pages do not overlap");
            let mut found = names(
                database
                    .namespaces_page("", Some("TEAM"), 10)
                    .await
                    .expect("a page"),
            );
            found.sort();
            assert_eq!(found, ["Team-Web", "team-ml", "team_ml2"]);
            assert_eq!(
                names(
                    database
                        .namespaces_page("", Some("m_"), 10)
                        .await
                        .expect("a page")
                ),
                ["team_ml2"]
            );
            database.finish().await;
        }
    }

    #[tokio::test]
    async fn builds_page_newest_first_with_their_submitter() {
        for database in databases().await {
            let namespace: NamespaceName = "team".parse().expect("a name");
            let environment: EnvironmentName = "analysis".parse().expect("a name");
            database
                .create_namespace(&namespace)
                .await
                .expect("created");
            let mut ids = Vec::new();
            for (dependency, subject) in
                [("python", "alice"), ("numpy", "bob"), ("pandas", "alice")]
            {
                let build = database
                    .submit_build(&namespace, &environment, &spec(dependency), Some(subject))
                    .await
                    .expect("submitted")
                    .build;
                ids.push(build.id);
            }
            let page = database
                .builds_page(&namespace, &environment, None, None, 2)
                .await
                .expect("a page");
            let seen: Vec<(&str, Option<&str>)> = page
                .iter()
                .map(|entry| (entry.build.id.as_str(), entry.submitted_by.as_deref()))
                .collect();
            assert_eq!(
                seen,
                [
                    (ids[2].as_str(), Some("alice")),
                    (ids[1].as_str(), Some("bob"))
                ]
            );
            let rest = database
                .builds_page(&namespace, &environment, Some(&ids[1]), None, 2)
                .await
                .expect("a page");
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].build.id, ids[0]);
            let bobs = database
                .builds_page(&namespace, &environment, None, Some("BOB"), 10)
                .await
                .expect("a page");
            assert_eq!(bobs.len(), 1);
            assert_eq!(bobs[0].build.id, ids[1]);
            let queued = database
                .builds_page(&namespace, &environment, None, Some("queued"), 10)
                .await
                .expect("a page");
            assert_eq!(queued.len(), 3);

            let environments = database
                .environments_page(&namespace, "", None, 10)
                .await
                .expect("a page");
            assert_eq!(environments.len(), 1);
            assert_eq!(
                environments[0].latest_build_id.as_deref(),
                Some(ids[2].as_str())
            );
            assert_eq!(environments[0].latest_status, Some(BuildStatus::Queued));
            assert_eq!(environments[0].current_build_id, None);
            assert!(
                database
                    .environments_page(&namespace, "", Some("nothing"), 10)
                    .await
                    .expect("a page")
                    .is_empty()
            );
            database.finish().await;
        }
    }
}

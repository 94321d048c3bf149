//! Package search: which environments hold a package, with its version and
//! build per platform (what conda-store calls package search). Only the
//! current builds of environments the caller may see are searched.

use axum::Json;
use axum::extract::{Query, State};
use envstore_api_types::{PackageMatch, PackagesPage};
use envstore_db::{NameMatch, PackageKey};
use serde::Deserialize;

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// Matches per page unless `?limit=` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Matches read from the database per round trip while filling a page: some
/// may lie in namespaces the caller may not see.
const SCAN_BATCH: i64 = 500;

/// The longest name searched for.
const MAX_NAME_CHARS: usize = 128;

#[derive(Debug, Deserialize)]
pub struct PackagesQuery {
    /// The package name (`q` is taken as well, as in the other listings).
    name: Option<String>,
    q: Option<String>,
    /// Whether names starting with `name` match too.
    #[serde(default)]
    prefix: bool,
    limit: Option<usize>,
    /// The previous page's `next_after`.
    after: Option<String>,
}

/// The cursor separator: no name, version or build of a conda package (nor
/// a namespace, environment or platform name) holds a `/`.
const SEPARATOR: char = '/';

fn cursor_of(key: &PackageKey) -> String {
    [
        &key.name,
        &key.namespace,
        &key.environment,
        &key.platform,
        &key.version,
        &key.build,
    ]
    .map(String::as_str)
    .join(&SEPARATOR.to_string())
}

fn parse_cursor(text: &str) -> Result<PackageKey, ApiError> {
    let parts: Vec<&str> = text.splitn(6, SEPARATOR).collect();
    match parts.as_slice() {
        [name, namespace, environment, platform, version, build] => Ok(PackageKey {
            name: (*name).to_owned(),
            namespace: (*namespace).to_owned(),
            environment: (*environment).to_owned(),
            platform: (*platform).to_owned(),
            version: (*version).to_owned(),
            build: (*build).to_owned(),
        }),
        _ => Err(ApiError::BadRequest(format!(
            "'after' is a previous page's next_after, not '{}'",
            text.escape_debug()
        ))),
    }
}

/// The environments whose current build holds the package `name` (with
/// `prefix=true`, any package whose name starts with it), one entry per
/// platform, ordered by package name, namespace, environment and platform,
/// paged with `?limit=&after=` (`next_after` names the next page's cursor
/// while there is one). Only namespaces the caller may see are searched.
#[utoipa::path(
    get,
    path = "/api/v1/packages",
    tag = "packages",
    params(
        ("name" = String, Query, description = "The package name (lowercase; `q` works too)."),
        ("prefix" = Option<bool>, Query, description = "Match every name that starts with `name`."),
        ("limit" = Option<usize>, Query, description = "Page size."),
        ("after" = Option<String>, Query, description = "The previous page's `next_after`.")
    ),
    responses(
        (status = 200, description = "The environments holding the package, in the namespaces the caller may see.", body = PackagesPage),
        (status = 400, description = "No name, or a malformed cursor.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn search_packages(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<PackagesQuery>,
) -> Result<Json<PackagesPage>, ApiError> {
    let name = query
        .name
        .as_deref()
        .or(query.q.as_deref())
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest("name the package to search for: ?name=numpy".to_owned())
        })?
        .to_lowercase();
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "a package name has at most {MAX_NAME_CHARS} printable characters"
        )));
    }
    let matching = if query.prefix {
        NameMatch::Prefix
    } else {
        NameMatch::Exact
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut cursor = query.after.as_deref().map(parse_cursor).transpose()?;
    let mut packages: Vec<PackageMatch> = Vec::new();
    let mut more = false;
    'scan: loop {
        let batch = app
            .db
            .environments_with_package(&name, matching, cursor.as_ref(), SCAN_BATCH)
            .await?;
        let exhausted = batch.len() < usize::try_from(SCAN_BATCH).unwrap_or(usize::MAX);
        for found in batch {
            cursor = Some(found.key());
            if caller
                .grants
                .role_in(&found.namespace, found.public_read)
                .is_none()
            {
                continue;
            }
            if packages.len() == limit {
                more = true;
                break 'scan;
            }
            packages.push(PackageMatch {
                namespace: found.namespace,
                environment: found.environment,
                build_id: found.build_id,
                lock_hash: found.lock_hash,
                platform: found.platform,
                name: found.name,
                version: found.version,
                build: found.build,
            });
        }
        if exhausted {
            break;
        }
    }
    let next_after = more
        .then(|| {
            packages.last().map(|last| {
                cursor_of(&PackageKey {
                    name: last.name.clone(),
                    namespace: last.namespace.clone(),
                    environment: last.environment.clone(),
                    platform: last.platform.clone(),
                    version: last.version.clone(),
                    build: last.build.clone(),
                })
            })
        })
        .flatten();
    Ok(Json(PackagesPage {
        name,
        prefix: query.prefix,
        packages,
        next_after,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let key = PackageKey {
            name: "numpy".to_owned(),
            namespace: "team".to_owned(),
            environment: "analysis".to_owned(),
            platform: "linux-64".to_owned(),
            version: "2.0.2".to_owned(),
            build: String::new(),
        };
        let text = cursor_of(&key);
        assert_eq!(text, "numpy/team/analysis/linux-64/2.0.2/");
        assert_eq!(parse_cursor(&text).unwrap(), key);
        assert!(parse_cursor("numpy/team").is_err());
    }
}

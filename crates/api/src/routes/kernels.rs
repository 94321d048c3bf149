//! Jupyter kernels: the environments a student may pick, without building
//! anything. An environment is a kernel when its current build succeeded and
//! its lock for the server's platform holds the kernel package.

use axum::Json;
use axum::extract::{Query, State};
use envstore_api_types::{Kernel, KernelsPage};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// The package that makes an environment usable as a Jupyter kernel.
pub const KERNEL_PACKAGE: &str = "ipykernel";

/// Kernels per page unless `?limit=` says otherwise, and the most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Environments read from the database per round trip while filling a page:
/// most rows may be invisible to the caller or lack the kernel package, so a
/// page can take several.
const SCAN_BATCH: i64 = 500;

#[derive(Debug, Deserialize)]
pub struct KernelsQuery {
    limit: Option<usize>,
    /// `<namespace>/<name>` of the last kernel of the previous page.
    after: Option<String>,
}

/// The kernels the caller may see, ordered by namespace and name, paged with
/// `?limit=&after=<namespace>/<name>` (`next_after` names the next page's
/// cursor while there is one).
#[utoipa::path(
    get,
    path = "/api/v1/kernels",
    tag = "kernels",
    params(("limit" = Option<usize>, Query, description = "Page size."), ("after" = Option<String>, Query, description = "The previous page's `next_after` (`namespace/name`).")),
    responses(
        (status = 200, description = "Environments the caller may see whose current build has ipykernel.", body = KernelsPage)
    ),
    security((), ("bearer" = []))
)]
pub async fn list_kernels(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<KernelsQuery>,
) -> Result<Json<KernelsPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut cursor = match query.after.as_deref() {
        None => (String::new(), String::new()),
        Some(after) => after
            .split_once('/')
            .map(|(namespace, name)| (namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "'after' is '<namespace>/<name>' (a previous page's next_after), not '{}'",
                    after.escape_debug()
                ))
            })?,
    };
    let platform = app.default_platform.to_string();
    let mut kernels: Vec<Kernel> = Vec::new();
    let mut more = false;
    'scan: loop {
        let batch = app
            .db
            .succeeded_environments((&cursor.0, &cursor.1), SCAN_BATCH)
            .await?;
        let exhausted = batch.len() < usize::try_from(SCAN_BATCH).unwrap_or(usize::MAX);
        for environment in batch {
            cursor = (environment.namespace.clone(), environment.name.clone());
            let visible = caller
                .grants
                .role_in(&environment.namespace, environment.public_read)
                .is_some();
            if !visible || !has_package(&environment.packages, &platform, KERNEL_PACKAGE) {
                continue;
            }
            if kernels.len() == limit {
                more = true;
                break 'scan;
            }
            kernels.push(Kernel {
                id: kernel_id(&environment.namespace, &environment.name),
                display_name: format!("{}/{}", environment.namespace, environment.name),
                prefix: app
                    .environments_root
                    .join(&environment.namespace)
                    .join(&environment.name)
                    .display()
                    .to_string(),
                namespace: environment.namespace,
                environment: environment.name,
                build_id: environment.build_id,
                lock_hash: environment.lock_hash,
                language: "python".to_owned(),
                env: kernel_env(environment.variables, &app.default_policy),
            });
        }
        if exhausted {
            break;
        }
    }
    let next_after = more
        .then(|| {
            kernels
                .last()
                .map(|kernel| format!("{}/{}", kernel.namespace, kernel.environment))
        })
        .flatten();
    Ok(Json(KernelsPage {
        kernels,
        next_after,
    }))
}

/// The variables a kernelspec may set: those the server policy allows today.
/// A kernel runs in the process of whoever starts it, so a variable that
/// steers loaders or interpreters reaches it only under the rule that lets a
/// spec set it, also for builds made before that rule or under a looser one.
fn kernel_env(
    variables: std::collections::BTreeMap<String, String>,
    policy: &envstore_core::Policy,
) -> std::collections::BTreeMap<String, String> {
    let allowed = policy.allowed_variables.as_deref().unwrap_or_default();
    variables
        .into_iter()
        .filter(|(name, _)| envstore_core::variables::is_allowed(name, allowed))
        .collect()
}

/// Whether the lock's packages for `platform` include `package`.
fn has_package(packages: &Value, platform: &str, package: &str) -> bool {
    packages[platform].as_array().is_some_and(|records| {
        records
            .iter()
            .any(|record| record["name"].as_str() == Some(package))
    })
}

/// A kernelspec directory name for `namespace/name`. Jupyter accepts only
/// `[a-z0-9._-]` and compares names case-insensitively, and both parts may
/// hold `-` and capitals, so the readable part alone could make `team-ml/x`
/// and `team/ml-x` (or `Team` and `team`) collide: a short hash of the exact
/// names keeps ids distinct.
pub fn kernel_id(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let short: String = digest
        .iter()
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "envstore-{}-{}-{short}",
        namespace.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kernel_ids_are_safe_and_distinct() {
        let ids = [
            kernel_id("team-ml", "x"),
            kernel_id("team", "ml-x"),
            kernel_id("Team", "ml-x"),
        ];
        for id in &ids {
            assert!(id.starts_with("envstore-"), "{id}");
            assert!(
                id.chars().all(|c| c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '.' | '_' | '-')),
                "{id}"
            );
        }
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
        assert_eq!(kernel_id("team-ml", "x"), ids[0], "stable");
    }

    #[test]
    fn kernels_carry_only_the_variables_the_server_policy_allows() {
        let variables: std::collections::BTreeMap<String, String> = [
            ("MODE", "fast"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("PYTHONSTARTUP", "/tmp/evil.py"),
            ("LD_LIBRARY_PATH", "/opt/lib"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        let open = envstore_core::Policy::default();
        assert_eq!(
            kernel_env(variables.clone(), &open)
                .into_keys()
                .collect::<Vec<_>>(),
            ["MODE"]
        );
        let allowing = envstore_core::Policy {
            allowed_variables: Some(vec!["LD_LIBRARY_PATH".to_owned()]),
            ..envstore_core::Policy::default()
        };
        assert_eq!(
            kernel_env(variables, &allowing)
                .into_keys()
                .collect::<Vec<_>>(),
            ["LD_LIBRARY_PATH", "MODE"]
        );
    }

    #[test]
    fn only_the_platform_s_packages_count() {
        let packages = json!({ "linux-64": [{ "name": "python" }, { "name": "ipykernel" }], "win-64": [{ "name": "python" }] });
        assert!(has_package(&packages, "linux-64", "ipykernel"));
        assert!(!has_package(&packages, "win-64", "ipykernel"));
        assert!(!has_package(&packages, "osx-arm64", "ipykernel"));
    }
}

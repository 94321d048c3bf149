//! Lockfiles: the query of `GET …/lockfile` and of `POST …/solve`. Their
//! bodies are lockfile text (YAML or an explicit file), not JSON.

use serde::{Deserialize, Serialize};

/// `?format=&platform=` of `GET …/environments/{name}/lockfile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LockfileQuery {
    /// conda-lock (default), pixi or explicit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The platform of an explicit file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// `?format=&platforms=&platform=` of `POST …/solve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SolveQuery {
    /// conda-lock (default), pixi or explicit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Comma-separated platforms to lock for instead of the spec's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<String>,
    /// The platform of an explicit file when the lock has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

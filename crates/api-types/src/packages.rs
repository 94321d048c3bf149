//! Package search: which environments hold a package (`GET /api/v1/packages`).

use serde::{Deserialize, Serialize};

/// One package of one environment's current build, for one platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PackageMatch {
    pub namespace: String,
    pub environment: String,
    /// The environment's current build, which holds the package.
    pub build_id: String,
    pub lock_hash: String,
    pub platform: String,
    pub name: String,
    pub version: String,
    pub build: String,
}

/// A page of the packages matching a search, by package name, namespace,
/// environment, platform, version and build, in the namespaces the caller
/// may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PackagesPage {
    /// The name searched for, as it was matched (lowercase).
    pub name: String,
    /// Whether names starting with it matched too.
    pub prefix: bool,
    pub packages: Vec<PackageMatch>,
    /// The `?after=` of the next page; null on the last.
    pub next_after: Option<String>,
}

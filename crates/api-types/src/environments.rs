//! Environments: listing, submitting, rolling back, deleting.

use envstore_core::BuildStatus;
use serde::{Deserialize, Serialize};

use crate::builds::{BuildSummary, BuildView};

/// One environment of a listing, with its current and latest builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentSummary {
    pub url: String,
    pub name: String,
    pub created_at: i64,
    pub current_build_id: Option<String>,
    pub current_status: Option<BuildStatus>,
    pub latest_build_id: Option<String>,
    pub latest_status: Option<BuildStatus>,
    pub latest_created_at: Option<i64>,
}

/// A page of a namespace's environments, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentsPage {
    pub namespace: String,
    pub environments: Vec<EnvironmentSummary>,
    /// The `?after=` of the next page; null on the last.
    pub next_after: Option<String>,
}

/// An environment: its current build, its prefix on this node and the
/// history of its builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentView {
    pub namespace: String,
    pub name: String,
    pub created_at: i64,
    pub current_build: Option<BuildView>,
    /// The current build's prefix on the server.
    pub prefix: Option<String>,
    pub history: Vec<BuildSummary>,
}

/// A build queued for a submitted spec or lockfile, or the same spec's
/// build under way that the submission joined (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildQueued {
    pub build_id: String,
    pub status: BuildStatus,
    pub spec_hash: String,
    /// True when the submission joined a build already under way.
    pub joined: bool,
    /// The build's URL (also in `Location`).
    pub url: String,
}

/// `PUT …/current`: the succeeded build to make current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CurrentBuild {
    pub build_id: String,
}

/// An environment's current build, as set (200), or the rebuild that
/// restores a collected prefix and becomes current when it succeeds (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CurrentBuildSet {
    pub namespace: String,
    pub name: String,
    pub current_build_id: Option<String>,
    pub prefix: Option<String>,
    /// The build restoring the prefix from the lock; null when none was needed.
    pub rebuild: Option<BuildQueued>,
}

/// An environment deleted: hidden at once, builds stopped, cleaned by
/// garbage collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentDeleted {
    pub namespace: String,
    pub name: String,
    pub deleted: bool,
    /// Builds hidden with it.
    pub builds: u64,
    /// Queued builds cancelled and running builds asked to stop.
    pub stopped_builds: u64,
    /// What garbage collection removes later.
    pub cleanup: String,
}

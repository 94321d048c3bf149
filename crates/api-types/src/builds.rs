//! Builds: their state, phases, packages and history.

use std::collections::BTreeMap;

use envstore_core::{BuildPhase, BuildStatus, CanonicalSpec};
use serde::{Deserialize, Serialize};

/// One phase of a build, with its timings (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PhaseView {
    pub phase: BuildPhase,
    pub started_at: i64,
    /// None while the phase runs.
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// A note such as "12 packages, 3 downloaded".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a build could take from earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReuseView {
    /// The solve gave a lock that was already known.
    pub lock: bool,
    /// A complete prefix for the lock existed: nothing was downloaded or linked.
    pub prefix: bool,
}

/// One package of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub build: String,
    pub subdir: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `pypi` for a PyPI wheel (no build string); absent for a conda package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
}

/// A build: status, phases with timings, its spec and, once locked, its
/// packages and lockfile links (`GET /api/v1/builds/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildView {
    pub id: String,
    pub namespace: String,
    pub environment: String,
    pub status: BuildStatus,
    pub spec_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<CanonicalSpec>,
    pub lock_hash: Option<String>,
    pub reused: ReuseView,
    pub phases: Vec<PhaseView>,
    pub error: Option<String>,
    /// Why a queued build is waiting, as the last worker that took it up
    /// said: a transient failure it will try again, or a spec with fields
    /// only a newer worker knows. Absent for a build that is not queued or
    /// that no worker has taken up yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When garbage collection released the build's prefix (its lockfiles
    /// and log stay); making the build current again rebuilds it.
    pub prefix_collected_at: Option<i64>,
    /// Packages per platform, once the build has a lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<BTreeMap<String, Vec<LockedPackage>>>,
    /// Related resources by name: `self`, `log`, and each lock artifact
    /// (`conda-lock.yml`, `pixi.lock`, `explicit-<platform>.txt`).
    pub links: BTreeMap<String, String>,
}

/// One line of an environment's history, as `GET …/environments/{name}` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildSummary {
    pub id: String,
    pub status: BuildStatus,
    pub spec_hash: String,
    pub lock_hash: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub prefix_collected_at: Option<i64>,
    /// Whether this is the environment's current build.
    pub current: bool,
}

/// One build of an environment's history: its state, phase timings, who
/// submitted it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildHistoryEntry {
    pub id: String,
    pub status: BuildStatus,
    pub spec_hash: String,
    pub lock_hash: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub submitted_by: Option<String>,
    pub current: bool,
    pub error: Option<String>,
    pub phases: Vec<PhaseView>,
    pub url: String,
}

/// A page of an environment's builds, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildsPage {
    pub namespace: String,
    pub name: String,
    pub current_build_id: Option<String>,
    pub builds: Vec<BuildHistoryEntry>,
    /// The `?after=` of the next page; null on the last.
    pub next_after: Option<String>,
}

/// A build cancelled, or asked to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildCancelled {
    pub build_id: String,
    /// The build's status now; null when it had ended meanwhile.
    pub status: Option<BuildStatus>,
    /// True while a running build's worker is still stopping it.
    pub cancelling: bool,
}

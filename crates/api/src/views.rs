//! What the API answers with: records from the database shaped for clients,
//! with links to related resources.

use std::collections::BTreeMap;

use envstore_core::{BuildPhase, BuildStatus, CanonicalSpec, PhaseTiming};
use envstore_db::BuildRecord;
use envstore_store::artifact;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PhaseView {
    pub phase: BuildPhase,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<PhaseTiming> for PhaseView {
    fn from(timing: PhaseTiming) -> Self {
        Self {
            phase: timing.phase,
            started_at: timing.started_at,
            finished_at: timing.finished_at,
            duration_ms: timing.finished_at.map(|end| end - timing.started_at),
            detail: timing.detail,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ReuseView {
    /// The solve gave a lock that was already known.
    pub lock: bool,
    /// A complete prefix for the lock existed: nothing was downloaded or linked.
    pub prefix: bool,
}

#[derive(Debug, Serialize)]
pub struct BuildView {
    pub id: String,
    pub namespace: String,
    pub environment: String,
    pub status: BuildStatus,
    pub spec_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<CanonicalSpec>,
    pub lock_hash: Option<String>,
    pub reused: ReuseView,
    pub phases: Vec<PhaseView>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When garbage collection released the build's prefix (its lockfiles
    /// and log stay); making the build current again rebuilds it.
    pub prefix_collected_at: Option<i64>,
    /// Packages per platform, once the build has a lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<serde_json::Value>,
    pub links: BTreeMap<String, String>,
}

impl BuildView {
    pub fn new(
        record: BuildRecord,
        spec: Option<CanonicalSpec>,
        packages: Option<serde_json::Value>,
    ) -> Self {
        let mut links = BTreeMap::new();
        links.insert("self".to_owned(), format!("/api/v1/builds/{}", record.id));
        links.insert(
            "log".to_owned(),
            format!("/api/v1/builds/{}/log", record.id),
        );
        if let Some(lock_hash) = &record.lock_hash {
            let mut names = vec![
                artifact::CONDA_LOCK.to_owned(),
                artifact::PIXI_LOCK.to_owned(),
            ];
            if let Some(spec) = &spec {
                names.extend(
                    spec.platforms
                        .iter()
                        .map(|platform| artifact::explicit(platform)),
                );
            }
            for name in names {
                links.insert(name.clone(), format!("/api/v1/locks/{lock_hash}/{name}"));
            }
        }
        let phases = record.phases.into_iter().map(PhaseView::from).collect();
        Self {
            id: record.id,
            namespace: record.namespace,
            environment: record.environment,
            status: record.status,
            spec_hash: record.spec_hash,
            spec,
            lock_hash: record.lock_hash,
            reused: ReuseView {
                lock: record.lock_reused,
                prefix: record.prefix_reused,
            },
            phases,
            error: record.error,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            prefix_collected_at: record.prefix_collected_at,
            packages,
            links,
        }
    }
}

/// One line of an environment's history.
#[derive(Debug, Serialize)]
pub struct BuildSummary {
    pub id: String,
    pub status: BuildStatus,
    pub spec_hash: String,
    pub lock_hash: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub prefix_collected_at: Option<i64>,
    pub current: bool,
}

impl BuildSummary {
    pub fn new(record: &BuildRecord, current: Option<&str>) -> Self {
        Self {
            id: record.id.clone(),
            status: record.status,
            spec_hash: record.spec_hash.clone(),
            lock_hash: record.lock_hash.clone(),
            created_at: record.created_at,
            finished_at: record.finished_at,
            prefix_collected_at: record.prefix_collected_at,
            current: current == Some(record.id.as_str()),
        }
    }
}

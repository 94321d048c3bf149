//! What the API answers with: records from the database shaped into the
//! wire types of `envstore-api-types`, with links to related resources.

use std::collections::BTreeMap;

use envstore_api_types::{BuildSummary, BuildView, LockedPackage, PhaseView, ReuseView};
use envstore_core::{CanonicalSpec, PhaseTiming};
use envstore_db::BuildRecord;
use envstore_store::artifact;

/// A phase with its duration.
pub(crate) fn phase_view(timing: PhaseTiming) -> PhaseView {
    PhaseView {
        phase: timing.phase,
        started_at: timing.started_at,
        finished_at: timing.finished_at,
        duration_ms: timing.finished_at.map(|end| end - timing.started_at),
        detail: timing.detail,
    }
}

/// A lock's packages per platform as the database keeps them (the JSON of
/// `envstore_solve::LockedPackage`s), typed; None when they do not read as
/// such, which a lock this server wrote never does.
fn locked_packages(packages: serde_json::Value) -> Option<BTreeMap<String, Vec<LockedPackage>>> {
    serde_json::from_value(packages)
        .inspect_err(|error| tracing::warn!(%error, "a lock's packages do not read as packages"))
        .ok()
}

/// A build with its spec, its packages once locked, and its links.
pub(crate) fn build_view_of(
    record: BuildRecord,
    spec: Option<CanonicalSpec>,
    packages: Option<serde_json::Value>,
    waiting: Option<String>,
) -> BuildView {
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
    let phases = record.phases.into_iter().map(phase_view).collect();
    BuildView {
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
        waiting,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        prefix_collected_at: record.prefix_collected_at,
        packages: packages.and_then(locked_packages),
        links,
    }
}

/// One line of an environment's history.
pub(crate) fn build_summary(record: &BuildRecord, current: Option<&str>) -> BuildSummary {
    BuildSummary {
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

/// A build with its spec and, once locked, its packages.
pub(crate) async fn build_view(
    app: &crate::AppState,
    build: BuildRecord,
) -> Result<BuildView, crate::ApiError> {
    let spec = app.db.spec(&build.spec_hash).await?;
    let packages = match &build.lock_hash {
        Some(hash) => app.db.lock(hash).await?.map(|lock| lock.packages),
        None => None,
    };
    let waiting = match build.status {
        envstore_core::BuildStatus::Queued => app.db.queued_job_reason(&build.id).await?,
        _ => None,
    };
    Ok(build_view_of(build, spec, packages, waiting))
}

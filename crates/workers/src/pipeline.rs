//! One build's steps in order: the lock (solved, or as submitted), the
//! prefix on this node, then the published lockfiles.

use std::sync::{Arc, Mutex};

use envstore_core::{BuildPhase, ContentHash};
use envstore_db::BuildRecord;
use envstore_link::ProgressSink;

use crate::context::BuildContext;
use crate::error::BuildError;
use crate::log::BuildLog;
use crate::pause::{TestPause, pause_for_test};
use crate::phases::PhaseRecorder;
use crate::prefix::{PrefixSource, ensure_prefix};
use crate::publish::publish_lock;
use crate::solve::solve;

/// Prefixes a build needed, by `source`: reused, materialised or built.
const PREFIXES_METRIC: &str = "envstore_prefixes_total";

/// What a successful build found and did.
pub(crate) struct Success {
    pub lock_hash: ContentHash,
    pub lock_reused: bool,
    pub prefix_reused: bool,
}

/// Runs the build's steps. The lock's hash goes to `current_lock` as soon
/// as it is known, so a build stopped later can clean up its prefix.
pub(crate) async fn run_steps(
    ctx: &BuildContext,
    build: &BuildRecord,
    worker: &str,
    log: &Arc<BuildLog>,
    recorder: &PhaseRecorder,
    current_lock: &Mutex<Option<ContentHash>>,
) -> Result<Success, BuildError> {
    let spec = ctx
        .db
        .spec(&build.spec_hash)
        .await?
        .ok_or_else(|| BuildError::MissingSpec(build.spec_hash.clone()))?;

    let locked = solve(ctx, build, &spec, log, recorder, |hash| {
        *current_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(hash);
    })
    .await?;

    let native = ctx.native_platform.to_string();
    let prefix_reused = if locked.lock.records(&native).is_some() {
        let source = ensure_prefix(ctx, worker, &locked.lock, log, recorder, &build.id).await?;
        metrics::counter!(PREFIXES_METRIC, "source" => source.as_str()).increment(1);
        source != PrefixSource::Built
    } else {
        log.line(format!(
            "no prefix is built here: {native} is not among the spec's platforms"
        ));
        false
    };

    recorder
        .enter(&ctx.db, &build.id, BuildPhase::Publishing)
        .await?;
    pause_for_test(ctx.test_pause, TestPause::Publishing, log).await;
    let published = publish_lock(ctx, &locked.lock).await?;
    log.line(format!("published {}", published.join(", ")));
    recorder.end(None);
    Ok(Success {
        lock_hash: locked.hash,
        lock_reused: locked.reused,
        prefix_reused,
    })
}

//! Making sure the prefix of a lock exists on this node: reuse it, take it
//! from the store (built elsewhere), or build it. A lease on the lock hash
//! makes sure two workers never build the same prefix at once; the second
//! waits for the first and then reuses its result.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use envstore_core::{BuildPhase, ContentHash, error_chain};
use envstore_db::DbError;
use envstore_link::{CompletionMarker, ProgressSink};
use envstore_solve::Lock;
use envstore_store::keys;

use crate::context::BuildContext;
use crate::error::BuildError;
use crate::lease::keep_lease;
use crate::log::BuildLog;
use crate::materialize::unpack_published_prefix;
use crate::pack::publish_packed_prefix;
use crate::phases::PhaseRecorder;
use crate::task::TaskGuard;

/// How often a worker waiting for another worker's prefix looks again.
const WAIT_INTERVAL: Duration = Duration::from_millis(500);

/// How the prefix came to be complete on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefixSource {
    /// It was already complete here.
    Reused,
    /// Unpacked from the packed prefix another node published.
    Materialised,
    /// Fetched and linked by this build.
    Built,
}

impl PrefixSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Reused => "reused",
            Self::Materialised => "materialised",
            Self::Built => "built",
        }
    }
}

/// Makes the prefix of `lock` complete on this node and records its size
/// the first time it is seen, for usage figures and disk quotas.
pub(crate) async fn ensure_prefix(
    ctx: &BuildContext,
    worker: &str,
    lock: &Lock,
    log: &Arc<BuildLog>,
    recorder: &PhaseRecorder,
    build_id: &str,
) -> Result<PrefixSource, BuildError> {
    let source = reuse_or_build_prefix(ctx, worker, lock, log, recorder, build_id).await?;
    let lock_hash = lock.hash();
    let prefix = ctx.prefixes.prefix_path(&lock_hash);
    if let Some(size) = crate::prefix_size::record_prefix_size(&ctx.db, &lock_hash, &prefix).await {
        log.line(format!(
            "the prefix takes {} bytes in {} files",
            size.bytes, size.files
        ));
    }
    Ok(source)
}

async fn reuse_or_build_prefix(
    ctx: &BuildContext,
    worker: &str,
    lock: &Lock,
    log: &Arc<BuildLog>,
    recorder: &PhaseRecorder,
    build_id: &str,
) -> Result<PrefixSource, BuildError> {
    let lock_hash = lock.hash();
    let native = ctx.native_platform.to_string();
    let records = lock.records(&native).unwrap_or_default();
    let mut announced_wait = false;
    loop {
        if let Some(marker) = ctx.prefixes.complete_marker(&lock_hash)
            && !needs_packing(ctx, &lock_hash).await?
        {
            log.line(format!(
                "prefix {} is complete ({} packages): reusing it, nothing to download or link",
                ctx.prefixes.prefix_path(&lock_hash).display(),
                marker.packages
            ));
            return Ok(PrefixSource::Reused);
        }
        if ctx
            .db
            .acquire_prefix_lease(&lock_hash, worker, ctx.lease)
            .await?
        {
            break;
        }
        if !announced_wait {
            log.line("another worker is building this prefix: waiting for it".to_owned());
            announced_wait = true;
        }
        tokio::time::sleep(WAIT_INTERVAL).await;
    }
    let taken = tokio::time::Instant::now();
    let (lost_sender, lost) = tokio::sync::oneshot::channel();
    let renewer = TaskGuard::spawn({
        let db = ctx.db.clone();
        let worker = worker.to_owned();
        let lease = ctx.lease;
        async move {
            let end = keep_lease(lease, taken, "prefix", || {
                let (db, worker) = (db.clone(), worker.clone());
                async move { db.acquire_prefix_lease(&lock_hash, &worker, lease).await }
            })
            .await;
            let _ = lost_sender.send(end);
        }
    });
    // Whoever takes the lease over may be building the same prefix: stop
    // at once, and leave what is there to it.
    let result = tokio::select! {
        result = ensure_prefix_holding_lease(ctx, lock, records, log, recorder, build_id) => result,
        Ok(end) = lost => {
            log.line(format!("lost the lease on building the prefix ({}): stopping", end.describe()));
            return Err(BuildError::PrefixLeaseLost(end.describe()));
        }
    };
    drop(renewer);
    if let Err(error) = ctx.db.release_prefix_lease(&lock_hash, worker).await {
        log.line(format!(
            "warning: failed to release the prefix lease: {error}"
        ));
    }
    result
}

/// Whether this node packs prefixes and the lock's packed prefix was
/// never published (its build stopped before it could).
async fn needs_packing(ctx: &BuildContext, lock_hash: &ContentHash) -> Result<bool, BuildError> {
    Ok(ctx.publish_packed_prefixes && ctx.db.packed_prefix(lock_hash).await?.is_none())
}

async fn ensure_prefix_holding_lease(
    ctx: &BuildContext,
    lock: &Lock,
    records: &[rattler_conda_types::RepoDataRecord],
    log: &Arc<BuildLog>,
    recorder: &PhaseRecorder,
    build_id: &str,
) -> Result<PrefixSource, BuildError> {
    let lock_hash = lock.hash();
    let prefix = ctx.prefixes.prefix_path(&lock_hash);
    if ctx.prefixes.complete_marker(&lock_hash).is_some() {
        if needs_packing(ctx, &lock_hash).await? {
            log.line(format!(
                "prefix {} is complete but its packed form was never published: publishing it now",
                prefix.display()
            ));
            publish_packed_prefix(ctx, &lock_hash, log).await?;
        } else {
            log.line(format!(
                "prefix {} was completed meanwhile: reusing it",
                prefix.display()
            ));
        }
        return Ok(PrefixSource::Reused);
    }
    let marker = CompletionMarker {
        lock_hash,
        platform: ctx.native_platform.to_string(),
        packages: records.len(),
    };
    if let Some(sha256) = ctx.db.packed_prefix(&lock_hash).await? {
        recorder
            .enter(&ctx.db, build_id, BuildPhase::Downloading)
            .await?;
        log.line(format!(
            "materialising the packed prefix {}",
            keys::packed_prefix(&lock_hash)
        ));
        unpack_published_prefix(
            &ctx.store,
            sha256,
            &prefix,
            marker,
            expected_packages(records),
        )
        .await?;
        let detail = format!(
            "materialised {} packages into {}",
            records.len(),
            prefix.display()
        );
        log.line(detail.clone());
        recorder.end(Some(detail));
        return Ok(PrefixSource::Materialised);
    }

    recorder
        .enter(&ctx.db, build_id, BuildPhase::Downloading)
        .await?;
    let install_wheels =
        crate::pypi::prepare_install(&ctx.pypi, ctx.native_platform, lock, log.as_ref()).await?;
    let wheels = lock.wheels(&ctx.native_platform.to_string()).len();
    let sink: Arc<dyn ProgressSink> = log.clone();
    let report = ctx
        .prefixes
        .build_with(
            &lock_hash,
            ctx.native_platform,
            records,
            lock.variables(),
            sink,
            || {
                recorder.begin(BuildPhase::Linking);
                log.phase_changed();
            },
            install_wheels,
        )
        .await?;
    if wheels > 0 {
        log.line(format!("installed {wheels} PyPI packages"));
    }
    let detail = format!(
        "{} packages, {} downloaded, {} linked into {}",
        report.packages,
        report.downloaded,
        report.linked,
        report.path.display()
    );
    log.line(detail.clone());
    recorder.end(Some(detail));
    if ctx.publish_packed_prefixes {
        publish_packed_prefix(ctx, &lock_hash, log).await?;
    }
    Ok(PrefixSource::Built)
}

/// `name-version-build` of each record: what `conda-meta/` must hold.
fn expected_packages(records: &[rattler_conda_types::RepoDataRecord]) -> BTreeSet<String> {
    records
        .iter()
        .map(|record| {
            let package = &record.package_record;
            format!(
                "{}-{}-{}",
                package.name.as_normalized(),
                package.version,
                package.build
            )
        })
        .collect()
}

/// Removes what a stopped build left of its prefix, unless the prefix is
/// complete or another worker is building it.
pub(crate) async fn remove_unfinished_prefix(
    ctx: &BuildContext,
    lock_hash: &ContentHash,
    worker: &str,
    log: &BuildLog,
) -> Result<(), DbError> {
    if ctx.prefixes.complete_marker(lock_hash).is_some()
        || !ctx
            .db
            .acquire_prefix_lease(lock_hash, worker, ctx.lease)
            .await?
    {
        return Ok(());
    }
    let prefix = ctx.prefixes.prefix_path(lock_hash);
    let existed = prefix.exists();
    match envstore_link::remove_prefix(&prefix).await {
        Ok(()) if existed => log.line(format!(
            "removed the unfinished prefix {}",
            prefix.display()
        )),
        Ok(()) => {}
        Err(error) => log.line(format!("warning: {}", error_chain(&error))),
    }
    ctx.db.release_prefix_lease(lock_hash, worker).await
}

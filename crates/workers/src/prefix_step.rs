//! Making sure the prefix of a lock exists on this node: reuse it, take it
//! from the store (built elsewhere), or build it. A lease on the lock hash
//! makes sure two workers never build the same prefix at once; the second
//! waits for the first and then reuses its result.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use envstore_core::{BuildPhase, ContentHash};
use envstore_link::{CompletionMarker, ProgressSink, pack_prefix};
use envstore_solve::Lock;
use envstore_store::keys;

use crate::lease::keep_lease;
use crate::log::BuildLog;
use crate::materialize::unpack_published_prefix;
use crate::pipeline::{BuildContext, BuildError, PhaseRecorder};

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

impl BuildContext {
    /// Makes the prefix of `lock` complete on this node and records its size
    /// the first time it is seen, for usage figures and disk quotas.
    pub(crate) async fn ensure_prefix(
        &self,
        worker: &str,
        lock: &Lock,
        log: &Arc<BuildLog>,
        recorder: &PhaseRecorder,
        build_id: &str,
    ) -> Result<PrefixSource, BuildError> {
        let source = self
            .reuse_or_build_prefix(worker, lock, log, recorder, build_id)
            .await?;
        let lock_hash = lock.hash();
        let prefix = self.prefixes.prefix_path(&lock_hash);
        if let Some(size) =
            crate::prefix_size::record_prefix_size(&self.db, &lock_hash, &prefix).await
        {
            log.line(format!(
                "the prefix takes {} bytes in {} files",
                size.bytes, size.files
            ));
        }
        Ok(source)
    }

    async fn reuse_or_build_prefix(
        &self,
        worker: &str,
        lock: &Lock,
        log: &Arc<BuildLog>,
        recorder: &PhaseRecorder,
        build_id: &str,
    ) -> Result<PrefixSource, BuildError> {
        let lock_hash = lock.hash();
        let native = self.native_platform.to_string();
        let records = lock.records(&native).unwrap_or_default();
        let mut announced_wait = false;
        loop {
            if let Some(marker) = self.prefixes.complete_marker(&lock_hash)
                && !self.needs_packing(&lock_hash).await?
            {
                log.line(format!(
                    "prefix {} is complete ({} packages): reusing it, nothing to download or link",
                    self.prefixes.prefix_path(&lock_hash).display(),
                    marker.packages
                ));
                return Ok(PrefixSource::Reused);
            }
            if self
                .db
                .acquire_prefix_lease(&lock_hash, worker, self.lease)
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
        let renewer = crate::TaskGuard::spawn({
            let db = self.db.clone();
            let worker = worker.to_owned();
            let lease = self.lease;
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
            result = self.ensure_prefix_holding_lease(lock, records, log, recorder, build_id) => result,
            Ok(end) = lost => {
                log.line(format!("lost the lease on building the prefix ({}): stopping", end.describe()));
                return Err(BuildError::PrefixLeaseLost(end.describe()));
            }
        };
        drop(renewer);
        if let Err(error) = self.db.release_prefix_lease(&lock_hash, worker).await {
            log.line(format!(
                "warning: failed to release the prefix lease: {error}"
            ));
        }
        result
    }

    /// Whether this node packs prefixes and the lock's packed prefix was
    /// never published (its build stopped before it could).
    async fn needs_packing(&self, lock_hash: &ContentHash) -> Result<bool, BuildError> {
        Ok(self.publish_packed_prefixes && self.db.packed_prefix(lock_hash).await?.is_none())
    }

    async fn ensure_prefix_holding_lease(
        &self,
        lock: &Lock,
        records: &[rattler_conda_types::RepoDataRecord],
        log: &Arc<BuildLog>,
        recorder: &PhaseRecorder,
        build_id: &str,
    ) -> Result<PrefixSource, BuildError> {
        let lock_hash = lock.hash();
        let prefix = self.prefixes.prefix_path(&lock_hash);
        if self.prefixes.complete_marker(&lock_hash).is_some() {
            if self.needs_packing(&lock_hash).await? {
                log.line(format!(
                    "prefix {} is complete but its packed form was never published: publishing it now",
                    prefix.display()
                ));
                self.publish_packed_prefix(&lock_hash, log).await?;
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
            platform: self.native_platform.to_string(),
            packages: records.len(),
        };
        if let Some(sha256) = self.db.packed_prefix(&lock_hash).await? {
            recorder.begin(BuildPhase::Downloading);
            self.db
                .record_phases(build_id, &recorder.snapshot())
                .await?;
            log.phase_changed();
            log.line(format!(
                "materialising the packed prefix {}",
                keys::packed_prefix(&lock_hash)
            ));
            unpack_published_prefix(
                &self.store,
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

        recorder.begin(BuildPhase::Downloading);
        self.db
            .record_phases(build_id, &recorder.snapshot())
            .await?;
        log.phase_changed();
        let sink: Arc<dyn ProgressSink> = log.clone();
        let report = self
            .prefixes
            .build(
                &lock_hash,
                self.native_platform,
                records,
                lock.variables(),
                sink,
                || {
                    recorder.begin(BuildPhase::Linking);
                    log.phase_changed();
                },
            )
            .await?;
        let detail = format!(
            "{} packages, {} downloaded, {} linked into {}",
            report.packages,
            report.downloaded,
            report.linked,
            report.path.display()
        );
        log.line(detail.clone());
        recorder.end(Some(detail));
        if self.publish_packed_prefixes {
            self.publish_packed_prefix(&lock_hash, log).await?;
        }
        Ok(PrefixSource::Built)
    }

    /// Publishes `prefixes/<lock_hash>.tar.zst` for nodes without a shared
    /// filesystem, and records its sha256.
    async fn publish_packed_prefix(
        &self,
        lock_hash: &ContentHash,
        log: &BuildLog,
    ) -> Result<(), BuildError> {
        let prefix = self.prefixes.prefix_path(lock_hash);
        let archive = tempfile::Builder::new()
            .prefix(".envstore-pack-")
            .suffix(".tar.zst")
            .tempfile_in(self.layout.prefixes.as_path())
            .map_err(|error| BuildError::Task(error.to_string()))?;
        let archive_path = archive.path().to_owned();
        let sha256 = tokio::task::spawn_blocking(move || pack_prefix(&prefix, &archive_path))
            .await
            .map_err(|error| BuildError::Task(error.to_string()))??;
        self.pause_for_test(crate::TestPause::Packing, log).await;
        let key = keys::packed_prefix(lock_hash);
        // An archive there without a recorded sha256 was left by an attempt
        // that stopped before recording it; it may differ from this one.
        if self.store.exists(&key).await? {
            log.line(format!(
                "replacing {key}, which an earlier attempt left unrecorded"
            ));
            self.store.delete(&key).await?;
        }
        self.store.put_file_immutable(&key, archive.path()).await?;
        self.db.set_packed_prefix(lock_hash, &sha256).await?;
        log.line(format!(
            "published the packed prefix {key} (sha256 {sha256})"
        ));
        Ok(())
    }
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

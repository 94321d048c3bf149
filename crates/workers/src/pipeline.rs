//! One build, end to end: solve, lock, prefix, publish, point.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envstore_core::{BuildPhase, BuildStatus, ChannelAllowlist, ContentHash, PhaseTiming};
use envstore_db::{BuildOutcome, BuildRecord, ClaimedJob, Database, DbError, now_millis};
use envstore_link::{PrefixBuilder, PrefixError, ProgressSink};
use envstore_solve::{EnvironmentSolver, Lock, LockError, SolveError};
use envstore_store::{ArtifactStore, StoreError, artifact, keys};
use rattler_conda_types::Subdir;

use crate::error_chain;
use crate::lease::LeaseEnd;
use crate::lease::keep_lease;
use crate::log::{BuildLog, BuildLogs, KEPT_LOG_BYTES};
use crate::prefix_step::PrefixSource;
use envstore_link::point_environment;

/// Where prefixes and environment links live on this node.
#[derive(Debug, Clone)]
pub struct Layout {
    pub prefixes: PathBuf,
    pub environments: PathBuf,
    /// The shared package cache (rattler's layout), which `gc` cleans.
    pub package_cache: PathBuf,
}

impl Layout {
    pub fn under(data_dir: &std::path::Path) -> Self {
        Self {
            prefixes: data_dir.join("prefixes"),
            environments: data_dir.join("envs"),
            package_cache: data_dir.join("cache").join("pkgs"),
        }
    }

    pub fn environment_link(&self, namespace: &str, name: &str) -> PathBuf {
        self.environments.join(namespace).join(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("the build's spec '{0}' is missing from the database")]
    MissingSpec(String),
    #[error(transparent)]
    Solve(#[from] SolveError),
    #[error("failed to write the lockfiles")]
    Lock(#[from] LockError),
    #[error("failed to build the prefix")]
    Prefix(#[from] PrefixError),
    #[error("failed to publish artifacts")]
    Store(#[from] StoreError),
    #[error("the database failed")]
    Db(#[from] DbError),
    #[error(transparent)]
    UrlNotAllowed(#[from] UrlNotAllowed),
    #[error("failed to point the environment at its prefix")]
    Link(#[source] std::io::Error),
    #[error("failed to materialise the prefix built elsewhere")]
    Materialize(#[from] crate::materialize::MaterializeError),
    #[error("a background task failed: {0}")]
    Task(String),
    #[error("lost the lease on building the prefix: {0}")]
    PrefixLeaseLost(&'static str),
    #[error(
        "the stored lock reads back as {found}, not as the lock {expected} the build asked for"
    )]
    LockMismatch {
        expected: ContentHash,
        found: ContentHash,
    },
}

impl BuildError {
    /// Whether another attempt may succeed: unreachable repodata, a store or
    /// database hiccup. Unsolvable specs and bad packages fail for good.
    fn is_transient(&self) -> bool {
        match self {
            Self::Solve(error) => error.is_transient(),
            _ if disk_full_message(self).is_some() => false,
            Self::Store(_) | Self::Db(_) | Self::PrefixLeaseLost(_) => true,
            _ => false,
        }
    }
}

/// What a successful build found and did.
struct Success {
    lock_hash: ContentHash,
    lock_reused: bool,
    prefix_reused: bool,
}

/// How long each build phase that ended took, by `phase`.
const PHASE_DURATION_METRIC: &str = "envstore_build_phase_duration_seconds";

/// Prefixes a build needed, by `source`: reused, materialised or built.
const PREFIXES_METRIC: &str = "envstore_prefixes_total";

/// The phases of a running build, with their times.
#[derive(Default)]
pub(crate) struct PhaseRecorder {
    phases: Mutex<Vec<PhaseTiming>>,
    /// The phase under way and when it began by the monotonic clock, for the
    /// duration histogram (the recorded times are wall-clock milliseconds).
    open: Mutex<Option<(BuildPhase, Instant)>>,
}

impl PhaseRecorder {
    /// Records the duration of the phase under way, if any, as it ends.
    fn close_open_phase(&self) {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some((phase, started)) = open {
            metrics::histogram!(PHASE_DURATION_METRIC, "phase" => phase.as_str())
                .record(started.elapsed().as_secs_f64());
        }
    }

    pub(crate) fn begin(&self, phase: BuildPhase) {
        self.close_open_phase();
        *self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((phase, Instant::now()));
        let now = now_millis();
        let mut phases = self
            .phases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(last) = phases.last_mut() {
            last.finished_at.get_or_insert(now);
        }
        phases.push(PhaseTiming {
            phase,
            started_at: now,
            finished_at: None,
            detail: None,
        });
    }

    pub(crate) fn end(&self, detail: Option<String>) {
        self.close_open_phase();
        let mut phases = self
            .phases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(last) = phases.last_mut() {
            last.finished_at.get_or_insert(now_millis());
            if detail.is_some() {
                last.detail = detail;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<PhaseTiming> {
        self.phases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// What the build was doing, for a message: the phase under way, or the
    /// step after the last one that ended.
    pub(crate) fn doing(&self) -> String {
        let phases = self
            .phases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match phases.last() {
            None => "starting".to_owned(),
            Some(last) if last.finished_at.is_none() => last.phase.as_str().to_owned(),
            Some(last) => format!("finishing {}", last.phase),
        }
    }
}

/// A limit as people write it: `1 h`, `30 min`, `90 s`.
pub(crate) fn format_limit(limit: Duration) -> String {
    let seconds = limit.as_secs();
    if limit.subsec_nanos() != 0 || seconds == 0 {
        format!("{} s", limit.as_secs_f64())
    } else if seconds.is_multiple_of(3600) {
        format!("{} h", seconds / 3600)
    } else if seconds.is_multiple_of(60) {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

/// Everything a worker needs to run builds.
pub struct BuildContext {
    pub db: Database,
    pub store: ArtifactStore,
    pub solver: EnvironmentSolver,
    pub prefixes: PrefixBuilder,
    pub layout: Layout,
    /// The platform whose prefixes this node builds; other platforms are
    /// locked only.
    pub native_platform: Subdir,
    pub allowlist: ChannelAllowlist,
    pub logs: BuildLogs,
    /// How long a job or prefix lease holds without renewal.
    pub lease: Duration,
    /// Whether built prefixes are packed and published for other nodes to
    /// materialise; a single node with a local store has no use for them.
    pub publish_packed_prefixes: bool,
    /// Fault tests only: where to stop for good (only in a build with the
    /// `test-hooks` feature; downloading and linking pauses are the prefix
    /// builder's).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub test_pause: Option<crate::TestPause>,
    /// How long one attempt of a build may take in all; past it the build
    /// fails, its lease is no longer renewed and its unfinished prefix is
    /// removed. A graceful shutdown waits no longer than this.
    pub build_timeout: Duration,
}

impl BuildContext {
    /// Runs a claimed job to its end, renewing its lease meanwhile. If the
    /// lease is lost (another worker took over, or no renewal succeeded in
    /// time), this worker stops quietly. An error is bookkeeping that could
    /// not be done (the database or the data folder failing): the caller
    /// backs off.
    pub async fn run_job(
        &self,
        job: &ClaimedJob,
        worker: &str,
        max_attempts: i64,
    ) -> Result<(), DbError> {
        self.try_run_job(job, worker, max_attempts).await
    }

    /// Publishes what is left of a build the claim just ended at its
    /// attempt limit: the log its last attempt kept in the database, as
    /// that attempt's log and as the build's, with the reason at the end.
    pub async fn close_at_limit(&self, job: &ClaimedJob, message: &str) -> Result<(), DbError> {
        let leftover = self.db.attempt_log(&job.build_id).await?;
        let mut text = match &leftover {
            Some(left) => {
                let text = stopped_attempt_text(&left.text, left.attempt);
                self.publish_text(
                    &keys::attempt_log(&job.build_id, left.attempt),
                    text.clone(),
                )
                .await;
                text
            }
            None => String::new(),
        };
        text.push_str(&format!("build failed: {message}\n"));
        self.publish_text(&keys::build_log(&job.build_id), text)
            .await;
        if let Some(left) = leftover {
            self.db
                .remove_attempt_log(&job.build_id, left.attempt)
                .await?;
        }
        Ok(())
    }

    async fn try_run_job(
        &self,
        job: &ClaimedJob,
        worker: &str,
        max_attempts: i64,
    ) -> Result<(), DbError> {
        let claimed_at = tokio::time::Instant::now();
        let lease = self.lease;
        let Some(build) = self.db.build(&job.build_id).await? else {
            return Err(DbError::NotFound(format!("build '{}'", job.build_id)));
        };
        if !self.db.start_build(&build.id).await? {
            tracing::info!(build = %build.id, "the build ended while queued (cancelled): nothing to run");
            return Ok(());
        }
        let log = self.logs.start(&build.id);
        self.include_earlier_attempts(&build.id, job.attempts, &log)
            .await;
        log.line(format!(
            "build {} of {}/{} (attempt {}) on {worker}",
            build.id, build.namespace, build.environment, job.attempts
        ));
        let recorder = Arc::new(PhaseRecorder::default());
        let current_lock: Mutex<Option<ContentHash>> = Mutex::new(None);
        let cancelled = Arc::new(tokio::sync::Notify::new());
        let _watcher = crate::TaskGuard::spawn(watch_for_cancel(
            self.db.clone(),
            build.id.clone(),
            cancelled.clone(),
        ));
        let keeper = crate::TaskGuard::spawn(keep_attempt_log(
            self.db.clone(),
            build.id.clone(),
            job.attempts,
            log.clone(),
        ));
        let (lost_sender, lost) = tokio::sync::oneshot::channel();
        let renewer = crate::TaskGuard::spawn({
            let db = self.db.clone();
            let job_id = job.job_id.clone();
            let worker = worker.to_owned();
            async move {
                let end = keep_lease(lease, claimed_at, "job", || {
                    let (db, job_id, worker) = (db.clone(), job_id.clone(), worker.clone());
                    async move { db.renew_lease(&job_id, &worker, lease).await }
                })
                .await;
                let _ = lost_sender.send(end);
            }
        });
        let lease_lost = async {
            match lost.await {
                Ok(end) => end,
                Err(_) => std::future::pending().await,
            }
        };
        let limited = tokio::time::timeout(
            self.build_timeout,
            self.execute(&build, worker, log.clone(), &recorder, &current_lock),
        );
        let result = tokio::select! {
            result = limited => result.map_err(|_| Interruption::OverLimit),
            end = lease_lost => Err(Interruption::LeaseLost(end)),
            () = cancelled.notified() => Err(Interruption::Cancelled),
        };
        drop(renewer);
        let result = match result {
            Ok(result) => result,
            Err(Interruption::LeaseLost(end)) => {
                drop(keeper);
                log.line(format!(
                    "lost the job's lease ({}): stopping",
                    end.describe()
                ));
                // Best effort: a newer attempt's kept log is never replaced.
                let _ = self
                    .db
                    .save_attempt_log(&build.id, job.attempts, &log.tail(KEPT_LOG_BYTES))
                    .await;
                self.logs.finish(&build.id);
                return Ok(());
            }
            Err(interruption @ (Interruption::Cancelled | Interruption::OverLimit)) => {
                drop(keeper);
                let (status, message) = match interruption {
                    Interruption::OverLimit => (
                        BuildStatus::Failed,
                        format!(
                            "the build exceeded its limit of {} while {}",
                            format_limit(self.build_timeout),
                            recorder.doing()
                        ),
                    ),
                    _ => (BuildStatus::Cancelled, "cancelled on request".to_owned()),
                };
                log.line(format!("{message}: stopping"));
                let lock_hash = *current_lock
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(lock_hash) = lock_hash {
                    self.remove_unfinished_prefix(&lock_hash, worker, &log)
                        .await?;
                }
                let outcome = BuildOutcome {
                    status,
                    lock_hash: None,
                    lock_reused: false,
                    prefix_reused: false,
                    phases: recorder.snapshot(),
                    error: Some(message),
                };
                self.publish_log(&keys::build_log(&build.id), &log).await;
                self.record_while_held(job, worker, "the build's end", || {
                    self.db.finish_build(&build.id, &outcome)
                })
                .await?;
                self.forget_attempt_log(&build.id, job.attempts).await;
                self.logs.finish(&build.id);
                return Ok(());
            }
        };
        drop(keeper);
        let outcome = match result {
            Ok(success) => {
                log.line(format!("build succeeded: lock {}", success.lock_hash));
                BuildOutcome {
                    status: BuildStatus::Succeeded,
                    lock_hash: Some(success.lock_hash),
                    lock_reused: success.lock_reused,
                    prefix_reused: success.prefix_reused,
                    phases: recorder.snapshot(),
                    error: None,
                }
            }
            Err(error) if error.is_transient() && job.attempts < max_attempts => {
                let delay = Duration::from_secs(2u64.saturating_pow(job.attempts as u32));
                let message = self.allowlist.redact_text(&error_chain(&error));
                log.line(format!(
                    "error (will retry in {}s): {message}",
                    delay.as_secs()
                ));
                self.publish_log(&keys::attempt_log(&build.id, job.attempts), &log)
                    .await;
                self.record_while_held(job, worker, "the retry", || {
                    self.db.retry_job(&job.job_id, delay, &message)
                })
                .await?;
                self.forget_attempt_log(&build.id, job.attempts).await;
                self.logs.finish(&build.id);
                return Ok(());
            }
            Err(error) => {
                let message = match disk_full_message(&error) {
                    Some(message) => message,
                    None => self.allowlist.redact_text(&error_chain(&error)),
                };
                log.line(format!("build failed: {message}"));
                BuildOutcome {
                    status: BuildStatus::Failed,
                    lock_hash: None,
                    lock_reused: false,
                    prefix_reused: false,
                    phases: recorder.snapshot(),
                    error: Some(message),
                }
            }
        };
        self.publish_log(&keys::build_log(&build.id), &log).await;
        self.record_while_held(job, worker, "the build's end", || {
            self.db.finish_build(&build.id, &outcome)
        })
        .await?;
        self.forget_attempt_log(&build.id, job.attempts).await;
        self.logs.finish(&build.id);
        if outcome.status == BuildStatus::Succeeded {
            self.point_current(&build).await?;
        }
        Ok(())
    }

    /// Puts the logs of earlier attempts before this one's. An attempt
    /// whose worker stopped left its log in the database only: it is
    /// published as that attempt's log first.
    async fn include_earlier_attempts(&self, build_id: &str, attempt: i64, log: &BuildLog) {
        let leftover = match self.db.attempt_log(build_id).await {
            Ok(leftover) => leftover.filter(|left| left.attempt < attempt),
            Err(error) => {
                tracing::warn!(build = %build_id, error = %error_chain(&error), "failed to read the log of a stopped attempt");
                None
            }
        };
        if let Some(left) = leftover {
            let text = stopped_attempt_text(&left.text, left.attempt);
            self.publish_text(&keys::attempt_log(build_id, left.attempt), text.clone())
                .await;
            log.include_earlier(&text);
            return;
        }
        // The newest earlier attempt's log already holds the ones before it.
        for earlier in (1..attempt).rev() {
            if let Ok(text) = self.store.get(&keys::attempt_log(build_id, earlier)).await {
                log.include_earlier(&String::from_utf8_lossy(&text));
                break;
            }
        }
    }

    /// Records the end of an attempt, trying again with backoff while the
    /// database or its disk fails, for as long as the job is still this
    /// worker's (nobody took it over) and at most the build limit.
    async fn record_while_held<F, Fut>(
        &self,
        job: &ClaimedJob,
        worker: &str,
        what: &str,
        mut record: F,
    ) -> Result<(), DbError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), DbError>>,
    {
        let give_up = tokio::time::Instant::now() + self.build_timeout;
        let mut backoff = crate::pool::Backoff::new();
        loop {
            let error = match record().await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let (delay, failures) = backoff.failed();
            if tokio::time::Instant::now() + delay > give_up {
                return Err(error);
            }
            if crate::pool::Backoff::worth_a_line(delay, failures) {
                tracing::warn!(
                    build = %job.build_id,
                    failures,
                    retry_in_seconds = delay.as_secs(),
                    error = %error_chain(&error),
                    "failed to record {what}: trying again"
                );
            }
            tokio::time::sleep(delay).await;
            if let Ok(false) = self.db.job_held_by(&job.job_id, worker).await {
                tracing::warn!(build = %job.build_id, "another worker took the job over: {what} is not recorded");
                return Ok(());
            }
        }
    }

    /// Drops the attempt's log kept in the database once it is published.
    async fn forget_attempt_log(&self, build_id: &str, attempt: i64) {
        if let Err(error) = self.db.remove_attempt_log(build_id, attempt).await {
            tracing::warn!(build = %build_id, error = %error_chain(&error), "failed to remove a kept attempt log");
        }
    }

    async fn execute(
        &self,
        build: &BuildRecord,
        worker: &str,
        log: Arc<BuildLog>,
        recorder: &PhaseRecorder,
        current_lock: &Mutex<Option<ContentHash>>,
    ) -> Result<Success, BuildError> {
        let spec = self
            .db
            .spec(&build.spec_hash)
            .await?
            .ok_or_else(|| BuildError::MissingSpec(build.spec_hash.clone()))?;

        let lock = match spec.from_lock {
            Some(expected) => self.submitted_lock(expected, &spec, &log).await?,
            None => {
                recorder.begin(BuildPhase::Solving);
                self.db
                    .record_phases(&build.id, &recorder.snapshot())
                    .await?;
                log.phase_changed();
                self.pause_for_test(crate::TestPause::Solving, &log).await;
                log.line(format!(
                    "solving [{}] for {} from {}",
                    spec.dependencies.join(", "),
                    spec.platforms.join(", "),
                    spec.channels.join(", ")
                ));
                let solved = self.solver.solve(&spec).await?;
                if solved.cached_platforms > 0 {
                    log.line(format!(
                        "answered {} of {} platforms from the solve cache (repodata unchanged)",
                        solved.cached_platforms,
                        solved.platforms.len()
                    ));
                }
                Lock::new(solved)
                    .with_variables(spec.variables.clone())
                    .for_namespace(&build.namespace)
            }
        };
        self.check_urls(&lock, &spec.channels)?;
        let lock_hash = lock.hash();
        *current_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(lock_hash);
        let packages = lock.packages();
        let count: usize = packages.values().map(Vec::len).sum();
        let platforms: Vec<String> = lock.platforms().map(str::to_owned).collect();
        let lock_reused = !self
            .db
            .insert_lock(
                &lock_hash,
                &platforms,
                &serde_json::to_value(&packages).unwrap_or_default(),
                lock.variables(),
            )
            .await?;
        log.line(format!(
            "locked {count} packages for {}: lock {lock_hash}{}",
            platforms.join(", "),
            if lock_reused { " (already known)" } else { "" }
        ));
        recorder.end(Some(format!("{count} packages")));

        let native = self.native_platform.to_string();
        let prefix_reused = if lock.records(&native).is_some() {
            let source = self
                .ensure_prefix(worker, &lock, &log, recorder, &build.id)
                .await?;
            metrics::counter!(PREFIXES_METRIC, "source" => source.as_str()).increment(1);
            source != PrefixSource::Built
        } else {
            log.line(format!(
                "no prefix is built here: {native} is not among the spec's platforms"
            ));
            false
        };

        recorder.begin(BuildPhase::Publishing);
        self.db
            .record_phases(&build.id, &recorder.snapshot())
            .await?;
        log.phase_changed();
        self.pause_for_test(crate::TestPause::Publishing, &log)
            .await;
        let published = self.publish_lock(&lock).await?;
        log.line(format!("published {}", published.join(", ")));
        recorder.end(None);
        Ok(Success {
            lock_hash,
            lock_reused,
            prefix_reused,
        })
    }

    /// The lock a build installs as is, from the `pixi.lock` stored under its
    /// hash (by the API when the lockfile was submitted, or by the build that
    /// first made the lock). It must read back to the hash it was asked for.
    async fn submitted_lock(
        &self,
        expected: ContentHash,
        spec: &envstore_core::CanonicalSpec,
        log: &BuildLog,
    ) -> Result<Lock, BuildError> {
        log.line(format!(
            "installing lock {expected} as it is: nothing to solve"
        ));
        let text = self
            .store
            .get(&keys::lock_artifact(&expected, artifact::PIXI_LOCK))
            .await?;
        let lock = Lock::parse_lockfile(&String::from_utf8_lossy(&text))?
            .with_variables(spec.variables.clone());
        if lock.hash() != expected {
            return Err(BuildError::LockMismatch {
                expected,
                found: lock.hash(),
            });
        }
        Ok(lock)
    }

    /// Removes what a cancelled build left of its prefix, unless the prefix
    /// is complete or another worker is building it.
    async fn remove_unfinished_prefix(
        &self,
        lock_hash: &ContentHash,
        worker: &str,
        log: &BuildLog,
    ) -> Result<(), DbError> {
        if self.prefixes.complete_marker(lock_hash).is_some()
            || !self
                .db
                .acquire_prefix_lease(lock_hash, worker, self.lease)
                .await?
        {
            return Ok(());
        }
        let prefix = self.prefixes.prefix_path(lock_hash);
        let existed = prefix.exists();
        match envstore_link::remove_prefix(&prefix).await {
            Ok(()) if existed => log.line(format!(
                "removed the unfinished prefix {}",
                prefix.display()
            )),
            Ok(()) => {}
            Err(error) => log.line(format!("warning: {}", error_chain(&error))),
        }
        self.db.release_prefix_lease(lock_hash, worker).await
    }

    fn check_urls(&self, lock: &Lock, channels: &[String]) -> Result<(), BuildError> {
        Ok(check_lock_urls(&self.allowlist, lock, channels)?)
    }

    async fn publish_lock(&self, lock: &Lock) -> Result<Vec<String>, BuildError> {
        let hash = lock.hash();
        let mut files = vec![
            (artifact::CONDA_LOCK.to_owned(), lock.render_conda_lock()?),
            (artifact::PIXI_LOCK.to_owned(), lock.render_pixi_lock()?),
        ];
        for platform in lock.platforms() {
            files.push((
                artifact::explicit(platform),
                lock.render_explicit(platform)?,
            ));
        }
        let mut names = Vec::with_capacity(files.len());
        for (name, text) in files {
            self.store
                .put_immutable(&keys::lock_artifact(&hash, &name), Bytes::from(text))
                .await?;
            names.push(name);
        }
        Ok(names)
    }

    async fn publish_log(&self, key: &str, log: &BuildLog) {
        self.publish_text(key, log.text()).await;
    }

    /// Publishes a log; when the store fails (a full disk, say) it keeps
    /// trying in the background with backoff, for at most an hour.
    async fn publish_text(&self, key: &str, text: String) {
        let text = Bytes::from(text);
        let Err(error) = self.store.put_immutable(key, text.clone()).await else {
            return;
        };
        tracing::warn!(key, error = %error_chain(&error), "failed to publish a build log: trying again in the background");
        let store = self.store.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let give_up = tokio::time::Instant::now() + LOG_RETRY_LIMIT;
            let mut backoff = crate::pool::Backoff::new();
            loop {
                let (delay, _) = backoff.failed();
                if tokio::time::Instant::now() + delay > give_up {
                    tracing::warn!(key, "gave up publishing a build log");
                    return;
                }
                tokio::time::sleep(delay).await;
                if store.put_immutable(&key, text.clone()).await.is_ok() {
                    tracing::info!(key, "published the build log after all");
                    return;
                }
            }
        });
    }

    /// Points the environment's link at the prefix of its current build.
    async fn point_current(&self, build: &BuildRecord) -> Result<(), DbError> {
        let (Ok(namespace), Ok(name)) = (build.namespace.parse(), build.environment.parse()) else {
            return Ok(());
        };
        let Some(environment) = self.db.environment(&namespace, &name).await? else {
            return Ok(());
        };
        let Some(current) = environment.current_build_id else {
            return Ok(());
        };
        let Some(lock_hash) = self
            .db
            .build(&current)
            .await?
            .and_then(|build| build.lock_hash)
            .and_then(|hash| hash.parse::<ContentHash>().ok())
        else {
            return Ok(());
        };
        if self.prefixes.complete_marker(&lock_hash).is_none() {
            return Ok(());
        }
        let link = self
            .layout
            .environment_link(&build.namespace, &build.environment);
        let target = self.prefixes.prefix_path(&lock_hash);
        if let Err(error) = point_environment(&link, &target) {
            tracing::warn!(link = %link.display(), error = %error_chain(&BuildError::Link(error)), "failed to point the environment");
        }
        Ok(())
    }
}

/// A lock package from outside the build's channels.
#[derive(Debug, thiserror::Error)]
#[error(
    "package '{package}' ({platform}) comes from '{url}', which is not a package of the build's channels: {defect}"
)]
pub struct UrlNotAllowed {
    package: String,
    platform: String,
    url: String,
    defect: envstore_core::UrlDefect,
}

/// Defence in depth: every package URL must be a package of one of the
/// build's own channels (those the namespace's policy let its spec name)
/// for its platform, compared after decoding, so neither a channel nor a
/// submitted lock can send the worker elsewhere.
pub(crate) fn check_lock_urls(
    allowlist: &ChannelAllowlist,
    lock: &Lock,
    channels: &[String],
) -> Result<(), UrlNotAllowed> {
    let channels: Vec<url::Url> = allowlist
        .channels()
        .iter()
        .filter(|allowed| {
            let allowed = allowed.url.as_str().trim_end_matches('/');
            channels
                .iter()
                .any(|channel| channel.trim_end_matches('/') == allowed)
        })
        .map(|allowed| allowed.url.clone())
        .collect();
    for platform in lock.platforms() {
        for record in lock.records(platform).unwrap_or_default() {
            let checked = envstore_core::locate_in(&channels, &record.url)
                .and_then(|path| path.check_package(&[platform.to_owned()]));
            if let Err(defect) = checked {
                return Err(UrlNotAllowed {
                    package: record.package_record.name.as_normalized().to_owned(),
                    platform: platform.to_owned(),
                    url: envstore_core::public_url(&record.url).to_string(),
                    defect,
                });
            }
        }
    }
    Ok(())
}

/// Why a build stopped before it ended.
enum Interruption {
    LeaseLost(LeaseEnd),
    Cancelled,
    /// It ran past [`BuildContext::build_timeout`].
    OverLimit,
}

/// How often a running build looks for a cancellation request.
const CANCEL_POLL: Duration = Duration::from_millis(500);

async fn watch_for_cancel(db: Database, build_id: String, cancelled: Arc<tokio::sync::Notify>) {
    let mut failures = 0u64;
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        match db.cancel_requested(&build_id).await {
            Ok(true) => {
                cancelled.notify_one();
                return;
            }
            Ok(false) => failures = 0,
            Err(error) => {
                failures += 1;
                // Once per minute at most while the database fails.
                if failures % 120 == 1 {
                    tracing::warn!(build = %build_id, error = %error_chain(&error), "failed to check for cancellation");
                }
            }
        }
    }
}

/// How long a log the store would not take is tried again.
const LOG_RETRY_LIMIT: Duration = Duration::from_secs(3600);

/// How often a running attempt's log is written to the database, besides
/// each phase change.
const KEEP_LOG_EVERY: Duration = Duration::from_secs(3);

/// Keeps the attempt's log (its last MiB) in the database as it goes, so a
/// worker that is killed leaves it for the attempt that takes over.
async fn keep_attempt_log(db: Database, build_id: String, attempt: i64, log: Arc<BuildLog>) {
    let mut kept = None;
    let mut failures = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(KEEP_LOG_EVERY) => {}
            () = log.wait_for_phase_change() => {}
        }
        let version = log.version();
        if kept == Some(version) {
            continue;
        }
        match db
            .save_attempt_log(&build_id, attempt, &log.tail(KEPT_LOG_BYTES))
            .await
        {
            Ok(()) => {
                kept = Some(version);
                failures = 0;
            }
            Err(error) => {
                failures += 1;
                if failures % 20 == 1 {
                    tracing::warn!(build = %build_id, error = %error_chain(&error), "failed to keep the build log in the database");
                }
            }
        }
    }
}

/// The log an attempt kept, closed with why it ends there.
fn stopped_attempt_text(text: &str, attempt: i64) -> String {
    let mut text = text.to_owned();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&format!(
        "attempt {attempt} ends here: its worker stopped (killed, crashed or out of contact)\n"
    ));
    text
}

/// Whether the error comes from a full disk (or quota): then the build
/// fails for good, with a message that says so and names the path.
fn disk_full_message(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        chain.push(error);
        current = error.source();
    }
    // Some libraries keep only the text of the operating system's error.
    let full = chain.iter().any(|error| {
        error.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded
                || matches!(io.raw_os_error(), Some(28 | 122))
        }) || {
            let text = error.to_string();
            text.contains("(os error 28)")
                || text.contains("(os error 122)")
                || text.contains("database or disk is full")
        }
    });
    if !full {
        return None;
    }
    // The innermost message that names a path ('…').
    let path = chain
        .iter()
        .rev()
        .find_map(|error| quoted_path(&error.to_string()));
    Some(match path {
        Some(path) => format!("no space left on device while writing '{path}'"),
        None => format!("no space left on device ({})", error_chain(error)),
    })
}

/// The first `'/…'` in a message.
fn quoted_path(message: &str) -> Option<String> {
    let start = message.find("'/")? + 1;
    let length = message[start..].find('\'')?;
    Some(message[start..start + length].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_fails_the_build_for_good_naming_the_path() {
        let io = std::io::Error::from_raw_os_error(28);
        let error = BuildError::Prefix(PrefixError::Io {
            action: "write",
            path: PathBuf::from("/data/prefixes/0123/lib/libz.so"),
            source: io,
        });
        assert_eq!(
            disk_full_message(&error).as_deref(),
            Some("no space left on device while writing '/data/prefixes/0123/lib/libz.so'")
        );
        assert!(!error.is_transient());
        // A library that keeps only the text of the error.
        let store = BuildError::Task(
            "Unable to copy data to file: No space left on device (os error 28)".to_owned(),
        );
        assert!(
            disk_full_message(&store)
                .unwrap()
                .starts_with("no space left on device (")
        );
        let other = BuildError::Task("connection reset".to_owned());
        assert_eq!(disk_full_message(&other), None);
    }

    #[test]
    fn an_over_limit_message_names_the_limit_and_what_was_under_way() {
        assert_eq!(format_limit(Duration::from_secs(3600)), "1 h");
        assert_eq!(format_limit(Duration::from_secs(1800)), "30 min");
        assert_eq!(format_limit(Duration::from_secs(3)), "3 s");
        assert_eq!(format_limit(Duration::from_millis(1500)), "1.5 s");
        let recorder = PhaseRecorder::default();
        assert_eq!(recorder.doing(), "starting");
        recorder.begin(BuildPhase::Solving);
        assert_eq!(recorder.doing(), "solving");
        recorder.end(None);
        assert_eq!(recorder.doing(), "finishing solving");
        recorder.begin(BuildPhase::Downloading);
        assert_eq!(recorder.doing(), "downloading");
    }
}

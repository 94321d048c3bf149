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
use crate::log::{BuildLog, BuildLogs};
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
    #[error("package '{package}' ({platform}) comes from '{url}', which is not a package of the build's channels: {defect}")]
    UrlNotAllowed {
        package: String,
        platform: String,
        url: String,
        defect: envstore_core::UrlDefect,
    },
    #[error("failed to point the environment at its prefix")]
    Link(#[source] std::io::Error),
    #[error("failed to materialise the prefix built elsewhere")]
    Materialize(#[from] crate::materialize::MaterializeError),
    #[error("a background task failed: {0}")]
    Task(String),
    #[error("the stored lock reads back as {found}, not as the lock {expected} the build asked for")]
    LockMismatch { expected: ContentHash, found: ContentHash },
}

impl BuildError {
    /// Whether another attempt may succeed: unreachable repodata, a store or
    /// database hiccup. Unsolvable specs and bad packages fail for good.
    fn is_transient(&self) -> bool {
        match self {
            Self::Solve(error) => error.is_transient(),
            Self::Store(_) | Self::Db(_) => true,
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
        let open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some((phase, started)) = open {
            metrics::histogram!(PHASE_DURATION_METRIC, "phase" => phase.as_str()).record(started.elapsed().as_secs_f64());
        }
    }

    pub(crate) fn begin(&self, phase: BuildPhase) {
        self.close_open_phase();
        *self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((phase, Instant::now()));
        let now = now_millis();
        let mut phases = self.phases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
        let mut phases = self.phases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(last) = phases.last_mut() {
            last.finished_at.get_or_insert(now_millis());
            if detail.is_some() {
                last.detail = detail;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<PhaseTiming> {
        self.phases.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// What the build was doing, for a message: the phase under way, or the
    /// step after the last one that ended.
    pub(crate) fn doing(&self) -> String {
        let phases = self.phases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
    /// Fault tests only: stop for good when publishing starts (only in a
    /// build with the `test-hooks` feature).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub pause_before_publishing: bool,
    /// How long one attempt of a build may take in all; past it the build
    /// fails, its lease is no longer renewed and its unfinished prefix is
    /// removed. A graceful shutdown waits no longer than this.
    pub build_timeout: Duration,
}

impl BuildContext {
    /// Runs a claimed job to its end, renewing its lease meanwhile. If the
    /// lease is lost (another worker took over), this worker stops quietly.
    pub async fn run_job(&self, job: &ClaimedJob, worker: &str, max_attempts: i64) {
        if let Err(error) = self.try_run_job(job, worker, max_attempts).await {
            tracing::error!(build = %job.build_id, error = %error_chain(&error), "build bookkeeping failed");
        }
    }

    async fn try_run_job(
        &self,
        job: &ClaimedJob,
        worker: &str,
        max_attempts: i64,
    ) -> Result<(), DbError> {
        let lease = self.lease;
        let Some(build) = self.db.build(&job.build_id).await? else {
            return Err(DbError::NotFound(format!("build '{}'", job.build_id)));
        };
        if !self.db.start_build(&build.id).await? {
            tracing::info!(build = %build.id, "the build ended while queued (cancelled): nothing to run");
            return Ok(());
        }
        let log = self.logs.start(&build.id);
        // The newest earlier attempt's log already holds the ones before it;
        // attempts that crashed left none.
        for attempt in (1..job.attempts).rev() {
            if let Ok(earlier) = self.store.get(&keys::attempt_log(&build.id, attempt)).await {
                log.include_earlier(&String::from_utf8_lossy(&earlier));
                break;
            }
        }
        log.line(format!(
            "build {} of {}/{} (attempt {}) on {worker}",
            build.id, build.namespace, build.environment, job.attempts
        ));
        let recorder = Arc::new(PhaseRecorder::default());
        let current_lock: Mutex<Option<ContentHash>> = Mutex::new(None);
        let cancelled = Arc::new(tokio::sync::Notify::new());
        let _watcher = crate::TaskGuard::spawn(watch_for_cancel(self.db.clone(), build.id.clone(), cancelled.clone()));
        let lease_lost = Arc::new(tokio::sync::Notify::new());
        let renewer = crate::TaskGuard::spawn(renew_lease(
            self.db.clone(),
            job.job_id.clone(),
            worker.to_owned(),
            lease,
            lease_lost.clone(),
        ));
        let limited = tokio::time::timeout(
            self.build_timeout,
            self.execute(&build, worker, log.clone(), &recorder, &current_lock),
        );
        let result = tokio::select! {
            result = limited => result.map_err(|_| Interruption::OverLimit),
            () = lease_lost.notified() => Err(Interruption::LeaseLost),
            () = cancelled.notified() => Err(Interruption::Cancelled),
        };
        drop(renewer);
        let result = match result {
            Ok(result) => result,
            Err(Interruption::LeaseLost) => {
                log.line("lost the job's lease to another worker: stopping".to_owned());
                self.logs.finish(&build.id);
                return Ok(());
            }
            Err(interruption @ (Interruption::Cancelled | Interruption::OverLimit)) => {
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
                let lock_hash = *current_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(lock_hash) = lock_hash {
                    self.remove_unfinished_prefix(&lock_hash, worker, &log).await?;
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
                self.db.finish_build(&build.id, &outcome).await?;
                self.logs.finish(&build.id);
                return Ok(());
            }
        };
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
                log.line(format!("error (will retry in {}s): {message}", delay.as_secs()));
                self.publish_log(&keys::attempt_log(&build.id, job.attempts), &log).await;
                self.logs.finish(&build.id);
                return self.db.retry_job(&job.job_id, delay, &message).await;
            }
            Err(error) => {
                let message = self.allowlist.redact_text(&error_chain(&error));
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
        self.db.finish_build(&build.id, &outcome).await?;
        self.logs.finish(&build.id);
        if outcome.status == BuildStatus::Succeeded {
            self.point_current(&build).await?;
        }
        Ok(())
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
                self.db.record_phases(&build.id, &recorder.snapshot()).await?;
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
                Lock::new(solved).with_variables(spec.variables.clone()).for_namespace(&build.namespace)
            }
        };
        self.check_urls(&lock, &spec.channels)?;
        let lock_hash = lock.hash();
        *current_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(lock_hash);
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
            let source = self.ensure_prefix(worker, &lock, &log, recorder, &build.id).await?;
            metrics::counter!(PREFIXES_METRIC, "source" => source.as_str()).increment(1);
            source != PrefixSource::Built
        } else {
            log.line(format!("no prefix is built here: {native} is not among the spec's platforms"));
            false
        };

        recorder.begin(BuildPhase::Publishing);
        self.db.record_phases(&build.id, &recorder.snapshot()).await?;
        #[cfg(feature = "test-hooks")]
        if self.pause_before_publishing {
            log.line("paused for a fault test: waiting to be killed".to_owned());
            std::future::pending::<()>().await;
        }
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
        log.line(format!("installing lock {expected} as it is: nothing to solve"));
        let text = self.store.get(&keys::lock_artifact(&expected, artifact::PIXI_LOCK)).await?;
        let lock = Lock::parse_lockfile(&String::from_utf8_lossy(&text))?.with_variables(spec.variables.clone());
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
    async fn remove_unfinished_prefix(&self, lock_hash: &ContentHash, worker: &str, log: &BuildLog) -> Result<(), DbError> {
        if self.prefixes.complete_marker(lock_hash).is_some()
            || !self.db.acquire_prefix_lease(lock_hash, worker, self.lease).await?
        {
            return Ok(());
        }
        let prefix = self.prefixes.prefix_path(lock_hash);
        let existed = prefix.exists();
        match envstore_link::remove_prefix(&prefix).await {
            Ok(()) if existed => log.line(format!("removed the unfinished prefix {}", prefix.display())),
            Ok(()) => {}
            Err(error) => log.line(format!("warning: {}", error_chain(&error))),
        }
        self.db.release_prefix_lease(lock_hash, worker).await
    }

    /// Defence in depth: every package URL must be a package of one of the
    /// build's own channels (those the namespace's policy let its spec
    /// name) for its platform, compared after decoding, so neither a channel
    /// nor a submitted lock can send the worker elsewhere.
    fn check_urls(&self, lock: &Lock, channels: &[String]) -> Result<(), BuildError> {
        let channels: Vec<url::Url> = self
            .allowlist
            .channels()
            .iter()
            .filter(|allowed| {
                let allowed = allowed.url.as_str().trim_end_matches('/');
                channels.iter().any(|channel| channel.trim_end_matches('/') == allowed)
            })
            .map(|allowed| allowed.url.clone())
            .collect();
        for platform in lock.platforms() {
            for record in lock.records(platform).unwrap_or_default() {
                let checked = envstore_core::locate_in(&channels, &record.url)
                    .and_then(|path| path.check_package(&[platform.to_owned()]));
                if let Err(defect) = checked {
                    return Err(BuildError::UrlNotAllowed {
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

    async fn publish_lock(&self, lock: &Lock) -> Result<Vec<String>, BuildError> {
        let hash = lock.hash();
        let mut files = vec![
            (artifact::CONDA_LOCK.to_owned(), lock.render_conda_lock()?),
            (artifact::PIXI_LOCK.to_owned(), lock.render_pixi_lock()?),
        ];
        for platform in lock.platforms() {
            files.push((artifact::explicit(platform), lock.render_explicit(platform)?));
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
        if let Err(error) = self.store.put_immutable(key, Bytes::from(log.text())).await {
            tracing::warn!(key, error = %error_chain(&error), "failed to publish a build log");
        }
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
        let link = self.layout.environment_link(&build.namespace, &build.environment);
        let target = self.prefixes.prefix_path(&lock_hash);
        if let Err(error) = point_environment(&link, &target) {
            tracing::warn!(link = %link.display(), error = %error_chain(&BuildError::Link(error)), "failed to point the environment");
        }
        Ok(())
    }
}

/// Why a build stopped before it ended.
enum Interruption {
    LeaseLost,
    Cancelled,
    /// It ran past [`BuildContext::build_timeout`].
    OverLimit,
}

/// How often a running build looks for a cancellation request.
const CANCEL_POLL: Duration = Duration::from_millis(500);

async fn watch_for_cancel(db: Database, build_id: String, cancelled: Arc<tokio::sync::Notify>) {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        match db.cancel_requested(&build_id).await {
            Ok(true) => {
                cancelled.notify_one();
                return;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(build = %build_id, error = %error_chain(&error), "failed to check for cancellation"),
        }
    }
}

async fn renew_lease(
    db: Database,
    job_id: String,
    worker: String,
    lease: Duration,
    lost: Arc<tokio::sync::Notify>,
) {
    let mut interval = tokio::time::interval(lease / 3);
    interval.tick().await;
    loop {
        interval.tick().await;
        match db.renew_lease(&job_id, &worker, lease).await {
            Ok(true) => {}
            Ok(false) => {
                lost.notify_one();
                return;
            }
            Err(error) => tracing::warn!(job = %job_id, error = %error_chain(&error), "failed to renew a lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

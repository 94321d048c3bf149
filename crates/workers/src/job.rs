//! Running a claimed job to its end: the build's steps under the job's
//! lease, a time limit and cancellation; the attempt's log kept in the
//! database as it goes; and the end recorded, published and announced to
//! followers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use envstore_core::{BuildStatus, ContentHash, ProgressEvent, error_chain};
use envstore_db::{BuildOutcome, ClaimedJob, Database, DbError};
use envstore_link::ProgressSink;
use envstore_store::keys;

use crate::backoff::Backoff;
use crate::context::BuildContext;
use crate::error::disk_full_message;
use crate::lease::{LeaseEnd, keep_lease};
use crate::log::{BuildLog, KEPT_LOG_BYTES};
use crate::phases::PhaseRecorder;
use crate::pipeline::run_steps;
use crate::prefix::remove_unfinished_prefix;
use crate::publish::{point_ahead, point_current, publish_build_log, publish_log, publish_text};
use crate::task::{StoppedTask, TaskGuard};

/// How often a running build looks for a cancellation request.
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// Seconds from a build's acceptance to its first start (`/metrics`).
const QUEUE_WAIT_METRIC: &str = "envstore_build_queue_wait_seconds";

/// Seconds an attempt ran until the build ended, by final status.
const BUILD_DURATION_METRIC: &str = "envstore_build_duration_seconds";

/// How often a running attempt's log is written to the database, besides
/// each phase change.
const KEEP_LOG_EVERY: Duration = Duration::from_secs(3);

/// Why a build stopped before it ended.
enum Interruption {
    LeaseLost(LeaseEnd),
    Cancelled,
    /// It ran past [`BuildContext::build_timeout`].
    OverLimit,
}

/// Says in the build log what envstore changed from the spec as it was
/// written (dropped pip-style extras, ignored keys), as conda says it when
/// it reads the file. The notes come from parsing the text the build was
/// submitted with again; a build without one (from a lock, or submitted
/// before the text was kept) has none. Never fails the build.
async fn log_spec_notes(ctx: &BuildContext, build_id: &str, log: &crate::log::BuildLog) {
    let submitted = match ctx.db.submitted_spec(build_id).await {
        Ok(Some(Some(submitted))) => submitted,
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(build = %build_id, error = %error, "could not read the submitted spec for its notes");
            return;
        }
    };
    if let Ok(spec) =
        envstore_core::EnvironmentSpec::parse(submitted.text.as_bytes(), submitted.format)
    {
        for note in &spec.notes {
            log.line(format!("note: {note}"));
        }
    }
}

/// How long a job whose spec this worker cannot build waits before a
/// worker looks at it again: long enough that old workers do not spin on
/// it, short enough that a new one soon finds it.
const NEWER_WORKER_WAIT: Duration = Duration::from_secs(30);

/// Runs a claimed job to its end, renewing its lease meanwhile. If the
/// lease is lost (another worker took over, or no renewal succeeded in
/// time), this worker stops quietly. An error is bookkeeping that could
/// not be done (the database or the data folder failing): the caller
/// backs off.
pub async fn run_job(
    ctx: &BuildContext,
    job: &ClaimedJob,
    worker: &str,
    max_attempts: i64,
) -> Result<(), DbError> {
    let claimed_at = tokio::time::Instant::now();
    let lease = ctx.lease;
    let Some(build) = ctx.db.build(&job.build_id).await? else {
        return Err(DbError::NotFound(format!("build '{}'", job.build_id)));
    };
    let unknown = ctx.db.spec_fields_unknown_here(&build.spec_hash).await?;
    if !unknown.is_empty() {
        // A newer API accepted the spec: built here, it would lose these
        // fields under a hash that claims them. The build stays queued for
        // a worker of that release.
        let reason = format!(
            "the spec has fields this worker does not know ({}): it waits for a worker of a newer envstore",
            unknown.join(", ")
        );
        tracing::warn!(build = %build.id, worker, "{reason}");
        ctx.db
            .hand_back_job(&job.job_id, worker, NEWER_WORKER_WAIT, &reason)
            .await?;
        return Ok(());
    }
    if !ctx.db.start_build(&build.id).await? {
        tracing::info!(build = %build.id, "the build ended while queued (cancelled): nothing to run");
        return Ok(());
    }
    if job.attempts == 1 {
        record_queue_wait(build.created_at);
    }
    let log = ctx.logs.start(&build.id);
    include_earlier_attempts(ctx, &build.id, job.attempts, &log).await;
    log.line(format!(
        "build {} of {}/{} (attempt {}) on {worker}",
        build.id, build.namespace, build.environment, job.attempts
    ));
    log_spec_notes(ctx, &build.id, &log).await;
    let recorder = PhaseRecorder::new(log.clone());
    let current_lock: Mutex<Option<ContentHash>> = Mutex::new(None);
    let cancelled = Arc::new(tokio::sync::Notify::new());
    let _watcher = TaskGuard::spawn(watch_for_cancel(
        ctx.db.clone(),
        build.id.clone(),
        cancelled.clone(),
    ));
    let keeper = StoppedTask::spawn({
        let (db, build_id, log) = (ctx.db.clone(), build.id.clone(), log.clone());
        let attempt = job.attempts;
        move |stopping| keep_attempt_log(db, build_id, attempt, log, stopping)
    });
    let (lost_sender, lost) = tokio::sync::oneshot::channel();
    let renewer = TaskGuard::spawn({
        let db = ctx.db.clone();
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
        ctx.build_timeout,
        run_steps(ctx, &build, worker, &log, &recorder, &current_lock),
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
            keeper.stop().await;
            log.line(format!(
                "lost the job's lease ({}): stopping",
                end.describe()
            ));
            // Best effort: a newer attempt's kept log is never replaced.
            let _ = ctx
                .db
                .save_attempt_log(&build.id, job.attempts, &log.tail(KEPT_LOG_BYTES))
                .await;
            ctx.logs.finish(&build.id);
            return Ok(());
        }
        Err(interruption @ (Interruption::Cancelled | Interruption::OverLimit)) => {
            keeper.stop().await;
            let (status, message) = match interruption {
                Interruption::OverLimit => (
                    BuildStatus::Failed,
                    format!(
                        "the build exceeded its limit of {} while {}",
                        format_limit(ctx.build_timeout),
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
                remove_unfinished_prefix(ctx, &lock_hash, worker, &log).await?;
            }
            let outcome = BuildOutcome {
                status,
                lock_hash: None,
                lock_reused: false,
                prefix_reused: false,
                phases: recorder.snapshot(),
                error: Some(message),
            };
            finish(ctx, job, worker, &log, &outcome).await?;
            record_duration(outcome.status, claimed_at.elapsed());
            return Ok(());
        }
    };
    // Stopped, not aborted: a save in flight would land after the end
    // removes the kept log, and the next attempt would take this one for
    // a worker that stopped.
    keeper.stop().await;
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
            let message = ctx.allowlist.redact_text(&error_chain(&error));
            log.line(format!(
                "error (will retry in {}s): {message}",
                delay.as_secs()
            ));
            publish_log(ctx, &keys::attempt_log(&build.id, job.attempts), &log).await;
            record_while_held(ctx, job, worker, "the retry", || {
                ctx.db.retry_job(&job.job_id, delay, &message)
            })
            .await?;
            forget_attempt_log(ctx, &build.id, job.attempts).await;
            ctx.logs.finish(&build.id);
            announce(ctx, &build.id).await;
            return Ok(());
        }
        Err(error) => {
            let message = match disk_full_message(&error) {
                Some(message) => message,
                None => ctx.allowlist.redact_text(&error_chain(&error)),
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
    if let Some(lock_hash) = outcome
        .lock_hash
        .filter(|_| outcome.status == BuildStatus::Succeeded)
    {
        point_ahead(ctx, &build, &lock_hash).await?;
    }
    finish(ctx, job, worker, &log, &outcome).await?;
    record_duration(outcome.status, claimed_at.elapsed());
    if outcome.status == BuildStatus::Succeeded {
        point_current(ctx, &build).await?;
    }
    Ok(())
}

/// Ends the build with `outcome`: its end goes into the log, the log is
/// published, the end recorded, and followers are told at once.
async fn finish(
    ctx: &BuildContext,
    job: &ClaimedJob,
    worker: &str,
    log: &BuildLog,
    outcome: &BuildOutcome,
) -> Result<(), DbError> {
    log.event(ProgressEvent::End {
        status: outcome.status,
        error: outcome.error.clone(),
    });
    publish_build_log(ctx, &job.build_id, log).await;
    record_while_held(ctx, job, worker, "the build's end", || {
        ctx.db.finish_build(&job.build_id, outcome)
    })
    .await?;
    forget_attempt_log(ctx, &job.build_id, job.attempts).await;
    ctx.logs.finish(&job.build_id);
    announce(ctx, &job.build_id).await;
    Ok(())
}

/// Records how long a build waited for its first start; a clock behind the
/// API node's counts as no wait.
fn record_queue_wait(created_at_millis: i64) {
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    let waited = now_millis.saturating_sub(created_at_millis).max(0);
    metrics::histogram!(QUEUE_WAIT_METRIC).record(waited as f64 / 1000.0);
}

/// Records how long the attempt that ended the build ran.
fn record_duration(status: BuildStatus, ran: Duration) {
    metrics::histogram!(BUILD_DURATION_METRIC, "status" => status.as_str())
        .record(ran.as_secs_f64());
}

/// Tells the followers of a build that it changed state (best effort: they
/// poll as well).
async fn announce(ctx: &BuildContext, build_id: &str) {
    if let Err(error) = ctx.db.announce_build_change(build_id).await {
        tracing::debug!(build = %build_id, error = %error_chain(&error), "failed to announce a build's end");
    }
}

/// Publishes what is left of a build the claim just ended at its attempt
/// limit: the log its last attempt kept in the database, as that attempt's
/// log and as the build's, with the reason at the end.
pub async fn close_at_limit(
    ctx: &BuildContext,
    job: &ClaimedJob,
    message: &str,
) -> Result<(), DbError> {
    let leftover = ctx.db.attempt_log(&job.build_id).await?;
    let mut text = match &leftover {
        Some(left) => {
            let text = stopped_attempt_text(&left.text, left.attempt);
            publish_text(
                ctx,
                &keys::attempt_log(&job.build_id, left.attempt),
                text.clone(),
            )
            .await;
            text
        }
        None => String::new(),
    };
    text.push_str(&format!("build failed: {message}\n"));
    publish_text(ctx, &keys::build_log(&job.build_id), text).await;
    if let Some(left) = leftover {
        ctx.db
            .remove_attempt_log(&job.build_id, left.attempt)
            .await?;
    }
    announce(ctx, &job.build_id).await;
    Ok(())
}

/// Puts the logs of earlier attempts before this one's. An attempt whose
/// worker stopped left its log in the database only: it is published as
/// that attempt's log first.
async fn include_earlier_attempts(
    ctx: &BuildContext,
    build_id: &str,
    attempt: i64,
    log: &BuildLog,
) {
    let leftover = match ctx.db.attempt_log(build_id).await {
        Ok(leftover) => leftover.filter(|left| left.attempt < attempt),
        Err(error) => {
            tracing::warn!(build = %build_id, error = %error_chain(&error), "failed to read the log of a stopped attempt");
            None
        }
    };
    if let Some(left) = leftover {
        let text = stopped_attempt_text(&left.text, left.attempt);
        publish_text(
            ctx,
            &keys::attempt_log(build_id, left.attempt),
            text.clone(),
        )
        .await;
        log.include_earlier(&text);
        return;
    }
    // The newest earlier attempt's log already holds the ones before it.
    for earlier in (1..attempt).rev() {
        if let Ok(text) = ctx.store.get(&keys::attempt_log(build_id, earlier)).await {
            log.include_earlier(&String::from_utf8_lossy(&text));
            break;
        }
    }
}

/// Records the end of an attempt, trying again with backoff while the
/// database or its disk fails, for as long as the job is still this
/// worker's (nobody took it over) and at most the build limit.
async fn record_while_held<F, Fut>(
    ctx: &BuildContext,
    job: &ClaimedJob,
    worker: &str,
    what: &str,
    mut record: F,
) -> Result<(), DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), DbError>>,
{
    let give_up = tokio::time::Instant::now() + ctx.build_timeout;
    let mut backoff = Backoff::new();
    loop {
        let error = match record().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let (delay, failures) = backoff.failed();
        if tokio::time::Instant::now() + delay > give_up {
            return Err(error);
        }
        if Backoff::worth_a_line(delay, failures) {
            tracing::warn!(
                build = %job.build_id,
                failures,
                retry_in_seconds = delay.as_secs(),
                error = %error_chain(&error),
                "failed to record {what}: trying again"
            );
        }
        tokio::time::sleep(delay).await;
        if let Ok(false) = ctx.db.job_held_by(&job.job_id, worker).await {
            tracing::warn!(build = %job.build_id, "another worker took the job over: {what} is not recorded");
            return Ok(());
        }
    }
}

/// Drops the attempt's log kept in the database once it is published.
async fn forget_attempt_log(ctx: &BuildContext, build_id: &str, attempt: i64) {
    if let Err(error) = ctx.db.remove_attempt_log(build_id, attempt).await {
        tracing::warn!(build = %build_id, error = %error_chain(&error), "failed to remove a kept attempt log");
    }
}

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

/// Keeps the attempt's log (its last MiB) in the database as it goes, so a
/// worker that is killed leaves it for the attempt that takes over.
async fn keep_attempt_log(
    db: Database,
    build_id: String,
    attempt: i64,
    log: Arc<BuildLog>,
    mut stopping: tokio::sync::oneshot::Receiver<()>,
) {
    let mut kept = None;
    let mut failures = 0u64;
    loop {
        tokio::select! {
            _ = &mut stopping => return,
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

/// A limit as people write it: `1 h`, `30 min`, `90 s`.
fn format_limit(limit: Duration) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_over_limit_message_names_the_limit() {
        assert_eq!(format_limit(Duration::from_secs(3600)), "1 h");
        assert_eq!(format_limit(Duration::from_secs(1800)), "30 min");
        assert_eq!(format_limit(Duration::from_secs(3)), "3 s");
        assert_eq!(format_limit(Duration::from_millis(1500)), "1.5 s");
    }
}

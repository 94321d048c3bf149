//! The job queue. A job is claimed in one short statement that writes a lease
//! (`locked_until`); the worker renews the lease while it builds, and a job
//! whose lease ran out is claimable again. No transaction stays open for the
//! length of a build.

use std::time::Duration;

use envstore_core::BuildStatus;

use crate::builds::parse_status;
use crate::{Database, DbError, Dialect, now_millis};

/// The PostgreSQL channel on which submissions announce new jobs.
pub(crate) const JOBS_CHANNEL: &str = "envstore_jobs";

/// Wakes workers when a job is queued anywhere (PostgreSQL LISTEN/NOTIFY).
/// Workers poll as well, so a missed notification only delays a build.
pub struct JobListener {
    listener: sqlx::postgres::PgListener,
}

impl JobListener {
    /// Waits for the next notification: true for a job, false when the
    /// connection was lost and made again (notifications sent meanwhile are
    /// gone, so the caller should look for jobs). An error means the
    /// listener could not reconnect; make a new one.
    pub async fn recv(&mut self) -> Result<bool, DbError> {
        Ok(self.listener.try_recv().await?.is_some())
    }
}

#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: String,
    pub build_id: String,
    /// How many times this job has been claimed, this claim included.
    pub attempts: i64,
    /// Set when the claim found the job's last attempt abandoned (its lease
    /// ran out) with no attempt left: the claim already ended the build
    /// `failed` with this message, and nothing is to be run.
    pub failed_at_limit: Option<String>,
}

/// The log of a build's running attempt as last written to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLog {
    pub attempt: i64,
    pub text: String,
}

/// A job a claim took: what [`CLAIM_SQLITE`] and [`CLAIM_POSTGRES`] return.
#[derive(sqlx::FromRow)]
struct ClaimedJobRow {
    id: String,
    build_id: String,
    attempts: i64,
}

/// A job ended at its attempt limit: what [`EXHAUST_SQLITE`] and
/// [`EXHAUST_POSTGRES`] return.
#[derive(sqlx::FromRow)]
struct ExhaustedJobRow {
    id: String,
    build_id: String,
    attempts: i64,
    stopped: i64,
}

/// An `attempt_logs` row.
#[derive(sqlx::FromRow)]
struct AttemptLogRow {
    attempt: i64,
    text: String,
}

/// How many builds have one status.
#[derive(sqlx::FromRow)]
struct StatusCountRow {
    status: String,
    builds: i64,
}

/// A job whose worker stopped on its last allowed attempt: ended `failed`
/// in the same transaction that found it, so two workers cannot both decide.
const EXHAUST_SQLITE: &str = "UPDATE jobs SET state = 'done', worker = $1, locked_until = NULL, stopped = stopped + 1 \
     WHERE id = (SELECT id FROM jobs \
        WHERE state = 'running' AND locked_until < $2 AND attempts >= $3 \
        ORDER BY run_after, created_at LIMIT 1) \
     AND state = 'running' AND locked_until < $2 \
     RETURNING id, build_id, attempts, stopped";

const EXHAUST_POSTGRES: &str = "UPDATE jobs SET state = 'done', worker = $1, locked_until = NULL, stopped = stopped + 1 \
     WHERE id = (SELECT id FROM jobs \
        WHERE state = 'running' AND locked_until < $2 AND attempts >= $3 \
        ORDER BY run_after, created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
     AND state = 'running' AND locked_until < $2 \
     RETURNING id, build_id, attempts, stopped";

const CLAIM_SQLITE: &str = "UPDATE jobs SET state = 'running', worker = $1, locked_until = $2, \
     attempts = attempts + 1, stopped = stopped + CASE WHEN state = 'running' THEN 1 ELSE 0 END \
     WHERE id = (SELECT id FROM jobs \
        WHERE (state = 'queued' AND run_after <= $3) OR (state = 'running' AND locked_until < $3 AND attempts < $4) \
        ORDER BY run_after, created_at LIMIT 1) \
     RETURNING id, build_id, attempts";

const CLAIM_POSTGRES: &str = "UPDATE jobs SET state = 'running', worker = $1, locked_until = $2, \
     attempts = attempts + 1, stopped = stopped + CASE WHEN state = 'running' THEN 1 ELSE 0 END \
     WHERE id = (SELECT id FROM jobs \
        WHERE (state = 'queued' AND run_after <= $3) OR (state = 'running' AND locked_until < $3 AND attempts < $4) \
        ORDER BY run_after, created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, build_id, attempts";

/// Why a build that reached its attempt limit through stopped workers failed.
fn stopped_message(attempts: i64, stopped: i64, phase: Option<&str>) -> String {
    let times = |count: i64| {
        if count == 1 {
            "once".to_owned()
        } else {
            format!("{count} times")
        }
    };
    let stopped_part = if stopped >= attempts {
        format!(
            "the build's worker stopped {} while building it",
            times(stopped)
        )
    } else {
        format!(
            "the build was tried {} (its attempt limit) and its worker stopped {} while building it",
            times(attempts),
            times(stopped)
        )
    };
    let phase = phase.map_or_else(|| "starting".to_owned(), str::to_owned);
    format!(
        "{stopped_part} (killed, crashed or out of contact); the last attempt was in phase '{phase}'"
    )
}

/// The phase a build recorded last, from its `phases` column.
fn last_phase(phases: &str) -> Option<String> {
    let phases: serde_json::Value = serde_json::from_str(phases).ok()?;
    phases
        .as_array()?
        .last()?
        .get("phase")?
        .as_str()
        .map(str::to_owned)
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Database {
    /// Claims the oldest ready job, or one whose worker stopped renewing.
    /// A job whose worker stopped on its last allowed attempt (`attempts`
    /// already `max_attempts`) is not run again: in the same transaction its
    /// build ends `failed` with a message saying so, and the claim returns it
    /// with [`ClaimedJob::failed_at_limit`] set.
    pub async fn claim_job(
        &self,
        worker: &str,
        lease: Duration,
        max_attempts: i64,
    ) -> Result<Option<ClaimedJob>, DbError> {
        let now = now_millis();
        let (exhaust, claim) = match self.dialect {
            Dialect::Sqlite => (EXHAUST_SQLITE, CLAIM_SQLITE),
            Dialect::Postgres => (EXHAUST_POSTGRES, CLAIM_POSTGRES),
        };
        let mut transaction = self.pool.begin().await?;
        let exhausted = sqlx::query_as::<_, ExhaustedJobRow>(exhaust)
            .bind(worker)
            .bind(now)
            .bind(max_attempts)
            .fetch_optional(&mut *transaction)
            .await?;
        if let Some(ExhaustedJobRow {
            id: job_id,
            build_id,
            attempts,
            stopped,
        }) = exhausted
        {
            let phases: Option<String> =
                sqlx::query_scalar("SELECT phases FROM builds WHERE id = $1")
                    .bind(&build_id)
                    .fetch_optional(&mut *transaction)
                    .await?;
            let message = stopped_message(
                attempts,
                stopped,
                phases.as_deref().and_then(last_phase).as_deref(),
            );
            sqlx::query(
                "UPDATE builds SET status = 'failed', error = $2, finished_at = $3 \
                 WHERE id = $1 AND status IN ('queued', 'running')",
            )
            .bind(&build_id)
            .bind(&message)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            return Ok(Some(ClaimedJob {
                job_id,
                build_id,
                attempts,
                failed_at_limit: Some(message),
            }));
        }
        let row = sqlx::query_as::<_, ClaimedJobRow>(claim)
            .bind(worker)
            .bind(now + millis(lease))
            .bind(now)
            .bind(max_attempts)
            .fetch_optional(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(row.map(|row| ClaimedJob {
            job_id: row.id,
            build_id: row.build_id,
            attempts: row.attempts,
            failed_at_limit: None,
        }))
    }

    /// Whether `worker` still holds the job: nobody took it over, even if
    /// its lease ran out meanwhile. For recording an outcome late.
    pub async fn job_held_by(&self, job_id: &str, worker: &str) -> Result<bool, DbError> {
        let row = sqlx::query(
            "SELECT 1 AS held FROM jobs WHERE id = $1 AND worker = $2 AND state = 'running'",
        )
        .bind(job_id)
        .bind(worker)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Keeps the log of a build's running attempt (replacing what the
    /// attempt wrote before), so it outlives the worker. A stale attempt
    /// never replaces a newer one's log.
    pub async fn save_attempt_log(
        &self,
        build_id: &str,
        attempt: i64,
        text: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO attempt_logs (build_id, attempt, text, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (build_id) DO UPDATE SET attempt = excluded.attempt, text = excluded.text, \
             updated_at = excluded.updated_at \
             WHERE attempt_logs.attempt <= excluded.attempt",
        )
        .bind(build_id)
        .bind(attempt)
        .bind(text)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The log an unfinished attempt of the build left, if any.
    pub async fn attempt_log(&self, build_id: &str) -> Result<Option<AttemptLog>, DbError> {
        let row = sqlx::query_as::<_, AttemptLogRow>(
            "SELECT attempt, text FROM attempt_logs WHERE build_id = $1",
        )
        .bind(build_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| AttemptLog {
            attempt: row.attempt,
            text: row.text,
        }))
    }

    /// Forgets the kept log of `attempt` once it is published; a newer
    /// attempt's log is left alone.
    pub async fn remove_attempt_log(&self, build_id: &str, attempt: i64) -> Result<(), DbError> {
        sqlx::query("DELETE FROM attempt_logs WHERE build_id = $1 AND attempt <= $2")
            .bind(build_id)
            .bind(attempt)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A listener for new jobs, where the database can push them
    /// (PostgreSQL); None for SQLite, whose workers share a process with the
    /// API and are woken directly.
    pub async fn job_listener(&self) -> Result<Option<JobListener>, DbError> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url)
            .await
            .map_err(DbError::Connect)?;
        listener.listen(JOBS_CHANNEL).await?;
        Ok(Some(JobListener { listener }))
    }

    /// Extends the lease; false when the job is no longer this worker's.
    pub async fn renew_lease(
        &self,
        job_id: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, DbError> {
        let updated = sqlx::query(
            "UPDATE jobs SET locked_until = $3 WHERE id = $1 AND worker = $2 AND state = 'running'",
        )
        .bind(job_id)
        .bind(worker)
        .bind(now_millis() + millis(lease))
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Puts a job back in the queue to be retried after `delay`; its build
    /// shows as queued again meanwhile.
    pub async fn retry_job(
        &self,
        job_id: &str,
        delay: Duration,
        error: &str,
    ) -> Result<(), DbError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("UPDATE builds SET status = 'queued' WHERE id = (SELECT build_id FROM jobs WHERE id = $1)")
            .bind(job_id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "UPDATE jobs SET state = 'queued', worker = NULL, locked_until = NULL, run_after = $2, \
             last_error = $3 WHERE id = $1",
        )
        .bind(job_id)
        .bind(now_millis() + millis(delay))
        .bind(error)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Gives a claimed job back untried, for another worker after `delay`:
    /// the claim does not count as an attempt, and its build never left
    /// `queued`. False when `worker` no longer holds the job.
    pub async fn hand_back_job(
        &self,
        job_id: &str,
        worker: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<bool, DbError> {
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'queued', worker = NULL, locked_until = NULL, run_after = $3, \
             attempts = attempts - 1, last_error = $4 WHERE id = $1 AND worker = $2 AND state = 'running'",
        )
        .bind(job_id)
        .bind(worker)
        .bind(now_millis() + millis(delay))
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Why a queued build's job waits, as the worker that last gave it back
    /// said ([`Self::retry_job`], [`Self::hand_back_job`]); None when it is
    /// not queued or was never taken up.
    pub async fn queued_job_reason(&self, build_id: &str) -> Result<Option<String>, DbError> {
        let reason: Option<Option<String>> = sqlx::query_scalar(
            "SELECT last_error FROM jobs WHERE build_id = $1 AND state = 'queued'",
        )
        .bind(build_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(reason.flatten())
    }

    /// Jobs waiting to be claimed; for metrics and tests.
    pub async fn queued_jobs(&self) -> Result<i64, DbError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) AS queued FROM jobs WHERE state = 'queued'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// How many builds are in each status, for metrics read at scrape time;
    /// statuses without builds are absent.
    pub async fn build_counts(&self) -> Result<Vec<(BuildStatus, i64)>, DbError> {
        let rows = sqlx::query_as::<_, StatusCountRow>(
            "SELECT status, COUNT(*) AS builds FROM builds GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| Ok((parse_status("builds.status", &row.status)?, row.builds)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use envstore_core::{ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
    use rattler_conda_types::Subdir;

    use super::*;
    use crate::testing::databases;

    fn spec(dependencies: &str) -> envstore_core::CanonicalSpec {
        let allow = ChannelAllowlist::new(vec![NamedChannel::parse("demo=file:///demo").unwrap()]);
        EnvironmentSpec::parse(
            format!("dependencies: [{dependencies}]").as_bytes(),
            SpecFormat::Yaml,
        )
        .unwrap()
        .canonicalize(&allow, Subdir::Linux64)
        .unwrap()
    }

    /// `team/env` with one queued build of `python`.
    async fn one_queued_build(db: &Database) -> crate::SubmittedBuild {
        let ns = "team".parse().unwrap();
        db.create_namespace(&ns).await.unwrap();
        db.submit_build(&ns, &"env".parse().unwrap(), &spec("python"), None)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_job_handed_back_is_not_an_attempt_and_waits_its_delay() {
        for db in databases().await {
            let submitted = one_queued_build(&db).await;
            let claimed = db
                .claim_job("old", Duration::from_secs(60), 3)
                .await
                .unwrap()
                .unwrap();
            assert!(
                !db.hand_back_job(&claimed.job_id, "other", Duration::ZERO, "not mine")
                    .await
                    .unwrap(),
                "only the holder hands a job back"
            );
            assert!(
                db.hand_back_job(
                    &claimed.job_id,
                    "old",
                    Duration::from_millis(300),
                    "needs a newer worker"
                )
                .await
                .unwrap()
            );
            assert_eq!(db.queued_jobs().await.unwrap(), 1);
            assert_eq!(
                db.queued_job_reason(&submitted.build.id).await.unwrap(),
                Some("needs a newer worker".to_owned())
            );
            assert!(
                db.claim_job("new", Duration::from_secs(60), 3)
                    .await
                    .unwrap()
                    .is_none(),
                "not before its delay"
            );
            tokio::time::sleep(Duration::from_millis(400)).await;
            let again = db
                .claim_job("new", Duration::from_secs(60), 3)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (again.build_id.as_str(), again.attempts),
                (submitted.build.id.as_str(), 1)
            );
            assert_eq!(
                db.queued_job_reason(&submitted.build.id).await.unwrap(),
                None,
                "taken up again, it is no longer waiting"
            );
            let build = db.build(&submitted.build.id).await.unwrap().unwrap();
            assert_eq!(build.status, BuildStatus::Queued);
            assert_eq!(
                db.spec_fields_unknown_here(&build.spec_hash).await.unwrap(),
                Vec::<String>::new()
            );
        }
    }

    #[tokio::test]
    async fn a_job_is_claimed_once_until_its_lease_runs_out() {
        for db in databases().await {
            let submitted = one_queued_build(&db).await;
            assert!(!submitted.joined);

            let first = db
                .claim_job("w1", Duration::from_millis(50), 3)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(first.build_id, submitted.build.id);
            assert_eq!(first.attempts, 1);
            assert!(
                db.claim_job("w2", Duration::from_secs(60), 3)
                    .await
                    .unwrap()
                    .is_none()
            );

            tokio::time::sleep(Duration::from_millis(80)).await;
            let second = db
                .claim_job("w2", Duration::from_secs(60), 3)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(second.job_id, first.job_id);
            assert_eq!(second.attempts, 2);
            assert!(
                !db.renew_lease(&first.job_id, "w1", Duration::from_secs(60))
                    .await
                    .unwrap()
            );
            assert!(
                db.renew_lease(&first.job_id, "w2", Duration::from_secs(60))
                    .await
                    .unwrap()
            );
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn an_identical_spec_joins_the_queued_build() {
        for db in databases().await {
            let ns = "team".parse().unwrap();
            let env = "env".parse().unwrap();
            db.create_namespace(&ns).await.unwrap();
            let first = db
                .submit_build(&ns, &env, &spec("python"), None)
                .await
                .unwrap();
            let again = db
                .submit_build(&ns, &env, &spec("python"), None)
                .await
                .unwrap();
            let other = db
                .submit_build(&ns, &env, &spec("numpy"), None)
                .await
                .unwrap();
            assert!(again.joined);
            assert_eq!(again.build.id, first.build.id);
            assert!(!other.joined);
            assert_eq!(db.queued_jobs().await.unwrap(), 2);
            assert_eq!(
                db.build_counts().await.unwrap(),
                vec![(BuildStatus::Queued, 2)]
            );
            assert!(db.start_build(&first.build.id).await.unwrap());
            let mut counts = db.build_counts().await.unwrap();
            counts.sort_by_key(|(status, _)| status.as_str());
            assert_eq!(
                counts,
                vec![(BuildStatus::Queued, 1), (BuildStatus::Running, 1)]
            );
            assert!(matches!(
                db.create_namespace(&ns).await,
                Err(DbError::Conflict(_))
            ));
            db.finish().await;
        }
    }

    /// On both dialects: their claim statements differ (`SKIP LOCKED`).
    #[tokio::test]
    async fn a_job_whose_worker_stopped_on_its_last_attempt_fails_instead_of_running_again() {
        for db in databases().await {
            attempt_limit_holds(&db).await;
            db.finish().await;
        }
    }

    async fn attempt_limit_holds(db: &Database) {
        let submitted = one_queued_build(db).await;
        let short = Duration::from_millis(30);
        for attempt in 1..=3 {
            let job = db
                .claim_job(&format!("w{attempt}"), short, 3)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(job.attempts, attempt);
            assert!(job.failed_at_limit.is_none());
            if attempt == 3 {
                db.record_phases(
                    &submitted.build.id,
                    &[envstore_core::PhaseTiming {
                        phase: envstore_core::BuildPhase::Linking,
                        started_at: 1,
                        finished_at: None,
                        detail: None,
                    }],
                )
                .await
                .unwrap();
            }
            // The worker dies: its lease runs out.
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let ended = db
            .claim_job("w4", Duration::from_secs(60), 3)
            .await
            .unwrap()
            .unwrap();
        let message = ended
            .failed_at_limit
            .expect("the fourth claim ends the build instead of running it");
        assert_eq!(
            message,
            "the build's worker stopped 3 times while building it (killed, crashed or out of contact); \
             the last attempt was in phase 'linking'"
        );
        let build = db.build(&submitted.build.id).await.unwrap().unwrap();
        assert_eq!(build.status, BuildStatus::Failed);
        assert_eq!(build.error.as_deref(), Some(message.as_str()));
        assert!(
            db.claim_job("w5", Duration::from_secs(60), 3)
                .await
                .unwrap()
                .is_none(),
            "decided once"
        );
        assert_eq!(db.queued_jobs().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_retried_attempt_is_not_counted_as_a_stopped_worker() {
        for db in databases().await {
            one_queued_build(&db).await;
            let first = db
                .claim_job("w1", Duration::from_secs(60), 2)
                .await
                .unwrap()
                .unwrap();
            db.retry_job(&first.job_id, Duration::ZERO, "repodata unreachable")
                .await
                .unwrap();
            let second = db
                .claim_job("w2", Duration::from_millis(30), 2)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(second.attempts, 2);
            tokio::time::sleep(Duration::from_millis(60)).await;
            let ended = db
                .claim_job("w3", Duration::from_secs(60), 2)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                ended.failed_at_limit.as_deref(),
                Some(
                    "the build was tried 2 times (its attempt limit) and its worker stopped once while building it \
                 (killed, crashed or out of contact); the last attempt was in phase 'starting'"
                )
            );
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn an_attempt_log_is_kept_until_published() {
        for db in databases().await {
            assert_eq!(db.attempt_log("b1").await.unwrap(), None);
            db.save_attempt_log("b1", 1, "one").await.unwrap();
            db.save_attempt_log("b1", 1, "one two").await.unwrap();
            assert_eq!(
                db.attempt_log("b1").await.unwrap(),
                Some(AttemptLog {
                    attempt: 1,
                    text: "one two".into()
                })
            );
            db.save_attempt_log("b1", 2, "three").await.unwrap();
            db.save_attempt_log("b1", 1, "late").await.unwrap();
            assert_eq!(
                db.attempt_log("b1").await.unwrap().map(|log| log.text),
                Some("three".into())
            );
            db.remove_attempt_log("b1", 1).await.unwrap();
            assert_eq!(
                db.attempt_log("b1").await.unwrap().map(|log| log.attempt),
                Some(2),
                "a newer attempt's log stays"
            );
            db.remove_attempt_log("b1", 2).await.unwrap();
            assert_eq!(db.attempt_log("b1").await.unwrap(), None);
            db.finish().await;
        }
    }
}

//! The job queue. A job is claimed in one short statement that writes a lease
//! (`locked_until`); the worker renews the lease while it builds, and a job
//! whose lease ran out is claimable again. No transaction stays open for the
//! length of a build.

use std::time::Duration;

use envstore_core::BuildStatus;

use crate::{Database, DbError, Dialect, get, now_millis};

/// The PostgreSQL channel on which submissions announce new jobs.
pub(crate) const JOBS_CHANNEL: &str = "envstore_jobs";

/// Wakes workers when a job is queued anywhere (PostgreSQL LISTEN/NOTIFY).
/// Workers poll as well, so a missed notification only delays a build.
pub struct JobListener {
    listener: sqlx::postgres::PgListener,
}

impl JobListener {
    /// Waits for the next notification.
    pub async fn recv(&mut self) -> Result<(), DbError> {
        self.listener.recv().await?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: String,
    pub build_id: String,
    /// How many times this job has been claimed, this claim included.
    pub attempts: i64,
}

const CLAIM_SQLITE: &str = "UPDATE jobs SET state = 'running', worker = $1, locked_until = $2, \
     attempts = attempts + 1 \
     WHERE id = (SELECT id FROM jobs \
        WHERE (state = 'queued' AND run_after <= $3) OR (state = 'running' AND locked_until < $3) \
        ORDER BY run_after, created_at LIMIT 1) \
     RETURNING id, build_id, attempts";

const CLAIM_POSTGRES: &str = "UPDATE jobs SET state = 'running', worker = $1, locked_until = $2, \
     attempts = attempts + 1 \
     WHERE id = (SELECT id FROM jobs \
        WHERE (state = 'queued' AND run_after <= $3) OR (state = 'running' AND locked_until < $3) \
        ORDER BY run_after, created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, build_id, attempts";

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Database {
    /// Claims the oldest ready job, or one whose worker stopped renewing.
    pub async fn claim_job(&self, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>, DbError> {
        let now = now_millis();
        let sql = match self.dialect {
            Dialect::Sqlite => CLAIM_SQLITE,
            Dialect::Postgres => CLAIM_POSTGRES,
        };
        let row = sqlx::query(sql)
            .bind(worker)
            .bind(now + millis(lease))
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(ClaimedJob {
                job_id: get(&row, "id")?,
                build_id: get(&row, "build_id")?,
                attempts: get(&row, "attempts")?,
            })
        })
        .transpose()
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
    pub async fn renew_lease(&self, job_id: &str, worker: &str, lease: Duration) -> Result<bool, DbError> {
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
    pub async fn retry_job(&self, job_id: &str, delay: Duration, error: &str) -> Result<(), DbError> {
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

    /// Jobs waiting to be claimed; for metrics and tests.
    pub async fn queued_jobs(&self) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT COUNT(*) AS queued FROM jobs WHERE state = 'queued'")
            .fetch_one(&self.pool)
            .await?;
        get(&row, "queued")
    }

    /// How many builds are in each status, for metrics read at scrape time;
    /// statuses without builds are absent.
    pub async fn build_counts(&self) -> Result<Vec<(BuildStatus, i64)>, DbError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS builds FROM builds GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let status: String = get(row, "status")?;
                let status = status.parse().map_err(|error: envstore_core::UnknownStatus| DbError::Corrupt {
                    column: "builds.status",
                    reason: error.to_string(),
                })?;
                Ok((status, get(row, "builds")?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use envstore_core::{ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
    use rattler_conda_types::Subdir;

    use super::*;

    async fn database() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("envstore.db").display());
        (dir, Database::connect(&url).await.unwrap())
    }

    fn spec(dependencies: &str) -> envstore_core::CanonicalSpec {
        let allow = ChannelAllowlist::new(vec![NamedChannel::parse("demo=file:///demo").unwrap()]);
        EnvironmentSpec::parse(format!("dependencies: [{dependencies}]").as_bytes(), SpecFormat::Yaml)
            .unwrap()
            .canonicalize(&allow, Subdir::Linux64)
            .unwrap()
    }

    #[tokio::test]
    async fn a_job_is_claimed_once_until_its_lease_runs_out() {
        let (_dir, db) = database().await;
        let ns = "team".parse().unwrap();
        db.create_namespace(&ns).await.unwrap();
        let submitted = db.submit_build(&ns, &"env".parse().unwrap(), &spec("python"), None).await.unwrap();
        assert!(!submitted.joined);

        let first = db.claim_job("w1", Duration::from_millis(50)).await.unwrap().unwrap();
        assert_eq!(first.build_id, submitted.build.id);
        assert_eq!(first.attempts, 1);
        assert!(db.claim_job("w2", Duration::from_secs(60)).await.unwrap().is_none());

        tokio::time::sleep(Duration::from_millis(80)).await;
        let second = db.claim_job("w2", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(second.job_id, first.job_id);
        assert_eq!(second.attempts, 2);
        assert!(!db.renew_lease(&first.job_id, "w1", Duration::from_secs(60)).await.unwrap());
        assert!(db.renew_lease(&first.job_id, "w2", Duration::from_secs(60)).await.unwrap());
    }

    #[tokio::test]
    async fn an_identical_spec_joins_the_queued_build() {
        let (_dir, db) = database().await;
        let ns = "team".parse().unwrap();
        let env = "env".parse().unwrap();
        db.create_namespace(&ns).await.unwrap();
        let first = db.submit_build(&ns, &env, &spec("python"), None).await.unwrap();
        let again = db.submit_build(&ns, &env, &spec("python"), None).await.unwrap();
        let other = db.submit_build(&ns, &env, &spec("numpy"), None).await.unwrap();
        assert!(again.joined);
        assert_eq!(again.build.id, first.build.id);
        assert!(!other.joined);
        assert_eq!(db.queued_jobs().await.unwrap(), 2);
        assert_eq!(db.build_counts().await.unwrap(), vec![(BuildStatus::Queued, 2)]);
        assert!(db.start_build(&first.build.id).await.unwrap());
        let mut counts = db.build_counts().await.unwrap();
        counts.sort_by_key(|(status, _)| status.as_str());
        assert_eq!(counts, vec![(BuildStatus::Queued, 1), (BuildStatus::Running, 1)]);
        assert!(matches!(db.create_namespace(&ns).await, Err(DbError::Conflict(_))));
    }
}

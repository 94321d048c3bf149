use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use envstore_core::error_chain;

use crate::backoff::Backoff;
use crate::context::BuildContext;
use crate::job::{close_at_limit, run_job};

#[derive(Debug, Clone)]
pub struct WorkerPoolConfig {
    pub workers: usize,
    /// How often idle workers look for jobs they were not woken for.
    pub poll_interval: Duration,
    /// Claims of one job before a transient failure becomes final.
    pub max_attempts: i64,
}

impl Default for WorkerPoolConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
            poll_interval: Duration::from_secs(1),
            max_attempts: 3,
        }
    }
}

/// Workers in this process. They wake when told a job was queued, and poll
/// for jobs queued elsewhere or whose lease ran out.
pub struct WorkerPool {
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    handles: Vec<JoinHandle<()>>,
    /// How long a shutdown waits for running builds: their own limit.
    build_timeout: Duration,
}

/// Time a shutdown allows beyond the build limit, for a build that ran
/// into it to record its failure.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl WorkerPool {
    pub fn start(context: Arc<BuildContext>, config: WorkerPoolConfig) -> Self {
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
        let mut handles: Vec<JoinHandle<()>> = (0..config.workers)
            .map(|index| {
                let worker = format!("{host}-{}-{index}", std::process::id());
                tokio::spawn(work(
                    context.clone(),
                    config.clone(),
                    worker,
                    wake.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        handles.push(tokio::spawn(forward_notifications(
            context.db.clone(),
            wake.clone(),
            shutdown.clone(),
        )));
        Self {
            wake,
            shutdown,
            handles,
            build_timeout: context.build_timeout,
        }
    }

    /// Tells idle workers that a job was queued.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stops taking jobs and waits for running builds to end, at most for
    /// the build limit (and a short grace to record a build that ran into
    /// it); builds still running then are abandoned: their leases run out
    /// and another worker takes them over.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let deadline =
            tokio::time::Instant::now() + self.build_timeout.saturating_add(SHUTDOWN_GRACE);
        let mut abandoned = 0;
        for mut handle in self.handles {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
                abandoned += 1;
            }
        }
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "stopped waiting for running builds at the build limit"
            );
        }
    }
}

/// Failures of a worker's claims and bookkeeping, for alerts: a worker
/// that backs off is not building.
const FAILURES_METRIC: &str = "envstore_worker_failures_total";

async fn work(
    context: Arc<BuildContext>,
    config: WorkerPoolConfig,
    worker: String,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        let failure = match context
            .db
            .claim_job(&worker, context.lease, config.max_attempts)
            .await
        {
            Ok(Some(job)) => {
                let ran = match &job.failed_at_limit {
                    Some(message) => {
                        tracing::warn!(worker, build = %job.build_id, attempts = job.attempts, "{message}: the build failed");
                        close_at_limit(&context, &job, message).await
                    }
                    None => {
                        tracing::info!(worker, build = %job.build_id, attempt = job.attempts, "claimed a build");
                        run_job(&context, &job, &worker, config.max_attempts).await
                    }
                };
                match ran {
                    Ok(()) => {
                        if backoff.succeeded() {
                            tracing::info!(
                                worker,
                                "recovered: the database and data folder answer again"
                            );
                        }
                        continue;
                    }
                    Err(error) => Some(("build bookkeeping failed", error)),
                }
            }
            Ok(None) => {
                if backoff.succeeded() {
                    tracing::info!(worker, "recovered: the database answers again");
                }
                None
            }
            Err(error) => Some(("failed to claim a job", error)),
        };
        if let Some((what, error)) = failure {
            let (delay, failures) = backoff.failed();
            metrics::counter!(FAILURES_METRIC).increment(1);
            if Backoff::worth_a_line(delay, failures) {
                tracing::warn!(
                    worker,
                    failures,
                    retry_in_seconds = delay.as_secs(),
                    error = %error_chain(&error),
                    "{what}: backing off"
                );
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

/// Turns the database's job notifications (PostgreSQL) into wake-ups. A
/// lost connection is made again with backoff, and the workers are woken
/// once it is back: jobs may have been queued meanwhile. They poll anyway,
/// so a gap only delays builds.
async fn forward_notifications(
    db: envstore_db::Database,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = db.job_listener() => connected,
        };
        let error = match connected {
            Ok(None) => return,
            Ok(Some(mut listener)) => {
                if backoff.succeeded() {
                    tracing::info!("listening for job notifications again");
                    wake.notify_waiters();
                }
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        received = listener.recv() => match received {
                            Ok(true) => wake.notify_waiters(),
                            Ok(false) => {
                                tracing::info!("the job notification connection was lost and made again");
                                wake.notify_waiters();
                            }
                            Err(error) => break error,
                        },
                    }
                }
            }
            Err(error) => error,
        };
        let (delay, failures) = backoff.failed();
        if Backoff::worth_a_line(delay, failures) {
            tracing::warn!(
                error = %error_chain(&error),
                retry_in_seconds = delay.as_secs(),
                "lost the job notifications: polling until they are back"
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a NOTIFY on the jobs channel wakes the workers within a few
    /// seconds.
    async fn wakes(wake: &Notify, pool: &sqlx::PgPool) -> bool {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        sqlx::query("SELECT pg_notify('envstore_jobs', '')")
            .execute(pool)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .is_ok()
    }

    async fn listener_pids(pool: &sqlx::PgPool, database: &str) -> Vec<i32> {
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%' ORDER BY pid")
            .bind(database)
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// Needs PostgreSQL: `eval "$(scripts/test-services.sh start)"`.
    #[tokio::test]
    async fn workers_listen_again_after_the_listener_connection_is_killed() {
        let Ok(server) = std::env::var("ENVSTORE_TEST_DATABASE") else {
            eprintln!("skipped: ENVSTORE_TEST_DATABASE names no PostgreSQL server");
            return;
        };
        // A database of its own, so only this test's listener is killed.
        let name = format!("envstore_listen_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&server).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&format!("/{name}"));
        let db = envstore_db::Database::connect(url.as_str()).await.unwrap();
        let pool = sqlx::PgPool::connect(url.as_str()).await.unwrap();
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let forwarder = tokio::spawn(forward_notifications(db, wake.clone(), shutdown.clone()));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !wakes(&wake, &pool).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the workers never heard of a job"
            );
        }
        let before = listener_pids(&admin, &name).await;
        assert_eq!(before.len(), 1, "{before:?}");
        // The connection is killed while the database refuses new ones (as
        // when PostgreSQL restarts), so reconnecting fails at first.
        let allow =
            |allowed: bool| format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS {allowed}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(allow(false)))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(before[0])
            .execute(&admin)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(allow(true)))
            .execute(&admin)
            .await
            .unwrap();

        // A new listening connection comes, and notifications wake workers again.
        loop {
            let now = listener_pids(&admin, &name).await;
            if now.len() == 1 && now != before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nobody listens again: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Past the one wake-up that follows a reconnection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            wakes(&wake, &pool).await,
            "a job queued after the reconnection wakes the workers"
        );

        shutdown.cancel();
        forwarder.await.unwrap();
        drop(pool);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .execute(&admin)
        .await
        .unwrap();
    }
}

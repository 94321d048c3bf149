use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error_chain;
use crate::pipeline::BuildContext;

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
            workers: std::thread::available_parallelism().map(usize::from).unwrap_or(2),
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
            context.clone(),
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
        let deadline = tokio::time::Instant::now() + self.build_timeout.saturating_add(SHUTDOWN_GRACE);
        let mut abandoned = 0;
        for mut handle in self.handles {
            if tokio::time::timeout_at(deadline, &mut handle).await.is_err() {
                handle.abort();
                abandoned += 1;
            }
        }
        if abandoned > 0 {
            tracing::warn!(abandoned, "stopped waiting for running builds at the build limit");
        }
    }
}

async fn work(
    context: Arc<BuildContext>,
    config: WorkerPoolConfig,
    worker: String,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match context.db.claim_job(&worker, context.lease).await {
            Ok(Some(job)) => {
                tracing::info!(worker, build = %job.build_id, attempt = job.attempts, "claimed a build");
                context.run_job(&job, &worker, config.max_attempts).await;
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(worker, error = %error_chain(&error), "failed to claim a job"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

/// Turns the database's job notifications (PostgreSQL) into wake-ups.
async fn forward_notifications(context: Arc<BuildContext>, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut listener = match context.db.job_listener().await {
        Ok(Some(listener)) => listener,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "cannot listen for jobs: polling only");
            return;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = listener.recv() => match received {
                Ok(()) => wake.notify_waiters(),
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "lost the job notifications: polling only");
                    return;
                }
            },
        }
    }
}

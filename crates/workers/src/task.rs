//! Background tasks tied to the build that needs them.

/// A background task that stops when its guard is dropped, so a lease is
/// never renewed by a build that was abandoned half-way (its future dropped
/// because the job's lease was lost or the build was cancelled).
pub(crate) struct TaskGuard(tokio::task::JoinHandle<()>);

impl TaskGuard {
    pub(crate) fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A background task that is asked to stop and waited for, so what it was
/// in the middle of (a database write) is done before the caller goes on.
/// Aborting is not enough for that: a write already handed to the database
/// lands even when the future that sent it is dropped, and may land after
/// whatever the caller does next. Dropped without [`StoppedTask::stop`],
/// it is aborted like a [`TaskGuard`].
pub(crate) struct StoppedTask {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    guard: TaskGuard,
}

impl StoppedTask {
    /// Runs `task`, which must return soon once its receiver fires (or its
    /// sender is gone), between two steps rather than in the middle of one.
    pub(crate) fn spawn<F, Fut>(task: F) -> Self
    where
        F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopping) = tokio::sync::oneshot::channel();
        Self {
            stop: Some(stop),
            guard: TaskGuard::spawn(task(stopping)),
        }
    }

    /// Asks the task to stop and waits until it has.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.guard.0).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::TaskGuard;

    #[tokio::test]
    async fn a_stopped_task_finishes_the_step_it_is_in_before_stop_returns() {
        let finished = Arc::new(AtomicUsize::new(0));
        let steps = finished.clone();
        let task = super::StoppedTask::spawn(move |mut stopping| async move {
            loop {
                tokio::select! {
                    _ = &mut stopping => return,
                    () = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
                // A step that must not be cut short (a write).
                tokio::time::sleep(Duration::from_millis(20)).await;
                steps.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        task.stop().await;
        let after_stop = finished.load(Ordering::SeqCst);
        assert!(after_stop > 0, "the step under way was finished");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            after_stop,
            "and nothing ran after stop returned"
        );
    }

    #[tokio::test]
    async fn a_dropped_guard_stops_its_renewer() {
        let renewals = Arc::new(AtomicUsize::new(0));
        let counter = renewals.clone();
        let guard = TaskGuard::spawn(async move {
            loop {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(guard);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let after_drop = renewals.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(after_drop > 0);
        assert_eq!(
            renewals.load(Ordering::Relaxed),
            after_drop,
            "no renewals after the guard is gone"
        );
    }
}

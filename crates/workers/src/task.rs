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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::TaskGuard;

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

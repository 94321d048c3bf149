//! Keeping a job or prefix lease while work runs under it. A renewal that
//! errors or hangs must not let the work go on past the lease: another
//! worker may take it over then. So every renewal runs under a timeout no
//! longer than what is left of the lease, and the keeper gives up (the work
//! is stopped) as soon as the lease could have run out.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Why a lease keeper stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseEnd {
    /// The database said the lease is someone else's now.
    TakenOver,
    /// No renewal succeeded in time: the lease may have run out.
    RanOut,
}

impl LeaseEnd {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::TakenOver => "another worker took it over",
            Self::RanOut => {
                "no renewal succeeded before it would run out (database unreachable or too slow)"
            }
        }
    }
}

/// Renews a lease of length `lease`, taken at `since`, every third of it
/// until the lease is lost; returns why. `renew` answers whether the lease
/// is still ours. Failed renewals are tried again sooner; the lease counts
/// as held only until `lease` (less a tenth, for clocks and latency) after
/// the start of the last renewal that succeeded.
pub(crate) async fn keep_lease<F, Fut, E>(
    lease: Duration,
    since: Instant,
    what: &str,
    mut renew: F,
) -> LeaseEnd
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, E>>,
    E: std::error::Error + 'static,
{
    let usable = lease.saturating_sub(lease / 10);
    let interval = lease / 3;
    let retry = (lease / 12).max(Duration::from_millis(10));
    let mut held_until = since + usable;
    let mut next = since + interval;
    let mut failures = 0u32;
    loop {
        tokio::time::sleep_until(next.min(held_until)).await;
        let started = Instant::now();
        if started >= held_until {
            tracing::warn!(
                what,
                failures,
                "the lease ran out before a renewal succeeded: stopping the work under it"
            );
            return LeaseEnd::RanOut;
        }
        match tokio::time::timeout_at(held_until, renew()).await {
            Ok(Ok(true)) => {
                if failures > 0 {
                    tracing::info!(what, failures, "renewed the lease again");
                }
                failures = 0;
                held_until = started + usable;
                next = started + interval;
            }
            Ok(Ok(false)) => return LeaseEnd::TakenOver,
            Ok(Err(error)) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(what, error = %envstore_core::error_chain(&error), "failed to renew a lease: trying again");
                }
                next = Instant::now() + retry;
            }
            Err(_) => {
                tracing::warn!(
                    what,
                    "a lease renewal did not answer before the lease would run out: stopping the work under it"
                );
                return LeaseEnd::RanOut;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the database is gone")]
    struct Gone;

    const LEASE: Duration = Duration::from_millis(300);

    /// Generous: the keeper must stop within about one lease.
    const LIVENESS: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_hanging_renewal_ends_the_lease_before_it_runs_out() {
        let start = Instant::now();
        let end = tokio::time::timeout(
            LIVENESS,
            keep_lease(LEASE, start, "test", || {
                std::future::pending::<Result<bool, Gone>>()
            }),
        )
        .await
        .expect("the keeper gives up instead of waiting for the renewal");
        assert_eq!(end, LeaseEnd::RanOut);
        assert!(start.elapsed() >= LEASE / 3, "it tried to renew first");
    }

    #[tokio::test]
    async fn failing_renewals_are_retried_then_end_the_lease() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let end = tokio::time::timeout(
            LIVENESS,
            keep_lease(LEASE, Instant::now(), "test", move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async { Err::<bool, _>(Gone) }
            }),
        )
        .await
        .expect("the keeper gives up");
        assert_eq!(end, LeaseEnd::RanOut);
        assert!(
            calls.load(Ordering::Relaxed) > 1,
            "a failed renewal is tried again"
        );
    }

    #[tokio::test]
    async fn a_lease_taken_over_ends_at_once_and_a_renewed_one_is_kept() {
        let end = tokio::time::timeout(
            LIVENESS,
            keep_lease(LEASE, Instant::now(), "test", || async {
                Ok::<_, Gone>(false)
            }),
        )
        .await
        .unwrap();
        assert_eq!(end, LeaseEnd::TakenOver);

        // One failure between successes does not lose the lease.
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let kept = tokio::time::timeout(
            LEASE * 5,
            keep_lease(LEASE, Instant::now(), "test", move || {
                let call = counted.fetch_add(1, Ordering::Relaxed);
                async move { if call == 1 { Err(Gone) } else { Ok(true) } }
            }),
        )
        .await;
        assert!(
            kept.is_err(),
            "still held after five lease lengths: {kept:?}"
        );
        assert!(calls.load(Ordering::Relaxed) >= 5);
    }
}

//! Waiting after failures that repeat, shared by the claim loop, the
//! notification listener and late recording of a build's end.

use std::time::Duration;

/// Waits after failures that repeat: from `FIRST` doubling to `LONGEST`,
/// back to none after a success. Only the first failure of a kind, and each
/// time the wait grows, make a log line, so a database or disk that stays
/// broken costs one line a minute, not one per loop.
pub(crate) struct Backoff {
    next: Duration,
    failures: u64,
}

impl Backoff {
    pub(crate) const FIRST: Duration = Duration::from_secs(1);
    pub(crate) const LONGEST: Duration = Duration::from_secs(60);

    pub(crate) fn new() -> Self {
        Self {
            next: Self::FIRST,
            failures: 0,
        }
    }

    /// Forgets earlier failures; says whether there were any.
    pub(crate) fn succeeded(&mut self) -> bool {
        let recovered = self.failures > 0;
        self.next = Self::FIRST;
        self.failures = 0;
        recovered
    }

    /// How long to wait after one more failure, and how many in a row.
    pub(crate) fn failed(&mut self) -> (Duration, u64) {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::LONGEST);
        self.failures += 1;
        (delay, self.failures)
    }

    /// Whether a failure before a wait of `delay`, the `failures`th in a
    /// row, is worth a log line: the first, each time the wait grows, and
    /// every tenth once it no longer does.
    pub(crate) fn worth_a_line(delay: Duration, failures: u64) -> bool {
        failures == 1 || delay < Self::LONGEST || failures.is_multiple_of(10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_on_success() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| backoff.failed().0.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert!(backoff.succeeded());
        assert!(!backoff.succeeded());
        assert_eq!(backoff.failed(), (Duration::from_secs(1), 1));
    }
}

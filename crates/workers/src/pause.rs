//! Points where fault tests tell a worker to stop for good, so they can
//! kill it there (`ENVSTORE_TEST_PAUSE`, read only by a build with the
//! `test-hooks` feature).

#[cfg(feature = "test-hooks")]
use envstore_link::ProgressSink;

use crate::log::BuildLog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestPause {
    /// After the Solving phase is recorded, before solving.
    Solving,
    /// After the first package of a prefix is downloaded.
    Downloading,
    /// After the first package of a prefix is linked.
    Linking,
    /// After the pack archive is written to its temporary file, before it
    /// is uploaded.
    Packing,
    /// When publishing starts.
    Publishing,
}

impl TestPause {
    pub const ALL: [Self; 5] = [
        Self::Solving,
        Self::Downloading,
        Self::Linking,
        Self::Packing,
        Self::Publishing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Solving => "solving",
            Self::Downloading => "downloading",
            Self::Linking => "linking",
            Self::Packing => "packing",
            Self::Publishing => "publishing",
        }
    }
}

impl std::fmt::Display for TestPause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TestPause {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|point| point.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|point| point.as_str()).collect();
                format!("unknown pause point '{text}' (one of {})", names.join(", "))
            })
    }
}

/// The line a paused worker logs, which fault tests wait for.
pub fn pause_line(point: TestPause) -> String {
    format!("paused for a fault test at {point}: waiting to be killed")
}

/// Stops here for good when the node was told to pause at `point` (test
/// builds only).
#[cfg_attr(
    not(feature = "test-hooks"),
    allow(unused_variables, clippy::unused_async)
)]
pub(crate) async fn pause_for_test(
    configured: Option<TestPause>,
    point: TestPause,
    log: &BuildLog,
) {
    #[cfg(feature = "test-hooks")]
    if configured == Some(point) {
        // In the process log too, which tests can read at any level.
        tracing::warn!("{}", pause_line(point));
        log.line(pause_line(point));
        log.phase_changed();
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pause_point_reads_back_from_its_name() {
        for point in TestPause::ALL {
            assert_eq!(point.as_str().parse::<TestPause>(), Ok(point));
        }
        let error = "unpacking".parse::<TestPause>().unwrap_err();
        assert!(
            error.contains("solving, downloading, linking, packing, publishing"),
            "{error}"
        );
        assert_eq!(
            pause_line(TestPause::Packing),
            "paused for a fault test at packing: waiting to be killed"
        );
    }
}

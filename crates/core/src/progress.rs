//! Typed progress of a build: what workers emit, what the event stream sends
//! as JSON (`event: progress`), and what the text log is rendered from, so
//! the log people download and the progress bars read the same events.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{BuildPhase, BuildStatus};

/// One thing that happened in a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A phase began or ended; the phase's detail (`12 packages`) comes
    /// with its end.
    Phase {
        phase: BuildPhase,
        state: PhaseState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// One more package archive is in the package cache: `done` of `total`
    /// packages, `bytes_done` of `bytes_total` bytes (the sizes the lock
    /// gives, 0 where it gives none).
    Downloading {
        done: u64,
        total: u64,
        bytes_done: u64,
        bytes_total: u64,
        /// The package just admitted (`name-version-build.conda`).
        package: String,
        /// Whether it was in the cache already (nothing was downloaded).
        #[serde(default)]
        cached: bool,
    },
    /// Linking into the prefix: `done` of `total` packages. `done` is 0,
    /// with no package, when linking begins.
    Linking {
        done: u64,
        total: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        package: Option<String>,
    },
    /// A free log line.
    Note { text: String },
    /// The build is over (the lines before say why).
    End {
        status: BuildStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Whether a [`ProgressEvent::Phase`] began or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PhaseState {
    Started,
    Finished,
}

impl ProgressEvent {
    /// A free log line.
    pub fn note(text: impl Into<String>) -> Self {
        Self::Note { text: text.into() }
    }

    /// The event's line in the text log, without its time stamp; None for
    /// events the log's lines already tell (a phase's start and end, the
    /// build's end), so the log reads as a story, not as a trace.
    pub fn log_text(&self) -> Option<String> {
        match self {
            Self::Phase { .. } | Self::End { .. } => None,
            Self::Downloading {
                done,
                total,
                package,
                cached,
                ..
            } => Some(format!(
                "downloading {done}/{total} {package}{}",
                if *cached { " (cached)" } else { "" }
            )),
            Self::Linking {
                done: 0,
                total,
                package: None,
            } => Some(format!("linking {total} packages")),
            Self::Linking {
                done,
                total,
                package,
            } => Some(format!(
                "linking {done}/{total} {}",
                package.as_deref().unwrap_or_default()
            )),
            Self::Note { text } => Some(text.clone()),
        }
    }
}

/// One event of a build's log, numbered from 0 in the order it was written,
/// so a follower asks only for what comes after the last it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ProgressRecord {
    pub seq: u64,
    /// Seconds since the attempt began; None for a line carried over as it
    /// was from an earlier attempt's log (it has its own time stamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<f64>,
    pub event: ProgressEvent,
}

impl ProgressRecord {
    /// The record's line in the text log (`[   1.250s] linking 3/12 …`), if
    /// its event has one.
    pub fn log_line(&self) -> Option<String> {
        let text = self.event.log_text()?;
        Some(match self.elapsed_seconds {
            Some(elapsed) => format!("[{elapsed:8.3}s] {text}"),
            None => text,
        })
    }
}

impl fmt::Display for ProgressEvent {
    /// The log line, or for events without one a short description.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Phase {
                phase,
                state: PhaseState::Started,
                ..
            } => write!(f, "{phase} started"),
            Self::Phase {
                phase,
                state: PhaseState::Finished,
                detail,
            } => match detail {
                Some(detail) => write!(f, "{phase} finished: {detail}"),
                None => write!(f, "{phase} finished"),
            },
            Self::End { status, error } => match error {
                Some(error) => write!(f, "build {status}: {error}"),
                None => write!(f, "build {status}"),
            },
            other => f.write_str(&other.log_text().unwrap_or_default()),
        }
    }
}

/// The text log of `records`: one line each for those that have one.
pub fn render_log<'a>(records: impl IntoIterator<Item = &'a ProgressRecord>) -> String {
    let mut text = String::new();
    for line in records.into_iter().filter_map(ProgressRecord::log_line) {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downloading(done: u64, cached: bool) -> ProgressEvent {
        ProgressEvent::Downloading {
            done,
            total: 3,
            bytes_done: 100 * done,
            bytes_total: 300,
            package: "zlib-1.3-0.conda".to_owned(),
            cached,
        }
    }

    #[test]
    fn events_render_as_the_log_lines_of_before() {
        assert_eq!(
            downloading(2, false).log_text().as_deref(),
            Some("downloading 2/3 zlib-1.3-0.conda")
        );
        assert_eq!(
            downloading(3, true).log_text().as_deref(),
            Some("downloading 3/3 zlib-1.3-0.conda (cached)")
        );
        let start = ProgressEvent::Linking {
            done: 0,
            total: 12,
            package: None,
        };
        assert_eq!(start.log_text().as_deref(), Some("linking 12 packages"));
        let linked = ProgressEvent::Linking {
            done: 3,
            total: 12,
            package: Some("numpy-1.26.4-py311_0".to_owned()),
        };
        assert_eq!(
            linked.log_text().as_deref(),
            Some("linking 3/12 numpy-1.26.4-py311_0")
        );
        assert_eq!(
            ProgressEvent::note("solving [python]")
                .log_text()
                .as_deref(),
            Some("solving [python]")
        );
        let phase = ProgressEvent::Phase {
            phase: BuildPhase::Solving,
            state: PhaseState::Finished,
            detail: Some("4 packages".to_owned()),
        };
        assert_eq!(phase.log_text(), None);
        assert_eq!(phase.to_string(), "solving finished: 4 packages");
        let end = ProgressEvent::End {
            status: BuildStatus::Failed,
            error: Some("unsolvable".to_owned()),
        };
        assert_eq!(end.log_text(), None);
        assert_eq!(end.to_string(), "build failed: unsolvable");
        assert_eq!(linked.to_string(), "linking 3/12 numpy-1.26.4-py311_0");
    }

    #[test]
    fn a_log_is_its_records_lines_with_time_stamps() {
        let records = [
            ProgressRecord {
                seq: 0,
                elapsed_seconds: None,
                event: ProgressEvent::note("[   0.001s] from attempt 1"),
            },
            ProgressRecord {
                seq: 1,
                elapsed_seconds: Some(0.0125),
                event: ProgressEvent::Phase {
                    phase: BuildPhase::Downloading,
                    state: PhaseState::Started,
                    detail: None,
                },
            },
            ProgressRecord {
                seq: 2,
                elapsed_seconds: Some(1.5),
                event: downloading(1, false),
            },
        ];
        assert_eq!(
            render_log(&records),
            "[   0.001s] from attempt 1\n[   1.500s] downloading 1/3 zlib-1.3-0.conda\n"
        );
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let events = [
            ProgressEvent::Phase {
                phase: BuildPhase::Linking,
                state: PhaseState::Started,
                detail: None,
            },
            downloading(1, true),
            ProgressEvent::Linking {
                done: 1,
                total: 2,
                package: Some("python-3.12.0-0".to_owned()),
            },
            ProgressEvent::note("a line"),
            ProgressEvent::End {
                status: BuildStatus::Succeeded,
                error: None,
            },
        ];
        for event in events {
            let record = ProgressRecord {
                seq: 7,
                elapsed_seconds: Some(2.25),
                event,
            };
            let json = serde_json::to_string(&record).unwrap();
            let back: ProgressRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back, record, "{json}");
        }
        let json = serde_json::to_value(downloading(2, false)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "downloading", "done": 2, "total": 3, "bytes_done": 200,
                "bytes_total": 300, "package": "zlib-1.3-0.conda", "cached": false
            })
        );
        let phase: ProgressEvent = serde_json::from_str(
            r#"{"kind": "phase", "phase": "publishing", "state": "finished"}"#,
        )
        .unwrap();
        assert_eq!(
            phase,
            ProgressEvent::Phase {
                phase: BuildPhase::Publishing,
                state: PhaseState::Finished,
                detail: None
            }
        );
    }
}

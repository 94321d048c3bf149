use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envstore_link::ProgressSink;

/// The log of one build: timestamped lines, kept in memory while the build
/// runs and published to the object store when it ends.
pub struct BuildLog {
    started: Instant,
    lines: Mutex<Vec<String>>,
    /// Lines added so far, so a writer of the log can tell it changed.
    version: AtomicU64,
    /// Told when a phase begins, so the log is kept durably at once.
    phase_changed: tokio::sync::Notify,
}

/// The most of a running attempt's log kept in the database: its end.
pub(crate) const KEPT_LOG_BYTES: usize = 1 << 20;

impl BuildLog {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            lines: Mutex::new(Vec::new()),
            version: AtomicU64::new(0),
            phase_changed: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Asks for the log to be kept durably now: a phase began.
    pub(crate) fn phase_changed(&self) {
        self.phase_changed.notify_one();
    }

    pub(crate) async fn wait_for_phase_change(&self) {
        self.phase_changed.notified().await;
    }

    /// The log's last `max_bytes` at most, cut at a line start.
    pub(crate) fn tail(&self, max_bytes: usize) -> String {
        tail(&self.text(), max_bytes)
    }

    /// Puts the log of an earlier attempt before this one's lines, so the
    /// final log tells the whole story of a retried build.
    pub fn include_earlier(&self, text: &str) {
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let earlier: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.splice(0..0, earlier);
    }

    pub fn text(&self) -> String {
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

impl ProgressSink for BuildLog {
    fn line(&self, line: String) {
        let elapsed = self.started.elapsed().as_secs_f64();
        tracing::debug!(target: "envstore::build", "{line}");
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(format!("[{elapsed:8.3}s] {line}"));
        self.version.fetch_add(1, Ordering::Relaxed);
    }
}

/// The end of `text`, at most `max_bytes`, from the start of a line, with a
/// first line saying that earlier ones were cut.
pub(crate) fn tail(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    const CUT: &str = "[… earlier lines cut]\n";
    let mut start = text.len() - max_bytes.saturating_sub(CUT.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let start = text[start..]
        .find('\n')
        .map_or(text.len(), |newline| start + newline + 1);
    format!("{CUT}{}", &text[start..])
}

/// Logs of the builds running in this process, by build id.
#[derive(Clone, Default)]
pub struct BuildLogs {
    running: Arc<Mutex<HashMap<String, Arc<BuildLog>>>>,
}

impl BuildLogs {
    pub fn start(&self, build_id: &str) -> Arc<BuildLog> {
        let log = Arc::new(BuildLog::new());
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(build_id.to_owned(), log.clone());
        log
    }

    pub fn finish(&self, build_id: &str) {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(build_id);
    }

    /// The log so far of a build running here.
    pub fn live(&self, build_id: &str) -> Option<String> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(build_id)
            .map(|log| log.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_log_is_its_end_cut_at_a_line() {
        assert_eq!(tail("a\nb\n", 100), "a\nb\n");
        let text: String = (0..1000).map(|line| format!("line {line} é\n")).collect();
        let kept = tail(&text, 200);
        assert!(kept.len() <= 200, "{}", kept.len());
        assert!(kept.starts_with("[… earlier lines cut]\nline "));
        assert!(kept.ends_with("line 999 é\n"));
    }
}

//! A build's log, kept as numbered typed events ([`ProgressRecord`]); its
//! text is rendered from them, so the text log and the event stream always
//! tell the same story.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envstore_core::progress::render_log;
use envstore_core::{ProgressEvent, ProgressRecord};
use envstore_link::ProgressSink;

/// The log of one build: numbered events with the time they happened, kept
/// in memory while the build runs and published (as text) to the object
/// store when it ends.
pub struct BuildLog {
    started: Instant,
    records: Mutex<Vec<ProgressRecord>>,
    /// Records added so far, so a writer of the log can tell it changed.
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
            records: Mutex::new(Vec::new()),
            version: AtomicU64::new(0),
            phase_changed: tokio::sync::Notify::new(),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Vec<ProgressRecord>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    /// final log tells the whole story of a retried build. Its lines are
    /// kept as they are (with their own time stamps). Called before the
    /// attempt writes anything, so the numbers a follower holds stay valid.
    pub fn include_earlier(&self, text: &str) {
        let mut records = self.records();
        let earlier = text.lines().map(|line| ProgressRecord {
            seq: 0,
            elapsed_seconds: None,
            event: ProgressEvent::note(line),
        });
        records.splice(0..0, earlier);
        for (seq, record) in records.iter_mut().enumerate() {
            record.seq = seq as u64;
        }
    }

    /// The text log: one line per event that has one.
    pub fn text(&self) -> String {
        render_log(self.records().iter())
    }

    /// The events from number `from` on.
    pub fn events_from(&self, from: u64) -> Vec<ProgressRecord> {
        let records = self.records();
        let from = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(records.len());
        records[from..].to_vec()
    }
}

impl ProgressSink for BuildLog {
    fn line(&self, line: String) {
        self.event(ProgressEvent::Note { text: line });
    }

    fn event(&self, event: ProgressEvent) {
        let elapsed = self.started.elapsed().as_secs_f64();
        tracing::debug!(target: "envstore::build", "{event}");
        let mut records = self.records();
        let seq = records.len() as u64;
        records.push(ProgressRecord {
            seq,
            elapsed_seconds: Some(elapsed),
            event,
        });
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
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<BuildLog>>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn start(&self, build_id: &str) -> Arc<BuildLog> {
        let log = Arc::new(BuildLog::new());
        self.running().insert(build_id.to_owned(), log.clone());
        log
    }

    pub fn finish(&self, build_id: &str) {
        self.running().remove(build_id);
    }

    /// The log so far of a build running here.
    pub fn live(&self, build_id: &str) -> Option<String> {
        self.running().get(build_id).map(|log| log.text())
    }

    /// The events of a build running here from number `from` on; None when
    /// it does not run here.
    pub fn live_events(&self, build_id: &str, from: u64) -> Option<Vec<ProgressRecord>> {
        let log = self.running().get(build_id).cloned()?;
        Some(log.events_from(from))
    }
}

#[cfg(test)]
mod tests {
    use envstore_core::{BuildPhase, PhaseState};

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

    #[test]
    fn the_text_is_rendered_from_numbered_events() {
        let logs = BuildLogs::default();
        let log = logs.start("b1");
        log.include_earlier("[   0.100s] attempt 1 line\nattempt 1 ends here\n");
        log.line("build b1 (attempt 2)".to_owned());
        log.event(ProgressEvent::Phase {
            phase: BuildPhase::Linking,
            state: PhaseState::Started,
            detail: None,
        });
        log.event(ProgressEvent::Linking {
            done: 1,
            total: 2,
            package: Some("zlib-1.3-0".to_owned()),
        });
        let text = log.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "[   0.100s] attempt 1 line");
        assert_eq!(lines[1], "attempt 1 ends here");
        assert!(lines[2].ends_with("s] build b1 (attempt 2)"), "{text}");
        assert!(lines[3].ends_with("s] linking 1/2 zlib-1.3-0"), "{text}");

        // A follower asks only for what comes after what it has.
        let all = logs.live_events("b1", 0).unwrap();
        assert_eq!(
            all.iter().map(|record| record.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        let new = logs.live_events("b1", 3).unwrap();
        assert_eq!(new.len(), 2);
        assert!(matches!(new[0].event, ProgressEvent::Phase { .. }));
        assert!(logs.live_events("b1", 99).unwrap().is_empty());
        logs.finish("b1");
        assert_eq!(logs.live_events("b1", 0), None);
    }
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envstore_link::ProgressSink;

/// The log of one build: timestamped lines, kept in memory while the build
/// runs and published to the object store when it ends.
pub struct BuildLog {
    started: Instant,
    lines: Mutex<Vec<String>>,
}

impl BuildLog {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            lines: Mutex::new(Vec::new()),
        }
    }

    /// Puts the log of an earlier attempt before this one's lines, so the
    /// final log tells the whole story of a retried build.
    pub fn include_earlier(&self, text: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let earlier: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.splice(0..0, earlier);
    }

    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
    }
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

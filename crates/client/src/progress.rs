//! What `submit --wait` shows on standard error while a build runs.

use std::time::{Duration, Instant};

use envstore_api_types::{ProgressEvent, ProgressRecord};
use serde_json::Value;

/// What `submit --wait` shows while a build runs.
pub(crate) struct BuildProgress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    reported: std::cell::RefCell<String>,
}

impl BuildProgress {
    pub(crate) fn new(terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed:>4}] {msg:<28} {wide_bar} {pos}/{len}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            reported: std::cell::RefCell::new(String::new()),
        }
    }

    /// A `status` event: `{"status", "phase", "detail"}`.
    pub(crate) fn status(&self, data: &str) {
        let state: Value = serde_json::from_str(data).unwrap_or_default();
        let status = state["status"].as_str().unwrap_or("unknown");
        let text = match state["phase"].as_str() {
            Some(phase) if matches!(status, "queued" | "running") => format!("{status}: {phase}"),
            _ => status.to_owned(),
        };
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => self.report(text),
        }
    }

    /// A `progress` event (a typed [`ProgressRecord`]): downloading and
    /// linking n/m move the bar.
    pub(crate) fn event(&self, data: &str) {
        let Ok(record) = serde_json::from_str::<ProgressRecord>(data) else {
            return;
        };
        let Some((phase, done, total)) = counted_step(&record.event) else {
            return;
        };
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("running: {phase}"));
            }
            None if done == total => self.report(format!("running: {phase} {done}/{total}")),
            None => {}
        }
    }

    pub(crate) fn report(&self, text: String) {
        let mut reported = self.reported.borrow_mut();
        if *reported != text {
            eprintln!("[{:6.1}s] {text}", self.started.elapsed().as_secs_f64());
            *reported = text;
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The phase and n/m of an event that counts packages.
fn counted_step(event: &ProgressEvent) -> Option<(&'static str, u64, u64)> {
    match *event {
        ProgressEvent::Downloading { done, total, .. } => Some(("downloading", done, total)),
        ProgressEvent::Linking { done, total, .. } if done > 0 => Some(("linking", done, total)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_events_move_the_bar() {
        let record: ProgressRecord = serde_json::from_str(
            r#"{"seq": 4, "elapsed_seconds": 0.12, "event": {"kind": "linking", "done": 2, "total": 5, "package": "python"}}"#,
        )
        .unwrap();
        assert_eq!(counted_step(&record.event), Some(("linking", 2, 5)));
        let downloading = ProgressEvent::Downloading {
            done: 26,
            total: 26,
            bytes_done: 10,
            bytes_total: 10,
            package: "x.conda".to_owned(),
            cached: true,
        };
        assert_eq!(counted_step(&downloading), Some(("downloading", 26, 26)));
        let start = ProgressEvent::Linking {
            done: 0,
            total: 26,
            package: None,
        };
        assert_eq!(counted_step(&start), None);
        assert_eq!(counted_step(&ProgressEvent::note("solving [python]")), None);
    }
}

//! What `submit --wait` shows on standard error while a build runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envstore_api_types::{ProgressEvent, ProgressRecord};
use serde_json::Value;

/// What `submit --wait` shows while a build runs.
pub(crate) struct BuildProgress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    reported: std::cell::RefCell<String>,
    /// Each package archive admitted to the cache, and whether it was
    /// there already; with the last total seen.
    admitted: std::cell::RefCell<(BTreeMap<String, bool>, u64)>,
}

/// What a build's `downloading` events told: its packages, how many were
/// in the package cache already, how many were downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloads {
    pub packages: u64,
    pub cached: u64,
    pub downloaded: u64,
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
            admitted: std::cell::RefCell::default(),
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
        if let ProgressEvent::Downloading {
            total,
            package,
            cached,
            ..
        } = &record.event
        {
            let mut admitted = self.admitted.borrow_mut();
            admitted.0.insert(package.clone(), *cached);
            admitted.1 = *total;
        }
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

    /// The downloads seen so far; None when no `downloading` event came.
    pub(crate) fn downloads(&self) -> Option<Downloads> {
        let admitted = self.admitted.borrow();
        let (packages, total) = &*admitted;
        if packages.is_empty() {
            return None;
        }
        let cached = packages.values().filter(|cached| **cached).count() as u64;
        Some(Downloads {
            packages: (*total).max(packages.len() as u64),
            cached,
            downloaded: packages.len() as u64 - cached,
        })
    }
}

/// A follow given up half way (Ctrl-C) leaves no bar behind.
impl Drop for BuildProgress {
    fn drop(&mut self) {
        self.finish();
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

    #[test]
    fn downloads_count_each_package_once() {
        let progress = BuildProgress::new(false);
        assert_eq!(progress.downloads(), None);
        let record = |done: u64, package: &str, cached: bool| {
            serde_json::to_string(&ProgressRecord {
                seq: done,
                elapsed_seconds: Some(0.1),
                event: ProgressEvent::Downloading {
                    done,
                    total: 3,
                    bytes_done: 0,
                    bytes_total: 0,
                    package: package.to_owned(),
                    cached,
                },
            })
            .unwrap()
        };
        progress.event(&record(1, "a.conda", true));
        progress.event(&record(2, "b.conda", false));
        progress.event(&record(2, "b.conda", false));
        progress.event(&record(3, "c.conda", true));
        assert_eq!(
            progress.downloads(),
            Some(Downloads {
                packages: 3,
                cached: 2,
                downloaded: 1
            })
        );
    }
}

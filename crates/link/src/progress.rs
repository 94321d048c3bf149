use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use envstore_core::ProgressEvent;
use rattler::install::{Reporter, Transaction};
use rattler_conda_types::{PrefixRecord, RepoDataRecord};

/// Where build progress goes: typed events (downloading and linking n/m),
/// and free lines. A sink that keeps only text gets each event as its log
/// line; a build's log keeps the events themselves.
pub trait ProgressSink: Send + Sync {
    /// A free line of text.
    fn line(&self, line: String);

    /// A typed event; by default its log line, if it has one.
    fn event(&self, event: ProgressEvent) {
        if let Some(text) = event.log_text() {
            self.line(text);
        }
    }
}

/// Counts of what a step really did, so a build can say "nothing downloaded".
#[derive(Debug, Default)]
pub struct TransferCounts {
    pub downloaded: AtomicUsize,
    pub linked: AtomicUsize,
}

impl TransferCounts {
    pub fn downloaded(&self) -> usize {
        self.downloaded.load(Ordering::Relaxed)
    }

    pub fn linked(&self) -> usize {
        self.linked.load(Ordering::Relaxed)
    }
}

/// Turns rattler's installer callbacks into typed linking progress
/// (rendered `linking 3/12 numpy-1.26.4-py311_0`).
pub(crate) struct LinkReporter {
    pub sink: Arc<dyn ProgressSink>,
    pub counts: Arc<TransferCounts>,
    pub total: AtomicUsize,
    pub names: std::sync::Mutex<Vec<String>>,
    /// Fault tests only: stop for good after the first package is linked, so
    /// a test can kill the worker with a half-linked prefix. Only a build
    /// with the `test-hooks` feature can stop.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub pause_after_first_link: bool,
}

impl LinkReporter {
    pub fn new(
        sink: Arc<dyn ProgressSink>,
        counts: Arc<TransferCounts>,
        pause_after_first_link: bool,
    ) -> Self {
        Self {
            sink,
            counts,
            total: AtomicUsize::new(0),
            names: std::sync::Mutex::new(Vec::new()),
            pause_after_first_link,
        }
    }
}

impl Reporter for LinkReporter {
    fn on_transaction_start(&self, transaction: &Transaction<PrefixRecord, RepoDataRecord>) {
        let total = transaction.operations.len();
        self.total.store(total, Ordering::Relaxed);
        self.sink.event(ProgressEvent::Linking {
            done: 0,
            total: total as u64,
            package: None,
        });
    }
    fn on_transaction_operation_start(&self, _operation: usize) {}
    fn on_populate_cache_start(&self, _operation: usize, _record: &RepoDataRecord) -> usize {
        0
    }
    fn on_validate_start(&self, _cache_entry: usize) -> usize {
        0
    }
    fn on_validate_complete(&self, _validate_idx: usize) {}
    fn on_download_start(&self, _cache_entry: usize) -> usize {
        0
    }
    fn on_download_progress(&self, _download_idx: usize, _progress: u64, _total: Option<u64>) {}
    fn on_download_completed(&self, _download_idx: usize) {}
    fn on_populate_cache_complete(&self, _cache_entry: usize) {}
    fn on_unlink_start(&self, _operation: usize, _record: &PrefixRecord) -> usize {
        0
    }
    fn on_unlink_complete(&self, _index: usize) {}
    fn on_link_start(&self, _operation: usize, record: &RepoDataRecord) -> usize {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        names.push(record.identifier.to_string());
        names.len() - 1
    }
    fn on_link_complete(&self, index: usize) {
        let done = self.counts.linked.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total.load(Ordering::Relaxed);
        let name = self
            .names
            .lock()
            .map(|names| names.get(index).cloned().unwrap_or_default())
            .unwrap_or_default();
        self.sink.event(ProgressEvent::Linking {
            done: done as u64,
            total: total as u64,
            package: Some(name),
        });
        #[cfg(feature = "test-hooks")]
        if self.pause_after_first_link && done == 1 {
            self.sink
                .line("paused for a fault test: waiting to be killed".to_owned());
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
    fn on_transaction_operation_complete(&self, _operation: usize) {}
    fn on_transaction_complete(&self) {}
    fn on_post_link_start(&self, _package_name: &str, _script_path: &str) -> usize {
        0
    }
    fn on_post_link_complete(&self, _index: usize, _success: bool) {}
    fn on_pre_unlink_start(&self, _package_name: &str, _script_path: &str) -> usize {
        0
    }
    fn on_pre_unlink_complete(&self, _index: usize, _success: bool) {}
}

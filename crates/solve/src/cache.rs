//! Recently solved specs, so a spec solved before against unchanged repodata
//! is answered by a lookup instead of a solve.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use metrics::Counter;
use rattler_conda_types::{RepoDataRecord, Subdir};
use url::Url;

use crate::freshness::Revision;

/// Everything a solve's answer depends on: the channels in priority order and
/// what their repodata was, the platform, and the requested specs. The
/// virtual packages and channel priority are fixed per platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SolveKey {
    pub channels: Vec<(Url, Revision)>,
    pub subdir: Subdir,
    pub specs: Vec<String>,
}

/// Lookups of the solve cache, by `result` (hit or miss); none while it is off.
const SOLVE_CACHE_METRIC: &str = "envstore_solve_cache_lookups_total";

pub(crate) struct SolveCache {
    entries: Option<Mutex<LruCache<SolveKey, Arc<Vec<RepoDataRecord>>>>>,
    hits: Counter,
    misses: Counter,
}

impl SolveCache {
    /// A cache of `capacity` solves; 0 turns caching off.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: NonZeroUsize::new(capacity)
                .map(|capacity| Mutex::new(LruCache::new(capacity))),
            hits: metrics::counter!(SOLVE_CACHE_METRIC, "result" => "hit"),
            misses: metrics::counter!(SOLVE_CACHE_METRIC, "result" => "miss"),
        }
    }

    pub fn get(&self, key: &SolveKey) -> Option<Arc<Vec<RepoDataRecord>>> {
        let entries = self.entries.as_ref()?;
        let found = entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned();
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    pub fn insert(&self, key: SolveKey, records: Arc<Vec<RepoDataRecord>>) {
        if let Some(entries) = &self.entries {
            entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .put(key, records);
        }
    }
}

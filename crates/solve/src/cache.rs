//! Recently solved specs, so a spec solved before against unchanged repodata
//! is answered by a lookup instead of a solve. A key names everything the
//! answer depends on, so an entry never goes stale: it is bounded by count
//! and kept without a time-to-live.

use std::sync::Arc;

use metrics::Counter;
use moka::sync::Cache;
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
    /// The target machines' declared virtual packages: the same specs solve
    /// differently for another CUDA or glibc.
    pub system_requirements: envstore_core::spec::SystemRequirements,
}

/// Lookups of the solve cache, by `result` (hit or miss); none while it is off.
const SOLVE_CACHE_METRIC: &str = "envstore_solve_cache_lookups_total";

pub(crate) struct SolveCache {
    /// `None` while caching is off.
    entries: Option<Cache<SolveKey, Arc<Vec<RepoDataRecord>>>>,
    hits: Counter,
    misses: Counter,
}

impl SolveCache {
    /// A cache of at most `capacity` solves; 0 turns caching off.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| Cache::new(capacity as u64)),
            hits: metrics::counter!(SOLVE_CACHE_METRIC, "result" => "hit"),
            misses: metrics::counter!(SOLVE_CACHE_METRIC, "result" => "miss"),
        }
    }

    pub fn get(&self, key: &SolveKey) -> Option<Arc<Vec<RepoDataRecord>>> {
        let found = self.entries.as_ref()?.get(key);
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    pub fn insert(&self, key: SolveKey, records: Arc<Vec<RepoDataRecord>>) {
        if let Some(entries) = &self.entries {
            entries.insert(key, records);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: usize) -> SolveKey {
        SolveKey {
            channels: vec![(
                Url::parse("https://conda.example.org/main").unwrap(),
                Revision::Remote(0),
            )],
            subdir: Subdir::Linux64,
            specs: vec![format!("pkg-{index}")],
            system_requirements: Default::default(),
        }
    }

    #[test]
    fn holds_at_most_its_capacity_and_zero_turns_it_off() {
        let cache = SolveCache::new(4);
        let records = Arc::new(Vec::new());
        cache.insert(key(0), Arc::clone(&records));
        assert!(cache.get(&key(0)).is_some());
        assert!(cache.get(&key(1)).is_none());
        for index in 1..100 {
            cache.insert(key(index), Arc::clone(&records));
        }
        let entries = cache.entries.as_ref().unwrap();
        entries.run_pending_tasks();
        assert!(entries.entry_count() <= 4, "{}", entries.entry_count());

        let off = SolveCache::new(0);
        off.insert(key(0), records);
        assert!(off.get(&key(0)).is_none());
    }
}

//! Recently solved specs, so a spec solved before against unchanged repodata
//! is answered by a lookup instead of a solve.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
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

pub(crate) struct SolveCache {
    entries: Option<Mutex<LruCache<SolveKey, Arc<Vec<RepoDataRecord>>>>>,
}

impl SolveCache {
    /// A cache of `capacity` solves; 0 turns caching off.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: NonZeroUsize::new(capacity).map(|capacity| Mutex::new(LruCache::new(capacity))),
        }
    }

    pub fn get(&self, key: &SolveKey) -> Option<Arc<Vec<RepoDataRecord>>> {
        let entries = self.entries.as_ref()?;
        entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned()
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

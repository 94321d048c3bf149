//! A bounded in-memory copy of small immutable objects. Keys are
//! content-addressed and written once, so an entry never goes stale: it only
//! has to be bounded. Serving a hot lockfile from memory saves an object
//! store round trip (for a local folder, a blocking-pool file read) per
//! request.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use metrics::Counter;

/// Total bytes the cache holds by default.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Objects larger than this share of the capacity are not cached, so one
/// large object cannot push out every small one.
const MAX_ENTRY_SHARE: usize = 8;

struct Entries<K> {
    objects: HashMap<K, Bytes>,
    /// Insertion order, oldest first: the eviction order.
    order: VecDeque<K>,
    bytes: usize,
}

/// Objects by key, evicted oldest first once `capacity` bytes are held.
pub(crate) struct ObjectCache<K> {
    capacity: usize,
    entries: Mutex<Entries<K>>,
    /// Registered once, so counting a lookup on the hot path is one atomic
    /// add rather than a registry lookup.
    hits: Counter,
    misses: Counter,
}

impl<K: Hash + Eq + Clone> ObjectCache<K> {
    /// A cache of at most `capacity` bytes (zero turns it off) whose
    /// lookups are counted as `metric{result="hit"|"miss"}`.
    pub(crate) fn new(capacity: usize, metric: &'static str) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Entries {
                objects: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            hits: metrics::counter!(metric, "result" => "hit"),
            misses: metrics::counter!(metric, "result" => "miss"),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries<K>> {
        // Every update leaves the entries consistent before it can panic.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &K) -> Option<Bytes> {
        let found = self.entries().objects.get(key).cloned();
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    /// Keeps `bytes` under `key`, unless the object is too large for it.
    pub(crate) fn insert(&self, key: K, bytes: Bytes) {
        if self.capacity == 0 || bytes.len() > self.capacity / MAX_ENTRY_SHARE {
            return;
        }
        let mut entries = self.entries();
        if entries.objects.contains_key(&key) {
            return;
        }
        while entries.bytes + bytes.len() > self.capacity {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            if let Some(evicted) = entries.objects.remove(&oldest) {
                entries.bytes -= evicted.len();
            }
        }
        entries.bytes += bytes.len();
        entries.order.push_back(key.clone());
        entries.objects.insert(key, bytes);
    }

    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.entries().bytes
    }
}

impl<K> std::fmt::Debug for ObjectCache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_capacity_and_evicts_the_oldest() {
        let cache = ObjectCache::<&str>::new(80, "test_cache_lookups_total");
        for (key, size) in [("a", 10), ("b", 10), ("c", 10)] {
            cache.insert(key, Bytes::from(vec![0u8; size]));
        }
        assert_eq!(cache.held_bytes(), 30);
        cache.insert("big", Bytes::from(vec![0u8; 11]));
        assert!(
            cache.get(&"big").is_none(),
            "over an eighth of the capacity"
        );
        for key in ["d", "e", "f", "g", "h", "i"] {
            cache.insert(key, Bytes::from(vec![0u8; 10]));
        }
        assert_eq!(cache.held_bytes(), 80);
        assert!(cache.get(&"a").is_none());
        assert!(cache.get(&"i").is_some());
        cache.insert("i", Bytes::from_static(b"again"));
        assert_eq!(
            cache.get(&"i").map(|bytes| bytes.len()),
            Some(10),
            "written once"
        );

        let off = ObjectCache::<&str>::new(0, "test_cache_lookups_total");
        off.insert("a", Bytes::from_static(b"x"));
        assert!(off.get(&"a").is_none());
    }
}

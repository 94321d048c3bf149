//! A bounded in-memory copy of small immutable objects. Keys are
//! content-addressed and written once, so an entry never goes stale: it only
//! has to be bounded (by bytes, without a time-to-live). Serving a hot
//! lockfile from memory saves an object store round trip (for a local
//! folder, a blocking-pool file read) per request.

use std::hash::Hash;

use bytes::Bytes;
use metrics::Counter;
use moka::sync::Cache;

/// Total bytes the cache holds by default.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Objects larger than this share of the capacity are not cached, so one
/// large object cannot push out every small one.
const MAX_ENTRY_SHARE: usize = 8;

/// Objects by key, weighed by their length: at most `capacity` bytes are
/// held, and moka picks what to evict.
pub(crate) struct ObjectCache<K> {
    capacity: usize,
    /// `None` while the cache is off.
    entries: Option<Cache<K, Bytes>>,
    /// Registered once, so counting a lookup on the hot path is one atomic
    /// add rather than a registry lookup.
    hits: Counter,
    misses: Counter,
}

impl<K: Hash + Eq + Send + Sync + 'static> ObjectCache<K> {
    /// A cache of at most `capacity` bytes (zero turns it off) whose
    /// lookups are counted as `metric{result="hit"|"miss"}`.
    pub(crate) fn new(capacity: usize, metric: &'static str) -> Self {
        let entries = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(u64::try_from(capacity).unwrap_or(u64::MAX))
                .weigher(|_: &K, bytes: &Bytes| u32::try_from(bytes.len()).unwrap_or(u32::MAX))
                .build()
        });
        Self {
            capacity,
            entries,
            hits: metrics::counter!(metric, "result" => "hit"),
            misses: metrics::counter!(metric, "result" => "miss"),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<Bytes> {
        let found = self.entries.as_ref().and_then(|entries| entries.get(key));
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    /// Keeps `bytes` under `key`, unless the object is too large for it or
    /// the key is already held (objects are written once).
    pub(crate) fn insert(&self, key: K, bytes: Bytes) {
        let Some(entries) = &self.entries else {
            return;
        };
        if bytes.len() > self.capacity / MAX_ENTRY_SHARE {
            return;
        }
        entries.entry(key).or_insert(bytes);
    }

    /// The bytes held once pending evictions are applied.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> u64 {
        self.entries.as_ref().map_or(0, |entries| {
            entries.run_pending_tasks();
            entries.weighted_size()
        })
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

    fn object(size: usize) -> Bytes {
        Bytes::from(vec![0u8; size])
    }

    #[test]
    fn holds_at_most_its_capacity_and_only_small_objects_once() {
        let cache = ObjectCache::<String>::new(80, "test_cache_lookups_total");
        for key in ["a", "b", "c"] {
            cache.insert(key.to_owned(), object(10));
        }
        assert_eq!(cache.held_bytes(), 30);
        cache.insert("a".to_owned(), Bytes::from_static(b"again"));
        assert_eq!(
            cache.get(&"a".to_owned()).map(|bytes| bytes.len()),
            Some(10),
            "written once"
        );
        cache.insert("big".to_owned(), object(11));
        assert!(
            cache.get(&"big".to_owned()).is_none(),
            "over an eighth of the capacity"
        );
        for index in 0..100 {
            cache.insert(format!("k{index}"), object(10));
        }
        let held = cache.held_bytes();
        assert!((10..=80).contains(&held), "{held} bytes held");

        let off = ObjectCache::<String>::new(0, "test_cache_lookups_total");
        off.insert("a".to_owned(), Bytes::from_static(b"x"));
        assert!(off.get(&"a".to_owned()).is_none());
    }
}

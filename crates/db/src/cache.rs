//! In-process caches of what every API request asks the database before it
//! does any work: the token a caller presents, the subject's role bindings,
//! whether a namespace is public, and two facts about locks. Without them a
//! lockfile GET spends four round trips on access checks alone.
//!
//! Access data (tokens, bindings, visibility) can change, so it is cached
//! for a short TTL ([`ACCESS_CACHE_TTL`]) and its staleness is bounded:
//! - a change made through this process's [`crate::Database`] (revoking a
//!   token, binding or unbinding a role, changing a namespace's visibility)
//!   empties the cache before the write returns, so the next request sees it;
//!   a generation counter keeps a lookup that raced with the change from
//!   putting its stale answer back;
//! - a change made by another process (another API node on the same
//!   database) is seen after at most the TTL;
//! - a cached token's expiry is checked on every hit.
//!
//! Only positive answers are cached (a known token, an existing namespace),
//! so guessed values cannot fill the cache or hide a new row. Every map is
//! bounded: when one is full it is emptied.
//!
//! A lock's platforms never change once written (they are fixed by its
//! hash) and are kept without a TTL. The namespaces holding a build of a
//! lock grow as builds finish and shrink only when an environment or
//! namespace is deleted: a cached list may lack a namespace, so callers may
//! grant from it but must ask again before refusing; and it may still name a
//! deleted namespace, so it is emptied by a deletion made through this
//! process and trusted for [`ACCESS_CACHE_TTL`] otherwise, like access data.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use envstore_core::{ContentHash, Grant};

use crate::TokenRecord;

/// How long access data read from the database is trusted without asking
/// again; the longest a change made by another process goes unseen here.
pub const ACCESS_CACHE_TTL: Duration = Duration::from_secs(2);

/// Entries per map before the map is emptied.
const MAX_ENTRIES: usize = 10_000;

/// A value and when it was read.
struct Timed<T> {
    value: T,
    read_at: Instant,
}

#[derive(Default)]
struct AccessMaps {
    /// By the token's sha256, kept as bytes so a hit needs no hex encoding.
    tokens: HashMap<ContentHash, Timed<TokenRecord>>,
    /// By subject.
    bindings: HashMap<String, Timed<Vec<Grant>>>,
    /// By namespace name; only namespaces that exist.
    public_read: HashMap<String, Timed<bool>>,
}

/// Tokens, role bindings and namespace visibility, trusted for a TTL.
pub(crate) struct AccessCache {
    ttl: Duration,
    /// Bumped by every invalidation; a lookup only stores its answer if no
    /// invalidation happened since it started.
    generation: AtomicU64,
    maps: Mutex<AccessMaps>,
}

/// Where an access lookup started, for [`AccessCache`]'s `put_*` methods.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generation(u64);

impl AccessCache {
    /// A cache that trusts entries for `ttl`; zero turns it off.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            generation: AtomicU64::new(0),
            maps: Mutex::new(AccessMaps::default()),
        }
    }

    fn maps(&self) -> MutexGuard<'_, AccessMaps> {
        // The maps stay consistent even if a holder panicked: every update is
        // a single insert or clear.
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read before asking the database, and handed back with the answer.
    pub(crate) fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    /// Forgets everything; called after each write to access data.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut maps = self.maps();
        maps.tokens.clear();
        maps.bindings.clear();
        maps.public_read.clear();
    }

    /// Invalidates when dropped: held across a write to access data, it
    /// empties the cache however the write ends, even when the request that
    /// made it is cancelled half-way.
    pub(crate) fn invalidate_when_done(&self) -> InvalidateOnDrop<'_> {
        InvalidateOnDrop(self)
    }

    /// A cached token, unless it has expired by `now_millis`.
    pub(crate) fn token(&self, digest: &ContentHash, now_millis: i64) -> Option<TokenRecord> {
        fresh(&self.maps().tokens, digest, self.ttl).filter(|record| {
            record
                .expires_at
                .is_none_or(|expires_at| expires_at > now_millis)
        })
    }

    pub(crate) fn put_token(&self, since: Generation, digest: ContentHash, record: &TokenRecord) {
        self.put(since, |maps| &mut maps.tokens, digest, record.clone());
    }

    pub(crate) fn bindings(&self, subject: &str) -> Option<Vec<Grant>> {
        fresh(&self.maps().bindings, subject, self.ttl)
    }

    pub(crate) fn put_bindings(&self, since: Generation, subject: &str, bindings: &[Grant]) {
        self.put(
            since,
            |maps| &mut maps.bindings,
            subject.to_owned(),
            bindings.to_vec(),
        );
    }

    pub(crate) fn public_read(&self, namespace: &str) -> Option<bool> {
        fresh(&self.maps().public_read, namespace, self.ttl)
    }

    pub(crate) fn put_public_read(&self, since: Generation, namespace: &str, public_read: bool) {
        self.put(
            since,
            |maps| &mut maps.public_read,
            namespace.to_owned(),
            public_read,
        );
    }

    fn put<K: Hash + Eq, T>(
        &self,
        since: Generation,
        map: impl FnOnce(&mut AccessMaps) -> &mut HashMap<K, Timed<T>>,
        key: K,
        value: T,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut maps = self.maps();
        // Checked under the lock that `invalidate` clears under: an answer
        // read before a change is never stored after it.
        if self.generation.load(Ordering::Acquire) != since.0 {
            return;
        }
        let map = map(&mut maps);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            key,
            Timed {
                value,
                read_at: Instant::now(),
            },
        );
    }
}

/// See [`AccessCache::invalidate_when_done`].
pub(crate) struct InvalidateOnDrop<'a>(&'a AccessCache);

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        self.0.invalidate();
    }
}

impl std::fmt::Debug for AccessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn fresh<K, Q, T>(map: &HashMap<K, Timed<T>>, key: &Q, ttl: Duration) -> Option<T>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
    T: Clone,
{
    map.get(key)
        .filter(|entry| entry.read_at.elapsed() < ttl)
        .map(|entry| entry.value.clone())
}

/// Facts about locks, read once per process (platforms) or per TTL
/// (namespaces holding the lock).
#[derive(Default)]
pub(crate) struct LockCache {
    /// By lock hash (hex): the platforms the lock was solved for.
    platforms: Mutex<HashMap<String, Vec<String>>>,
    /// By lock hash (hex): namespaces known to hold a build of the lock.
    namespaces: Mutex<HashMap<String, Timed<Vec<String>>>>,
}

impl LockCache {
    pub(crate) fn platforms(&self, lock_hash: &str) -> Option<Vec<String>> {
        lock(&self.platforms).get(lock_hash).cloned()
    }

    pub(crate) fn put_platforms(&self, lock_hash: &str, platforms: &[String]) {
        bounded_insert(&mut lock(&self.platforms), lock_hash, platforms.to_vec());
    }

    pub(crate) fn namespaces(&self, lock_hash: &str) -> Option<Vec<String>> {
        fresh(&lock(&self.namespaces), lock_hash, ACCESS_CACHE_TTL)
    }

    /// Only non-empty lists are kept: an unknown hash always asks again.
    pub(crate) fn put_namespaces(&self, lock_hash: &str, namespaces: &[String]) {
        if !namespaces.is_empty() {
            let entry = Timed {
                value: namespaces.to_vec(),
                read_at: Instant::now(),
            };
            bounded_insert(&mut lock(&self.namespaces), lock_hash, entry);
        }
    }

    /// Forgets which namespaces hold which locks: one was just deleted.
    pub(crate) fn forget_namespaces(&self) {
        lock(&self.namespaces).clear();
    }
}

impl std::fmt::Debug for LockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockCache").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bounded_insert<T>(map: &mut HashMap<String, T>, key: &str, value: T) {
    if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
        map.clear();
    }
    map.insert(key.to_owned(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_at: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: "t1".into(),
            subject: "vera".into(),
            name: "ci".into(),
            created_by: "admin".into(),
            server_admin: false,
            scopes: None,
            created_at: 0,
            expires_at,
            revoked_at: None,
            parent_token_id: None,
        }
    }

    #[test]
    fn an_answer_read_before_an_invalidation_is_not_stored() {
        let cache = AccessCache::new(Duration::from_secs(60));
        let digest = ContentHash::of(b"token");
        let before = cache.generation();
        cache.invalidate();
        cache.put_token(before, digest, &record(None));
        assert!(cache.token(&digest, 0).is_none());

        cache.put_token(cache.generation(), digest, &record(None));
        assert!(cache.token(&digest, 0).is_some());
        cache.invalidate();
        assert!(
            cache.token(&digest, 0).is_none(),
            "invalidation empties the cache"
        );
    }

    #[test]
    fn expired_tokens_and_old_entries_are_not_answered() {
        let cache = AccessCache::new(Duration::from_secs(60));
        let digest = ContentHash::of(b"token");
        cache.put_token(cache.generation(), digest, &record(Some(1_000)));
        assert!(cache.token(&digest, 999).is_some());
        assert!(cache.token(&digest, 1_000).is_none());

        let off = AccessCache::new(Duration::ZERO);
        off.put_public_read(off.generation(), "team", true);
        assert_eq!(off.public_read("team"), None);

        let short = AccessCache::new(Duration::from_millis(20));
        short.put_bindings(short.generation(), "vera", &[]);
        assert_eq!(short.bindings("vera"), Some(Vec::new()));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(short.bindings("vera"), None);
    }

    #[test]
    fn maps_stay_bounded() {
        let cache = AccessCache::new(Duration::from_secs(60));
        for index in 0..=MAX_ENTRIES {
            cache.put_public_read(cache.generation(), &format!("ns-{index}"), false);
        }
        assert!(cache.maps().public_read.len() <= MAX_ENTRIES);

        let locks = LockCache::default();
        locks.put_namespaces("hash", &[]);
        assert_eq!(locks.namespaces("hash"), None, "empty lists are not kept");
        for index in 0..=MAX_ENTRIES {
            locks.put_platforms(&format!("hash-{index}"), &["linux-64".to_owned()]);
        }
        assert!(lock(&locks.platforms).len() <= MAX_ENTRIES);
    }
}

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
//! a `moka` cache bounded by entry count ([`MAX_ENTRIES`]); moka picks what
//! to evict. Emptying is exact: each entry carries the generation it was read
//! in and only entries of the current generation are answered, so bumping
//! the generation hides every older entry at once (moka's `invalidate_all`,
//! called too, only frees the memory later).
//!
//! A lock's platforms never change once written (they are fixed by its
//! hash) and are kept without a TTL. The namespaces holding a build of a
//! lock grow as builds finish and shrink only when an environment or
//! namespace is deleted: a cached list may lack a namespace, so callers may
//! grant from it but must ask again before refusing; and it may still name a
//! deleted namespace, so it is emptied by a deletion made through this
//! process and trusted for [`ACCESS_CACHE_TTL`] otherwise, like access data.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envstore_core::{ContentHash, Grant};
use moka::sync::Cache;

use crate::TokenRecord;

/// How long access data read from the database is trusted without asking
/// again; the longest a change made by another process goes unseen here.
pub const ACCESS_CACHE_TTL: Duration = Duration::from_secs(2);

/// Entries per map.
const MAX_ENTRIES: u64 = 10_000;

/// A value and the generation it was read in.
#[derive(Clone)]
struct Stamped<T> {
    generation: u64,
    value: T,
}

/// A map of at most [`MAX_ENTRIES`] values, each trusted for `ttl` if given.
fn stamped_map<K, T>(ttl: Option<Duration>) -> Cache<K, Stamped<T>>
where
    K: Hash + Eq + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    let builder = Cache::builder().max_capacity(MAX_ENTRIES);
    match ttl {
        Some(ttl) => builder.time_to_live(ttl).build(),
        None => builder.build(),
    }
}

/// The value under `key` if it was read in generation `current`.
fn current<K, Q, T>(map: &Cache<K, Stamped<T>>, key: &Q, current: u64) -> Option<T>
where
    K: Borrow<Q> + Hash + Eq + Send + Sync + 'static,
    Q: Hash + Eq + ?Sized,
    T: Clone + Send + Sync + 'static,
{
    map.get(key)
        .filter(|entry| entry.generation == current)
        .map(|entry| entry.value)
}

/// Tokens, role bindings and namespace visibility, trusted for a TTL.
pub(crate) struct AccessCache {
    ttl: Duration,
    /// Bumped by every invalidation; only entries read in the current
    /// generation are answered, and a lookup only stores its answer if no
    /// invalidation happened since it started.
    generation: AtomicU64,
    /// By the token's sha256, kept as bytes so a hit needs no hex encoding.
    tokens: Cache<ContentHash, Stamped<TokenRecord>>,
    /// By subject.
    bindings: Cache<String, Stamped<Vec<Grant>>>,
    /// By namespace name; only namespaces that exist.
    public_read: Cache<String, Stamped<bool>>,
}

/// Where an access lookup started, for [`AccessCache`]'s `put_*` methods.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generation(u64);

impl AccessCache {
    /// A cache that trusts entries for `ttl`; zero turns it off.
    pub(crate) fn new(ttl: Duration) -> Self {
        let ttl_of_maps = (!ttl.is_zero()).then_some(ttl);
        Self {
            ttl,
            generation: AtomicU64::new(0),
            tokens: stamped_map(ttl_of_maps),
            bindings: stamped_map(ttl_of_maps),
            public_read: stamped_map(ttl_of_maps),
        }
    }

    /// Read before asking the database, and handed back with the answer.
    pub(crate) fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::Acquire))
    }

    /// Forgets everything; called after each write to access data.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.tokens.invalidate_all();
        self.bindings.invalidate_all();
        self.public_read.invalidate_all();
    }

    /// Invalidates when dropped: held across a write to access data, it
    /// empties the cache however the write ends, even when the request that
    /// made it is cancelled half-way.
    pub(crate) fn invalidate_when_done(&self) -> InvalidateOnDrop<'_> {
        InvalidateOnDrop(self)
    }

    /// A cached token, unless it has expired by `now_millis`.
    pub(crate) fn token(&self, digest: &ContentHash, now_millis: i64) -> Option<TokenRecord> {
        self.fresh(&self.tokens, digest).filter(|record| {
            record
                .expires_at
                .is_none_or(|expires_at| expires_at > now_millis)
        })
    }

    pub(crate) fn put_token(&self, since: Generation, digest: ContentHash, record: &TokenRecord) {
        self.put(since, &self.tokens, digest, record.clone());
    }

    pub(crate) fn bindings(&self, subject: &str) -> Option<Vec<Grant>> {
        self.fresh(&self.bindings, subject)
    }

    pub(crate) fn put_bindings(&self, since: Generation, subject: &str, bindings: &[Grant]) {
        self.put(since, &self.bindings, subject.to_owned(), bindings.to_vec());
    }

    pub(crate) fn public_read(&self, namespace: &str) -> Option<bool> {
        self.fresh(&self.public_read, namespace)
    }

    pub(crate) fn put_public_read(&self, since: Generation, namespace: &str, public_read: bool) {
        self.put(since, &self.public_read, namespace.to_owned(), public_read);
    }

    /// An entry read since the last invalidation and within the TTL (moka
    /// answers nothing older).
    fn fresh<K, Q, T>(&self, map: &Cache<K, Stamped<T>>, key: &Q) -> Option<T>
    where
        K: Borrow<Q> + Hash + Eq + Send + Sync + 'static,
        Q: Hash + Eq + ?Sized,
        T: Clone + Send + Sync + 'static,
    {
        current(map, key, self.generation.load(Ordering::Acquire))
    }

    fn put<K, T>(&self, since: Generation, map: &Cache<K, Stamped<T>>, key: K, value: T)
    where
        K: Hash + Eq + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
    {
        if self.ttl.is_zero() || self.generation.load(Ordering::Acquire) != since.0 {
            return;
        }
        // Stamped with the generation the lookup started in: should an
        // invalidation land between the check above and this insert, the
        // entry is already of an old generation and never answered.
        map.insert(
            key,
            Stamped {
                generation: since.0,
                value,
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

/// Facts about locks, read once per process (platforms) or per TTL
/// (namespaces holding the lock).
pub(crate) struct LockCache {
    /// By lock hash (hex): the platforms the lock was solved for.
    platforms: Cache<String, Vec<String>>,
    /// Bumped when a namespace or environment is deleted.
    generation: AtomicU64,
    /// By lock hash (hex): namespaces known to hold a build of the lock.
    namespaces: Cache<String, Stamped<Vec<String>>>,
}

impl Default for LockCache {
    fn default() -> Self {
        Self {
            platforms: Cache::new(MAX_ENTRIES),
            generation: AtomicU64::new(0),
            namespaces: stamped_map(Some(ACCESS_CACHE_TTL)),
        }
    }
}

impl LockCache {
    pub(crate) fn platforms(&self, lock_hash: &str) -> Option<Vec<String>> {
        self.platforms.get(lock_hash)
    }

    pub(crate) fn put_platforms(&self, lock_hash: &str, platforms: &[String]) {
        self.platforms
            .insert(lock_hash.to_owned(), platforms.to_vec());
    }

    pub(crate) fn namespaces(&self, lock_hash: &str) -> Option<Vec<String>> {
        current(
            &self.namespaces,
            lock_hash,
            self.generation.load(Ordering::Acquire),
        )
    }

    /// Only non-empty lists are kept: an unknown hash always asks again.
    pub(crate) fn put_namespaces(&self, lock_hash: &str, namespaces: &[String]) {
        if !namespaces.is_empty() {
            let entry = Stamped {
                generation: self.generation.load(Ordering::Acquire),
                value: namespaces.to_vec(),
            };
            self.namespaces.insert(lock_hash.to_owned(), entry);
        }
    }

    /// Forgets which namespaces hold which locks: one was just deleted.
    pub(crate) fn forget_namespaces(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.namespaces.invalidate_all();
    }
}

impl std::fmt::Debug for LockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockCache").finish_non_exhaustive()
    }
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
        // A put that passed its check just before the invalidation landed
        // stores an entry of the old generation, which is never answered.
        cache.tokens.insert(
            digest,
            Stamped {
                generation: before.0,
                value: record(None),
            },
        );
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
        for index in 0..MAX_ENTRIES + 100 {
            cache.put_public_read(cache.generation(), &format!("ns-{index}"), false);
        }
        cache.public_read.run_pending_tasks();
        assert!(cache.public_read.entry_count() <= MAX_ENTRIES);

        let locks = LockCache::default();
        locks.put_namespaces("hash", &[]);
        assert_eq!(locks.namespaces("hash"), None, "empty lists are not kept");
        for index in 0..MAX_ENTRIES + 100 {
            locks.put_platforms(&format!("hash-{index}"), &["linux-64".to_owned()]);
        }
        locks.platforms.run_pending_tasks();
        assert!(locks.platforms.entry_count() <= MAX_ENTRIES);
    }

    #[test]
    fn a_deletion_forgets_the_namespaces_holding_locks() {
        let locks = LockCache::default();
        let team = ["team".to_owned()];
        locks.put_namespaces("hash", &team);
        locks.put_platforms("hash", &["linux-64".to_owned()]);
        assert_eq!(locks.namespaces("hash").as_deref(), Some(&team[..]));
        locks.forget_namespaces();
        assert_eq!(locks.namespaces("hash"), None);
        assert!(locks.platforms("hash").is_some(), "platforms never change");
    }
}

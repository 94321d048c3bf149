//! Garbage collection by policy: each environment keeps the prefixes of its
//! newest builds; older builds keep their lock and log but release their
//! prefix, which is rebuilt from the lock if one is made current again.
//! Prefixes and packed prefixes nothing holds are removed, and deleted
//! environments and namespaces are cleaned: their links, logs and rows.
//! Package cache entries that no prefix on this node links any more are
//! removed once they have been idle for a while; while the cache is over its
//! size budget, entries no complete prefix uses go too, used longest ago
//! first. Temporary files and folders that crashed processes left (downloads,
//! rattler's extraction folders, packed prefixes being written) go once they
//! are an hour old. Nothing another process holds a lock on is removed: a
//! cache entry is removed under its exclusive file lock, skipped when busy.
//!
//! A prefix is removed only under its prefix lease, so never while a worker
//! builds it, and its marker goes first, so a half-removed prefix is never
//! taken for a complete one. A build that started reusing a prefix just
//! before it was collected finds its link unset; making it current again
//! rebuilds it.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use envstore_core::error_chain;
use envstore_db::{CollectableBuild, Database, DbError};
use envstore_link::is_complete;
use envstore_store::{ArtifactStore, StoreError, keys};

use crate::layout::Layout;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Prefix(#[from] envstore_link::PrefixError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to {action} '{}'", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to keep, and whether to only say what would go.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// The newest succeeded builds of each environment that keep their
    /// prefix; the current build keeps it too, however old.
    pub keep_builds: usize,
    pub dry_run: bool,
    /// Who holds prefix leases while removing.
    pub worker: String,
    pub lease: Duration,
    /// Package cache entries and download leftovers untouched for less than
    /// this are kept: a build may have just fetched them and not linked yet
    /// (`envstore gc` defaults to two hours, longer than a build may run).
    pub cache_idle: Duration,
    /// While the package cache holds more than this many bytes, entries no
    /// complete prefix uses are removed, used longest ago first.
    pub cache_budget: u64,
}

/// Temporary files and folders older than this, and not locked, were left
/// by a process that died: no download, extraction or packing stays idle
/// that long.
const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(3600);

/// A prefix folder removed (or that would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedPrefix {
    pub path: PathBuf,
    /// Bytes of files only this prefix links: what removing it frees.
    /// Files hard-linked from the package cache stay there.
    pub freed_bytes: u64,
    /// Bytes of every file in it, each counted once.
    pub apparent_bytes: u64,
    /// False for a leftover of a build that never finished.
    pub complete: bool,
}

/// What a collection did, or would do.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Builds that release their prefix.
    pub released_builds: Vec<CollectableBuild>,
    pub prefixes: Vec<CollectedPrefix>,
    /// Packed prefixes removed from the store: (key, size).
    pub packed_prefixes: Vec<(String, u64)>,
    /// Links of deleted environments removed.
    pub links: Vec<PathBuf>,
    /// Builds of deleted environments whose log and row are removed.
    pub purged_builds: usize,
    pub purged_environments: u64,
    pub purged_namespaces: u64,
    /// Prefixes left alone because a worker holds their lease.
    pub busy_prefixes: Vec<PathBuf>,
    /// Idle package cache entries no prefix links, removed: (path, bytes).
    pub cached_packages: Vec<(PathBuf, u64)>,
    /// Package cache entries no complete prefix uses, removed (oldest used
    /// first) to bring the cache under its budget: (path, bytes).
    pub over_budget_packages: Vec<(PathBuf, u64)>,
    /// The cache's size budget.
    pub cache_budget: u64,
    /// Stale temporary files and folders removed: (path, bytes).
    pub temporaries: Vec<(PathBuf, u64)>,
    /// Package cache entries left alone because another process holds them.
    pub busy_cache_entries: Vec<PathBuf>,
    /// What the package cache holds after the collection (or would).
    pub package_cache_bytes: u64,
}

impl GcReport {
    /// Bytes freed on this node's disk and in the store.
    pub fn freed_bytes(&self) -> u64 {
        self.prefixes
            .iter()
            .map(|prefix| prefix.freed_bytes)
            .sum::<u64>()
            + self
                .packed_prefixes
                .iter()
                .map(|(_, size)| size)
                .sum::<u64>()
            + self
                .cached_packages
                .iter()
                .map(|(_, size)| size)
                .sum::<u64>()
            + self
                .over_budget_packages
                .iter()
                .map(|(_, size)| size)
                .sum::<u64>()
            + self.temporaries.iter().map(|(_, size)| size).sum::<u64>()
    }
}

pub async fn collect_garbage(
    db: &Database,
    store: &ArtifactStore,
    layout: &Layout,
    options: &GcOptions,
) -> Result<GcReport, GcError> {
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    report.released_builds = db.collectable_builds(options.keep_builds).await?;
    let released: HashSet<&str> = report
        .released_builds
        .iter()
        .map(|build| build.id.as_str())
        .collect();
    let referenced: BTreeSet<String> = db
        .lock_references()
        .await?
        .into_iter()
        .filter(|(build, _)| !released.contains(build.as_str()))
        .map(|(_, lock)| lock)
        .collect();
    if !options.dry_run {
        let ids: Vec<String> = report
            .released_builds
            .iter()
            .map(|build| build.id.clone())
            .collect();
        db.mark_prefixes_collected(&ids).await?;
    }
    collect_prefixes(db, layout, options, &referenced, &mut report).await?;
    for lock in db.locks_with_packed_prefix().await? {
        if referenced.contains(&lock.to_hex()) {
            continue;
        }
        let key = keys::packed_prefix(&lock);
        let size = store.size(&key).await?.unwrap_or(0);
        if !options.dry_run {
            store.delete(&key).await?;
            db.clear_packed_prefix(&lock).await?;
        }
        report.packed_prefixes.push((key, size));
    }
    clean_deleted(db, store, layout, options, &mut report).await?;
    let (cache, prefixes) = (layout.package_cache.clone(), layout.prefixes.clone());
    let rules = CacheRules {
        idle: options.cache_idle,
        budget: options.cache_budget,
        dry_run: options.dry_run,
    };
    let collected =
        tokio::task::spawn_blocking(move || collect_package_cache(&cache, &prefixes, &rules))
            .await
            .map_err(|join| io("clean", &layout.package_cache)(std::io::Error::other(join)))??;
    report.cached_packages = collected.idle;
    report.over_budget_packages = collected.over_budget;
    report.temporaries.extend(collected.temporaries);
    report.busy_cache_entries = collected.busy;
    report.package_cache_bytes = collected.kept_bytes;
    report.cache_budget = options.cache_budget;
    Ok(report)
}

/// The rules the package cache is collected by.
struct CacheRules {
    idle: Duration,
    budget: u64,
    dry_run: bool,
}

/// What collecting the package cache removed (or would) and kept.
#[derive(Debug, Default)]
struct CacheCollection {
    idle: Vec<(PathBuf, u64)>,
    over_budget: Vec<(PathBuf, u64)>,
    temporaries: Vec<(PathBuf, u64)>,
    busy: Vec<PathBuf>,
    kept_bytes: u64,
}

/// An entry of the package cache: `<cache>/<name>-<version>-<build>`.
struct CacheEntry {
    path: PathBuf,
    name: String,
    usage: CacheEntryUsage,
    /// When a build last used it (its lock file's time, which the package
    /// gate sets), else when it was extracted.
    last_used: std::time::SystemTime,
}

/// Collects the package cache: removes entries that no prefix on this node
/// links (none of their files has a second hard link) and that have been
/// idle for `idle`; then, while the cache is over `budget`, entries no
/// complete prefix under `prefixes` uses (its `conda-meta/*.json`), used
/// longest ago first; and stale temporaries. Prefixes that copied a file
/// (with its prefix placeholder rewritten) do not need the entry. Each
/// entry is removed under its exclusive lock, and skipped when another
/// process holds it.
fn collect_package_cache(
    cache: &Path,
    prefixes: &Path,
    rules: &CacheRules,
) -> Result<CacheCollection, GcError> {
    let mut collected = CacheCollection::default();
    let listing = match fs_err::read_dir(cache) {
        Ok(listing) => listing,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(collected),
        Err(source) => return Err(io("list", cache)(source)),
    };
    let now = std::time::SystemTime::now();
    let age = |time: std::time::SystemTime| now.duration_since(time).unwrap_or_default();
    let modified = |path: &Path| {
        fs_err::symlink_metadata(path)
            .and_then(|meta| meta.modified())
            .unwrap_or(now)
    };
    let mut entries = Vec::new();
    for entry in listing {
        let entry = entry.map_err(io("list", cache))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().map_err(io("inspect", &path))?.is_dir() {
            continue;
        }
        if name == ".envstore-downloads" {
            for temporary in fs_err::read_dir(&path).map_err(io("list", &path))? {
                let temporary = temporary.map_err(io("list", &path))?.path();
                let bytes = fs_err::symlink_metadata(&temporary)
                    .map(|meta| meta.len())
                    .unwrap_or(0);
                // A download being written is locked by its process.
                let unlocked =
                    fs_err::File::open(&temporary).is_ok_and(|file| file.file().try_lock().is_ok());
                if age(modified(&temporary)) >= STALE_TEMPORARY_AGE && unlocked {
                    if !rules.dry_run {
                        remove_any(&temporary)?;
                    }
                    collected.temporaries.push((temporary, bytes));
                } else {
                    collected.kept_bytes += bytes;
                }
            }
            continue;
        }
        let usage = measure_cache_entry(&path)?;
        if let Some(entry_name) = rattler_temporary_of(&name) {
            // rattler extracts into `.<entry><6 random characters>` while it
            // holds the entry; one older than an hour, with the entry free,
            // was left by a process that died.
            let free = envstore_link::try_lock_entry(
                &cache.join(entry_name),
                envstore_link::LockMode::Exclusive,
            )
            .ok()
            .flatten();
            if age(modified(&path)) >= STALE_TEMPORARY_AGE && free.is_some() {
                if !rules.dry_run {
                    remove_any(&path)?;
                }
                collected.temporaries.push((path, usage.bytes));
            } else {
                collected.kept_bytes += usage.bytes;
            }
            continue;
        }
        // Our own folders (the validation records, a few bytes each) stay.
        if name.starts_with('.') {
            collected.kept_bytes += usage.bytes;
            continue;
        }
        let lock_file = envstore_link::entry_lock_path(&path);
        let last_used = fs_err::metadata(&lock_file)
            .and_then(|meta| meta.modified())
            .unwrap_or_else(|_| modified(&path));
        entries.push(CacheEntry {
            path,
            name,
            usage,
            last_used,
        });
    }
    // The idle rule: no prefix links it, and nobody used it for a while.
    let mut kept = Vec::new();
    for entry in entries {
        if entry.usage.linked || age(entry.last_used.max(modified(&entry.path))) < rules.idle {
            kept.push(entry);
            continue;
        }
        match remove_cache_entry(&entry, rules.dry_run)? {
            true => collected.idle.push((entry.path, entry.usage.bytes)),
            false => {
                collected.busy.push(entry.path.clone());
                kept.push(entry);
            }
        }
    }
    // The budget rule: over the budget, entries no complete prefix uses (and
    // no prefix links) go, used longest ago first.
    let mut total: u64 = kept.iter().map(|entry| entry.usage.bytes).sum();
    if total > rules.budget {
        let used = packages_of_complete_prefixes(prefixes)?;
        kept.sort_by_key(|entry| entry.last_used);
        let mut still = Vec::new();
        for entry in kept {
            // A linked entry's files stay in the prefix anyway: removing it
            // frees nothing.
            let busy = collected.busy.contains(&entry.path);
            if total <= rules.budget || used.contains(&entry.name) || entry.usage.linked || busy {
                still.push(entry);
                continue;
            }
            match remove_cache_entry(&entry, rules.dry_run)? {
                true => {
                    total -= entry.usage.bytes;
                    collected.over_budget.push((entry.path, entry.usage.bytes));
                }
                false => {
                    collected.busy.push(entry.path.clone());
                    still.push(entry);
                }
            }
        }
        kept = still;
    }
    collected.kept_bytes += kept.iter().map(|entry| entry.usage.bytes).sum::<u64>();
    Ok(collected)
}

/// Removes a cache entry and its lock file under its exclusive lock; false
/// when another process holds the entry (a build checking or linking it).
fn remove_cache_entry(entry: &CacheEntry, dry_run: bool) -> Result<bool, GcError> {
    let lock = envstore_link::try_lock_entry(&entry.path, envstore_link::LockMode::Exclusive)
        .map_err(io("lock", &envstore_link::entry_lock_path(&entry.path)))?;
    let Some(lock) = lock else {
        return Ok(false);
    };
    if !dry_run {
        remove_any(&entry.path)?;
        // Removed while held: whoever waits on the old file takes the new
        // one (see envstore_link::try_lock_entry).
        let _ = fs_err::remove_file(lock.path());
    }
    Ok(true)
}

/// The entry a rattler extraction folder `.<entry><6 characters>` is for.
fn rattler_temporary_of(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?;
    if inner.starts_with("envstore-") || inner.len() <= 6 {
        return None;
    }
    let entry = inner.get(..inner.len() - 6)?;
    // `name-version-build`: at least two dashes.
    (entry.matches('-').count() >= 2).then_some(entry)
}

/// `name-version-build` of every package in the complete prefixes under
/// `prefixes`: the cache entries they were linked from.
fn packages_of_complete_prefixes(prefixes: &Path) -> Result<HashSet<String>, GcError> {
    let mut used = HashSet::new();
    let listing = match fs_err::read_dir(prefixes) {
        Ok(listing) => listing,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(used),
        Err(source) => return Err(io("list", prefixes)(source)),
    };
    for prefix in listing {
        let prefix = prefix.map_err(io("list", prefixes))?.path();
        if !is_complete(&prefix) {
            continue;
        }
        if let Ok(packages) = envstore_link::installed_packages(&prefix) {
            used.extend(packages);
        }
    }
    Ok(used)
}

/// A package cache entry's regular files: their bytes, and whether any of
/// them is hard-linked from elsewhere (a prefix).
struct CacheEntryUsage {
    bytes: u64,
    linked: bool,
}

fn measure_cache_entry(path: &Path) -> Result<CacheEntryUsage, GcError> {
    use std::os::unix::fs::MetadataExt;
    let mut usage = CacheEntryUsage {
        bytes: 0,
        linked: false,
    };
    for file in walkdir::WalkDir::new(path).follow_links(false) {
        let file = file.map_err(|error| io("measure", path)(error.into()))?;
        if !file.file_type().is_file() {
            continue;
        }
        let metadata = file
            .metadata()
            .map_err(|error| io("measure", file.path())(error.into()))?;
        usage.bytes += metadata.len();
        usage.linked |= metadata.nlink() > 1;
    }
    Ok(usage)
}

fn remove_any(path: &Path) -> Result<(), GcError> {
    let is_dir = fs_err::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
    let result = if is_dir {
        fs_err::remove_dir_all(path)
    } else {
        fs_err::remove_file(path)
    };
    match result {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io("remove", path)(error))
        }
        _ => Ok(()),
    }
}

/// Removes the prefix folders under the layout that no reference holds.
async fn collect_prefixes(
    db: &Database,
    layout: &Layout,
    options: &GcOptions,
    referenced: &BTreeSet<String>,
    report: &mut GcReport,
) -> Result<(), GcError> {
    let held: HashSet<String> = referenced
        .iter()
        .filter_map(|hash| hash.get(..16))
        .map(str::to_owned)
        .collect();
    let entries = match fs_err::read_dir(&layout.prefixes) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io("list", &layout.prefixes)(source)),
    };
    let mut candidates = Vec::new();
    let now = std::time::SystemTime::now();
    let age = |path: &Path| {
        fs_err::symlink_metadata(path)
            .and_then(|meta| meta.modified())
            .map(|modified| now.duration_since(modified).unwrap_or_default())
            .unwrap_or_default()
    };
    for entry in entries {
        let entry = entry.map_err(io("list", &layout.prefixes))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io("inspect", &path))?.is_dir();
        // A packed prefix being written is locked by its process; an old,
        // unlocked one was left by a process that died while packing.
        if name.starts_with(".envstore-pack-") && !is_dir {
            let unlocked =
                fs_err::File::open(&path).is_ok_and(|file| file.file().try_lock().is_ok());
            if unlocked && age(&path) >= STALE_TEMPORARY_AGE {
                let bytes = fs_err::symlink_metadata(&path)
                    .map(|meta| meta.len())
                    .unwrap_or(0);
                if !options.dry_run {
                    remove_any(&path)?;
                }
                report.temporaries.push((path, bytes));
            }
            continue;
        }
        if !is_dir {
            continue;
        }
        // A prefix a build still refers to stays, unless it is a leftover
        // of a build that died half-way: no marker, untouched for longer
        // than a lease (its lease is taken below, so no live build has it).
        if held.contains(&name) && (is_complete(&path) || age(&path) < options.lease) {
            continue;
        }
        // Only folders named like a prefix are ours to remove.
        if let Some(lock) = db.lock_by_short_hash(&name).await? {
            candidates.push((lock, entry.path(), held.contains(&name)));
        }
    }
    for (lock, path, leftover_only) in candidates {
        let complete = is_complete(&path);
        let measured = path.clone();
        let size =
            tokio::task::spawn_blocking(move || crate::prefix_size::measure_prefix(&measured))
                .await
                .map_err(|join| io("measure", &path)(std::io::Error::other(join)))?
                .map_err(|error| io("measure", &path)(error.into()))?;
        let (freed_bytes, apparent_bytes) = (size.unshared_bytes, size.bytes);
        if !options.dry_run {
            if !db
                .acquire_prefix_lease(&lock, &options.worker, options.lease)
                .await?
            {
                report.busy_prefixes.push(path);
                continue;
            }
            // A build may have completed it before the lease was ours.
            let completed = leftover_only && is_complete(&path);
            let removed = if completed {
                Ok(())
            } else {
                envstore_link::remove_prefix(&path).await
            };
            if let Err(error) = db.release_prefix_lease(&lock, &options.worker).await {
                tracing::warn!(lock = %lock, error = %error_chain(&error), "failed to release a prefix lease");
            }
            removed?;
            if completed {
                continue;
            }
        }
        report.prefixes.push(CollectedPrefix {
            path,
            freed_bytes,
            apparent_bytes,
            complete,
        });
    }
    Ok(())
}

/// Removes what deleted environments and namespaces left: links, logs, rows.
async fn clean_deleted(
    db: &Database,
    store: &ArtifactStore,
    layout: &Layout,
    options: &GcOptions,
    report: &mut GcReport,
) -> Result<(), GcError> {
    for environment in db.deleted_environments().await? {
        if !environment.still_deleted {
            continue;
        }
        let link = layout.environment_link(&environment.namespace, &environment.name);
        if fs_err::symlink_metadata(&link).is_ok_and(|meta| meta.file_type().is_symlink()) {
            if !options.dry_run {
                fs_err::remove_file(&link).map_err(io("remove", &link))?;
                // The namespace's folder goes with its last link.
                if let Some(folder) = link.parent() {
                    let _ = fs_err::remove_dir(folder);
                }
            }
            report.links.push(link);
        }
    }
    let builds = db.deleted_builds().await?;
    report.purged_builds = builds.len();
    if options.dry_run {
        return Ok(());
    }
    for (build, attempts) in &builds {
        store.delete(&keys::build_log(build)).await?;
        store.delete(&keys::build_events(build)).await?;
        for attempt in 1..=*attempts {
            store.delete(&keys::attempt_log(build, attempt)).await?;
        }
    }
    let ids: Vec<String> = builds.into_iter().map(|(build, _)| build).collect();
    let (_, environments, namespaces) = db.purge_deleted(&ids).await?;
    report.purged_environments = environments;
    report.purged_namespaces = namespaces;
    Ok(())
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GcError {
    let path = path.to_owned();
    move |source| GcError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_age(path: &Path, age: Duration) {
        let time = std::time::SystemTime::now() - age;
        fs_err::File::open(path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }

    /// A cache with one entry a prefix links, one nothing links, and a
    /// download leftover two hours old.
    fn cache_with_entries() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("pkgs");
        for entry in ["used-1.0-0", "unused-1.0-0"] {
            fs_err::create_dir_all(cache.join(entry).join("lib")).unwrap();
            fs_err::write(cache.join(entry).join("lib/data.txt"), b"0123456789").unwrap();
        }
        fs_err::write(cache.join("unused-1.0-0.lock"), b"").unwrap();
        fs_err::create_dir_all(cache.join(".envstore-validated")).unwrap();
        fs_err::write(cache.join(".envstore-validated/sha256-ab"), b"nonce").unwrap();
        fs_err::create_dir_all(cache.join(".envstore-downloads")).unwrap();
        fs_err::write(cache.join(".envstore-downloads/.tmp123"), b"partial").unwrap();
        set_age(
            &cache.join(".envstore-downloads/.tmp123"),
            Duration::from_secs(7200),
        );
        let prefix = dir.path().join("prefixes/abc/lib");
        fs_err::create_dir_all(&prefix).unwrap();
        fs_err::hard_link(
            cache.join("used-1.0-0/lib/data.txt"),
            prefix.join("data.txt"),
        )
        .unwrap();
        (dir, cache)
    }

    fn rules(idle: Duration, budget: u64, dry_run: bool) -> CacheRules {
        CacheRules {
            idle,
            budget,
            dry_run,
        }
    }

    fn relative(cache: &Path, removed: &[(PathBuf, u64)]) -> Vec<(PathBuf, u64)> {
        removed
            .iter()
            .map(|(path, bytes)| (path.strip_prefix(cache).unwrap().to_owned(), *bytes))
            .collect()
    }

    #[test]
    fn idle_entries_no_prefix_links_and_download_leftovers_are_removed() {
        let (dir, cache) = cache_with_entries();
        let prefixes = dir.path().join("prefixes");
        let dry = collect_package_cache(&cache, &prefixes, &rules(Duration::ZERO, u64::MAX, true))
            .unwrap();
        assert_eq!(dry.idle.len() + dry.temporaries.len(), 2, "{dry:?}");
        assert!(
            cache.join("unused-1.0-0").exists(),
            "a dry run removes nothing"
        );
        assert_eq!(
            dry.kept_bytes,
            10 + 5,
            "the linked entry and the validation records stay"
        );

        let done =
            collect_package_cache(&cache, &prefixes, &rules(Duration::ZERO, u64::MAX, false))
                .unwrap();
        assert_eq!(
            relative(&cache, &done.idle),
            vec![(PathBuf::from("unused-1.0-0"), 10)]
        );
        assert_eq!(
            relative(&cache, &done.temporaries),
            vec![(PathBuf::from(".envstore-downloads/.tmp123"), 7)]
        );
        assert!(!cache.join("unused-1.0-0").exists() && !cache.join("unused-1.0-0.lock").exists());
        assert!(
            cache.join("used-1.0-0/lib/data.txt").exists(),
            "a prefix links it"
        );
        assert!(cache.join(".envstore-validated/sha256-ab").exists());
        assert_eq!(done.kept_bytes, 15);
        let again =
            collect_package_cache(&cache, &prefixes, &rules(Duration::ZERO, u64::MAX, false))
                .unwrap();
        assert!(
            again.idle.is_empty() && again.temporaries.is_empty(),
            "{again:?}"
        );
    }

    #[test]
    fn entries_fetched_recently_are_kept_for_the_build_about_to_link_them() {
        let (dir, cache) = cache_with_entries();
        fs_err::write(cache.join(".envstore-downloads/.tmp456"), b"fresh").unwrap();
        let collected = collect_package_cache(
            &cache,
            &dir.path().join("prefixes"),
            &rules(Duration::from_secs(3600), u64::MAX, false),
        )
        .unwrap();
        assert!(collected.idle.is_empty(), "{collected:?}");
        assert_eq!(
            relative(&cache, &collected.temporaries),
            vec![(PathBuf::from(".envstore-downloads/.tmp123"), 7)]
        );
        assert!(cache.join("unused-1.0-0").exists());
        assert!(
            cache.join(".envstore-downloads/.tmp456").exists(),
            "a download of the last hour stays"
        );
        assert_eq!(collected.kept_bytes, 10 + 10 + 5 + 5);
    }

    #[test]
    fn over_the_budget_unused_entries_go_oldest_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("pkgs");
        let prefixes = dir.path().join("prefixes");
        for (entry, hours) in [("kept-1.0-0", 5), ("oldest-1.0-0", 4), ("newer-1.0-0", 1)] {
            fs_err::create_dir_all(cache.join(entry)).unwrap();
            fs_err::write(cache.join(entry).join("data"), vec![0u8; 100]).unwrap();
            fs_err::write(cache.join(format!("{entry}.lock")), b"").unwrap();
            set_age(
                &cache.join(format!("{entry}.lock")),
                Duration::from_secs(hours * 3600),
            );
        }
        // A complete prefix uses `kept` (it copied its files: no hard link).
        let prefix = prefixes.join("0123456789abcdef");
        fs_err::create_dir_all(prefix.join("conda-meta")).unwrap();
        fs_err::write(prefix.join("conda-meta/kept-1.0-0.json"), b"{}").unwrap();
        fs_err::write(prefix.join(envstore_link::MARKER_FILE), b"{}").unwrap();
        // A half-built one's packages do not count.
        let half = prefixes.join("fedcba9876543210");
        fs_err::create_dir_all(half.join("conda-meta")).unwrap();
        fs_err::write(half.join("conda-meta/newer-1.0-0.json"), b"{}").unwrap();

        let idle = Duration::from_secs(100 * 3600);
        let under = collect_package_cache(&cache, &prefixes, &rules(idle, 300, false)).unwrap();
        assert!(
            under.over_budget.is_empty(),
            "under the budget nothing goes: {under:?}"
        );
        let dry = collect_package_cache(&cache, &prefixes, &rules(idle, 250, true)).unwrap();
        assert_eq!(
            relative(&cache, &dry.over_budget),
            vec![(PathBuf::from("oldest-1.0-0"), 100)]
        );
        assert!(cache.join("oldest-1.0-0").exists());
        let done = collect_package_cache(&cache, &prefixes, &rules(idle, 0, false)).unwrap();
        let removed = relative(&cache, &done.over_budget);
        assert_eq!(
            removed,
            vec![
                (PathBuf::from("oldest-1.0-0"), 100),
                (PathBuf::from("newer-1.0-0"), 100)
            ],
            "oldest used first"
        );
        assert!(
            cache.join("kept-1.0-0/data").exists(),
            "a complete prefix uses it"
        );
        assert_eq!(done.kept_bytes, 100);
    }

    #[test]
    fn entries_and_temporaries_another_process_holds_are_left_alone() {
        let (dir, cache) = cache_with_entries();
        let prefixes = dir.path().join("prefixes");
        // A build checking or linking the entry holds it shared.
        let linking = envstore_link::try_lock_entry(
            &cache.join("unused-1.0-0"),
            envstore_link::LockMode::Shared,
        )
        .unwrap()
        .unwrap();
        // A download being written is locked by its process.
        let downloading = fs_err::File::open(cache.join(".envstore-downloads/.tmp123")).unwrap();
        downloading.try_lock().unwrap();
        // rattler's extraction folders: one whose entry is being fetched,
        // one a dead process left.
        for temporary in [".unused-1.0-0AbC123", ".gone-2.0-1XyZ789"] {
            fs_err::create_dir_all(cache.join(temporary)).unwrap();
            fs_err::write(cache.join(temporary).join("part"), b"xx").unwrap();
            set_age(&cache.join(temporary), Duration::from_secs(7200));
        }
        let collected =
            collect_package_cache(&cache, &prefixes, &rules(Duration::ZERO, 0, false)).unwrap();
        assert!(
            collected.idle.is_empty() && collected.over_budget.is_empty(),
            "{collected:?}"
        );
        assert_eq!(collected.busy, vec![cache.join("unused-1.0-0")]);
        assert!(cache.join("unused-1.0-0/lib/data.txt").exists());
        assert!(cache.join(".envstore-downloads/.tmp123").exists());
        assert_eq!(
            relative(&cache, &collected.temporaries),
            vec![(PathBuf::from(".gone-2.0-1XyZ789"), 2)]
        );
        assert!(
            cache.join(".unused-1.0-0AbC123").exists(),
            "its entry is held"
        );
        drop((linking, downloading));
        let collected =
            collect_package_cache(&cache, &prefixes, &rules(Duration::ZERO, 0, false)).unwrap();
        assert_eq!(
            relative(&cache, &collected.idle),
            vec![(PathBuf::from("unused-1.0-0"), 10)]
        );
        assert_eq!(collected.temporaries.len(), 2, "{collected:?}");
    }

    #[test]
    fn rattler_extraction_folders_are_told_from_entries() {
        assert_eq!(
            rattler_temporary_of(".numpy-2.0.2-py311h17367e0_0B4xbFf"),
            Some("numpy-2.0.2-py311h17367e0_0")
        );
        assert_eq!(rattler_temporary_of(".envstore-validated"), None);
        assert_eq!(rattler_temporary_of(".envstore-downloads"), None);
        assert_eq!(rattler_temporary_of("numpy-2.0.2-0"), None);
    }

    #[test]
    fn no_cache_yet_is_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let collected = collect_package_cache(
            &dir.path().join("pkgs"),
            &dir.path().join("prefixes"),
            &rules(Duration::ZERO, 0, false),
        )
        .unwrap();
        assert!(collected.idle.is_empty());
        assert_eq!(collected.kept_bytes, 0);
    }
}

//! Garbage collection by policy: each environment keeps the prefixes of its
//! newest builds; older builds keep their lock and log but release their
//! prefix, which is rebuilt from the lock if one is made current again.
//! Prefixes and packed prefixes nothing holds are removed, and deleted
//! environments and namespaces are cleaned: their links, logs and rows.
//! Package cache entries that no prefix on this node links any more, and
//! download leftovers, are removed once they have been idle for a while.
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
use envstore_link::MARKER_FILE;
use envstore_store::{ArtifactStore, StoreError, keys};

use crate::pipeline::Layout;

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
}


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
    /// Package cache entries (and download leftovers) removed: (path, bytes).
    pub cached_packages: Vec<(PathBuf, u64)>,
    /// What the package cache holds after the collection (or would).
    pub package_cache_bytes: u64,
}

impl GcReport {
    /// Bytes freed on this node's disk and in the store.
    pub fn freed_bytes(&self) -> u64 {
        self.prefixes.iter().map(|prefix| prefix.freed_bytes).sum::<u64>()
            + self.packed_prefixes.iter().map(|(_, size)| size).sum::<u64>()
            + self.cached_packages.iter().map(|(_, size)| size).sum::<u64>()
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
    let released: HashSet<&str> = report.released_builds.iter().map(|build| build.id.as_str()).collect();
    let referenced: BTreeSet<String> = db
        .lock_references()
        .await?
        .into_iter()
        .filter(|(build, _)| !released.contains(build.as_str()))
        .map(|(_, lock)| lock)
        .collect();
    if !options.dry_run {
        let ids: Vec<String> = report.released_builds.iter().map(|build| build.id.clone()).collect();
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
    let cache = layout.package_cache.clone();
    let (dry_run, idle) = (options.dry_run, options.cache_idle);
    let (removed, kept_bytes) = tokio::task::spawn_blocking(move || collect_package_cache(&cache, idle, dry_run))
        .await
        .map_err(|join| io("clean", &layout.package_cache)(std::io::Error::other(join)))??;
    report.cached_packages = removed;
    report.package_cache_bytes = kept_bytes;
    Ok(report)
}

/// Removes package cache entries that no prefix on this node links (none of
/// their files has a second hard link) and that have been idle for
/// `idle`, and download leftovers as old. Prefixes that copied a file (with
/// its prefix placeholder rewritten) do not need the entry. Returns what was
/// removed and the bytes the cache keeps.
fn collect_package_cache(cache: &Path, idle: Duration, dry_run: bool) -> Result<(Vec<(PathBuf, u64)>, u64), GcError> {
    let entries = match std::fs::read_dir(cache) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => return Err(io("list", cache)(source)),
    };
    let now = std::time::SystemTime::now();
    let idle_since = |path: &Path| -> bool {
        std::fs::symlink_metadata(path)
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| now.duration_since(modified).is_ok_and(|age| age >= idle))
    };
    let (mut removed, mut kept_bytes) = (Vec::new(), 0);
    for entry in entries {
        let entry = entry.map_err(io("list", cache))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().map_err(io("inspect", &path))?.is_dir() {
            continue;
        }
        let usage = measure_cache_entry(&path)?;
        // Our own folders: the validation records stay (a few bytes each);
        // download temporaries are leftovers once idle.
        let leftover = name == ".envstore-downloads";
        if name.starts_with('.') && !leftover {
            kept_bytes += usage.bytes;
            continue;
        }
        if leftover {
            for temporary in std::fs::read_dir(&path).map_err(io("list", &path))? {
                let temporary = temporary.map_err(io("list", &path))?.path();
                let bytes = std::fs::symlink_metadata(&temporary).map(|meta| meta.len()).unwrap_or(0);
                if idle_since(&temporary) {
                    if !dry_run {
                        remove_any(&temporary)?;
                    }
                    removed.push((temporary, bytes));
                } else {
                    kept_bytes += bytes;
                }
            }
            continue;
        }
        if usage.linked || !idle_since(&path) {
            kept_bytes += usage.bytes;
            continue;
        }
        if !dry_run {
            std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
            // rattler's lock file beside the entry.
            let _ = std::fs::remove_file(cache.join(format!("{name}.lock")));
        }
        removed.push((path, usage.bytes));
    }
    Ok((removed, kept_bytes))
}

/// A package cache entry's regular files: their bytes, and whether any of
/// them is hard-linked from elsewhere (a prefix).
struct CacheEntryUsage {
    bytes: u64,
    linked: bool,
}

fn measure_cache_entry(path: &Path) -> Result<CacheEntryUsage, GcError> {
    use std::os::unix::fs::MetadataExt;
    let mut usage = CacheEntryUsage { bytes: 0, linked: false };
    for file in walkdir::WalkDir::new(path).follow_links(false) {
        let file = file.map_err(|error| io("measure", path)(error.into()))?;
        if !file.file_type().is_file() {
            continue;
        }
        let metadata = file.metadata().map_err(|error| io("measure", file.path())(error.into()))?;
        usage.bytes += metadata.len();
        usage.linked |= metadata.nlink() > 1;
    }
    Ok(usage)
}

fn remove_any(path: &Path) -> Result<(), GcError> {
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
    let result = if is_dir { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match result {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path)(error)),
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
    let held: HashSet<String> = referenced.iter().filter_map(|hash| hash.get(..16)).map(str::to_owned).collect();
    let entries = match std::fs::read_dir(&layout.prefixes) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io("list", &layout.prefixes)(source)),
    };
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("list", &layout.prefixes))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if held.contains(&name) || !entry.file_type().map_err(io("inspect", &entry.path()))?.is_dir() {
            continue;
        }
        // Only folders named like a prefix are ours to remove.
        if let Some(lock) = db.lock_by_short_hash(&name).await? {
            candidates.push((lock, entry.path()));
        }
    }
    for (lock, path) in candidates {
        let complete = path.join(MARKER_FILE).is_file();
        let measured = path.clone();
        let size = tokio::task::spawn_blocking(move || crate::prefix_size::measure_prefix(&measured))
            .await
            .map_err(|join| io("measure", &path)(std::io::Error::other(join)))?
            .map_err(|error| io("measure", &path)(error.into()))?;
        let (freed_bytes, apparent_bytes) = (size.unshared_bytes, size.bytes);
        if !options.dry_run {
            if !db.acquire_prefix_lease(&lock, &options.worker, options.lease).await? {
                report.busy_prefixes.push(path);
                continue;
            }
            let removed = envstore_link::remove_prefix(&path).await;
            if let Err(error) = db.release_prefix_lease(&lock, &options.worker).await {
                tracing::warn!(lock = %lock, error = %error_chain(&error), "failed to release a prefix lease");
            }
            removed?;
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
        if std::fs::symlink_metadata(&link).is_ok_and(|meta| meta.file_type().is_symlink()) {
            if !options.dry_run {
                std::fs::remove_file(&link).map_err(io("remove", &link))?;
                // The namespace's folder goes with its last link.
                if let Some(folder) = link.parent() {
                    let _ = std::fs::remove_dir(folder);
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
    move |source| GcError::Io { action, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache with one entry a prefix links, one nothing links, and a
    /// download leftover.
    fn cache_with_entries() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("pkgs");
        for entry in ["used-1.0-0", "unused-1.0-0"] {
            std::fs::create_dir_all(cache.join(entry).join("lib")).unwrap();
            std::fs::write(cache.join(entry).join("lib/data.txt"), b"0123456789").unwrap();
        }
        std::fs::write(cache.join("unused-1.0-0.lock"), b"").unwrap();
        std::fs::create_dir_all(cache.join(".envstore-validated")).unwrap();
        std::fs::write(cache.join(".envstore-validated/sha256-ab"), b"nonce").unwrap();
        std::fs::create_dir_all(cache.join(".envstore-downloads")).unwrap();
        std::fs::write(cache.join(".envstore-downloads/.tmp123"), b"partial").unwrap();
        let prefix = dir.path().join("prefixes/abc/lib");
        std::fs::create_dir_all(&prefix).unwrap();
        std::fs::hard_link(cache.join("used-1.0-0/lib/data.txt"), prefix.join("data.txt")).unwrap();
        (dir, cache)
    }

    #[test]
    fn idle_entries_no_prefix_links_and_download_leftovers_are_removed() {
        let (_dir, cache) = cache_with_entries();
        let (dry, kept) = collect_package_cache(&cache, Duration::ZERO, true).unwrap();
        assert_eq!(dry.len(), 2, "{dry:?}");
        assert!(cache.join("unused-1.0-0").exists(), "a dry run removes nothing");
        assert_eq!(kept, 10 + 5, "the linked entry and the validation records stay");

        let (removed, kept) = collect_package_cache(&cache, Duration::ZERO, false).unwrap();
        let removed: Vec<_> = removed.into_iter().map(|(path, bytes)| (path.strip_prefix(&cache).unwrap().to_owned(), bytes)).collect();
        assert!(removed.contains(&(PathBuf::from("unused-1.0-0"), 10)), "{removed:?}");
        assert!(removed.contains(&(PathBuf::from(".envstore-downloads/.tmp123"), 7)), "{removed:?}");
        assert!(!cache.join("unused-1.0-0").exists() && !cache.join("unused-1.0-0.lock").exists());
        assert!(cache.join("used-1.0-0/lib/data.txt").exists(), "a prefix links it");
        assert!(cache.join(".envstore-validated/sha256-ab").exists());
        assert_eq!(kept, 15);
        let (again, _) = collect_package_cache(&cache, Duration::ZERO, false).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn entries_fetched_recently_are_kept_for_the_build_about_to_link_them() {
        let (_dir, cache) = cache_with_entries();
        let (removed, kept) = collect_package_cache(&cache, Duration::from_secs(3600), false).unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(cache.join("unused-1.0-0").exists());
        assert_eq!(kept, 10 + 10 + 5 + 7);
    }

    #[test]
    fn no_cache_yet_is_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (removed, kept) = collect_package_cache(&dir.path().join("pkgs"), Duration::ZERO, false).unwrap();
        assert!(removed.is_empty());
        assert_eq!(kept, 0);
    }
}

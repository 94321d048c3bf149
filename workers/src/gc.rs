//! Garbage collection by policy: each environment keeps the prefixes of its
//! newest builds; older builds keep their lock and log but release their
//! prefix, which is rebuilt from the lock if one is made current again.
//! Prefixes and packed prefixes nothing holds are removed, and deleted
//! environments and namespaces are cleaned: their links, logs and rows.
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
}

impl GcReport {
    /// Bytes freed on this node's disk and in the store.
    pub fn freed_bytes(&self) -> u64 {
        self.prefixes.iter().map(|prefix| prefix.freed_bytes).sum::<u64>()
            + self.packed_prefixes.iter().map(|(_, size)| size).sum::<u64>()
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
    Ok(report)
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

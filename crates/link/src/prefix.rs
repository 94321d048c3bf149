use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use envstore_core::ContentHash;
use rattler::install::{ExternalSymlinkPolicy, Installer, InstallerError};
use rattler::package_cache::{PackageCache, PackageCacheError};
use rattler_conda_types::{RepoDataRecord, Subdir};
use rattler_networking::LazyClient;
use serde::{Deserialize, Serialize};

use crate::fetch::fetch_packages;
use crate::progress::{LinkReporter, ProgressSink, TransferCounts};

/// Written last into a finished prefix; a prefix without it is never served.
pub const MARKER_FILE: &str = "conda-meta/envstore-complete.json";

#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error("failed to fetch package '{package}'")]
    Fetch {
        package: String,
        #[source]
        source: PackageCacheError,
    },
    #[error("refused package '{package}'")]
    Rejected {
        package: String,
        #[source]
        reason: crate::validate::Rejection,
    },
    #[error("failed to install into '{}'", prefix.display())]
    Install {
        prefix: PathBuf,
        #[source]
        source: InstallerError,
    },
    #[error("the prefix '{}' does not hold the lock's packages (missing: {missing:?}, unexpected: {extra:?})", prefix.display())]
    Mismatch {
        prefix: PathBuf,
        missing: Vec<String>,
        extra: Vec<String>,
    },
    #[error("failed to {action} '{}'", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PrefixError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io { action, path, source }
    }
}

/// What the marker records about a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionMarker {
    pub lock_hash: ContentHash,
    pub platform: String,
    pub packages: usize,
}

/// What building a prefix did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixReport {
    pub path: PathBuf,
    /// True when a complete prefix for this lock already existed.
    pub reused: bool,
    pub packages: usize,
    pub downloaded: usize,
    pub linked: usize,
}

/// Builds prefixes under one root, one per lock hash, sharing one package
/// cache. Builds of the same lock in this process wait for each other.
#[derive(Clone)]
pub struct PrefixBuilder {
    root: PathBuf,
    package_cache: PackageCache,
    client: LazyClient,
    in_progress: Arc<Mutex<HashMap<ContentHash, Arc<tokio::sync::Mutex<()>>>>>,
    pause_after_first_link: bool,
}

impl PrefixBuilder {
    pub fn new(root: PathBuf, package_cache: PackageCache) -> Self {
        Self {
            root,
            package_cache,
            client: LazyClient::default(),
            in_progress: Arc::default(),
            pause_after_first_link: false,
        }
    }

    /// For fault tests only: linking stops for good after the first package,
    /// leaving a half-built prefix for the test to kill the worker over.
    pub fn with_pause_after_first_link(mut self, pause: bool) -> Self {
        self.pause_after_first_link = pause;
        self
    }

    pub fn package_cache(&self) -> &PackageCache {
        &self.package_cache
    }

    /// Where the prefix of a lock lives: `<root>/<first 16 hex of lock_hash>`.
    pub fn prefix_path(&self, lock_hash: &ContentHash) -> PathBuf {
        self.root.join(lock_hash.short())
    }

    /// The marker of a complete prefix for this lock, if there is one.
    pub fn complete_marker(&self, lock_hash: &ContentHash) -> Option<CompletionMarker> {
        read_marker(&self.prefix_path(lock_hash)).filter(|marker| &marker.lock_hash == lock_hash)
    }

    /// Makes sure the prefix for `lock_hash` exists and is complete: reuses a
    /// complete one, otherwise removes any leftover, fetches and links, and
    /// writes the activation scripts of `variables`.
    #[allow(clippy::too_many_arguments)]
    pub async fn build(
        &self,
        lock_hash: &ContentHash,
        platform: Subdir,
        records: &[RepoDataRecord],
        variables: &BTreeMap<String, String>,
        sink: Arc<dyn ProgressSink>,
        on_linking: impl FnOnce(),
    ) -> Result<PrefixReport, PrefixError> {
        let guard = self.lock_for(lock_hash);
        let _held = guard.lock().await;
        let prefix = self.prefix_path(lock_hash);
        if self.complete_marker(lock_hash).is_some() {
            sink.line(format!("prefix {} is complete: reusing it", prefix.display()));
            return Ok(PrefixReport {
                path: prefix,
                reused: true,
                packages: records.len(),
                downloaded: 0,
                linked: 0,
            });
        }
        remove_prefix(&prefix).await?;
        let counts = Arc::new(TransferCounts::default());
        let result = self
            .fetch_and_link(&prefix, lock_hash, platform, records, variables, sink.clone(), counts.clone(), on_linking)
            .await;
        if let Err(error) = result {
            // Never leave a half-built prefix behind; the marker is missing
            // anyway, so a failure to remove it here is only untidy.
            if let Err(cleanup) = remove_prefix(&prefix).await {
                sink.line(format!("warning: {cleanup}"));
            }
            return Err(error);
        }
        Ok(PrefixReport {
            path: prefix,
            reused: false,
            packages: records.len(),
            downloaded: counts.downloaded(),
            linked: counts.linked(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_and_link(
        &self,
        prefix: &Path,
        lock_hash: &ContentHash,
        platform: Subdir,
        records: &[RepoDataRecord],
        variables: &BTreeMap<String, String>,
        sink: Arc<dyn ProgressSink>,
        counts: Arc<TransferCounts>,
        on_linking: impl FnOnce(),
    ) -> Result<(), PrefixError> {
        fetch_packages(&self.package_cache, &self.client, records, sink.clone(), counts.clone()).await?;
        on_linking();
        Installer::new()
            .with_package_cache(self.package_cache.clone())
            .with_download_client(self.client.clone())
            .with_target_platform(platform)
            .with_execute_link_scripts(false)
            // A package must not point into the rest of the machine.
            .with_external_symlink_policy(ExternalSymlinkPolicy::Deny)
            .with_installed_packages(Vec::new())
            .with_reporter(LinkReporter::new(sink, counts, self.pause_after_first_link))
            .install(prefix, records.iter().cloned())
            .await
            .map_err(|source| PrefixError::Install {
                prefix: prefix.to_owned(),
                source,
            })?;
        crate::activation::write_activation_scripts(prefix, platform, variables)?;
        let marker = CompletionMarker {
            lock_hash: *lock_hash,
            platform: platform.to_string(),
            packages: records.len(),
        };
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || write_marker(&prefix, &marker))
            .await
            .map_err(|join| PrefixError::Io {
                action: "write the completion marker in",
                path: PathBuf::new(),
                source: std::io::Error::other(join),
            })?
    }

    fn lock_for(&self, lock_hash: &ContentHash) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .in_progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(*lock_hash).or_default().clone()
    }
}

pub(crate) fn read_marker(prefix: &Path) -> Option<CompletionMarker> {
    let text = std::fs::read(prefix.join(MARKER_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes the marker durably: a temp file, fsync, rename, fsync of the folder.
pub(crate) fn write_marker(prefix: &Path, marker: &CompletionMarker) -> Result<(), PrefixError> {
    let path = prefix.join(MARKER_FILE);
    let folder = path.parent().unwrap_or(prefix).to_owned();
    std::fs::create_dir_all(&folder).map_err(PrefixError::io("create", &folder))?;
    let temporary = folder.join(".envstore-complete.tmp");
    let bytes = serde_json::to_vec_pretty(marker).unwrap_or_default();
    let mut file = std::fs::File::create(&temporary).map_err(PrefixError::io("create", &temporary))?;
    file.write_all(&bytes).map_err(PrefixError::io("write", &temporary))?;
    file.sync_all().map_err(PrefixError::io("sync", &temporary))?;
    std::fs::rename(&temporary, &path).map_err(PrefixError::io("rename into place", &path))?;
    std::fs::File::open(&folder)
        .and_then(|dir| dir.sync_all())
        .map_err(PrefixError::io("sync", &folder))
}

/// Removes a prefix, if there is one: its marker first, so from then on
/// nothing serves or reuses it even if the rest is removed only half-way.
pub async fn remove_prefix(prefix: &Path) -> Result<(), PrefixError> {
    match tokio::fs::remove_file(prefix.join(MARKER_FILE)).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(PrefixError::io("remove the marker of", prefix)(source)),
    }
    match tokio::fs::remove_dir_all(prefix).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PrefixError::io("remove the prefix", prefix)(source)),
    }
}

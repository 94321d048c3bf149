use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use envstore_core::ContentHash;
use rattler::install::{ExternalSymlinkPolicy, Installer};
use rattler::package_cache::PackageCache;
use rattler_conda_types::package::{PathType, PathsJson};
use rattler_conda_types::{RepoDataRecord, Subdir};
use rattler_networking::LazyClient;

use crate::conda_meta::{CompletionMarker, read_marker, write_history, write_marker};
use crate::error::{GateError, PrefixError};
use crate::fetch::PackageGate;
use crate::limits::PackageLimits;
use crate::progress::{LinkReporter, ProgressSink, TransferCounts};
use crate::validate::Rejection;

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
    gate: PackageGate,
    in_progress: Arc<Mutex<HashMap<ContentHash, Arc<tokio::sync::Mutex<()>>>>>,
    pause_after_first_link: bool,
    pause_after_first_download: bool,
}

impl PrefixBuilder {
    pub fn new(root: PathBuf, package_cache: PackageCache) -> Self {
        Self {
            root,
            gate: PackageGate::new(
                package_cache,
                LazyClient::default(),
                PackageLimits::default(),
            ),
            in_progress: Arc::default(),
            pause_after_first_link: false,
            pause_after_first_download: false,
        }
    }

    /// For fault tests only: linking stops for good after the first package,
    /// leaving a half-built prefix for the test to kill the worker over.
    /// Only in a build with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub fn with_pause_after_first_link(mut self, pause: bool) -> Self {
        self.pause_after_first_link = pause;
        self
    }

    /// For fault tests only: the build stops for good once the first package
    /// archive is downloaded and extracted into the cache, so a test can
    /// kill the process there. Only in a build with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub fn with_pause_after_first_download(mut self, pause: bool) -> Self {
        self.pause_after_first_download = pause;
        self
    }

    /// How long transient download errors of packages (refused or reset
    /// connections, timeouts, HTTP 5xx and 429) are retried, with
    /// exponential backoff, before the build fails; zero retries nothing.
    /// Defaults to two minutes.
    pub fn with_transient_retry(mut self, budget: std::time::Duration) -> Self {
        self.gate.set_transient_retry(budget);
        self
    }

    /// The client packages are downloaded with (redirect rules, timeouts).
    pub fn with_client(mut self, client: LazyClient) -> Self {
        self.gate.set_client(client);
        self
    }

    /// The limits every package is extracted under.
    pub fn with_limits(mut self, limits: PackageLimits) -> Self {
        self.gate.set_limits(limits);
        self
    }

    pub fn limits(&self) -> &PackageLimits {
        self.gate.limits()
    }

    pub fn package_cache(&self) -> &PackageCache {
        self.gate.cache()
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
        self.build_with(
            lock_hash, platform, records, variables, sink, on_linking, None,
        )
        .await
    }

    /// [`PrefixBuilder::build`], running `after_link` on the prefix once
    /// the conda packages are linked (to install PyPI wheels), before the
    /// whole tree is checked and the prefix is marked complete: what it
    /// writes passes the same check as what the packages wrote, and a
    /// failure leaves no prefix behind.
    #[allow(clippy::too_many_arguments)]
    pub async fn build_with(
        &self,
        lock_hash: &ContentHash,
        platform: Subdir,
        records: &[RepoDataRecord],
        variables: &BTreeMap<String, String>,
        sink: Arc<dyn ProgressSink>,
        on_linking: impl FnOnce(),
        after_link: Option<AfterLink>,
    ) -> Result<PrefixReport, PrefixError> {
        let guard = self.lock_for(lock_hash);
        let _held = guard.lock().await;
        let prefix = self.prefix_path(lock_hash);
        if self.complete_marker(lock_hash).is_some() {
            sink.line(format!(
                "prefix {} is complete: reusing it",
                prefix.display()
            ));
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
            .fetch_and_link(
                &prefix,
                lock_hash,
                platform,
                records,
                variables,
                sink.clone(),
                counts.clone(),
                on_linking,
                after_link,
            )
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
        after_link: Option<AfterLink>,
    ) -> Result<(), PrefixError> {
        // The shared locks in `admitted` keep other processes from replacing
        // or removing the entries until the prefix is linked.
        let admitted = self
            .gate
            .admit_all(
                records,
                sink.clone(),
                counts.clone(),
                self.pause_after_first_download,
            )
            .await?;
        let dirs = admitted.dirs.clone();
        let checked_dirs = dirs.clone();
        let names = records_names(records);
        tokio::task::spawn_blocking(move || check_links_across_packages(names, &checked_dirs))
            .await
            .map_err(|join| PrefixError::Io {
                action: "check the packages of",
                path: prefix.to_owned(),
                source: std::io::Error::other(join),
            })??;
        on_linking();
        Installer::new()
            .with_package_cache(self.gate.cache().clone())
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
        // What was linked came from the entries the gate checked: nothing
        // replaced them in the cache meanwhile.
        for (record, dir) in records.iter().zip(&dirs) {
            if !self.gate.is_trusted(record, dir) && crate::fetch::has_digest(record) {
                return Err(PrefixError::Gate {
                    package: record.identifier.to_string(),
                    source: GateError::Replaced(dir.clone()),
                });
            }
        }
        drop(admitted);
        if let Some(after_link) = after_link {
            let target = prefix.to_owned();
            tokio::task::spawn_blocking(move || after_link(&target))
                .await
                .map_err(|join| PrefixError::Io {
                    action: "install the PyPI packages into",
                    path: prefix.to_owned(),
                    source: std::io::Error::other(join),
                })?
                .map_err(|source| PrefixError::AfterLink {
                    prefix: prefix.to_owned(),
                    source,
                })?;
        }
        crate::activation::write_activation_scripts(prefix, platform, variables)?;
        // conda recognises a prefix as an environment by its history.
        write_history(prefix, lock_hash, records)?;
        let walked = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            crate::validate::check_tree(&walked, crate::validate::TreeKind::Prefix)
        })
        .await
        .map_err(|join| PrefixError::Io {
            action: "check",
            path: prefix.to_owned(),
            source: std::io::Error::other(join),
        })?
        .map_err(|reason| PrefixError::Unsafe {
            prefix: prefix.to_owned(),
            reason,
        })?;
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

/// Work on a linked prefix before it is checked and marked complete (see
/// [`PrefixBuilder::build_with`]); it runs on a blocking thread.
pub type AfterLink =
    Box<dyn FnOnce(&Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + 'static>;

fn records_names(records: &[RepoDataRecord]) -> Vec<String> {
    records
        .iter()
        .map(|record| record.identifier.to_string())
        .collect()
}

/// Across the whole lock: no entry of any package may pass through a path
/// that any package declares as a symlink (package A ships `share/s -> ..`,
/// package B writes `share/s/x`).
fn check_links_across_packages(names: Vec<String>, dirs: &[PathBuf]) -> Result<(), PrefixError> {
    let mut all = Vec::with_capacity(dirs.len());
    for (name, dir) in names.iter().zip(dirs) {
        let paths =
            PathsJson::from_package_directory_with_deprecated_fallback(dir).map_err(|error| {
                PrefixError::Rejected {
                    package: name.clone(),
                    reason: Rejection::Unreadable(error.to_string()),
                }
            })?;
        all.push((name, paths));
    }
    let mut links: HashMap<&Path, &str> = HashMap::new();
    for (name, paths) in &all {
        for entry in paths
            .paths
            .iter()
            .filter(|entry| entry.path_type == PathType::SoftLink)
        {
            links.insert(entry.relative_path.as_path(), name.as_str());
        }
    }
    for (name, paths) in &all {
        for entry in &paths.paths {
            let through = entry
                .relative_path
                .ancestors()
                .skip(1)
                .find_map(|ancestor| links.get(ancestor).map(|owner| (ancestor, owner)));
            if let Some((link, owner)) = through {
                return Err(PrefixError::Rejected {
                    package: (*name).clone(),
                    reason: Rejection::CrossPackage(format!(
                        "its entry '{}' passes through '{}', which package '{owner}' declares as a symlink",
                        entry.relative_path.display(),
                        link.display()
                    )),
                });
            }
        }
    }
    Ok(())
}

/// Removes a prefix, if there is one: its marker first, so from then on
/// nothing serves or reuses it even if the rest is removed only half-way.
pub async fn remove_prefix(prefix: &Path) -> Result<(), PrefixError> {
    crate::conda_meta::remove_markers(prefix).await?;
    match tokio::fs::remove_dir_all(prefix).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PrefixError::io("remove the prefix", prefix)(source)),
    }
}

//! The PyPI part of a build: resolving a spec's `pip:` section after the
//! conda solve, and installing a lock's wheels into the prefix after its
//! conda packages are linked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use envstore_core::CanonicalSpec;
use envstore_core::pip::CanonicalPip;
use envstore_core::pypi::LockedWheel;
use envstore_link::{AfterLink, ProgressSink};
use envstore_pypi::{IndexSettings, PythonTarget, WheelCache, WheelLimits};
use envstore_solve::{Lock, SolvedEnvironment};
use futures::StreamExt;
use rattler_conda_types::Subdir;

use crate::context::BuildContext;
use crate::error::BuildError;
use crate::log::BuildLog;

/// Wheels downloaded at once by one build.
const DOWNLOAD_CONCURRENCY: usize = 4;

/// How a worker reaches PyPI indexes and keeps their wheels.
#[derive(Debug, Clone)]
pub struct PypiContext {
    /// The cache, trust roots and timeout of every resolution; each spec's
    /// indexes and `exclude_newer` are set over it.
    pub index: IndexSettings,
    /// The node's wheels, each downloaded once and checked against its sha256.
    pub wheels: WheelCache,
    /// Size limits of one wheel's contents, like those of conda packages.
    pub limits: WheelLimits,
}

impl PypiContext {
    /// Caches under `cache_dir` (`index/` for uv's, `wheels/` for wheels);
    /// `timeout` bounds connecting to and hearing from an index, as the
    /// server's network limits bound channels. Trust roots and proxies are
    /// the channel client's (see [`envstore_pypi::TlsSettings`]).
    pub fn new(
        cache_dir: PathBuf,
        limits: WheelLimits,
        timeout: std::time::Duration,
    ) -> Result<Self, envstore_pypi::PypiError> {
        let mut index = IndexSettings::pypi(cache_dir.join("index"));
        index.timeout = timeout;
        let wheels = WheelCache::new(cache_dir.join("wheels"), &index)?;
        Ok(Self {
            index,
            wheels,
            limits,
        })
    }
}

/// Resolves `pip` (the spec's `pip:` section) for every platform of
/// `solved`, with the target machines' virtual packages of `spec`, logging
/// what it chose.
pub(crate) async fn resolve(
    ctx: &BuildContext,
    spec: &CanonicalSpec,
    pip: &CanonicalPip,
    solved: &SolvedEnvironment,
    log: &BuildLog,
) -> Result<BTreeMap<String, Vec<LockedWheel>>, BuildError> {
    log.line(format!(
        "resolving PyPI [{}] from {}{}",
        pip.requirements.join(", "),
        pip.indexes.join(", "),
        pip.exclude_newer
            .as_deref()
            .map(|instant| format!(" (uploaded before {instant})"))
            .unwrap_or_default()
    ));
    let wheels = envstore_pypi::resolve_solved(spec, solved, &ctx.pypi.index).await?;
    for (platform, locked) in &wheels {
        let listed: Vec<String> = locked
            .iter()
            .map(|wheel| format!("{}=={}", wheel.name, wheel.version))
            .collect();
        log.line(format!(
            "PyPI for {platform}: {} wheels ({})",
            locked.len(),
            listed.join(", ")
        ));
    }
    Ok(wheels)
}

/// Downloads the lock's wheels for `platform` (once per node through the
/// wheel cache, sha256-verified) and returns the step that installs them
/// into the linked prefix, or `None` when the lock has none. Used by builds
/// and by materialising a prefix from its lock on another node.
pub(crate) async fn prepare_install(
    pypi: &PypiContext,
    platform: Subdir,
    lock: &Lock,
    log: &dyn ProgressSink,
) -> Result<Option<AfterLink>, envstore_pypi::PypiError> {
    let name = platform.to_string();
    let wheels = lock.wheels(&name).to_vec();
    if wheels.is_empty() {
        return Ok(None);
    }
    let records = lock.records(&name).unwrap_or_default();
    let target = PythonTarget::from_conda(platform, records, &[])?.ok_or_else(|| {
        envstore_pypi::PypiError::UnsupportedTarget {
            platform: name.clone(),
            reason: "the lock has PyPI packages but no python to install them for".to_owned(),
        }
    })?;
    let fetched: Vec<Result<(LockedWheel, PathBuf), envstore_pypi::PypiError>> =
        futures::stream::iter(wheels.iter().cloned())
            .map(|wheel| async move {
                let path = pypi.wheels.fetch(&wheel).await?;
                Ok((wheel, path))
            })
            .buffered(DOWNLOAD_CONCURRENCY)
            .collect()
            .await;
    let fetched = fetched.into_iter().collect::<Result<Vec<_>, _>>()?;
    log.line(format!(
        "fetched {} PyPI wheels into {}",
        fetched.len(),
        pypi.wheels.dir().display()
    ));
    let limits = pypi.limits;
    Ok(Some(Box::new(move |prefix: &std::path::Path| {
        envstore_pypi::install_wheels(prefix, &target, &fetched, &limits)
            .map(|_installed| ())
            .map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)
    })))
}

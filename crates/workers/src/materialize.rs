//! Materialising a prefix built on another node: fetch its packed form from
//! the store, check it, unpack it at the same path. A lock whose packed
//! prefix was never published (its build node packs nothing, or stopped
//! before it could) is built here from its `pixi.lock`, through the same
//! package gate and lock URL check as a worker's build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use envstore_core::{ChannelAllowlist, ContentHash, EnvironmentName, NamedChannel, NamespaceName};
use envstore_db::{BuildRecord, Database, DbError};
use envstore_link::{CompletionMarker, PrefixBuilder, PrefixError, ProgressSink, unpack_prefix};
use envstore_solve::{Lock, LockError};
use envstore_store::{ArtifactStore, StoreError, artifact, keys};

use crate::layout::Layout;
use crate::pypi::PypiContext;
use crate::urls::{UrlNotAllowed, check_lock_urls};
use envstore_link::point_environment;

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error("environment '{0}' was not found")]
    UnknownEnvironment(String),
    #[error("environment '{0}' has no successful build")]
    NoBuild(String),
    #[error("the build's spec '{0}' is missing from the database")]
    MissingSpec(String),
    #[error("the stored lock {expected} reads back as {found}")]
    LockMismatch {
        expected: ContentHash,
        found: ContentHash,
    },
    #[error("failed to read the stored lock")]
    Lock(#[from] LockError),
    #[error("the build's channel '{0}' is not a valid channel URL")]
    Channel(String),
    #[error(transparent)]
    UrlNotAllowed(#[from] UrlNotAllowed),
    #[error("lock {lock} has no packages for {platform}")]
    WrongPlatform { lock: ContentHash, platform: String },
    #[error("the packed prefix has sha256 {found}, expected {expected}")]
    Checksum {
        expected: ContentHash,
        found: ContentHash,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("failed to point the environment at its prefix")]
    Link(#[source] std::io::Error),
    #[error("the unpacking task failed: {0}")]
    Task(String),
    /// The lock's PyPI wheels could not be fetched or installed.
    #[error(transparent)]
    Pypi(#[from] envstore_pypi::PypiError),
}

/// Downloads `prefixes/<lock_hash>.tar.zst`, checks its sha256, unpacks it at
/// `prefix` and checks its packages against `expected`; the marker comes last.
pub(crate) async fn unpack_published_prefix(
    store: &ArtifactStore,
    sha256: ContentHash,
    prefix: &Path,
    marker: CompletionMarker,
    expected: BTreeSet<String>,
) -> Result<(), MaterializeError> {
    let archive = store.get(&keys::packed_prefix(&marker.lock_hash)).await?;
    let found = ContentHash::of(&archive);
    if found != sha256 {
        return Err(MaterializeError::Checksum {
            expected: sha256,
            found,
        });
    }
    let target = prefix.to_owned();
    tokio::task::spawn_blocking(move || unpack_prefix(&archive, &target, &marker, &expected))
        .await
        .map_err(|error| MaterializeError::Task(error.to_string()))??;
    Ok(())
}

/// Makes the current prefix of `namespace/name` present under `layout`,
/// from the store, and points the environment link at it. `prefixes` (its
/// root `layout.prefixes`) builds the prefix from the lock when no packed
/// prefix was published, and `pypi` fetches and installs the lock's wheels
/// then.
#[allow(clippy::too_many_arguments)]
pub async fn materialize_environment(
    db: &Database,
    store: &ArtifactStore,
    layout: &Layout,
    prefixes: &PrefixBuilder,
    pypi: &PypiContext,
    platform: &str,
    namespace: &NamespaceName,
    name: &EnvironmentName,
) -> Result<PathBuf, MaterializeError> {
    let label = format!("{namespace}/{name}");
    let environment = db
        .environment(namespace, name)
        .await?
        .ok_or_else(|| MaterializeError::UnknownEnvironment(label.clone()))?;
    let build_id = environment
        .current_build_id
        .ok_or_else(|| MaterializeError::NoBuild(label.clone()))?;
    let build = db
        .build(&build_id)
        .await?
        .ok_or_else(|| MaterializeError::NoBuild(label.clone()))?;
    let lock_hash: ContentHash = build
        .lock_hash
        .as_deref()
        .and_then(|hash| hash.parse().ok())
        .ok_or_else(|| MaterializeError::NoBuild(label.clone()))?;
    let prefix = layout.prefixes.join(lock_hash.short());
    let lock = db
        .lock(&lock_hash.to_hex())
        .await?
        .ok_or_else(|| MaterializeError::NoBuild(label))?;
    let packages = lock
        .packages
        .get(platform)
        .and_then(|packages| packages.as_array())
        .ok_or_else(|| MaterializeError::WrongPlatform {
            lock: lock_hash,
            platform: platform.to_owned(),
        })?;
    // The conda packages: wheels have no record in `conda-meta/`.
    let expected: BTreeSet<String> = packages
        .iter()
        .filter(|package| package["manager"].as_str() != Some(envstore_solve::PYPI_MANAGER))
        .map(|package| {
            let field = |key: &str| package[key].as_str().unwrap_or_default().to_owned();
            format!("{}-{}-{}", field("name"), field("version"), field("build"))
        })
        .collect();
    let complete = prefixes.complete_marker(&lock_hash).is_some();
    match db.packed_prefix(&lock_hash).await? {
        _ if complete => {}
        Some(sha256) => {
            let marker = CompletionMarker {
                lock_hash,
                platform: platform.to_owned(),
                packages: expected.len(),
            };
            unpack_published_prefix(store, sha256, &prefix, marker, expected).await?;
        }
        None => build_from_lock(db, store, prefixes, pypi, &build, lock_hash, platform).await?,
    }
    crate::prefix_size::record_prefix_size(db, &lock_hash, &prefix).await;
    point_environment(
        &layout.environment_link(namespace.as_str(), name.as_str()),
        &prefix,
    )
    .map_err(MaterializeError::Link)?;
    Ok(prefix)
}

/// Progress of a prefix built by `materialize`, for its log.
struct TracingSink;

impl ProgressSink for TracingSink {
    fn line(&self, line: String) {
        tracing::info!("{line}");
    }
}

/// Builds the prefix of `lock_hash` here from the `pixi.lock` its build
/// stored, checked like a worker checks it: the lock reads back to its hash
/// and every package comes from the build's own channels.
async fn build_from_lock(
    db: &Database,
    store: &ArtifactStore,
    prefixes: &PrefixBuilder,
    pypi: &PypiContext,
    build: &BuildRecord,
    lock_hash: ContentHash,
    platform: &str,
) -> Result<(), MaterializeError> {
    tracing::info!(lock = %lock_hash, "no packed prefix was published: building the prefix from the lock");
    let spec = db
        .spec(&build.spec_hash)
        .await?
        .ok_or_else(|| MaterializeError::MissingSpec(build.spec_hash.clone()))?;
    let text = store
        .get(&keys::lock_artifact(&lock_hash, artifact::PIXI_LOCK))
        .await?;
    let lock = Lock::parse_lockfile(&String::from_utf8_lossy(&text))?
        .with_variables(spec.variables.clone());
    // A submitted lock is stored as it is; a solved one is addressed for
    // its namespace when it has variables.
    let lock = if lock.hash() == lock_hash {
        lock
    } else {
        lock.for_namespace(&build.namespace)
    };
    if lock.hash() != lock_hash {
        return Err(MaterializeError::LockMismatch {
            expected: lock_hash,
            found: lock.hash(),
        });
    }
    // The server accepted these channels for the build; the lock may name
    // nothing else.
    let channels = spec
        .channels
        .iter()
        .map(|channel| {
            NamedChannel::parse(channel)
                .or_else(|_| {
                    // A channel served at a server's root has no last path
                    // segment to be named by: its URL names it here, where
                    // the name is only a label.
                    url::Url::parse(channel).map(|url| NamedChannel {
                        name: channel.clone(),
                        url,
                    })
                })
                .map_err(|_| MaterializeError::Channel(channel.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_lock_urls(&ChannelAllowlist::new(channels), &lock, &spec.channels)?;
    let subdir: rattler_conda_types::Subdir =
        platform
            .parse()
            .map_err(|_| MaterializeError::WrongPlatform {
                lock: lock_hash,
                platform: platform.to_owned(),
            })?;
    let records = lock
        .records(platform)
        .ok_or_else(|| MaterializeError::WrongPlatform {
            lock: lock_hash,
            platform: platform.to_owned(),
        })?;
    let install_wheels = crate::pypi::prepare_install(pypi, subdir, &lock, &TracingSink).await?;
    let sink: Arc<dyn ProgressSink> = Arc::new(TracingSink);
    prefixes
        .build_with(
            &lock_hash,
            subdir,
            records,
            lock.variables(),
            sink,
            || {},
            install_wheels,
        )
        .await?;
    Ok(())
}

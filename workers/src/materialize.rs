//! Materialising a prefix built on another node: fetch its packed form from
//! the store, check it, unpack it at the same path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use envstore_core::{ContentHash, EnvironmentName, NamespaceName};
use envstore_db::{Database, DbError};
use envstore_link::{CompletionMarker, PrefixError, unpack_prefix};
use envstore_store::{ArtifactStore, StoreError, keys};

use crate::pipeline::Layout;
use envstore_link::point_environment;

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error("environment '{0}' was not found")]
    UnknownEnvironment(String),
    #[error("environment '{0}' has no successful build")]
    NoBuild(String),
    #[error("the prefix of lock {0} was never published (its build node had no packed prefix)")]
    NotPublished(ContentHash),
    #[error("lock {lock} has no packages for {platform}")]
    WrongPlatform { lock: ContentHash, platform: String },
    #[error("the packed prefix has sha256 {found}, expected {expected}")]
    Checksum { expected: ContentHash, found: ContentHash },
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
        return Err(MaterializeError::Checksum { expected: sha256, found });
    }
    let target = prefix.to_owned();
    tokio::task::spawn_blocking(move || unpack_prefix(&archive, &target, &marker, &expected))
        .await
        .map_err(|error| MaterializeError::Task(error.to_string()))??;
    Ok(())
}

/// Makes the current prefix of `namespace/name` present under `layout`,
/// from the store, and points the environment link at it.
pub async fn materialize_environment(
    db: &Database,
    store: &ArtifactStore,
    layout: &Layout,
    platform: &str,
    namespace: &NamespaceName,
    name: &EnvironmentName,
) -> Result<PathBuf, MaterializeError> {
    let label = format!("{namespace}/{name}");
    let environment = db
        .environment(namespace, name)
        .await?
        .ok_or_else(|| MaterializeError::UnknownEnvironment(label.clone()))?;
    let build_id = environment.current_build_id.ok_or_else(|| MaterializeError::NoBuild(label.clone()))?;
    let lock_hash: ContentHash = db
        .build(&build_id)
        .await?
        .and_then(|build| build.lock_hash)
        .and_then(|hash| hash.parse().ok())
        .ok_or_else(|| MaterializeError::NoBuild(label.clone()))?;
    let prefix = layout.prefixes.join(lock_hash.short());
    let lock = db.lock(&lock_hash.to_hex()).await?.ok_or_else(|| MaterializeError::NoBuild(label))?;
    let packages = lock.packages.get(platform).and_then(|packages| packages.as_array()).ok_or_else(|| {
        MaterializeError::WrongPlatform {
            lock: lock_hash,
            platform: platform.to_owned(),
        }
    })?;
    let expected: BTreeSet<String> = packages
        .iter()
        .map(|package| {
            let field = |key: &str| package[key].as_str().unwrap_or_default().to_owned();
            format!("{}-{}-{}", field("name"), field("version"), field("build"))
        })
        .collect();
    let sha256 = db
        .packed_prefix(&lock_hash)
        .await?
        .ok_or(MaterializeError::NotPublished(lock_hash))?;
    let marker = CompletionMarker {
        lock_hash,
        platform: platform.to_owned(),
        packages: expected.len(),
    };
    unpack_published_prefix(store, sha256, &prefix, marker, expected).await?;
    crate::prefix_size::record_prefix_size(db, &lock_hash, &prefix).await;
    point_environment(&layout.environment_link(namespace.as_str(), name.as_str()), &prefix)
        .map_err(MaterializeError::Link)?;
    Ok(prefix)
}

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
use bytes::Bytes;
use envstore_client::prefixes::PrefixAnswer;
use envstore_link::point_environment;
use futures::{Stream, StreamExt};

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
    /// `envstore materialize` over HTTP: the server has no packed prefix
    /// of the lock to send.
    #[error(
        "the server has no packed prefix of lock {lock} to download ({detail}); start the server (or its workers) with --pack-prefixes true (ENVSTORE_PACK_PREFIXES=true) and build the environment again, or materialise with --database and --store, which builds the prefix here from the lock"
    )]
    NotPublished { lock: ContentHash, detail: String },
    #[error("failed to {action}")]
    Server {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the server's answer is not usable: {0}")]
    BadAnswer(String),
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

/// Unpacks `prefixes/<lock_hash>.tar.zst` at `prefix` as it streams from the
/// store, checking its sha256 on the way and its packages against
/// `expected`; the marker comes last.
pub(crate) async fn unpack_published_prefix(
    store: &ArtifactStore,
    sha256: ContentHash,
    prefix: &Path,
    marker: CompletionMarker,
    expected: BTreeSet<String>,
) -> Result<(), MaterializeError> {
    let object = store
        .get_stream(&keys::packed_prefix(&marker.lock_hash))
        .await?;
    let chunks = object
        .chunks
        .map(|chunk| chunk.map_err(MaterializeError::from));
    unpack_streamed(chunks, sha256, prefix, marker, expected).await
}

/// Chunks of a download waiting for the unpacker: a little read-ahead, so
/// the network and the disk work at once, and no more in memory.
const CHUNKS_AHEAD: usize = 8;

/// Feeds `chunks` to [`unpack_prefix`] (on a blocking thread) as they
/// arrive. A failed download fails the unpacking too, so the partial prefix
/// is removed; its own error is the one returned.
async fn unpack_streamed(
    mut chunks: impl Stream<Item = Result<Bytes, MaterializeError>> + Unpin,
    sha256: ContentHash,
    prefix: &Path,
    marker: CompletionMarker,
    expected: BTreeSet<String>,
) -> Result<(), MaterializeError> {
    let (sender, receiver) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let target = prefix.to_owned();
    let unpacking = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader {
            receiver,
            current: Bytes::new(),
        };
        unpack_prefix(reader, &sha256, &target, &marker, &expected)
    });
    let mut failed = None;
    while let Some(chunk) = chunks.next().await {
        let (sent, stop) = match chunk {
            Ok(bytes) => (Ok(bytes), false),
            Err(error) => {
                failed = Some(error);
                (Err(()), true)
            }
        };
        // The unpacker stopped (it refused the archive): its error says why.
        if sender.send(sent).await.is_err() || stop {
            break;
        }
    }
    drop(sender);
    let unpacked = unpacking
        .await
        .map_err(|error| MaterializeError::Task(error.to_string()))?;
    match failed {
        Some(error) => Err(error),
        None => Ok(unpacked?),
    }
}

/// The chunks of a download as a blocking reader; a failed download reads
/// as an error, never as a clean end.
struct ChunkReader {
    receiver: tokio::sync::mpsc::Receiver<Result<Bytes, ()>>,
    current: Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(())) => {
                    return Err(std::io::Error::other(
                        "the download of the packed prefix failed",
                    ));
                }
                None => return Ok(0),
            }
        }
        let count = buf.len().min(self.current.len());
        buf[..count].copy_from_slice(&self.current.split_to(count));
        Ok(count)
    }
}

/// Makes the current prefix of `namespace/name` present under `layout` with
/// nothing but the server's API and a token: the server names the current
/// build's lock and its packages, and sends the lock's packed prefix, which
/// is unpacked as it arrives (checked like one from the store) at the same
/// hash-addressed path. A lock whose packed prefix the server never
/// published is an error saying so.
pub async fn materialize_from_server(
    client: &envstore_client::Client,
    layout: &Layout,
    platform: &str,
    namespace: &str,
    name: &str,
) -> Result<PathBuf, MaterializeError> {
    let label = format!("{namespace}/{name}");
    let view = client
        .environment(&label)
        .await
        .map_err(server_error("ask the server for the environment"))?;
    let build = view
        .current_build
        .ok_or_else(|| MaterializeError::NoBuild(label.clone()))?;
    let lock_hash: ContentHash = build
        .lock_hash
        .as_deref()
        .and_then(|hash| hash.parse().ok())
        .ok_or_else(|| MaterializeError::NoBuild(label.clone()))?;
    let packages = build
        .packages
        .as_ref()
        .and_then(|packages| packages.get(platform))
        .ok_or_else(|| MaterializeError::WrongPlatform {
            lock: lock_hash,
            platform: platform.to_owned(),
        })?;
    // The conda packages: wheels have no record in `conda-meta/`.
    let expected: BTreeSet<String> = packages
        .iter()
        .filter(|package| package.manager.as_deref() != Some(envstore_solve::PYPI_MANAGER))
        .map(|package| format!("{}-{}-{}", package.name, package.version, package.build))
        .collect();
    let prefix = layout.prefixes.join(lock_hash.short());
    let present =
        envstore_link::read_marker(&prefix).is_some_and(|marker| marker.lock_hash == lock_hash);
    if !present {
        let download = match client
            .packed_prefix(&lock_hash.to_hex())
            .await
            .map_err(server_error("download the packed prefix"))?
        {
            PrefixAnswer::Download(download) => download,
            PrefixAnswer::NotPublished(detail) => {
                return Err(MaterializeError::NotPublished {
                    lock: lock_hash,
                    detail,
                });
            }
        };
        let sha256: ContentHash = download.sha256.parse().map_err(|_| {
            MaterializeError::BadAnswer(format!(
                "the packed prefix's sha256 '{}' is not a sha256",
                download.sha256.escape_debug()
            ))
        })?;
        if let Some(built_at) = &download.server_path
            && Path::new(built_at) != prefix
        {
            tracing::warn!(server = %built_at, here = %prefix.display(), "the prefix is placed at another path than the server's: files that embed the path (scripts' first lines) still name the server's");
        }
        tracing::info!(lock = %lock_hash, bytes = ?download.size, "downloading the packed prefix");
        let chunks = futures::stream::unfold(download, |mut download| async move {
            match download.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), download)),
                Ok(None) => None,
                Err(error) => Some((
                    Err(server_error("download the packed prefix")(error)),
                    download,
                )),
            }
        });
        let marker = CompletionMarker {
            lock_hash,
            platform: platform.to_owned(),
            packages: expected.len(),
        };
        unpack_streamed(Box::pin(chunks), sha256, &prefix, marker, expected).await?;
    }
    point_environment(&layout.environment_link(namespace, name), &prefix)
        .map_err(MaterializeError::Link)?;
    Ok(prefix)
}

/// For `map_err`: a failed exchange with the server, while doing `action`.
fn server_error(action: &'static str) -> impl FnOnce(anyhow::Error) -> MaterializeError {
    move |error| MaterializeError::Server {
        action,
        source: error.into(),
    }
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

//! Object storage for build artifacts, over `object_store` (a local folder or
//! S3). Keys are content-addressed and written once: an object that exists is
//! never replaced, so readers may cache it forever.

mod cache;

use std::sync::Arc;

use bytes::Bytes;
use envstore_core::ContentHash;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

pub use cache::DEFAULT_CACHE_BYTES;

/// Lookups of lock artifacts in memory, by `result` (hit or miss).
pub const LOCKFILE_CACHE_METRIC: &str = "envstore_lockfile_cache_lookups_total";

/// Requests the object store refused or failed (after its own retries), by
/// `operation`; a missing object is an answer, not an error.
pub const STORE_ERRORS_METRIC: &str = "envstore_object_store_errors_total";

fn count_error(operation: &'static str) {
    metrics::counter!(STORE_ERRORS_METRIC, "operation" => operation).increment(1);
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported object store URL '{0}' (expected file:///path or s3://bucket/prefix)")]
    UnsupportedUrl(String),
    #[error("failed to create the local store folder '{0}'")]
    CreateFolder(String, #[source] std::io::Error),
    #[error("failed to open the object store at '{url}'")]
    Open {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object '{0}' was not found")]
    NotFound(String),
    #[error("failed to write object '{key}'")]
    Write {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("failed to read object '{key}'")]
    Read {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("the object store at '{url}' does not answer")]
    Unavailable {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// The artifact names published for every lock.
pub mod artifact {
    pub const CONDA_LOCK: &str = "conda-lock.yml";
    pub const PIXI_LOCK: &str = "pixi.lock";
    pub const ENVIRONMENT: &str = "environment.yml";

    pub fn explicit(platform: &str) -> String {
        format!("explicit-{platform}.txt")
    }

    /// Whether a name may be asked for under `locks/<hash>/`; anything else is
    /// refused before it reaches the store.
    pub fn is_lock_artifact(name: &str) -> bool {
        matches!(name, CONDA_LOCK | PIXI_LOCK | ENVIRONMENT)
            || name
                .strip_prefix("explicit-")
                .and_then(|rest| rest.strip_suffix(".txt"))
                .is_some_and(|platform| {
                    !platform.is_empty()
                        && platform
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
    }
}

/// Content-addressed keys, so that every writer of the same content writes the
/// same key.
pub mod keys {
    use super::*;

    pub fn lock_artifact(lock_hash: &ContentHash, name: &str) -> String {
        format!("locks/{lock_hash}/{name}")
    }

    /// The complete log of a build, written when it ends.
    pub fn build_log(build_id: &str) -> String {
        format!("logs/{build_id}.log")
    }

    /// The log of one attempt that ended in a retry.
    pub fn attempt_log(build_id: &str, attempt: i64) -> String {
        format!("logs/{build_id}.attempt-{attempt}.log")
    }

    pub fn packed_prefix(lock_hash: &ContentHash) -> String {
        format!("prefixes/{lock_hash}.tar.zst")
    }
}

/// A key no one writes: heading it must answer "not found".
const READINESS_PROBE_KEY: &str = "readiness-probe";

/// Size of the parts of a multipart upload (S3 wants at least 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    url: String,
    /// Lock artifacts already read, by lock and name, shared by every clone.
    lock_artifacts: Arc<cache::ObjectCache<(ContentHash, String)>>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore").field("url", &self.url).finish()
    }
}

/// How long connecting to the object store may take, unless `AWS_CONNECT_TIMEOUT` says otherwise.
pub const STORE_CONNECT_TIMEOUT: &str = "5s";
/// How long the object store may stay silent while answering, unless `AWS_READ_TIMEOUT` says otherwise.
pub const STORE_READ_TIMEOUT: &str = "30s";
/// How long one request to the object store may take in all, unless `AWS_TIMEOUT` says otherwise.
pub const STORE_REQUEST_TIMEOUT: &str = "120s";

/// An S3 builder with our time limits, then whatever the `AWS_*`
/// variables say (as `AmazonS3Builder::from_env` reads them), so an
/// operator can still change every limit.
fn s3_builder() -> AmazonS3Builder {
    use object_store::ClientConfigKey;
    use object_store::aws::AmazonS3ConfigKey;
    let mut builder = AmazonS3Builder::new()
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), STORE_CONNECT_TIMEOUT)
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout), STORE_READ_TIMEOUT)
        .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), STORE_REQUEST_TIMEOUT);
    for (key, value) in std::env::vars() {
        if key.starts_with("AWS_")
            && let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
        {
            builder = builder.with_config(config, value);
        }
    }
    builder
}

impl ArtifactStore {
    /// Opens `file:///path` (created if missing) or `s3://bucket/prefix`
    /// (endpoint, region and credentials from the usual `AWS_*` variables).
    pub fn open(url: &Url) -> Result<Self, StoreError> {
        let inner: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| StoreError::UnsupportedUrl(url.to_string()))?;
                fs_create_dir_all(&path)?;
                let local = LocalFileSystem::new_with_prefix(&path).map_err(|source| {
                    StoreError::Open {
                        url: url.to_string(),
                        source,
                    }
                })?;
                Arc::new(local)
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
                let s3 = s3_builder()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|source| StoreError::Open {
                        url: url.to_string(),
                        source,
                    })?;
                let prefix = url.path().trim_matches('/');
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                }
            }
            _ => return Err(StoreError::UnsupportedUrl(url.to_string())),
        };
        Ok(Self {
            inner,
            url: url.to_string(),
            lock_artifacts: Arc::new(cache::ObjectCache::new(DEFAULT_CACHE_BYTES, LOCKFILE_CACHE_METRIC)),
        })
    }

    /// The same store with an in-memory copy of lock artifacts of at most
    /// `bytes` (zero: none) instead of [`DEFAULT_CACHE_BYTES`].
    pub fn with_cache_bytes(mut self, bytes: usize) -> Self {
        self.lock_artifacts = Arc::new(cache::ObjectCache::new(bytes, LOCKFILE_CACHE_METRIC));
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes `key` once. When the object already exists the write is a
    /// no-op: content-addressed keys always hold the same bytes.
    pub async fn put_immutable(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&ObjectPath::from(key), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(source) => {
                count_error("write");
                Err(StoreError::Write {
                    key: key.to_owned(),
                    source,
                })
            }
        }
    }

    /// Writes a file once, streamed in parts so large packed prefixes do not
    /// have to fit in memory.
    pub async fn put_file_immutable(&self, key: &str, path: &std::path::Path) -> Result<(), StoreError> {
        if self.exists(key).await? {
            return Ok(());
        }
        let write_error = |source| {
            count_error("write");
            StoreError::Write {
                key: key.to_owned(),
                source,
            }
        };
        let io_error = |error: std::io::Error| StoreError::Write {
            key: key.to_owned(),
            source: object_store::Error::Generic {
                store: "file",
                source: Box::new(error),
            },
        };
        let upload = self
            .inner
            .put_multipart(&ObjectPath::from(key))
            .await
            .map_err(write_error)?;
        let mut writer = object_store::WriteMultipart::new(upload);
        let mut file = tokio::fs::File::open(path).await.map_err(io_error)?;
        let mut buffer = vec![0u8; PART_SIZE];
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut file, &mut buffer).await.map_err(io_error)?;
            if read == 0 {
                break;
            }
            writer.write(&buffer[..read]);
        }
        writer.finish().await.map_err(write_error)?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let read_error = |source| {
            count_error("read");
            StoreError::Read {
                key: key.to_owned(),
                source,
            }
        };
        match self.inner.get(&ObjectPath::from(key)).await {
            Ok(result) => result.bytes().await.map_err(read_error),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound(key.to_owned())),
            Err(source) => Err(read_error(source)),
        }
    }

    /// A lock's artifact (`locks/<hash>/<name>`), from memory once it has
    /// been read: lockfiles are small, hot and never change.
    pub async fn get_lock_artifact(&self, lock_hash: &ContentHash, name: &str) -> Result<Bytes, StoreError> {
        let cache_key = (*lock_hash, name.to_owned());
        if let Some(bytes) = self.lock_artifacts.get(&cache_key) {
            return Ok(bytes);
        }
        let bytes = self.get(&keys::lock_artifact(lock_hash, name)).await?;
        self.lock_artifacts.insert(cache_key, bytes.clone());
        Ok(bytes)
    }

    /// The size of an object, or None when there is none.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.inner.head(&ObjectPath::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StoreError::Read {
                key: key.to_owned(),
                source,
            }),
        }
    }

    /// Removes an object that garbage collection found unreferenced; one
    /// already gone is fine. Objects are otherwise never changed.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::Write {
                key: key.to_owned(),
                source,
            }),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.inner.head(&ObjectPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => {
                count_error("head");
                Err(StoreError::Read {
                    key: key.to_owned(),
                    source,
                })
            }
        }
    }

    /// Whether the store answers, for readiness checks: a listing of its top
    /// level (a few folders) finds a missing bucket, which answers a head
    /// with "not found" like any missing object; a head of a key that is
    /// never written finds a store folder that cannot hold objects, which
    /// lists as empty. Two small requests, no writes.
    pub async fn check(&self) -> Result<(), StoreError> {
        let unavailable = |source| {
            count_error("check");
            StoreError::Unavailable {
                url: self.url.clone(),
                source,
            }
        };
        let probe = ObjectPath::from(READINESS_PROBE_KEY);
        let (listed, headed) = tokio::join!(self.inner.list_with_delimiter(None), self.inner.head(&probe));
        listed.map_err(unavailable)?;
        match headed {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(unavailable(source)),
        }
    }
}

fn fs_create_dir_all(path: &std::path::Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(path)
        .map_err(|source| StoreError::CreateFolder(path.display().to_string(), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_once_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let store = ArtifactStore::open(&url).unwrap();
        let hash = ContentHash::of(b"lock");
        let key = keys::lock_artifact(&hash, artifact::CONDA_LOCK);
        store.put_immutable(&key, Bytes::from_static(b"first")).await.unwrap();
        store.put_immutable(&key, Bytes::from_static(b"second")).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Bytes::from_static(b"first"));
        assert!(store.exists(&key).await.unwrap());
        assert!(matches!(store.get("locks/none").await, Err(StoreError::NotFound(_))));
    }

    #[tokio::test]
    async fn lock_artifacts_are_served_from_memory_once_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let store = ArtifactStore::open(&url).unwrap();
        let hash = ContentHash::of(b"lock");
        assert!(matches!(
            store.get_lock_artifact(&hash, artifact::CONDA_LOCK).await,
            Err(StoreError::NotFound(_))
        ));
        let key = keys::lock_artifact(&hash, artifact::CONDA_LOCK);
        store.put_immutable(&key, Bytes::from_static(b"lock: 1")).await.unwrap();
        assert_eq!(store.get_lock_artifact(&hash, artifact::CONDA_LOCK).await.unwrap(), "lock: 1");

        // The folder is gone: only the copy in memory can answer, and every
        // clone shares it.
        drop(dir);
        assert_eq!(store.clone().get_lock_artifact(&hash, artifact::CONDA_LOCK).await.unwrap(), "lock: 1");
        assert!(store.get(&key).await.is_err());
        let uncached = store.with_cache_bytes(0);
        assert!(uncached.get_lock_artifact(&hash, artifact::CONDA_LOCK).await.is_err());
    }

    #[tokio::test]
    async fn check_answers_for_a_usable_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = ArtifactStore::open(&Url::from_directory_path(&root).unwrap()).unwrap();
        store.check().await.unwrap();
        store
            .put_immutable("locks/x/conda-lock.yml", Bytes::from_static(b"lock"))
            .await
            .unwrap();
        store.check().await.unwrap();

        // The folder is replaced by a file: nothing can be stored there.
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::write(&root, b"not a folder").unwrap();
        assert!(matches!(store.check().await, Err(StoreError::Unavailable { .. })));
    }

    #[test]
    fn only_known_artifacts_are_named() {
        assert!(artifact::is_lock_artifact("conda-lock.yml"));
        assert!(artifact::is_lock_artifact("explicit-linux-64.txt"));
        for name in ["../x", "explicit-.txt", "explicit-../a.txt", "pixi.lock.bak"] {
            assert!(!artifact::is_lock_artifact(name), "{name}");
        }
    }
}

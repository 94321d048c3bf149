//! Object storage for build artifacts, over `object_store` (a local folder or
//! S3). Keys are content-addressed and written once: an object that exists is
//! never replaced, so readers may cache it forever.

mod cache;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use envstore_core::ContentHash;
use futures::StreamExt;
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
    /// A call ran into its deadline ([`StoreSettings::timeout`], more for
    /// large bodies): the store hangs or is far too slow. Worth a retry.
    #[error(
        "the object store at {store} did not answer within {} s while {operation} '{key}'; check that it is reachable and healthy, or raise --store-timeout-seconds",
        .after.as_secs_f64()
    )]
    TimedOut {
        store: String,
        operation: &'static str,
        key: String,
        after: Duration,
    },
    /// No connection could be made, after retries. Worth a retry later.
    #[error(
        "could not connect to the object store at {store} while {operation} '{key}': {detail}; check that it runs and that the endpoint is right"
    )]
    Unreachable {
        store: String,
        operation: &'static str,
        key: String,
        detail: String,
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

    /// The typed events of a build's log (JSON Lines of `ProgressRecord`),
    /// written with it: a follower who arrives after the end still gets
    /// the counts, not only the text.
    pub fn build_events(build_id: &str) -> String {
        format!("logs/{build_id}.events.jsonl")
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

/// Parts of one upload sent at once.
const PARTS_IN_FLIGHT: usize = 4;

#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    url: String,
    /// The URL as messages show it: with the S3 endpoint, when one is set.
    shown: String,
    settings: StoreSettings,
    /// Lock artifacts already read, by lock and name, shared by every clone.
    lock_artifacts: Arc<cache::ObjectCache<(ContentHash, String)>>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("url", &self.url)
            .finish()
    }
}

/// An object read as it arrives ([`ArtifactStore::get_stream`]).
pub struct ObjectStream {
    /// The size of the whole object, whatever part of it is sent.
    pub size: u64,
    /// The bytes sent (end exclusive): `0..size`, or the range asked for.
    pub range: std::ops::Range<u64>,
    /// The bytes, in order; an error ends them.
    pub chunks: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
}

impl std::fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStream")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// How long one store call may take unless configured: well inside the
/// default 30 s lease, so a hanging store fails the call (and the attempt,
/// as a transient error) while the lease still holds, instead of outliving it.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(20);

/// The slowest transfer a call still waits for: bodies get this much time
/// on top of the timeout, so a large log or upload part is not cut short.
const MIN_BYTES_PER_SECOND: u64 = 1024 * 1024;

/// How long one request to the object store may take in all, unless
/// `AWS_TIMEOUT` says otherwise. Generous on purpose: one GET carries a
/// whole packed prefix (hundreds of MB). Hangs are caught sooner by the
/// read timeout and by the deadline of each call.
const STORE_REQUEST_TIMEOUT: &str = "30min";

/// Time limits and retries of object store calls, all derived from one
/// setting (`--store-timeout-seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// The deadline of one call (a head, a small read or write, one part of
    /// an upload, the wait for a download's next chunk), retries included.
    pub timeout: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

impl StoreSettings {
    /// Connecting: a quarter of the deadline, at most 5 s, so a refused or
    /// dropped connection leaves time for retries.
    pub fn connect_timeout(&self) -> Duration {
        (self.timeout / 4).min(Duration::from_secs(5))
    }

    /// Silence while a request waits or reads: half the deadline, so a
    /// request to a hanging store is given up in time for one retry.
    pub fn read_timeout(&self) -> Duration {
        self.timeout / 2
    }

    /// At most 3 retries (100 ms, 200 ms, 400 ms … up to 2 s apart) and none
    /// started after the deadline.
    pub fn retry(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: self.timeout,
        }
    }

    /// The deadline of a call that carries `bytes` of body.
    fn deadline_for(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs(bytes / MIN_BYTES_PER_SECOND)
    }
}

/// `duration` as object_store's configuration reads it.
fn config_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis().max(1))
}

/// An S3 builder with our time limits and retries, then whatever the `AWS_*`
/// variables say (as `AmazonS3Builder::from_env` reads them), so an
/// operator can still change every limit.
fn s3_builder(settings: &StoreSettings) -> AmazonS3Builder {
    use object_store::ClientConfigKey;
    use object_store::aws::AmazonS3ConfigKey;
    let mut builder = AmazonS3Builder::new()
        .with_retry(settings.retry())
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            config_duration(settings.connect_timeout()),
        )
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
            config_duration(settings.read_timeout()),
        )
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            STORE_REQUEST_TIMEOUT,
        );
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
    /// (endpoint, region and credentials from the usual `AWS_*` variables)
    /// with the default [`StoreSettings`].
    pub fn open(url: &Url) -> Result<Self, StoreError> {
        Self::open_with(url, StoreSettings::default())
    }

    /// [`Self::open`] with the given time limits and retries.
    pub fn open_with(url: &Url, settings: StoreSettings) -> Result<Self, StoreError> {
        Self::open_with_s3_options(url, settings, &[])
    }

    /// [`Self::open_with`], with S3 options (`aws_endpoint`, …, as the
    /// `AWS_*` variables name them, lower case) that take precedence over
    /// the environment; unknown ones are refused.
    pub fn open_with_s3_options(
        url: &Url,
        settings: StoreSettings,
        options: &[(&str, &str)],
    ) -> Result<Self, StoreError> {
        let mut shown = url.to_string();
        let inner: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| StoreError::UnsupportedUrl(url.to_string()))?;
                fs_create_dir_all(&path)?;
                let local =
                    LocalFileSystem::new_with_prefix(&path).map_err(|source| StoreError::Open {
                        url: url.to_string(),
                        source,
                    })?;
                Arc::new(local)
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
                let mut builder = s3_builder(&settings).with_bucket_name(bucket);
                for (key, value) in options {
                    let config = key
                        .parse::<object_store::aws::AmazonS3ConfigKey>()
                        .map_err(|source| StoreError::Open {
                            url: url.to_string(),
                            source,
                        })?;
                    builder = builder.with_config(config, *value);
                }
                if let Some(endpoint) =
                    builder.get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint)
                {
                    shown = format!("{url} (endpoint {endpoint})");
                }
                let s3 = builder.build().map_err(|source| StoreError::Open {
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
            shown,
            settings,
            lock_artifacts: Arc::new(cache::ObjectCache::new(
                DEFAULT_CACHE_BYTES,
                LOCKFILE_CACHE_METRIC,
            )),
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

    pub fn settings(&self) -> StoreSettings {
        self.settings
    }

    /// `call` under `after`, or [`StoreError::TimedOut`] (counted and
    /// logged) naming what it was doing.
    async fn within<T>(
        &self,
        after: Duration,
        operation: &'static str,
        key: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(after, call).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(after, operation, key)),
        }
    }

    fn timed_out(&self, after: Duration, operation: &'static str, key: &str) -> StoreError {
        count_error("timeout");
        tracing::warn!(store = %self.shown, operation, key, seconds = after.as_secs_f64(), "an object store call timed out");
        StoreError::TimedOut {
            store: self.shown.clone(),
            operation,
            key: key.to_owned(),
            after,
        }
    }

    /// [`StoreError::TimedOut`] or [`StoreError::Unreachable`] when the
    /// store could not be reached or stopped answering, after retries.
    fn transport_error(
        &self,
        operation: &'static str,
        key: &str,
        detail: String,
        source: &object_store::Error,
    ) -> Option<StoreError> {
        if is_timeout(source) {
            return Some(self.timed_out(self.settings.read_timeout(), operation, key));
        }
        if is_unreachable(source) {
            count_error("connect");
            tracing::warn!(store = %self.shown, operation, key, error = %detail, "the object store cannot be reached");
            return Some(StoreError::Unreachable {
                store: self.shown.clone(),
                operation,
                key: key.to_owned(),
                detail,
            });
        }
        None
    }

    /// A failed write: [`StoreError::TimedOut`] when the store stopped
    /// answering (object_store does not retry a timed-out conditional put).
    fn write_error(
        &self,
        operation: &'static str,
        key: &str,
        source: object_store::Error,
    ) -> StoreError {
        if let Some(error) = self.transport_error(operation, key, source.to_string(), &source) {
            return error;
        }
        count_error("write");
        StoreError::Write {
            key: key.to_owned(),
            source,
        }
    }

    /// A failed read, as [`Self::write_error`].
    fn read_error(
        &self,
        operation: &'static str,
        key: &str,
        source: object_store::Error,
    ) -> StoreError {
        if let Some(error) = self.transport_error(operation, key, source.to_string(), &source) {
            return error;
        }
        count_error("read");
        StoreError::Read {
            key: key.to_owned(),
            source,
        }
    }

    /// Writes `key` once. When the object already exists the write is a
    /// no-op: content-addressed keys always hold the same bytes.
    pub async fn put_immutable(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let deadline = self.settings.deadline_for(bytes.len() as u64);
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = async {
            match self
                .inner
                .put_opts(&ObjectPath::from(key), PutPayload::from(bytes), options)
                .await
            {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                Err(source) => Err(self.write_error("writing", key, source)),
            }
        };
        self.within(deadline, "writing", key, put).await
    }

    /// Writes a file once, streamed in parts so large packed prefixes do not
    /// have to fit in memory. Each part (and the start and the end of the
    /// upload) has its own deadline, so a large upload is never cut short
    /// by the timeout while a hanging store still fails it in time; a failed
    /// upload is aborted.
    pub async fn put_file_immutable(
        &self,
        key: &str,
        path: &std::path::Path,
    ) -> Result<(), StoreError> {
        if self.exists(key).await? {
            return Ok(());
        }
        let write_error = |source| self.write_error("uploading", key, source);
        let timeout = self.settings.timeout;
        let mut upload = self
            .within(timeout, "starting the upload of", key, async {
                self.inner
                    .put_multipart(&ObjectPath::from(key))
                    .await
                    .map_err(write_error)
            })
            .await?;
        let uploaded = self.upload_parts(key, path, upload.as_mut()).await;
        let uploaded = match uploaded {
            Ok(()) => {
                self.within(timeout, "finishing the upload of", key, async {
                    upload.complete().await.map(|_| ()).map_err(write_error)
                })
                .await
            }
            Err(error) => Err(error),
        };
        if uploaded.is_err() {
            // Best effort: parts left behind cost storage, not correctness.
            let _ = tokio::time::timeout(timeout, upload.abort()).await;
        }
        uploaded
    }

    /// The parts of `path`, at most [`PARTS_IN_FLIGHT`] at once, each under
    /// its own deadline.
    async fn upload_parts(
        &self,
        key: &str,
        path: &std::path::Path,
        upload: &mut dyn object_store::MultipartUpload,
    ) -> Result<(), StoreError> {
        let io_error = |error: std::io::Error| StoreError::Write {
            key: key.to_owned(),
            source: object_store::Error::Generic {
                store: "file",
                source: Box::new(error),
            },
        };
        let part_error = |source| self.write_error("uploading a part of", key, source);
        let deadline = self.settings.deadline_for(PART_SIZE as u64);
        let mut file = tokio::fs::File::open(path).await.map_err(io_error)?;
        let mut in_flight = tokio::task::JoinSet::new();
        let mut finished = false;
        while !finished {
            let mut part = vec![0u8; PART_SIZE];
            let mut filled = 0;
            // Full parts: S3 wants every part but the last to be at least 5 MiB.
            while filled < PART_SIZE {
                let read = tokio::io::AsyncReadExt::read(&mut file, &mut part[filled..])
                    .await
                    .map_err(io_error)?;
                if read == 0 {
                    finished = true;
                    break;
                }
                filled += read;
            }
            part.truncate(filled);
            if !part.is_empty() {
                let sending = upload.put_part(PutPayload::from(part));
                in_flight.spawn(tokio::time::timeout(deadline, sending));
            }
            while in_flight.len() >= PARTS_IN_FLIGHT || (finished && !in_flight.is_empty()) {
                match in_flight.join_next().await {
                    Some(Ok(Ok(Ok(())))) | None => {}
                    Some(Ok(Ok(Err(source)))) => return Err(part_error(source)),
                    Some(Ok(Err(_))) => {
                        return Err(self.timed_out(deadline, "uploading a part of", key));
                    }
                    Some(Err(join)) => {
                        return Err(part_error(object_store::Error::Generic {
                            store: "upload",
                            source: Box::new(join),
                        }));
                    }
                }
            }
        }
        Ok(())
    }

    /// An object's bytes, read whole into memory: for small objects
    /// (lockfiles, logs). Large ones (packed prefixes) go through
    /// [`Self::get_stream`].
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let object = self.get_stream(key).await?;
        let mut bytes = BytesMut::with_capacity(
            usize::try_from(object.size)
                .unwrap_or(0)
                .min(PART_SIZE * 16),
        );
        let mut chunks = object.chunks;
        while let Some(chunk) = chunks.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes.freeze())
    }

    /// An object's bytes as they arrive, never all in memory. The request
    /// has the call's deadline, and so has each chunk of the answer: a large
    /// object (a packed prefix) may take as long as it keeps coming, a store
    /// that stops sending fails it.
    pub async fn get_stream(&self, key: &str) -> Result<ObjectStream, StoreError> {
        self.get_with(key, None).await
    }

    /// The bytes `range` (end exclusive) of an object, streamed as
    /// [`Self::get_stream`] streams a whole one. A range that starts at or
    /// past the end is refused by the store ([`StoreError::Read`]); callers
    /// check it against [`Self::size`] first.
    pub async fn get_range_stream(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<ObjectStream, StoreError> {
        self.get_with(key, Some(object_store::GetRange::Bounded(range)))
            .await
    }

    async fn get_with(
        &self,
        key: &str,
        range: Option<object_store::GetRange>,
    ) -> Result<ObjectStream, StoreError> {
        let timeout = self.settings.timeout;
        let options = object_store::GetOptions {
            range,
            ..object_store::GetOptions::default()
        };
        let result = self
            .within(timeout, "reading", key, async {
                match self.inner.get_opts(&ObjectPath::from(key), options).await {
                    Ok(result) => Ok(result),
                    Err(object_store::Error::NotFound { .. }) => {
                        Err(StoreError::NotFound(key.to_owned()))
                    }
                    Err(source) => Err(self.read_error("reading", key, source)),
                }
            })
            .await?;
        let size = result.meta.size;
        let range = result.range.clone();
        let state = (self.clone(), key.to_owned(), result.into_stream());
        let chunks = futures::stream::unfold(Some(state), move |state| async move {
            let (store, key, mut stream) = state?;
            match tokio::time::timeout(timeout, stream.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((store, key, stream)))),
                Ok(Some(Err(source))) => {
                    Some((Err(store.read_error("reading", &key, source)), None))
                }
                Ok(None) => None,
                Err(_) => Some((Err(store.timed_out(timeout, "reading", &key)), None)),
            }
        });
        Ok(ObjectStream {
            size,
            range,
            chunks: chunks.boxed(),
        })
    }

    /// A lock's artifact (`locks/<hash>/<name>`), from memory once it has
    /// been read: lockfiles are small, hot and never change.
    pub async fn get_lock_artifact(
        &self,
        lock_hash: &ContentHash,
        name: &str,
    ) -> Result<Bytes, StoreError> {
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
        self.within(self.settings.timeout, "looking up", key, async {
            match self.inner.head(&ObjectPath::from(key)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(source) => Err(self.read_error("looking up", key, source)),
            }
        })
        .await
    }

    /// Removes an object that garbage collection found unreferenced; one
    /// already gone is fine. Objects are otherwise never changed.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.within(self.settings.timeout, "deleting", key, async {
            match self.inner.delete(&ObjectPath::from(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(source) => Err(self.write_error("deleting", key, source)),
            }
        })
        .await
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.size(key).await?.is_some())
    }

    /// Whether the store answers, for readiness checks: a listing of its top
    /// level (a few folders) finds a missing bucket, which answers a head
    /// with "not found" like any missing object; a head of a key that is
    /// never written finds a store folder that cannot hold objects, which
    /// lists as empty. Two small requests, no writes.
    pub async fn check(&self) -> Result<(), StoreError> {
        let unavailable = |source: object_store::Error| {
            if let Some(error) =
                self.transport_error("checking", READINESS_PROBE_KEY, source.to_string(), &source)
            {
                return error;
            }
            count_error("check");
            StoreError::Unavailable {
                url: self.url.clone(),
                source,
            }
        };
        let probe = ObjectPath::from(READINESS_PROBE_KEY);
        self.within(
            self.settings.timeout,
            "checking",
            READINESS_PROBE_KEY,
            async {
                let (listed, headed) = tokio::join!(
                    self.inner.list_with_delimiter(None),
                    self.inner.head(&probe)
                );
                listed.map_err(unavailable)?;
                match headed {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(source) => Err(unavailable(source)),
                }
            },
        )
        .await
    }
}

/// How the last request behind an object_store error failed on the wire,
/// when it did (rather than being answered with an error).
fn transport_failure(error: &object_store::Error) -> Option<object_store::client::HttpErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(http) = error.downcast_ref::<object_store::client::HttpError>() {
            return Some(http.kind());
        }
        current = error.source();
    }
    None
}

/// Whether object_store gave up because a request got no answer in time.
fn is_timeout(error: &object_store::Error) -> bool {
    matches!(
        transport_failure(error),
        Some(object_store::client::HttpErrorKind::Timeout)
    )
}

/// Whether object_store gave up because no connection could be made.
fn is_unreachable(error: &object_store::Error) -> bool {
    matches!(
        transport_failure(error),
        Some(object_store::client::HttpErrorKind::Connect)
    )
}

fn fs_create_dir_all(path: &std::path::Path) -> Result<(), StoreError> {
    fs_err::create_dir_all(path)
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
        store
            .put_immutable(&key, Bytes::from_static(b"first"))
            .await
            .unwrap();
        store
            .put_immutable(&key, Bytes::from_static(b"second"))
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Bytes::from_static(b"first"));
        assert!(store.exists(&key).await.unwrap());
        assert!(matches!(
            store.get("locks/none").await,
            Err(StoreError::NotFound(_))
        ));
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
        store
            .put_immutable(&key, Bytes::from_static(b"lock: 1"))
            .await
            .unwrap();
        assert_eq!(
            store
                .get_lock_artifact(&hash, artifact::CONDA_LOCK)
                .await
                .unwrap(),
            "lock: 1"
        );

        // The folder is gone: only the copy in memory can answer, and every
        // clone shares it.
        drop(dir);
        assert_eq!(
            store
                .clone()
                .get_lock_artifact(&hash, artifact::CONDA_LOCK)
                .await
                .unwrap(),
            "lock: 1"
        );
        assert!(store.get(&key).await.is_err());
        let uncached = store.with_cache_bytes(0);
        assert!(
            uncached
                .get_lock_artifact(&hash, artifact::CONDA_LOCK)
                .await
                .is_err()
        );
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
        fs_err::remove_dir_all(&root).unwrap();
        fs_err::write(&root, b"not a folder").unwrap();
        assert!(matches!(
            store.check().await,
            Err(StoreError::Unavailable { .. })
        ));
    }

    #[tokio::test]
    async fn a_file_of_several_parts_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().expect("a folder");
        let store = ArtifactStore::open(
            &Url::from_directory_path(dir.path().join("store")).expect("a URL"),
        )
        .expect("a store");
        let file = dir.path().join("packed.tar.zst");
        let content: Vec<u8> = (0..(PART_SIZE * PARTS_IN_FLIGHT + 77))
            .map(|index| (index % 253) as u8)
            .collect();
        fs_err::write(&file, &content).expect("written");
        store
            .put_file_immutable("prefixes/a.tar.zst", &file)
            .await
            .expect("uploaded");
        assert!(store.get("prefixes/a.tar.zst").await.expect("read back") == content);
        assert_eq!(
            store.size("prefixes/a.tar.zst").await.expect("a size"),
            Some(content.len() as u64)
        );
    }

    #[tokio::test]
    async fn objects_stream_whole_or_by_range() {
        let dir = tempfile::tempdir().expect("a folder");
        let store = ArtifactStore::open(&Url::from_directory_path(dir.path()).expect("a URL"))
            .expect("a store");
        let content: Vec<u8> = (0..100_000u32).map(|index| (index % 251) as u8).collect();
        store
            .put_immutable("prefixes/b.tar.zst", Bytes::from(content.clone()))
            .await
            .expect("written");
        let collect = |object: ObjectStream| async move {
            let mut chunks = object.chunks;
            let mut read = Vec::new();
            while let Some(chunk) = chunks.next().await {
                read.extend_from_slice(&chunk.expect("a chunk"));
            }
            read
        };

        let whole = store
            .get_stream("prefixes/b.tar.zst")
            .await
            .expect("a stream");
        assert_eq!((whole.size, whole.range.clone()), (100_000, 0..100_000));
        assert!(collect(whole).await == content);

        let part = store
            .get_range_stream("prefixes/b.tar.zst", 70_000..70_010)
            .await
            .expect("a range");
        assert_eq!((part.size, part.range.clone()), (100_000, 70_000..70_010));
        assert_eq!(collect(part).await, content[70_000..70_010]);

        assert!(matches!(
            store.get_stream("prefixes/none.tar.zst").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            store
                .get_range_stream("prefixes/b.tar.zst", 100_000..100_001)
                .await
                .is_err(),
            "a range past the end"
        );
    }

    #[test]
    fn only_known_artifacts_are_named() {
        assert!(artifact::is_lock_artifact("conda-lock.yml"));
        assert!(artifact::is_lock_artifact("explicit-linux-64.txt"));
        for name in [
            "../x",
            "explicit-.txt",
            "explicit-../a.txt",
            "pixi.lock.bak",
        ] {
            assert!(!artifact::is_lock_artifact(name), "{name}");
        }
    }
}

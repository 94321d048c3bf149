//! The one gate every package passes on its way into a prefix.
//!
//! The package cache is shared: the repodata gateway (`url=` specs, the
//! solve endpoint), earlier builds and other processes put entries there
//! too, extracted by rattler without our checks. So no entry is trusted for
//! what it is: an entry is used only when this gate extracted it itself, and
//! a record of that (a random nonce kept beside the cache under the
//! archive's sha256, or md5 for md5-only records, and inside the entry)
//! says so. Any other entry is removed and fetched again through the gate.
//!
//! Through the gate an archive is downloaded (or read, for `file://`),
//! checked against the record's sha256 and md5, extracted member by member
//! under the [`PackageLimits`] (see [`crate::extract`]), and validated
//! against its record and its `paths.json` (see [`crate::validate`]).
//!
//! Other processes share the cache: every entry is checked and used under a
//! shared file lock and (re)fetched or removed under an exclusive one (see
//! [`crate::entry_lock`]); rattler extracts into a uniquely named temporary
//! folder beside the entry and renames it into place, and downloads go to
//! uniquely named files. Transient download errors are retried with
//! exponential backoff for a time budget.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

use fs_err as fs;
use futures::stream::{self, TryStreamExt};
use rattler::package_cache::PackageCache;
use rattler_conda_types::RepoDataRecord;
use rattler_digest::{Md5, Md5Hash, Sha256, Sha256Hash};
use rattler_networking::LazyClient;
use sha2::Digest;

use crate::entry_lock::{
    EntryLock, EntryLockError, LOCK_WAIT, LockMode, POLL_MAX, POLL_MIN, try_lock_entry,
};
use crate::error::{GateError, PrefixError};
use crate::extract::ArchiveKind;
use crate::limits::PackageLimits;
use crate::progress::{ProgressSink, TransferCounts};
use crate::validate::{Rejection, validate_extracted};

/// How many archives are fetched at once.
const CONCURRENT_FETCHES: usize = 8;

/// Folder beside the cache entries with one validation record per archive.
pub(crate) const RECORDS_DIR: &str = ".envstore-validated";
/// File inside a cache entry the gate extracted, holding its nonce.
pub(crate) const ENTRY_NONCE: &str = ".envstore-validated";
/// Folder beside the cache entries for archives being downloaded.
const DOWNLOADS_DIR: &str = ".envstore-downloads";
/// How long transient download errors are retried by default.
pub const DEFAULT_TRANSIENT_RETRY: Duration = Duration::from_secs(120);
/// The first and the longest pause between download attempts.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(500);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(20);
/// How often an entry that other processes keep replacing is tried again.
const ADMIT_ATTEMPTS: usize = 4;

/// The gate: the shared cache, the client that downloads, the limits.
#[derive(Clone)]
pub struct PackageGate {
    cache: PackageCache,
    client: LazyClient,
    limits: PackageLimits,
    /// How long transient download errors are retried.
    transient_retry: Duration,
    /// One check at a time per cache entry in this process, so its builds
    /// do not poll each other's file locks.
    entries: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A cache entry that passed the gate, with the shared lock that keeps any
/// other process from replacing or removing it while it is linked from.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub dir: PathBuf,
    /// False when a checked entry was already in the cache.
    pub fetched: bool,
    pub lock: EntryLock,
}

/// The checked entries of a build, in record order, and their locks: drop
/// the locks only once the prefix is linked.
pub(crate) struct AdmittedAll {
    pub dirs: Vec<PathBuf>,
    pub locks: Vec<EntryLock>,
}

impl PackageGate {
    pub fn new(cache: PackageCache, client: LazyClient, limits: PackageLimits) -> Self {
        Self {
            cache,
            client,
            limits,
            transient_retry: DEFAULT_TRANSIENT_RETRY,
            entries: Arc::default(),
        }
    }

    pub(crate) fn set_transient_retry(&mut self, budget: Duration) {
        self.transient_retry = budget;
    }

    pub fn limits(&self) -> &PackageLimits {
        &self.limits
    }

    pub(crate) fn set_limits(&mut self, limits: PackageLimits) {
        self.limits = limits;
    }

    pub(crate) fn set_client(&mut self, client: LazyClient) {
        self.client = client;
    }

    pub(crate) fn cache(&self) -> &PackageCache {
        &self.cache
    }

    fn root(&self) -> Result<PathBuf, GateError> {
        self.cache
            .layers()
            .iter()
            .find(|layer| !layer.is_readonly())
            .map(|layer| layer.path().to_owned())
            .ok_or(GateError::NoCacheFolder)
    }

    /// Puts every record's archive through the gate; returns the checked
    /// cache entries, in record order, each under a shared lock.
    /// `pause_after_first_download` (fault tests only) stops for good once
    /// the first archive is downloaded and extracted.
    pub(crate) async fn admit_all(
        &self,
        records: &[RepoDataRecord],
        sink: Arc<dyn ProgressSink>,
        counts: Arc<TransferCounts>,
        pause_after_first_download: bool,
    ) -> Result<AdmittedAll, PrefixError> {
        let total = records.len();
        let done = AtomicUsize::new(0);
        let bytes_total: u64 = records
            .iter()
            .filter_map(|record| record.package_record.size)
            .sum();
        let bytes_done = std::sync::atomic::AtomicU64::new(0);
        let slots: Vec<Mutex<Option<Admitted>>> =
            records.iter().map(|_| Mutex::new(None)).collect();
        stream::iter(records.iter().enumerate().map(Ok::<_, PrefixError>))
            .try_for_each_concurrent(CONCURRENT_FETCHES, |(index, record)| {
                let sink = sink.clone();
                let counts = counts.clone();
                let done = &done;
                let bytes_done = &bytes_done;
                let slots = &slots;
                async move {
                    let admitted = self.admit(record, sink.clone()).await?;
                    if admitted.fetched {
                        counts.downloaded.fetch_add(1, Ordering::Relaxed);
                    }
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    let size = record.package_record.size.unwrap_or(0);
                    sink.event(envstore_core::ProgressEvent::Downloading {
                        done: finished as u64,
                        total: total as u64,
                        bytes_done: bytes_done.fetch_add(size, Ordering::Relaxed) + size,
                        bytes_total,
                        package: record.identifier.to_string(),
                        cached: !admitted.fetched,
                    });
                    let fetched = admitted.fetched;
                    if let Ok(mut slot) = slots[index].lock() {
                        *slot = Some(admitted);
                    }
                    if fetched && pause_after_first_download {
                        pause_for_fault_test(&*sink).await;
                    }
                    Ok(())
                }
            })
            .await?;
        let mut all = AdmittedAll {
            dirs: Vec::with_capacity(total),
            locks: Vec::with_capacity(total),
        };
        for admitted in slots
            .into_iter()
            .filter_map(|slot| slot.into_inner().ok().flatten())
        {
            all.dirs.push(admitted.dir);
            all.locks.push(admitted.lock);
        }
        Ok(all)
    }

    /// The checked cache entry of `record`, under a shared lock: a trusted
    /// one, or fetched anew under an exclusive lock first.
    pub(crate) async fn admit(
        &self,
        record: &RepoDataRecord,
        sink: Arc<dyn ProgressSink>,
    ) -> Result<Admitted, PrefixError> {
        let package = record.identifier.to_string();
        let refused = |reason| PrefixError::Rejected {
            package: package.clone(),
            reason,
        };
        let failed = |source| PrefixError::Gate {
            package: package.clone(),
            source,
        };
        let key = cache_key_name(record);
        let root = self.root().map_err(failed)?;
        fs::create_dir_all(&root)
            .map_err(GateError::io("create", &root))
            .map_err(failed)?;
        let mut dir = root.join(&key);
        let in_process = self.entry_lock(&key);
        let _held = in_process.lock().await;
        let lock_failed = |dir: &Path| {
            let path = crate::entry_lock::lock_path(dir);
            move |source| failed(GateError::Lock(EntryLockError::Io { path, source }))
        };
        let started = Instant::now();
        let mut pause = POLL_MIN;
        let (mut fetched, mut fetches, mut announced) = (false, 0, false);
        loop {
            // Usable as it is: share it with every other build.
            if let Some(shared) =
                try_lock_entry(&dir, LockMode::Shared).map_err(lock_failed(&dir))?
                && self.is_usable(record, &dir)
            {
                shared.touch();
                return Ok(Admitted {
                    dir,
                    fetched,
                    lock: shared,
                });
            }
            // Missing, or not put there by the gate (or half-written by a
            // process that died): fetch it anew, alone.
            if let Some(exclusive) =
                try_lock_entry(&dir, LockMode::Exclusive).map_err(lock_failed(&dir))?
            {
                if !self.is_usable(record, &dir) {
                    fetches += 1;
                    if fetches > ADMIT_ATTEMPTS {
                        return Err(failed(GateError::Replaced(dir)));
                    }
                    match tokio::fs::remove_dir_all(&dir).await {
                        Ok(()) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(failed(GateError::io(
                                "remove the unchecked cache entry",
                                &dir,
                            )(source)));
                        }
                    }
                    let (result, rejection, did_fetch) =
                        self.get_or_fetch(record, sink.clone()).await;
                    if let Some(reason) = rejection {
                        return Err(refused(reason));
                    }
                    let found = result.map_err(failed)?;
                    fetched |= did_fetch;
                    if found != dir {
                        // A cache that names its entries otherwise (by origin too).
                        dir = found;
                    }
                }
                drop(exclusive);
                continue;
            }
            // Another process writes it, or links from an entry this build
            // cannot use: look again shortly.
            if started.elapsed() >= LOCK_WAIT {
                return Err(failed(GateError::Lock(EntryLockError::Busy {
                    path: dir,
                    waited: started.elapsed(),
                })));
            }
            if !announced {
                announced = true;
                sink.line(format!(
                    "waiting for another process using the package cache entry {}",
                    dir.display()
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Whether the entry is trusted and rattler's metadata agrees, so the
    /// installer links it as it is rather than fetching it again.
    fn is_usable(&self, record: &RepoDataRecord, dir: &Path) -> bool {
        if !self.is_trusted(record, dir) {
            return false;
        }
        match record.package_record.sha256 {
            Some(wanted) => recorded_sha256(dir).is_some_and(|found| found == wanted),
            None => true,
        }
    }

    /// Whether the entry at `dir` is the one the gate extracted for `record`.
    pub(crate) fn is_trusted(&self, record: &RepoDataRecord, dir: &Path) -> bool {
        let Some(digest) = digest_key(record) else {
            return false;
        };
        let Ok(root) = self.root() else {
            return false;
        };
        let expected = read_small(&root.join(RECORDS_DIR).join(digest));
        let entry = dir.join(ENTRY_NONCE);
        let is_file = fs_err::symlink_metadata(&entry).is_ok_and(|meta| meta.file_type().is_file());
        match (expected, is_file.then(|| read_small(&entry)).flatten()) {
            (Some(expected), Some(found)) => !expected.is_empty() && expected == found,
            _ => false,
        }
    }

    /// rattler's `get_or_fetch` with the gate as the only way in. Returns
    /// the entry, the rejection if the gate refused the archive, and whether
    /// the gate fetched it now.
    async fn get_or_fetch(
        &self,
        record: &RepoDataRecord,
        sink: Arc<dyn ProgressSink>,
    ) -> (Result<PathBuf, GateError>, Option<Rejection>, bool) {
        let root = match self.root() {
            Ok(root) => root,
            Err(error) => return (Err(error), None, false),
        };
        let job = Arc::new(FetchJob {
            record: record.clone(),
            client: self.client.clone(),
            limits: self.limits,
            transient_retry: self.transient_retry,
            sink,
            root,
            rejection: Mutex::new(None),
            fetched: AtomicBool::new(false),
        });
        let fetch_job = job.clone();
        let result = self
            .cache
            .get_or_fetch(
                &record.package_record,
                move |dest| {
                    let job = fetch_job.clone();
                    async move { job.run(dest).await }
                },
                None,
            )
            .await;
        let rejection = job.rejection.lock().ok().and_then(|mut slot| slot.take());
        let fetched = job.fetched.load(Ordering::SeqCst);
        let result = result
            .map(|metadata| metadata.path().to_owned())
            .map_err(|error| GateError::Cache(envstore_core::error_chain(&error)));
        (result, rejection, fetched)
    }

    fn entry_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(key.to_owned()).or_default().clone()
    }
}

/// The name rattler gives the cache entry of `record`.
fn cache_key_name(record: &RepoDataRecord) -> String {
    let package = &record.package_record;
    format!(
        "{}-{}-{}",
        package.name.as_normalized(),
        package.version,
        package.build
    )
}

/// The name of the validation record of `record`'s archive: its sha256, or
/// its md5 when the record pins only that. None without either: such an
/// entry is never trusted and fetched through the gate every time.
fn digest_key(record: &RepoDataRecord) -> Option<String> {
    let package = &record.package_record;
    if let Some(sha256) = package.sha256 {
        Some(format!("sha256-{}", to_hex(&sha256)))
    } else {
        package.md5.map(|md5| format!("md5-{}", to_hex(&md5)))
    }
}

/// Whether the record pins its archive by sha256 or md5.
pub(crate) fn has_digest(record: &RepoDataRecord) -> bool {
    digest_key(record).is_some()
}

/// The archive sha256 rattler recorded for the entry at `dir`: bytes 8..40
/// of `<dir>.lock` (a big-endian revision, then the hash).
fn recorded_sha256(dir: &Path) -> Option<Sha256Hash> {
    let mut bytes = Vec::with_capacity(40);
    fs_err::File::open(crate::entry_lock::lock_path(dir))
        .ok()?
        .take(40)
        .read_to_end(&mut bytes)
        .ok()?;
    let hash: [u8; 32] = bytes.get(8..40)?.try_into().ok()?;
    Some(hash.into())
}

/// Fault tests only: stop for good, so the test can kill the process here.
#[cfg(feature = "test-hooks")]
async fn pause_for_fault_test(sink: &dyn ProgressSink) {
    sink.line("paused for a fault test: waiting to be killed".to_owned());
    std::future::pending::<()>().await;
}

#[cfg(not(feature = "test-hooks"))]
async fn pause_for_fault_test(_sink: &dyn ProgressSink) {}

fn read_small(path: &Path) -> Option<String> {
    let mut text = String::new();
    fs_err::File::open(path)
        .ok()?
        .take(256)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim().to_owned())
}

/// One run of the gate for one record, shared with rattler's fetch closure.
struct FetchJob {
    record: RepoDataRecord,
    client: LazyClient,
    limits: PackageLimits,
    transient_retry: Duration,
    sink: Arc<dyn ProgressSink>,
    root: PathBuf,
    rejection: Mutex<Option<Rejection>>,
    fetched: AtomicBool,
}

impl FetchJob {
    async fn run(self: Arc<Self>, dest: PathBuf) -> Result<Option<Sha256Hash>, GateError> {
        self.fetched.store(true, Ordering::SeqCst);
        match self.clone().fetch_into(dest).await {
            Err(GateError::Rejected(reason)) => {
                if let Ok(mut slot) = self.rejection.lock() {
                    *slot = Some(reason.clone());
                }
                Err(GateError::Rejected(reason))
            }
            other => other,
        }
    }

    async fn fetch_into(self: Arc<Self>, dest: PathBuf) -> Result<Option<Sha256Hash>, GateError> {
        let file_name = self.record.identifier.to_file_name();
        let kind = ArchiveKind::of(&file_name).ok_or_else(|| {
            GateError::Rejected(Rejection::Corrupt(format!(
                "'{file_name}' is neither a .conda nor a .tar.bz2 archive"
            )))
        })?;
        let url = &self.record.url;
        // Keeps a downloaded archive until extraction is done.
        let mut _download = None;
        let (archive, digests) = match url.scheme() {
            "file" => (
                url.to_file_path()
                    .map_err(|()| GateError::Scheme(url.to_string()))?,
                None,
            ),
            "http" | "https" => {
                let (downloaded, digests) = self.download().await?;
                let path = downloaded.path().to_owned();
                _download = Some(downloaded);
                (path, Some(digests))
            }
            _ => return Err(GateError::Scheme(url.to_string())),
        };
        let job = self.clone();
        tokio::task::spawn_blocking(move || job.check_and_extract(&archive, digests, kind, &dest))
            .await
            .map_err(|error| GateError::Cache(format!("the extraction task failed: {error}")))?
            .map(Some)
    }

    /// Downloads the archive into a uniquely named temporary file beside
    /// the cache, never more than the limits (or the record's size) allow,
    /// hashing it as it arrives. Transient errors (refused or reset
    /// connections, timeouts, 5xx, 429) are retried with exponential backoff
    /// and jitter for the retry budget; checksum, size and other answers
    /// are not. A retry after a broken transfer asks only for the rest
    /// (`Range`, with `If-Range` so a file changed meanwhile comes whole):
    /// a reset at 1.9 GB of a 2 GB package costs 0.1 GB, not 2.
    async fn download(&self) -> Result<(tempfile::NamedTempFile, ArchiveDigests), GateError> {
        let folder = self.root.join(DOWNLOADS_DIR);
        fs::create_dir_all(&folder).map_err(GateError::io("create", &folder))?;
        let cap = match self.record.package_record.size {
            Some(size) => size.min(self.limits.max_extracted_bytes),
            None => self.limits.max_extracted_bytes,
        };
        let url = envstore_core::public_url(&self.record.url).to_string();
        let started = Instant::now();
        let budget = self.transient_retry;
        let partial: tokio::sync::Mutex<Option<Partial>> = tokio::sync::Mutex::new(None);
        let attempt = || async {
            let mut slot = partial.lock().await;
            let part = match slot.as_mut() {
                Some(part) => part,
                None => {
                    let file = tempfile::Builder::new()
                        .prefix(".download-")
                        .tempfile_in(&folder)
                        .map_err(|error| {
                            DownloadFailure::Fatal(GateError::io(
                                "create a download file in",
                                &folder,
                            )(error))
                        })?;
                    // Held while it is written: `envstore gc` leaves a locked one alone.
                    let _ = file.as_file().try_lock();
                    slot.insert(Partial::new(file))
                }
            };
            self.download_once(part, cap).await
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(budget));
        let result = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|failure| {
                matches!(failure, DownloadFailure::Transient(_)) && started.elapsed() < budget
            })
            .notify(|failure, pause| {
                if let DownloadFailure::Transient(message) = failure {
                    self.sink.line(format!(
                        "retrying {url} in {}: {message}",
                        describe_duration(pause)
                    ));
                }
            })
            .await;
        result.map_err(|failure| match failure {
            DownloadFailure::Fatal(error) => error,
            DownloadFailure::Transient(message) => {
                let retried = started.elapsed();
                let message = if budget.is_zero() {
                    format!("{message} (transient errors are not retried)")
                } else {
                    format!(
                        "{message} (gave up after retrying for {})",
                        describe_duration(retried)
                    )
                };
                GateError::Download {
                    url: url.clone(),
                    message,
                }
            }
        })?;
        match partial.into_inner() {
            Some(Partial { file, hashers, .. }) => Ok((file, hashers.finish())),
            None => Err(GateError::Download {
                url,
                message: "no download was made".to_owned(),
            }),
        }
    }

    /// One request for what `part` lacks: the rest of the file when the
    /// server sends it (206 from where `part` ends), else the whole file
    /// again (200, `part` emptied first).
    async fn download_once(&self, part: &mut Partial, cap: u64) -> Result<(), DownloadFailure> {
        use reqwest_middleware::reqwest::header;

        let url = envstore_core::public_url(&self.record.url).to_string();
        let fatal = |message: String| {
            DownloadFailure::Fatal(GateError::Download {
                url: url.clone(),
                message,
            })
        };
        // The archive's own bytes, never a content coding of them: offsets
        // of a resumed download count those bytes, and a package archive is
        // compressed already.
        let mut request = self
            .client
            .client()
            .get(self.record.url.clone())
            .header(header::ACCEPT_ENCODING, "identity");
        let resume_from = part.written;
        match &part.validator {
            Some(validator) if resume_from > 0 => {
                request = request
                    .header(header::RANGE, format!("bytes={resume_from}-"))
                    .header(header::IF_RANGE, validator.clone());
            }
            _ => part.restart().map_err(|error| fatal(error.to_string()))?,
        }
        let mut response = request.send().await.map_err(|error| {
            let message = envstore_core::error_chain(&error);
            let transient = match &error {
                // The channel client's own verdict: a refused or timed
                // out connection, or a 5xx/429, is worth another try; a
                // refusal of policy is not.
                reqwest_middleware::Error::Middleware(inner) => inner
                    .downcast_ref::<envstore_core::channel_request::ChannelRequestError>()
                    .is_some_and(|failed| failed.failure.is_transient()),
                reqwest_middleware::Error::Reqwest(error) => {
                    !error.is_builder()
                        && !error.is_redirect()
                        && (error.is_connect()
                            || error.is_timeout()
                            || error.is_request()
                            || error.is_body())
                }
            };
            if transient {
                DownloadFailure::Transient(message)
            } else {
                fatal(message)
            }
        })?;
        let status = response.status();
        let too_large = || {
            DownloadFailure::Fatal(GateError::Rejected(Rejection::ArchiveTooLarge {
                limit: cap,
            }))
        };
        if status == reqwest_middleware::reqwest::StatusCode::PARTIAL_CONTENT {
            let range = response
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|value| value.to_str().ok())
                .and_then(ContentRange::parse);
            match range {
                Some(range) if resume_from > 0 && range.start == resume_from => {
                    if range.total.is_some_and(|total| total > cap) {
                        return Err(too_large());
                    }
                    self.sink.line(format!(
                        "resuming {url} from byte {resume_from}{}",
                        range
                            .total
                            .map(|total| format!(" of {total}"))
                            .unwrap_or_default()
                    ));
                }
                // A range this download did not ask for: the next
                // attempt asks for the whole file.
                _ => {
                    part.validator = None;
                    part.restart().map_err(|error| fatal(error.to_string()))?;
                    return Err(DownloadFailure::Transient(format!(
                        "the server answered a range that was not asked for ({})",
                        range.map_or_else(
                            || "no Content-Range".to_owned(),
                            |range| range.to_string()
                        )
                    )));
                }
            }
        } else if status.is_success() {
            // The whole file, from the start (the server ignored the range
            // or the file changed since the first answer).
            part.restart().map_err(|error| fatal(error.to_string()))?;
            part.validator = validator_of(response.headers());
            if response.content_length().is_some_and(|length| length > cap) {
                return Err(too_large());
            }
        } else {
            let message = format!("the server answered {status}");
            // 416: the file shrank under the range asked for; start again.
            if status == reqwest_middleware::reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                part.validator = None;
                part.restart().map_err(|error| fatal(error.to_string()))?;
                return Err(DownloadFailure::Transient(message));
            }
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                DownloadFailure::Transient(message)
            } else {
                fatal(message)
            });
        }
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| DownloadFailure::Transient(envstore_core::error_chain(&error)))?
        {
            if part.written.saturating_add(chunk.len() as u64) > cap {
                return Err(too_large());
            }
            part.append(&chunk)
                .map_err(|error| fatal(error.to_string()))?;
        }
        part.file
            .as_file_mut()
            .flush()
            .map_err(|error| fatal(error.to_string()))?;
        Ok(())
    }

    /// Checks the archive's digests, extracts it member by member, validates
    /// the result and leaves the nonce that lets later builds trust it.
    /// `digests` are the archive's, computed while it was downloaded; a
    /// local (`file://`) archive is hashed here.
    fn check_and_extract(
        &self,
        archive: &Path,
        digests: Option<ArchiveDigests>,
        kind: ArchiveKind,
        dest: &Path,
    ) -> Result<Sha256Hash, GateError> {
        let digests = match digests {
            Some(digests) => digests,
            None => self.hash_archive(archive)?,
        };
        let sha256 = self.verify_digests(&digests)?;
        let package = &self.record.package_record;
        let extracted = crate::extract::extract_checked(archive, kind, dest, &self.limits)
            .map_err(GateError::Rejected)?;
        validate_extracted(dest, package, &extracted.file_digests).map_err(GateError::Rejected)?;
        if let Some(digest) = digest_key(&self.record) {
            let nonce = new_nonce().map_err(GateError::io(
                "read random bytes from",
                Path::new("/dev/urandom"),
            ))?;
            let entry = dest.join(ENTRY_NONCE);
            let mut file = fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&entry)
                .map_err(|_| GateError::Rejected(Rejection::Duplicate(ENTRY_NONCE.to_owned())))?;
            file.write_all(nonce.as_bytes())
                .map_err(GateError::io("write", &entry))?;
            let records = self.root.join(RECORDS_DIR);
            fs_err::create_dir_all(&records).map_err(GateError::io("create", &records))?;
            let mut temporary = tempfile::NamedTempFile::new_in(&records)
                .map_err(GateError::io("write in", &records))?;
            temporary
                .write_all(nonce.as_bytes())
                .map_err(GateError::io("write in", &records))?;
            let record_path = records.join(digest);
            temporary
                .persist(&record_path)
                .map_err(|error| GateError::Io {
                    action: "write",
                    path: record_path,
                    source: error.error,
                })?;
        }
        Ok(sha256)
    }

    /// Hashes a local archive, refusing one over the size limit.
    fn hash_archive(&self, archive: &Path) -> Result<ArchiveDigests, GateError> {
        let mut file = fs_err::File::open(archive).map_err(GateError::io("open", archive))?;
        let size = file
            .metadata()
            .map_err(GateError::io("inspect", archive))?
            .len();
        if size > self.limits.max_extracted_bytes {
            return Err(GateError::Rejected(Rejection::ArchiveTooLarge {
                limit: self.limits.max_extracted_bytes,
            }));
        }
        let mut hashers = ArchiveHashers::default();
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(GateError::io("read", archive))?;
            if read == 0 {
                break;
            }
            hashers.update(&buffer[..read]);
        }
        Ok(hashers.finish())
    }

    /// Checks every digest the record pins against the archive's: sha256,
    /// and md5 too (also for `file://` channels).
    fn verify_digests(&self, digests: &ArchiveDigests) -> Result<Sha256Hash, GateError> {
        let ArchiveDigests { sha256, md5 } = *digests;
        let package = &self.record.package_record;
        if let Some(expected) = package.sha256
            && expected != sha256
        {
            return Err(GateError::Rejected(Rejection::ArchiveChecksum {
                algorithm: "sha256",
                expected: to_hex(&expected),
                found: to_hex(&sha256),
            }));
        }
        if let Some(expected) = package.md5
            && expected != md5
        {
            return Err(GateError::Rejected(Rejection::ArchiveChecksum {
                algorithm: "md5",
                expected: to_hex(&expected),
                found: to_hex(&md5),
            }));
        }
        Ok(sha256)
    }
}

/// An archive's digests: both, since a record may pin either.
#[derive(Debug, Clone, Copy)]
struct ArchiveDigests {
    sha256: Sha256Hash,
    md5: Md5Hash,
}

/// Hashes an archive's bytes as they pass.
#[derive(Default)]
struct ArchiveHashers {
    sha256: Sha256,
    md5: Md5,
}

impl ArchiveHashers {
    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.md5.update(bytes);
    }

    fn finish(self) -> ArchiveDigests {
        ArchiveDigests {
            sha256: self.sha256.finalize(),
            md5: self.md5.finalize(),
        }
    }
}

/// What a download holds so far, kept across its attempts.
struct Partial {
    file: tempfile::NamedTempFile,
    /// Bytes in `file`, all of them hashed.
    written: u64,
    hashers: ArchiveHashers,
    /// The first answer's validator (a strong ETag, else Last-Modified),
    /// sent as `If-Range`; without one nothing is resumed, since the rest
    /// of another version of the file would be spliced on.
    validator: Option<reqwest_middleware::reqwest::header::HeaderValue>,
}

impl Partial {
    fn new(file: tempfile::NamedTempFile) -> Self {
        Self {
            file,
            written: 0,
            hashers: ArchiveHashers::default(),
            validator: None,
        }
    }

    /// Back to nothing, for a download from the first byte.
    fn restart(&mut self) -> std::io::Result<()> {
        use std::io::Seek;
        if self.written > 0 {
            let file = self.file.as_file_mut();
            file.set_len(0)?;
            file.rewind()?;
            self.written = 0;
            self.hashers = ArchiveHashers::default();
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.as_file_mut().write_all(bytes)?;
        self.hashers.update(bytes);
        self.written = self.written.saturating_add(bytes.len() as u64);
        Ok(())
    }
}

/// The validator `If-Range` may carry: a strong ETag (a weak one may not
/// be used there), else Last-Modified.
fn validator_of(
    headers: &reqwest_middleware::reqwest::header::HeaderMap,
) -> Option<reqwest_middleware::reqwest::header::HeaderValue> {
    use reqwest_middleware::reqwest::header::{ETAG, LAST_MODIFIED};
    headers
        .get(ETAG)
        .filter(|etag| !etag.as_bytes().starts_with(b"W/"))
        .or_else(|| headers.get(LAST_MODIFIED))
        .cloned()
}

/// A `Content-Range: bytes START-END/TOTAL` answer (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    start: u64,
    end: u64,
    total: Option<u64>,
}

impl ContentRange {
    fn parse(text: &str) -> Option<Self> {
        let (range, total) = text.trim().strip_prefix("bytes ")?.split_once('/')?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (start.parse().ok()?, end.parse().ok()?);
        let total = match total {
            "*" => None,
            total => Some(total.parse().ok()?),
        };
        (start <= end && total.is_none_or(|total| end < total)).then_some(Self {
            start,
            end,
            total,
        })
    }
}

impl std::fmt::Display for ContentRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bytes {}-{}/", self.start, self.end)?;
        match self.total {
            Some(total) => write!(f, "{total}"),
            None => f.write_str("*"),
        }
    }
}

enum DownloadFailure {
    /// Worth trying again: the message says what went wrong.
    Transient(String),
    Fatal(GateError),
}

/// A pause or a retry time as a person says it: "2 s", "1.5 s", "350 ms".
fn describe_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else if duration.subsec_millis() == 0 || duration >= Duration::from_secs(10) {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// 128 random bits, hex: what an archive's author cannot guess.
fn new_nonce() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    fs_err::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(to_hex(&bytes))
}

/// Puts every record's archive through the gate with the default limits.
/// Kept for callers without a [`crate::PrefixBuilder`] (the benchmarks).
pub async fn fetch_packages(
    cache: &PackageCache,
    client: &LazyClient,
    records: &[RepoDataRecord],
    sink: Arc<dyn ProgressSink>,
    counts: Arc<TransferCounts>,
) -> Result<(), PrefixError> {
    PackageGate::new(cache.clone(), client.clone(), PackageLimits::default())
        .admit_all(records, sink, counts, false)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest_middleware::reqwest::header::{ETAG, HeaderMap, HeaderValue, LAST_MODIFIED};

    #[test]
    fn content_ranges_are_read_and_nonsense_is_not() {
        assert_eq!(
            ContentRange::parse("bytes 100-199/200"),
            Some(ContentRange {
                start: 100,
                end: 199,
                total: Some(200)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 5-9/*").map(|range| range.total),
            Some(None)
        );
        for nonsense in [
            "bytes 200-100/300",
            "bytes 100-200/200",
            "bytes */200",
            "items 0-1/2",
            "bytes 0-x/2",
        ] {
            assert_eq!(ContentRange::parse(nonsense), None, "{nonsense}");
        }
        assert_eq!(
            ContentRange::parse("bytes 1-2/3").unwrap().to_string(),
            "bytes 1-2/3"
        );
    }

    #[test]
    fn a_weak_etag_is_no_validator_for_if_range_but_last_modified_is() {
        let mut headers = HeaderMap::new();
        assert_eq!(validator_of(&headers), None);
        headers.insert(ETAG, HeaderValue::from_static("W/\"weak\""));
        assert_eq!(validator_of(&headers), None);
        headers.insert(
            LAST_MODIFIED,
            HeaderValue::from_static("Wed, 02 Dec 2026 00:00:00 GMT"),
        );
        assert_eq!(
            validator_of(&headers),
            Some(HeaderValue::from_static("Wed, 02 Dec 2026 00:00:00 GMT"))
        );
        headers.insert(ETAG, HeaderValue::from_static("\"strong\""));
        assert_eq!(
            validator_of(&headers),
            Some(HeaderValue::from_static("\"strong\""))
        );
    }

    #[test]
    fn a_restarted_download_is_empty_and_hashes_from_the_start() {
        let folder = tempfile::tempdir().unwrap();
        let mut part = Partial::new(tempfile::NamedTempFile::new_in(folder.path()).unwrap());
        part.append(b"first version, half").unwrap();
        part.restart().unwrap();
        part.append(b"whole").unwrap();
        assert_eq!(part.written, 5);
        assert_eq!(fs_err::read(part.file.path()).unwrap(), b"whole");
        let mut expected = ArchiveHashers::default();
        expected.update(b"whole");
        assert_eq!(part.hashers.finish().sha256, expected.finish().sha256);
    }
}

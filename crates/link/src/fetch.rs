use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::stream::{self, TryStreamExt};
use rattler::package_cache::{CacheReporter, PackageCache, PackageCacheError};
use rattler_conda_types::RepoDataRecord;
use rattler_networking::LazyClient;
use rattler_networking::retry_policies::default_retry_policy;

use crate::prefix::PrefixError;
use crate::progress::{ProgressSink, TransferCounts};

/// How many archives are fetched at once.
const CONCURRENT_FETCHES: usize = 8;

/// Counts real downloads: the cache calls this only when it has to fetch.
struct DownloadCounter {
    counts: Arc<TransferCounts>,
}

impl CacheReporter for DownloadCounter {
    fn on_validate_start(&self) -> usize {
        0
    }
    fn on_validate_complete(&self, _index: usize) {}
    fn on_download_start(&self) -> usize {
        self.counts.downloaded.fetch_add(1, Ordering::Relaxed);
        0
    }
    fn on_download_progress(&self, _index: usize, _progress: u64, _total: Option<u64>) {}
    fn on_download_completed(&self, _index: usize) {}
}

/// Puts every record's archive into the package cache, verifying its sha256
/// (the cache refuses an archive whose hash differs from the record's).
/// Fetching all packages before linking gives the build two clean phases.
pub async fn fetch_packages(
    cache: &PackageCache,
    client: &LazyClient,
    records: &[RepoDataRecord],
    sink: Arc<dyn ProgressSink>,
    counts: Arc<TransferCounts>,
) -> Result<(), PrefixError> {
    let total = records.len();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    stream::iter(records.iter().map(Ok::<_, PrefixError>))
        .try_for_each_concurrent(CONCURRENT_FETCHES, |record| {
            let reporter: Arc<dyn CacheReporter> = Arc::new(DownloadCounter {
                counts: counts.clone(),
            });
            let sink = sink.clone();
            let done = done.clone();
            async move {
                fetch_one(cache, client, record, reporter)
                    .await
                    .map_err(|source| PrefixError::Fetch {
                        package: record.identifier.to_string(),
                        source,
                    })?;
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                sink.line(format!("downloading {finished}/{total} {}", record.identifier));
                Ok(())
            }
        })
        .await
}

async fn fetch_one(
    cache: &PackageCache,
    client: &LazyClient,
    record: &RepoDataRecord,
    reporter: Arc<dyn CacheReporter>,
) -> Result<(), PackageCacheError> {
    if record.url.scheme() == "file"
        && let Ok(path) = record.url.to_file_path()
    {
        cache
            .get_or_fetch_from_path(&path, Some(&record.package_record), Some(reporter))
            .await?;
    } else {
        cache
            .get_or_fetch_from_url_with_retry(
                &record.package_record,
                record.url.clone(),
                client.clone(),
                default_retry_policy(),
                Some(reporter),
                None,
            )
            .await?;
    }
    Ok(())
}

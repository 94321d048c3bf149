use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::{self, TryStreamExt};
use rattler::package_cache::{PackageCache, PackageCacheError};
use rattler_conda_types::RepoDataRecord;
use rattler_networking::LazyClient;
use rattler_networking::retry_policies::default_retry_policy;

use crate::prefix::PrefixError;
use crate::progress::{ProgressSink, TransferCounts};

/// How many archives are fetched at once.
const CONCURRENT_FETCHES: usize = 8;

/// Puts every record's archive into the package cache, verifying its sha256
/// (the cache refuses an archive whose hash differs from the record's).
/// Fetching all packages before linking gives the build two clean phases.
/// Packages that were not in the cache before count as downloaded.
pub async fn fetch_packages(
    cache: &PackageCache,
    client: &LazyClient,
    records: &[RepoDataRecord],
    sink: Arc<dyn ProgressSink>,
    counts: Arc<TransferCounts>,
) -> Result<(), PrefixError> {
    let cached = cache.index().await.ok();
    let total = records.len();
    let done = AtomicUsize::new(0);
    stream::iter(records.iter().map(Ok::<_, PrefixError>))
        .try_for_each_concurrent(CONCURRENT_FETCHES, |record| {
            let sink = sink.clone();
            let counts = counts.clone();
            let done = &done;
            let was_cached = cached.as_ref().is_some_and(|index| index.contains_record(record));
            async move {
                fetch_one(cache, client, record)
                    .await
                    .map_err(|source| PrefixError::Fetch {
                        package: record.identifier.to_string(),
                        source,
                    })?;
                if !was_cached {
                    counts.downloaded.fetch_add(1, Ordering::Relaxed);
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                let note = if was_cached { " (cached)" } else { "" };
                sink.line(format!("downloading {finished}/{total} {}{note}", record.identifier));
                Ok(())
            }
        })
        .await
}

async fn fetch_one(
    cache: &PackageCache,
    client: &LazyClient,
    record: &RepoDataRecord,
) -> Result<(), PackageCacheError> {
    if record.url.scheme() == "file"
        && let Ok(path) = record.url.to_file_path()
    {
        cache
            .get_or_fetch_from_path(&path, Some(&record.package_record), None)
            .await?;
    } else {
        cache
            .get_or_fetch_from_url_with_retry(
                &record.package_record,
                record.url.clone(),
                client.clone(),
                default_retry_policy(),
                None,
                None,
            )
            .await?;
    }
    Ok(())
}

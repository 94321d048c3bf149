use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::{self, TryStreamExt};
use rattler::package_cache::{PackageCache, PackageCacheError};
use rattler_conda_types::RepoDataRecord;
use rattler_networking::LazyClient;
use rattler_networking::retry_policies::default_retry_policy;

use crate::prefix::PrefixError;
use crate::progress::{ProgressSink, TransferCounts};
use crate::validate::validate_package;

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
                let package_dir = fetch_one(cache, client, record)
                    .await
                    .map_err(|source| PrefixError::Fetch {
                        package: record.identifier.to_string(),
                        source,
                    })?;
                if !was_cached {
                    counts.downloaded.fetch_add(1, Ordering::Relaxed);
                    check_new_package(package_dir, record).await?;
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                let note = if was_cached { " (cached)" } else { "" };
                sink.line(format!("downloading {finished}/{total} {}{note}", record.identifier));
                Ok(())
            }
        })
        .await
}

/// Fetches one package into the cache and returns its extracted folder.
async fn fetch_one(
    cache: &PackageCache,
    client: &LazyClient,
    record: &RepoDataRecord,
) -> Result<PathBuf, PackageCacheError> {
    let metadata = if record.url.scheme() == "file"
        && let Ok(path) = record.url.to_file_path()
    {
        cache
            .get_or_fetch_from_path(&path, Some(&record.package_record), None)
            .await?
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
            .await?
    };
    Ok(metadata.path().to_owned())
}

/// Validates a package that just entered the cache. A refused package is
/// removed from the cache again, so it is never taken for a checked one.
async fn check_new_package(package_dir: PathBuf, record: &RepoDataRecord) -> Result<(), PrefixError> {
    let package_record = record.package_record.clone();
    let dir = package_dir.clone();
    let checked = tokio::task::spawn_blocking(move || validate_package(&dir, &package_record))
        .await
        .map_err(|error| PrefixError::Io {
            action: "validate",
            path: package_dir.clone(),
            source: std::io::Error::other(error),
        })?;
    if let Err(reason) = checked {
        let _ = tokio::fs::remove_dir_all(&package_dir).await;
        return Err(PrefixError::Rejected {
            package: record.identifier.to_string(),
            reason,
        });
    }
    Ok(())
}

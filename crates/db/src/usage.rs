//! What each namespace uses, and the quotas that bound it.
//!
//! - **Disk**: a prefix is measured once, when a node builds or materialises
//!   it, and recorded under its lock hash. A namespace's disk is the sum over
//!   the distinct prefixes its builds still hold (succeeded, neither deleted
//!   nor collected). A prefix held by several namespaces counts in full in
//!   each of them and is reported as shared; totals count it once.
//! - **Builds**: counts by status, and the running time (start to finish) of
//!   those that ran.
//! - **Downloads**: lockfile GETs name their namespace and are counted per
//!   namespace. By-hash artifact GETs name only a lock, which any number of
//!   namespaces may hold, so they are counted per lock and shown in every
//!   namespace holding it (once in totals), like shared prefixes. Both GETs
//!   are hot paths: a request bumps an atomic counter in memory, and the
//!   counts reach the database in one transaction every few seconds
//!   ([`Database::flush_downloads_every`]) and on shutdown.
//!
//! Over a period (migration 0017): the flush adds each count to its
//! all-time counter and to the count of the UTC day it is written on
//! (`namespace_download_days`, `lock_download_days`); `usage_history`
//! says since when, since downloads counted before that migration have no
//! day. Disk held over a period comes from builds' lives (succeeded at
//! `finished_at`, released at `prefix_collected_at` or `deleted_at`); when
//! garbage collection removes a deleted build's row, its hold is kept in
//! `released_prefix_holds` first ([`keep_released_hold`]).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use envstore_core::usage::{BuildRun, Period, PrefixHold, day_of, group_runs};
use envstore_core::{BuildStatus, ContentHash, EnvironmentName, NamespaceName};

use crate::{Database, DbError, now_millis};

pub use envstore_core::usage::{
    BuildCounts, BuildGroup, HeldLock, NamespaceUsage, Quota, SharedPrefix, UsageFacts,
    UsageFigures, UsageNamespace, UsageReport,
};

/// Which builds still hold their prefix: succeeded, neither deleted nor
/// collected by garbage collection.
const HOLDS_PREFIX: &str = "builds.status = 'succeeded' AND builds.prefix_collected_at IS NULL AND builds.deleted_at IS NULL";

/// Downloads counted since the last flush: lockfile GETs by namespace,
/// artifact GETs by lock. A request takes the read lock and bumps an atomic;
/// only the first request for a key after a flush takes the write lock. Keys
/// are counted after the access check, so they name namespaces and locks
/// that exist and the maps stay as small as those.
#[derive(Default)]
pub(crate) struct DownloadCounts {
    namespaces: RwLock<HashMap<String, AtomicU64>>,
    locks: RwLock<HashMap<ContentHash, AtomicU64>>,
}

impl std::fmt::Debug for DownloadCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadCounts").finish_non_exhaustive()
    }
}

fn bump<K, Q>(map: &RwLock<HashMap<K, AtomicU64>>, key: &Q, by: u64)
where
    K: Borrow<Q> + Hash + Eq,
    Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
{
    if let Some(count) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        count.fetch_add(by, Ordering::Relaxed);
        return;
    }
    map.write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.to_owned())
        .or_default()
        .fetch_add(by, Ordering::Relaxed);
}

/// Empties a map and returns its non-zero counts. Counters are only bumped
/// under the map's lock, so once the map is taken its counts are final.
fn take<K>(map: &RwLock<HashMap<K, AtomicU64>>) -> Vec<(K, u64)> {
    let taken = std::mem::take(&mut *map.write().unwrap_or_else(PoisonError::into_inner));
    taken
        .into_iter()
        .map(|(key, count)| (key, count.into_inner()))
        .filter(|(_, count)| *count > 0)
        .collect()
}

fn as_i64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Database {
    /// Counts one lockfile served for `namespace` (in memory; see
    /// [`Self::flush_downloads`]).
    pub fn count_lockfile_download(&self, namespace: &str) {
        bump(&self.downloads.namespaces, namespace, 1);
    }

    /// Counts one artifact of `lock_hash` served by hash (in memory).
    pub fn count_artifact_download(&self, lock_hash: &ContentHash) {
        bump(&self.downloads.locks, lock_hash, 1);
    }

    /// Adds the downloads counted in this process since the last flush to
    /// the database, in one transaction. If the write fails the counts are
    /// kept for the next flush.
    pub async fn flush_downloads(&self) -> Result<(), DbError> {
        let namespaces = take(&self.downloads.namespaces);
        let locks = take(&self.downloads.locks);
        if namespaces.is_empty() && locks.is_empty() {
            return Ok(());
        }
        let written = self.write_downloads(&namespaces, &locks).await;
        if written.is_err() {
            for (namespace, count) in &namespaces {
                bump(&self.downloads.namespaces, namespace.as_str(), *count);
            }
            for (lock, count) in &locks {
                bump(&self.downloads.locks, lock, *count);
            }
        }
        written
    }

    async fn write_downloads(
        &self,
        namespaces: &[(String, u64)],
        locks: &[(ContentHash, u64)],
    ) -> Result<(), DbError> {
        let day = day_of(now_millis());
        let mut transaction = self.pool.begin().await?;
        for (namespace, count) in namespaces {
            sqlx::query(
                "INSERT INTO namespace_downloads (namespace, downloads) VALUES ($1, $2) \
                 ON CONFLICT (namespace) DO UPDATE SET downloads = namespace_downloads.downloads + excluded.downloads",
            )
            .bind(namespace)
            .bind(as_i64(*count))
            .execute(&mut *transaction)
            .await?;
            sqlx::query(
                "INSERT INTO namespace_download_days (namespace, day, downloads) VALUES ($1, $2, $3) \
                 ON CONFLICT (namespace, day) DO UPDATE SET downloads = namespace_download_days.downloads + excluded.downloads",
            )
            .bind(namespace)
            .bind(day)
            .bind(as_i64(*count))
            .execute(&mut *transaction)
            .await?;
        }
        for (lock, count) in locks {
            sqlx::query(
                "INSERT INTO lock_downloads (lock_hash, downloads) VALUES ($1, $2) \
                 ON CONFLICT (lock_hash) DO UPDATE SET downloads = lock_downloads.downloads + excluded.downloads",
            )
            .bind(lock.to_hex())
            .bind(as_i64(*count))
            .execute(&mut *transaction)
            .await?;
            sqlx::query(
                "INSERT INTO lock_download_days (lock_hash, day, downloads) VALUES ($1, $2, $3) \
                 ON CONFLICT (lock_hash, day) DO UPDATE SET downloads = lock_download_days.downloads + excluded.downloads",
            )
            .bind(lock.to_hex())
            .bind(day)
            .bind(as_i64(*count))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Flushes the download counts every `interval` until `stop` completes,
    /// then once more. Await it after the HTTP server has drained, so the
    /// last requests are in the final flush.
    pub async fn flush_downloads_every(&self, interval: Duration, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = &mut stop => break,
            }
            if let Err(error) = self.flush_downloads().await {
                tracing::warn!(
                    error = %envstore_core::error_chain(&error),
                    "failed to flush download counts; kept for the next flush"
                );
            }
        }
        if let Err(error) = self.flush_downloads().await {
            tracing::warn!(error = %envstore_core::error_chain(&error), "failed to flush download counts on shutdown");
        }
    }

    /// Records a prefix's size the first time it is measured; later
    /// measurements of the same lock change nothing.
    pub async fn record_prefix_size(
        &self,
        lock_hash: &ContentHash,
        bytes: u64,
        files: u64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO prefix_sizes (lock_hash, bytes, files, measured_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (lock_hash) DO NOTHING",
        )
        .bind(lock_hash.to_hex())
        .bind(as_i64(bytes))
        .bind(as_i64(files))
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The recorded size of a lock's prefix in bytes, if it was measured.
    pub async fn prefix_size(&self, lock_hash: &ContentHash) -> Result<Option<i64>, DbError> {
        Ok(
            sqlx::query_scalar("SELECT bytes FROM prefix_sizes WHERE lock_hash = $1")
                .bind(lock_hash.to_hex())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A namespace's own quota (limits it does not set are None).
    pub async fn namespace_quota(&self, namespace: &NamespaceName) -> Result<Quota, DbError> {
        let row = sqlx::query_as::<_, QuotaRow>("SELECT max_disk_bytes, max_concurrent_builds FROM namespace_quotas WHERE namespace = $1")
            .bind(namespace.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Quota::from).unwrap_or_default())
    }

    pub async fn set_namespace_quota(
        &self,
        namespace: &NamespaceName,
        quota: &Quota,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO namespace_quotas (namespace, max_disk_bytes, max_concurrent_builds, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (namespace) DO UPDATE SET \
             max_disk_bytes = excluded.max_disk_bytes, max_concurrent_builds = excluded.max_concurrent_builds, \
             updated_at = excluded.updated_at",
        )
        .bind(namespace.as_str())
        .bind(quota.max_disk_bytes)
        .bind(quota.max_concurrent_builds)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The figures of every live namespace `include` accepts (given its
    /// name and whether it is public), and their totals. Downloads counted
    /// in memory and not yet flushed are not in it.
    pub async fn usage_report(
        &self,
        include: impl Fn(&str, bool) -> bool,
    ) -> Result<UsageReport, DbError> {
        self.usage_report_for(Period::default(), include).await
    }

    /// [`Self::usage_report`] over `period`: builds that met it with their
    /// running time inside it, downloads on the days it touches, and the
    /// disk held during it. All time (the default) gives today's figures.
    pub async fn usage_report_for(
        &self,
        period: Period,
        include: impl Fn(&str, bool) -> bool,
    ) -> Result<UsageReport, DbError> {
        Ok(self.usage_facts(period).await?.report(include))
    }

    /// What a usage report over `period` is computed from
    /// ([`UsageFacts::report`]).
    pub async fn usage_facts(&self, period: Period) -> Result<UsageFacts, DbError> {
        let now = now_millis();
        let namespaces = sqlx::query_as::<_, UsageNamespaceRow>(
            "SELECT namespaces.name AS name, namespaces.public_read AS public_read, \
             namespace_quotas.max_disk_bytes AS max_disk_bytes, \
             namespace_quotas.max_concurrent_builds AS max_concurrent_builds \
             FROM namespaces LEFT JOIN namespace_quotas ON namespace_quotas.namespace = namespaces.name \
             WHERE namespaces.deleted_at IS NULL ORDER BY namespaces.name",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(UsageNamespace::from)
        .collect();
        let prefixes = sqlx::query_as::<_, HeldLockRow>(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT builds.namespace AS namespace, builds.lock_hash AS lock_hash, \
             prefix_sizes.bytes AS amount \
             FROM builds JOIN prefix_sizes ON prefix_sizes.lock_hash = builds.lock_hash WHERE {HOLDS_PREFIX}"
        )))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(HeldLock::from)
        .collect();
        let builds = if period.is_all_time() {
            sqlx::query_as::<_, BuildGroupRow>(
                "SELECT namespace, status, COUNT(*) AS builds, \
                 CAST(COALESCE(SUM(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL \
                     THEN finished_at - started_at ELSE 0 END), 0) AS BIGINT) AS millis \
                 FROM builds WHERE deleted_at IS NULL GROUP BY namespace, status",
            )
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .filter_map(BuildGroupRow::group)
            .collect()
        } else {
            let runs: Vec<BuildRun> = sqlx::query_as::<_, BuildRunRow>(
                "SELECT namespace, status, created_at, started_at, finished_at FROM builds \
                 WHERE deleted_at IS NULL AND created_at < $1 AND (finished_at IS NULL OR finished_at >= $2)",
            )
            .bind(period.until.unwrap_or(i64::MAX))
            .bind(period.since.unwrap_or(i64::MIN))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .filter_map(BuildRunRow::run)
            .collect();
            group_runs(period, now, &runs)
        };
        let (lockfile_downloads, lock_downloads) = self.downloads(period).await?;
        let counted_since =
            sqlx::query_scalar::<_, i64>("SELECT counted_since FROM usage_history WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(UsageFacts {
            namespaces,
            prefixes,
            builds,
            lockfile_downloads,
            lock_downloads,
            holds: self.prefix_holds(period, now).await?,
            period,
            now,
            counted_since,
        })
    }

    /// Lockfile downloads by namespace and artifact downloads of the locks
    /// each namespace holds a build of: the all-time counters, or for a
    /// period the days it touches.
    async fn downloads(
        &self,
        period: Period,
    ) -> Result<(HashMap<String, i64>, Vec<HeldLock>), DbError> {
        let (first_day, last_day) = period.days();
        let lockfiles = if period.is_all_time() {
            sqlx::query_as::<_, NamespaceDownloadsRow>(
                "SELECT namespace, downloads FROM namespace_downloads",
            )
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query_as::<_, NamespaceDownloadsRow>(
                "SELECT namespace, CAST(SUM(downloads) AS BIGINT) AS downloads FROM namespace_download_days \
                 WHERE day >= $1 AND day <= $2 GROUP BY namespace",
            )
            .bind(first_day)
            .bind(last_day)
            .fetch_all(&self.pool)
            .await?
        };
        let counts = if period.is_all_time() {
            "SELECT lock_hash, downloads FROM lock_downloads"
        } else {
            "SELECT lock_hash, CAST(SUM(downloads) AS BIGINT) AS downloads FROM lock_download_days \
             WHERE day >= $1 AND day <= $2 GROUP BY lock_hash"
        };
        let locks = sqlx::query_as::<_, HeldLockRow>(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT builds.namespace AS namespace, counts.lock_hash AS lock_hash, \
             counts.downloads AS amount \
             FROM ({counts}) AS counts JOIN builds ON builds.lock_hash = counts.lock_hash \
             WHERE builds.deleted_at IS NULL"
        )));
        let locks = if period.is_all_time() {
            locks
        } else {
            locks.bind(first_day).bind(last_day)
        };
        Ok((
            lockfiles
                .into_iter()
                .map(|row| (row.namespace, row.downloads))
                .collect(),
            locks
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(HeldLock::from)
                .collect(),
        ))
    }

    /// The measured prefixes builds held at some time in `period`: those of
    /// succeeded builds still in the table (released when collected or
    /// deleted, whichever came first), and those kept when deleted builds'
    /// rows were removed.
    async fn prefix_holds(&self, period: Period, now: i64) -> Result<Vec<PrefixHold>, DbError> {
        let until = period.until.unwrap_or(i64::MAX).min(now);
        let since = period.since.unwrap_or(i64::MIN);
        let live = sqlx::query_as::<_, LiveHoldRow>(
            "SELECT builds.namespace AS namespace, builds.lock_hash AS lock_hash, prefix_sizes.bytes AS bytes, \
             builds.finished_at AS held_from, builds.prefix_collected_at AS collected_at, builds.deleted_at AS deleted_at \
             FROM builds JOIN prefix_sizes ON prefix_sizes.lock_hash = builds.lock_hash \
             WHERE builds.status = 'succeeded' AND builds.finished_at IS NOT NULL AND builds.finished_at < $1",
        )
        .bind(until)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(PrefixHold::from);
        let released = sqlx::query_as::<_, ReleasedHoldRow>(
            "SELECT released_prefix_holds.namespace AS namespace, released_prefix_holds.lock_hash AS lock_hash, \
             prefix_sizes.bytes AS bytes, released_prefix_holds.held_from AS held_from, \
             released_prefix_holds.held_until AS held_until \
             FROM released_prefix_holds JOIN prefix_sizes ON prefix_sizes.lock_hash = released_prefix_holds.lock_hash \
             WHERE released_prefix_holds.held_from < $1 AND released_prefix_holds.held_until > $2",
        )
        .bind(until)
        .bind(since)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| PrefixHold {
            namespace: row.namespace,
            lock_hash: row.lock_hash,
            bytes: row.bytes,
            from: row.held_from,
            until: Some(row.held_until),
        });
        Ok(live
            .chain(released)
            .filter(|hold| hold.until.is_none_or(|released| released > since))
            .collect())
    }

    /// Builds of a namespace that occupy a worker or wait for one: queued or
    /// running, and not asked to stop.
    pub async fn active_builds(&self, namespace: &NamespaceName) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) AS active FROM builds WHERE namespace = $1 \
             AND status IN ('queued', 'running') AND cancel_requested = 0 AND deleted_at IS NULL",
        )
        .bind(namespace.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    /// The average running time of a namespace's last 20 builds that ran,
    /// in milliseconds; None before any has.
    pub async fn typical_build_millis(
        &self,
        namespace: &NamespaceName,
    ) -> Result<Option<i64>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(AVG(millis) AS BIGINT) AS millis FROM \
             (SELECT finished_at - started_at AS millis FROM builds WHERE namespace = $1 \
              AND started_at IS NOT NULL AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 20) AS recent",
        )
        .bind(namespace.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Whether submitting `spec_hash` for this environment would join a
    /// build already queued or running (the same test as the submission's).
    pub async fn joins_active_build(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
        spec_hash: &ContentHash,
    ) -> Result<bool, DbError> {
        let row = sqlx::query(
            "SELECT 1 AS found FROM builds WHERE namespace = $1 AND environment = $2 AND spec_hash = $3 \
             AND status IN ('queued', 'running') LIMIT 1",
        )
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .bind(spec_hash.to_hex())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The disk a namespace's prefixes take, shared ones in full.
    pub async fn namespace_disk_bytes(&self, namespace: &NamespaceName) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes FROM prefix_sizes WHERE lock_hash IN \
             (SELECT lock_hash FROM builds WHERE builds.namespace = $1 AND {HOLDS_PREFIX})"
        )))
        .bind(namespace.as_str())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Whether a spec is expected to reuse a prefix already on disk: it
    /// installs a lock whose prefix some build holds, or the same spec was
    /// built before (in any namespace) and its prefix is still held. A spec
    /// solved again after its channels changed may still need a new one.
    pub async fn prefix_reusable(
        &self,
        spec_hash: &ContentHash,
        from_lock: Option<&ContentHash>,
    ) -> Result<bool, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 AS found FROM builds JOIN prefix_sizes ON prefix_sizes.lock_hash = builds.lock_hash \
             WHERE {HOLDS_PREFIX} AND (builds.spec_hash = $1 OR builds.lock_hash = $2) LIMIT 1"
        )))
        .bind(spec_hash.to_hex())
        .bind(from_lock.map(ContentHash::to_hex))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}

/// A namespace's own limits (a `namespace_quotas` row, or the NULLs of a
/// left join without one).
#[derive(sqlx::FromRow)]
struct QuotaRow {
    max_disk_bytes: Option<i64>,
    max_concurrent_builds: Option<i64>,
}

impl From<QuotaRow> for Quota {
    fn from(row: QuotaRow) -> Self {
        Self {
            max_disk_bytes: row.max_disk_bytes,
            max_concurrent_builds: row.max_concurrent_builds,
        }
    }
}

/// A live namespace with its visibility and quota.
#[derive(sqlx::FromRow)]
struct UsageNamespaceRow {
    name: String,
    public_read: i64,
    #[sqlx(flatten)]
    quota: QuotaRow,
}

impl From<UsageNamespaceRow> for UsageNamespace {
    fn from(row: UsageNamespaceRow) -> Self {
        Self {
            name: row.name,
            public_read: row.public_read != 0,
            quota: row.quota.into(),
        }
    }
}

/// A lock a namespace holds and an amount of it (bytes or downloads).
#[derive(sqlx::FromRow)]
struct HeldLockRow {
    namespace: String,
    lock_hash: String,
    amount: i64,
}

impl From<HeldLockRow> for HeldLock {
    fn from(row: HeldLockRow) -> Self {
        Self {
            namespace: row.namespace,
            lock_hash: row.lock_hash,
            amount: row.amount,
        }
    }
}

/// Keeps the prefix hold of a deleted build whose row is about to be
/// removed (`purge_deleted`), so the disk it held stays in past periods.
/// Only succeeded builds held a prefix; a hold kept once is kept.
pub(crate) async fn keep_released_hold(
    connection: &mut sqlx::AnyConnection,
    build_id: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO released_prefix_holds (build_id, namespace, lock_hash, held_from, held_until) \
         SELECT id, namespace, lock_hash, finished_at, \
         CASE WHEN prefix_collected_at IS NOT NULL AND prefix_collected_at < deleted_at \
              THEN prefix_collected_at ELSE deleted_at END \
         FROM builds WHERE id = $1 AND deleted_at IS NOT NULL AND status = 'succeeded' \
         AND lock_hash IS NOT NULL AND finished_at IS NOT NULL \
         ON CONFLICT (build_id) DO NOTHING",
    )
    .bind(build_id)
    .execute(connection)
    .await?;
    Ok(())
}

/// A succeeded build's prefix, with when it was built and released.
#[derive(sqlx::FromRow)]
struct LiveHoldRow {
    namespace: String,
    lock_hash: String,
    bytes: i64,
    held_from: i64,
    collected_at: Option<i64>,
    deleted_at: Option<i64>,
}

impl From<LiveHoldRow> for PrefixHold {
    fn from(row: LiveHoldRow) -> Self {
        let until = match (row.collected_at, row.deleted_at) {
            (Some(collected), Some(deleted)) => Some(collected.min(deleted)),
            (collected, deleted) => collected.or(deleted),
        };
        Self {
            namespace: row.namespace,
            lock_hash: row.lock_hash,
            bytes: row.bytes,
            from: row.held_from,
            until,
        }
    }
}

/// A hold kept from a removed build.
#[derive(sqlx::FromRow)]
struct ReleasedHoldRow {
    namespace: String,
    lock_hash: String,
    bytes: i64,
    held_from: i64,
    held_until: i64,
}

/// A build's life, for the builds of a period.
#[derive(sqlx::FromRow)]
struct BuildRunRow {
    namespace: String,
    status: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl BuildRunRow {
    /// None for a status this version does not know, as in [`BuildGroupRow`].
    fn run(self) -> Option<BuildRun> {
        let Ok(status) = self.status.parse::<BuildStatus>() else {
            tracing::warn!(
                status = self.status,
                "a build has an unknown status: not counted"
            );
            return None;
        };
        Some(BuildRun {
            namespace: self.namespace,
            status,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

/// The lockfiles served for one namespace.
#[derive(sqlx::FromRow)]
struct NamespaceDownloadsRow {
    namespace: String,
    downloads: i64,
}

/// The builds of one namespace in one status, and their running time.
#[derive(sqlx::FromRow)]
struct BuildGroupRow {
    namespace: String,
    status: String,
    builds: i64,
    millis: i64,
}

impl BuildGroupRow {
    /// None for a status this version does not know: not counted, as
    /// before the arithmetic moved to core.
    fn group(self) -> Option<BuildGroup> {
        let Ok(status) = self.status.parse::<BuildStatus>() else {
            tracing::warn!(
                status = self.status,
                "a build has an unknown status: not counted"
            );
            return None;
        };
        Some(BuildGroup {
            namespace: self.namespace,
            status,
            builds: self.builds,
            millis: self.millis,
        })
    }
}

#[cfg(test)]
mod tests {
    use envstore_core::{
        BuildStatus, CanonicalSpec, ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat,
    };
    use rattler_conda_types::Subdir;

    use super::*;
    use crate::BuildOutcome;
    use crate::testing::databases;

    fn spec(dependencies: &str) -> CanonicalSpec {
        let allow = ChannelAllowlist::new(vec![NamedChannel::parse("demo=file:///demo").unwrap()]);
        EnvironmentSpec::parse(
            format!("dependencies: [{dependencies}]").as_bytes(),
            SpecFormat::Yaml,
        )
        .unwrap()
        .canonicalize(&allow, Subdir::Linux64)
        .unwrap()
    }

    async fn namespace(db: &Database, name: &str) -> NamespaceName {
        let namespace: NamespaceName = name.parse().unwrap();
        if !db.namespace_exists(&namespace).await.unwrap() {
            db.create_namespace(&namespace).await.unwrap();
        }
        namespace
    }

    /// Runs a build of `dependencies` in `namespace/environment` to `status`
    /// (with `lock` when it succeeds), having run for `millis`.
    async fn build(
        db: &Database,
        namespace: &str,
        environment: &str,
        dependencies: &str,
        lock: Option<&ContentHash>,
        millis: i64,
    ) -> String {
        let namespace = self::namespace(db, namespace).await;
        let environment: EnvironmentName = environment.parse().unwrap();
        let id = db
            .submit_build(&namespace, &environment, &spec(dependencies), None)
            .await
            .unwrap()
            .build
            .id;
        assert!(db.start_build(&id).await.unwrap());
        if let Some(lock) = lock {
            db.insert_lock(
                lock,
                &["linux-64".to_owned()],
                &serde_json::json!([]),
                &Default::default(),
            )
            .await
            .unwrap();
        }
        let outcome = BuildOutcome {
            status: if lock.is_some() {
                BuildStatus::Succeeded
            } else {
                BuildStatus::Failed
            },
            lock_hash: lock.copied(),
            lock_reused: false,
            prefix_reused: false,
            phases: Vec::new(),
            error: None,
        };
        db.finish_build(&id, &outcome).await.unwrap();
        sqlx::query("UPDATE builds SET started_at = finished_at - $2 WHERE id = $1")
            .bind(&id)
            .bind(millis)
            .execute(&db.pool)
            .await
            .unwrap();
        id
    }

    fn row<'a>(report: &'a UsageReport, namespace: &str) -> &'a NamespaceUsage {
        report
            .namespaces
            .iter()
            .find(|usage| usage.namespace == namespace)
            .unwrap()
    }

    #[tokio::test]
    async fn a_prefix_held_by_two_namespaces_is_shared_and_counted_once_in_totals() {
        for db in databases().await {
            let shared = ContentHash::of(b"shared");
            let own = ContentHash::of(b"own");
            let unmeasured = ContentHash::of(b"unmeasured");
            build(&db, "alpha", "env", "python", Some(&shared), 1_500).await;
            build(&db, "alpha", "env", "numpy", Some(&shared), 500).await;
            build(&db, "alpha", "other", "pandas", Some(&own), 1_000).await;
            build(&db, "alpha", "broken", "conflict-a", None, 250).await;
            build(&db, "beta", "env", "python", Some(&shared), 2_000).await;
            build(&db, "beta", "later", "six", Some(&unmeasured), 0).await;
            db.record_prefix_size(&shared, 1_000, 10).await.unwrap();
            db.record_prefix_size(&own, 300, 3).await.unwrap();
            db.record_prefix_size(&own, 999_999, 3).await.unwrap();
            assert_eq!(
                db.prefix_size(&own).await.unwrap(),
                Some(300),
                "measured once"
            );
            assert_eq!(db.prefix_size(&unmeasured).await.unwrap(), None);

            let report = db.usage_report(|_, _| true).await.unwrap();
            let alpha = row(&report, "alpha");
            let disk = |figures: &UsageFigures| {
                (
                    figures.disk_bytes,
                    figures.prefixes,
                    figures.shared_disk_bytes,
                )
            };
            assert_eq!(disk(&alpha.figures), (1_300, 2, 1_000));
            assert_eq!(
                alpha.shared,
                vec![SharedPrefix {
                    lock_hash: shared.to_hex(),
                    bytes: 1_000,
                    other_namespaces: 1
                }]
            );
            assert_eq!(
                alpha.figures.builds,
                BuildCounts {
                    succeeded: 3,
                    failed: 1,
                    ..BuildCounts::default()
                }
            );
            assert_eq!(alpha.figures.build_millis, 3_250);
            let beta = row(&report, "beta");
            assert_eq!(
                disk(&beta.figures),
                (1_000, 1, 1_000),
                "unmeasured prefixes add nothing"
            );
            assert_eq!(beta.figures.builds.succeeded, 2);
            let totals = &report.totals;
            assert_eq!(disk(totals), (1_300, 2, 1_000));
            assert_eq!(totals.builds.succeeded, 5);
            assert_eq!(totals.build_millis, 5_250);

            // A caller who sees only beta still learns that the prefix is shared,
            // not with whom; its totals are beta's.
            let report = db.usage_report(|name, _| name == "beta").await.unwrap();
            assert_eq!(report.namespaces.len(), 1);
            assert_eq!(report.namespaces[0].shared[0].other_namespaces, 1);
            assert_eq!(
                (report.totals.disk_bytes, report.totals.build_millis),
                (1_000, 2_000)
            );

            // Collected prefixes no longer count; the last holder's is no longer shared.
            let alpha_builds: Vec<String> = db
                .environment_builds(&"alpha".parse().unwrap(), &"env".parse().unwrap())
                .await
                .unwrap()
                .into_iter()
                .map(|build| build.id)
                .collect();
            db.mark_prefixes_collected(&alpha_builds).await.unwrap();
            let report = db.usage_report(|_, _| true).await.unwrap();
            assert_eq!(disk(&row(&report, "alpha").figures), (300, 1, 0));
            assert!(row(&report, "beta").shared.is_empty());
            assert_eq!(
                report.totals.disk_bytes, 1_300,
                "beta still holds the prefix"
            );
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn downloads_reach_the_database_only_when_flushed_and_are_kept_when_it_fails() {
        for db in databases().await {
            let lock = ContentHash::of(b"lock");
            build(&db, "alpha", "env", "python", Some(&lock), 10).await;
            build(&db, "beta", "env", "python", Some(&lock), 10).await;
            for _ in 0..3 {
                db.count_lockfile_download("alpha");
            }
            db.count_artifact_download(&lock);
            db.count_artifact_download(&lock);
            let downloads = |report: &UsageReport, name: &str| {
                let figures = &row(report, name).figures;
                (figures.lockfile_downloads, figures.artifact_downloads)
            };
            let report = db.usage_report(|_, _| true).await.unwrap();
            assert_eq!(
                downloads(&report, "alpha"),
                (0, 0),
                "nothing is written per request"
            );

            db.flush_downloads().await.unwrap();
            db.flush_downloads().await.unwrap();
            let report = db.usage_report(|_, _| true).await.unwrap();
            assert_eq!(downloads(&report, "alpha"), (3, 2));
            assert_eq!(
                downloads(&report, "beta"),
                (0, 2),
                "a by-hash download shows in every holder"
            );
            assert_eq!(
                (
                    report.totals.lockfile_downloads,
                    report.totals.artifact_downloads
                ),
                (3, 2)
            );

            // The periodic flusher flushes once more when told to stop.
            db.count_lockfile_download("beta");
            db.flush_downloads_every(Duration::from_secs(3600), std::future::ready(()))
                .await;
            let report = db.usage_report(|_, _| true).await.unwrap();
            assert_eq!(downloads(&report, "beta"), (1, 2));

            // A failed write keeps the counts for the next flush.
            db.count_lockfile_download("alpha");
            db.count_artifact_download(&lock);
            db.pool.close().await;
            assert!(db.flush_downloads().await.is_err());
            let kept = (take(&db.downloads.namespaces), take(&db.downloads.locks));
            assert_eq!(kept, (vec![("alpha".to_owned(), 1)], vec![(lock, 1)]));
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn quota_figures_count_what_a_submission_would_add() {
        for db in databases().await {
            let team = namespace(&db, "team").await;
            let env: EnvironmentName = "env".parse().unwrap();
            assert_eq!(db.namespace_quota(&team).await.unwrap(), Quota::default());
            let quota = Quota {
                max_disk_bytes: Some(10),
                max_concurrent_builds: None,
            };
            db.set_namespace_quota(&team, &quota).await.unwrap();
            assert_eq!(db.namespace_quota(&team).await.unwrap(), quota);
            let default = Quota {
                max_disk_bytes: Some(99),
                max_concurrent_builds: Some(2),
            };
            assert_eq!(
                quota.or(default),
                Quota {
                    max_disk_bytes: Some(10),
                    max_concurrent_builds: Some(2)
                }
            );

            // Queued and running builds are active; cancelled, failed and those
            // asked to stop are not.
            let queued = db
                .submit_build(&team, &env, &spec("python"), None)
                .await
                .unwrap()
                .build
                .id;
            let running = db
                .submit_build(&team, &"two".parse().unwrap(), &spec("python"), None)
                .await
                .unwrap()
                .build
                .id;
            assert!(db.start_build(&running).await.unwrap());
            build(&db, "team", "failed", "conflict-a", None, 10).await;
            assert_eq!(db.active_builds(&team).await.unwrap(), 2);
            assert!(
                db.joins_active_build(&team, &env, &spec("python").hash())
                    .await
                    .unwrap()
            );
            assert!(
                !db.joins_active_build(&team, &env, &spec("numpy").hash())
                    .await
                    .unwrap()
            );
            db.cancel_build(&queued, "test").await.unwrap();
            db.cancel_build(&running, "test").await.unwrap();
            assert_eq!(db.active_builds(&team).await.unwrap(), 0);
            assert!(
                !db.joins_active_build(&team, &env, &spec("python").hash())
                    .await
                    .unwrap()
            );

            // Disk counts measured prefixes still held; a spec built before, or a
            // lock whose prefix is held, is expected to reuse it.
            let lock = ContentHash::of(b"lock");
            let other = ContentHash::of(b"other lock");
            assert_eq!(db.namespace_disk_bytes(&team).await.unwrap(), 0);
            assert!(
                !db.prefix_reusable(&spec("pandas").hash(), Some(&lock))
                    .await
                    .unwrap()
            );
            build(&db, "elsewhere", "env", "pandas", Some(&lock), 10).await;
            assert!(
                !db.prefix_reusable(&spec("pandas").hash(), None)
                    .await
                    .unwrap(),
                "not measured: not on disk"
            );
            db.record_prefix_size(&lock, 40, 4).await.unwrap();
            assert!(
                db.prefix_reusable(&spec("pandas").hash(), None)
                    .await
                    .unwrap()
            );
            assert!(
                db.prefix_reusable(&spec("six").hash(), Some(&lock))
                    .await
                    .unwrap()
            );
            assert!(
                !db.prefix_reusable(&spec("six").hash(), Some(&other))
                    .await
                    .unwrap()
            );
            build(&db, "team", "env", "pandas", Some(&lock), 10).await;
            build(&db, "team", "copy", "pandas", Some(&lock), 40).await;
            assert_eq!(
                db.namespace_disk_bytes(&team).await.unwrap(),
                40,
                "each prefix once"
            );
            let typical = db.typical_build_millis(&team).await.unwrap();
            assert_eq!(
                typical,
                Some(20),
                "the mean of 10, 10 and 40 ms; builds that never ran or have not ended aside"
            );
            assert_eq!(
                db.typical_build_millis(&"nobody".parse().unwrap())
                    .await
                    .unwrap(),
                None
            );
            db.finish().await;
        }
    }

    const DAY: i64 = envstore_core::usage::DAY_MILLIS;

    /// Sets when a build was queued, started and finished, and when it let
    /// its prefix go.
    async fn times(
        db: &Database,
        id: &str,
        (created, started, finished): (i64, i64, i64),
        collected: Option<i64>,
    ) {
        sqlx::query(
            "UPDATE builds SET created_at = $2, started_at = $3, finished_at = $4, prefix_collected_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(created)
        .bind(started)
        .bind(finished)
        .bind(collected)
        .execute(&db.pool)
        .await
        .unwrap();
    }

    fn period(since: i64, until: i64) -> Period {
        Period {
            since: Some(since),
            until: Some(until),
        }
    }

    #[tokio::test]
    async fn a_period_counts_the_part_of_a_hold_inside_it_and_the_builds_that_ran_in_it() {
        for db in databases().await {
            let t0 = now_millis() - 100 * DAY;
            let lock = ContentHash::of(b"lock");
            let shared = ContentHash::of(b"shared");
            // Held from day 0 to day 10 (collected), ran its last 2 minutes of day 0.
            let old = build(&db, "alpha", "env", "python", Some(&lock), 0).await;
            times(
                &db,
                &old,
                (t0 - 180_000, t0 - 120_000, t0),
                Some(t0 + 10 * DAY),
            )
            .await;
            // Held from day 30 on, by alpha and beta.
            let late = build(&db, "alpha", "late", "numpy", Some(&shared), 0).await;
            times(
                &db,
                &late,
                (
                    t0 + 30 * DAY - 60_000,
                    t0 + 30 * DAY - 60_000,
                    t0 + 30 * DAY,
                ),
                None,
            )
            .await;
            let copy = build(&db, "beta", "copy", "numpy", Some(&shared), 0).await;
            times(
                &db,
                &copy,
                (t0 + 40 * DAY - 1_000, t0 + 40 * DAY - 1_000, t0 + 40 * DAY),
                None,
            )
            .await;
            db.record_prefix_size(&lock, 1_000, 1).await.unwrap();
            db.record_prefix_size(&shared, 300, 1).await.unwrap();

            // Days 5 to 20: half of the first hold, none of the builds.
            let report = db
                .usage_report_for(period(t0 + 5 * DAY, t0 + 20 * DAY), |_, _| true)
                .await
                .unwrap();
            let alpha = &row(&report, "alpha").figures;
            assert_eq!(alpha.disk_byte_millis, 1_000 * i128::from(5 * DAY));
            assert_eq!(
                (alpha.builds, alpha.build_millis),
                (BuildCounts::default(), 0)
            );
            assert_eq!(alpha.disk_bytes, 300, "disk on hand is today's");
            assert_eq!(report.period, period(t0 + 5 * DAY, t0 + 20 * DAY));

            // The minute before t0 up to day 35: the old build's last minute
            // and the late one; the shared prefix in alpha from day 30, in
            // totals once.
            let report = db
                .usage_report_for(period(t0 - 60_000, t0 + 35 * DAY), |_, _| true)
                .await
                .unwrap();
            let alpha = &row(&report, "alpha").figures;
            assert_eq!(alpha.builds.succeeded, 2);
            assert_eq!(alpha.build_millis, 60_000 + 60_000);
            assert_eq!(
                alpha.disk_byte_millis,
                1_000 * i128::from(10 * DAY) + 300 * i128::from(5 * DAY)
            );
            assert_eq!(row(&report, "beta").figures.builds, BuildCounts::default());
            assert_eq!(report.totals.disk_byte_millis, alpha.disk_byte_millis);

            // Up to now: beta's hold counts in beta and not twice in totals.
            let report = db
                .usage_report_for(period(t0 + 30 * DAY, now_millis() + DAY), |_, _| true)
                .await
                .unwrap();
            let held = |figures: &UsageFigures| figures.disk_byte_millis / i128::from(DAY);
            assert_eq!(held(&row(&report, "alpha").figures), 300 * 70);
            assert_eq!(held(&row(&report, "beta").figures), 300 * 60);
            assert_eq!(held(&report.totals), 300 * 70);

            // A deleted build's row removed by garbage collection keeps its hold.
            sqlx::query("UPDATE builds SET deleted_at = $2 WHERE id = $1")
                .bind(&old)
                .bind(t0 + 8 * DAY)
                .execute(&db.pool)
                .await
                .unwrap();
            assert_eq!(
                db.purge_deleted(std::slice::from_ref(&old))
                    .await
                    .unwrap()
                    .0,
                1
            );
            assert!(db.build(&old).await.unwrap().is_none());
            let report = db
                .usage_report_for(period(t0 + 5 * DAY, t0 + 20 * DAY), |_, _| true)
                .await
                .unwrap();
            assert_eq!(
                row(&report, "alpha").figures.disk_byte_millis,
                1_000 * i128::from(3 * DAY),
                "held until it was deleted on day 8"
            );
            // All time: the figures as before periods, and the whole holds.
            let report = db.usage_report(|_, _| true).await.unwrap();
            assert_eq!(row(&report, "alpha").figures.builds.succeeded, 1);
            assert_eq!(report.period, Period::default());
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn downloads_are_counted_per_day_beside_the_all_time_counters() {
        for db in databases().await {
            let lock = ContentHash::of(b"lock");
            build(&db, "alpha", "env", "python", Some(&lock), 10).await;
            let counted_since = db.usage_report(|_, _| true).await.unwrap().counted_since;
            assert!(
                counted_since
                    .is_some_and(|since| since <= now_millis() && since > now_millis() - DAY),
                "the migration ran just now: {counted_since:?}"
            );
            for _ in 0..2 {
                db.count_lockfile_download("alpha");
            }
            db.count_artifact_download(&lock);
            db.flush_downloads().await.unwrap();
            // Those were three days ago; today adds one of each.
            for table in ["namespace_download_days", "lock_download_days"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {table} SET day = day - 3"
                )))
                .execute(&db.pool)
                .await
                .unwrap();
            }
            db.count_lockfile_download("alpha");
            db.count_artifact_download(&lock);
            db.flush_downloads().await.unwrap();

            let downloads = |report: &UsageReport| {
                let figures = &row(report, "alpha").figures;
                (figures.lockfile_downloads, figures.artifact_downloads)
            };
            let today = day_of(now_millis()) * DAY;
            let report = db.usage_report(|_, _| true).await.unwrap();
            assert_eq!(downloads(&report), (3, 2), "all time: the counters");
            let report = db
                .usage_report_for(period(today, today + DAY), |_, _| true)
                .await
                .unwrap();
            assert_eq!(downloads(&report), (1, 1));
            assert_eq!(report.totals.artifact_downloads, 1);
            let report = db
                .usage_report_for(period(today - 3 * DAY + 1, today - 2 * DAY), |_, _| true)
                .await
                .unwrap();
            assert_eq!(
                downloads(&report),
                (2, 1),
                "a day the period touches counts in full"
            );
            let report = db
                .usage_report_for(period(today - 2 * DAY, today), |_, _| true)
                .await
                .unwrap();
            assert_eq!(downloads(&report), (0, 0));
            let since = Period {
                since: Some(today - 10 * DAY),
                until: None,
            };
            let report = db.usage_report_for(since, |_, _| true).await.unwrap();
            assert_eq!(downloads(&report), (3, 2));
            db.finish().await;
        }
    }
}

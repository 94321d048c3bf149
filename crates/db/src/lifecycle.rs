//! The end of an environment's life: deletion, soft at first (hidden at
//! once, queued and running builds stopped), and what garbage collection
//! reads and removes afterwards.

use envstore_core::{ContentHash, EnvironmentName, NamespaceName};
use sqlx::Any;

use crate::{Database, DbError, now_millis};

/// What deleting an environment or a namespace did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    pub environments: u64,
    /// Builds hidden with them.
    pub builds: u64,
    /// Queued builds cancelled and running builds asked to stop.
    pub stopped: u64,
}

/// A build whose prefix garbage collection releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectableBuild {
    pub id: String,
    pub namespace: String,
    pub environment: String,
    pub lock_hash: String,
}

/// What [`Database::collectable_builds`] selects.
#[derive(sqlx::FromRow)]
struct CollectableBuildRow {
    id: String,
    namespace: String,
    environment: String,
    lock_hash: String,
}

/// An environment or namespace deleted and not yet cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedEnvironment {
    pub namespace: String,
    pub name: String,
    /// True while the row is still deleted (a re-submission revives it).
    pub still_deleted: bool,
}

/// A build's id and its lock hash; what holds a lock's prefix.
#[derive(sqlx::FromRow)]
struct LockReferenceRow {
    id: String,
    lock_hash: String,
}

/// A queued or running build's id and its canonical spec (JSON text).
#[derive(sqlx::FromRow)]
struct PendingSpecRow {
    id: String,
    canonical: String,
}

/// A deleted build and the attempts its job made.
#[derive(sqlx::FromRow)]
struct DeletedBuildRow {
    id: String,
    attempts: i64,
}

/// An environment left to clean; `deleted_at` is NULL once submitted again.
#[derive(sqlx::FromRow)]
struct DeletedEnvironmentRow {
    namespace: String,
    name: String,
    deleted_at: Option<i64>,
}

/// A live build's id and status.
#[derive(sqlx::FromRow)]
struct LiveBuildRow {
    id: String,
    status: String,
}

impl Database {
    /// Hides an environment and its builds, cancels what is queued and asks
    /// running builds to stop. None when there is no such environment.
    pub async fn delete_environment(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
    ) -> Result<Option<Deleted>, DbError> {
        let mut transaction = self.pool.begin().await?;
        let now = now_millis();
        let hidden = sqlx::query(
            "UPDATE environments SET deleted_at = $3 WHERE namespace = $1 AND name = $2 AND deleted_at IS NULL",
        )
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        if hidden.rows_affected() == 0 {
            return Ok(None);
        }
        let builds = live_builds(
            &mut transaction,
            namespace.as_str(),
            Some(environment.as_str()),
        )
        .await?;
        let deleted = hide_builds(&mut transaction, &builds, now).await?;
        transaction.commit().await?;
        self.locks.forget_namespaces();
        Ok(Some(Deleted {
            environments: 1,
            ..deleted
        }))
    }

    /// Hides a namespace, its environments and builds, and removes the role
    /// bindings that name it exactly (a namespace created later under the
    /// same name must not inherit them). None when there is no such
    /// namespace.
    pub async fn delete_namespace(
        &self,
        namespace: &NamespaceName,
    ) -> Result<Option<Deleted>, DbError> {
        let _invalidate = self.access.invalidate_when_done();
        let mut transaction = self.pool.begin().await?;
        let now = now_millis();
        let hidden = sqlx::query(
            "UPDATE namespaces SET deleted_at = $2 WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(namespace.as_str())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        if hidden.rows_affected() == 0 {
            return Ok(None);
        }
        let environments = sqlx::query(
            "UPDATE environments SET deleted_at = $2 WHERE namespace = $1 AND deleted_at IS NULL",
        )
        .bind(namespace.as_str())
        .bind(now)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        let builds = live_builds(&mut transaction, namespace.as_str(), None).await?;
        let deleted = hide_builds(&mut transaction, &builds, now).await?;
        // What was set for or counted under this namespace goes with it: a
        // namespace created again under the name starts afresh.
        for table in [
            "role_bindings WHERE namespace_pattern",
            "namespace_quotas WHERE namespace",
            "namespace_downloads WHERE namespace",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} = $1")))
                .bind(namespace.as_str())
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        self.locks.forget_namespaces();
        Ok(Some(Deleted {
            environments,
            ..deleted
        }))
    }

    /// Succeeded builds whose prefix is still held but which the retention
    /// policy lets go: all but the newest `keep` succeeded builds of each
    /// live environment, never its current build.
    pub async fn collectable_builds(&self, keep: usize) -> Result<Vec<CollectableBuild>, DbError> {
        let rows = sqlx::query_as::<_, CollectableBuildRow>(
            "SELECT builds.id AS id, builds.namespace AS namespace, builds.environment AS environment, \
             builds.lock_hash AS lock_hash FROM builds \
             JOIN environments ON environments.namespace = builds.namespace AND environments.name = builds.environment \
             WHERE builds.status = 'succeeded' AND builds.lock_hash IS NOT NULL \
             AND builds.prefix_collected_at IS NULL AND builds.deleted_at IS NULL \
             AND environments.deleted_at IS NULL \
             AND (environments.current_build_id IS NULL OR environments.current_build_id <> builds.id) \
             AND (SELECT COUNT(*) FROM builds AS newer WHERE newer.namespace = builds.namespace \
                  AND newer.environment = builds.environment AND newer.status = 'succeeded' \
                  AND newer.deleted_at IS NULL \
                  AND newer.seq > builds.seq) >= $1 \
             ORDER BY builds.namespace, builds.environment, builds.seq",
        )
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| CollectableBuild {
                id: row.id,
                namespace: row.namespace,
                environment: row.environment,
                lock_hash: row.lock_hash,
            })
            .collect())
    }

    /// Records that these builds no longer hold their prefix.
    pub async fn mark_prefixes_collected(&self, build_ids: &[String]) -> Result<(), DbError> {
        let now = now_millis();
        for id in build_ids {
            sqlx::query("UPDATE builds SET prefix_collected_at = $2 WHERE id = $1 AND prefix_collected_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// What holds each lock's prefix, as (build id, lock hash): succeeded
    /// builds neither collected nor deleted, and builds still queued or
    /// running with a lock, or installing one as is (named in their spec
    /// before they have a lock hash of their own).
    pub async fn lock_references(&self) -> Result<Vec<(String, String)>, DbError> {
        let rows = sqlx::query_as::<_, LockReferenceRow>(
            "SELECT id, lock_hash FROM builds WHERE lock_hash IS NOT NULL AND deleted_at IS NULL \
             AND ((status = 'succeeded' AND prefix_collected_at IS NULL) OR status IN ('queued', 'running'))",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut references: Vec<(String, String)> = rows
            .into_iter()
            .map(|row| (row.id, row.lock_hash))
            .collect();
        let pending = sqlx::query_as::<_, PendingSpecRow>(
            "SELECT builds.id AS id, specs.canonical AS canonical FROM builds \
             JOIN specs ON specs.spec_hash = builds.spec_hash WHERE builds.status IN ('queued', 'running')",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in pending {
            if let Ok(spec) = serde_json::from_str::<envstore_core::CanonicalSpec>(&row.canonical)
                && let Some(lock) = spec.from_lock
            {
                references.push((row.id, lock.to_hex()));
            }
        }
        Ok(references)
    }

    /// The full hash of the lock whose prefix folder is `short`.
    pub async fn lock_by_short_hash(&self, short: &str) -> Result<Option<ContentHash>, DbError> {
        if short.len() != 16 || !short.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let hash: Option<String> =
            sqlx::query_scalar("SELECT lock_hash FROM locks WHERE lock_hash LIKE $1 LIMIT 1")
                .bind(format!("{short}%"))
                .fetch_optional(&self.pool)
                .await?;
        Ok(hash.and_then(|hash| hash.parse().ok()))
    }

    /// Locks with a published packed prefix.
    pub async fn locks_with_packed_prefix(&self) -> Result<Vec<ContentHash>, DbError> {
        let hashes: Vec<String> = sqlx::query_scalar(
            "SELECT lock_hash FROM locks WHERE packed_prefix_sha256 IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(hashes
            .into_iter()
            .filter_map(|hash| hash.parse().ok())
            .collect())
    }

    /// Forgets a packed prefix whose object was removed from the store.
    pub async fn clear_packed_prefix(&self, lock_hash: &ContentHash) -> Result<(), DbError> {
        sqlx::query("UPDATE locks SET packed_prefix_sha256 = NULL WHERE lock_hash = $1")
            .bind(lock_hash.to_hex())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Builds of deleted environments, with no job left running, and the
    /// attempts their job made: what cleaning removes (their logs, one per
    /// attempt, then their rows).
    pub async fn deleted_builds(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = sqlx::query_as::<_, DeletedBuildRow>(
            "SELECT builds.id AS id, COALESCE(MAX(jobs.attempts), 0) AS attempts FROM builds \
             LEFT JOIN jobs ON jobs.build_id = builds.id \
             WHERE builds.deleted_at IS NOT NULL AND builds.status NOT IN ('queued', 'running') \
             GROUP BY builds.id ORDER BY builds.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|row| (row.id, row.attempts)).collect())
    }

    /// Environments deleted and not yet cleaned, with whether they are still
    /// deleted (rather than submitted again since).
    pub async fn deleted_environments(&self) -> Result<Vec<DeletedEnvironment>, DbError> {
        let rows = sqlx::query_as::<_, DeletedEnvironmentRow>(
            "SELECT namespace, name, deleted_at FROM environments WHERE deleted_at IS NOT NULL \
             OR EXISTS (SELECT 1 FROM namespaces WHERE namespaces.name = environments.namespace \
                        AND namespaces.deleted_at IS NOT NULL) ORDER BY namespace, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| DeletedEnvironment {
                namespace: row.namespace,
                name: row.name,
                still_deleted: row.deleted_at.is_some(),
            })
            .collect())
    }

    /// Removes the rows of cleaned builds and of deleted environments and
    /// namespaces left without builds. Returns (builds, environments,
    /// namespaces) removed.
    pub async fn purge_deleted(&self, build_ids: &[String]) -> Result<(u64, u64, u64), DbError> {
        let mut transaction = self.pool.begin().await?;
        let mut builds = 0;
        for id in build_ids {
            sqlx::query(
                "UPDATE environments SET current_build_id = NULL WHERE current_build_id = $1",
            )
            .bind(id)
            .execute(&mut *transaction)
            .await?;
            sqlx::query("DELETE FROM jobs WHERE build_id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
            crate::usage::keep_released_hold(&mut transaction, id).await?;
            builds += sqlx::query("DELETE FROM builds WHERE id = $1 AND deleted_at IS NOT NULL")
                .bind(id)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
        }
        let environments = sqlx::query(
            "DELETE FROM environments WHERE deleted_at IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM builds WHERE builds.namespace = environments.namespace \
              AND builds.environment = environments.name)",
        )
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        let namespaces = sqlx::query(
            "DELETE FROM namespaces WHERE deleted_at IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM environments WHERE environments.namespace = namespaces.name)",
        )
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok((builds, environments, namespaces))
    }
}

/// Hides the given builds, cancels the queued ones and asks the running
/// ones to stop.
async fn hide_builds(
    transaction: &mut sqlx::Transaction<'_, Any>,
    builds: &[(String, String)],
    now: i64,
) -> Result<Deleted, DbError> {
    let mut stopped = 0;
    for (id, status) in builds {
        match status.as_str() {
            "queued" => {
                sqlx::query(
                    "UPDATE builds SET status = 'cancelled', error = 'its environment was deleted', finished_at = $2 \
                     WHERE id = $1 AND status = 'queued'",
                )
                .bind(id)
                .bind(now)
                .execute(&mut **transaction)
                .await?;
                sqlx::query(
                    "UPDATE jobs SET state = 'done', locked_until = NULL WHERE build_id = $1",
                )
                .bind(id)
                .execute(&mut **transaction)
                .await?;
                stopped += 1;
            }
            "running" => {
                sqlx::query("UPDATE builds SET cancel_requested = 1 WHERE id = $1")
                    .bind(id)
                    .execute(&mut **transaction)
                    .await?;
                stopped += 1;
            }
            _ => {}
        }
        sqlx::query("UPDATE builds SET deleted_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut **transaction)
            .await?;
    }
    Ok(Deleted {
        environments: 0,
        builds: builds.len() as u64,
        stopped,
    })
}

/// (id, status) of the live builds of a namespace, or of one environment.
async fn live_builds(
    transaction: &mut sqlx::Transaction<'_, Any>,
    namespace: &str,
    environment: Option<&str>,
) -> Result<Vec<(String, String)>, DbError> {
    let rows = match environment {
        Some(environment) => {
            sqlx::query_as::<_, LiveBuildRow>(
                "SELECT id, status FROM builds WHERE namespace = $1 AND environment = $2 AND deleted_at IS NULL",
            )
            .bind(namespace)
            .bind(environment)
            .fetch_all(&mut **transaction)
            .await?
        }
        None => {
            sqlx::query_as::<_, LiveBuildRow>(
                "SELECT id, status FROM builds WHERE namespace = $1 AND deleted_at IS NULL",
            )
                .bind(namespace)
                .fetch_all(&mut **transaction)
                .await?
        }
    };
    Ok(rows.into_iter().map(|row| (row.id, row.status)).collect())
}

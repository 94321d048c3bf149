//! Leases on lock hashes, so that two workers never build the same prefix at
//! once, on one machine or many.

use std::time::Duration;

use envstore_core::ContentHash;

use crate::jobs::millis;
use crate::{Database, DbError, now_millis};

impl Database {
    /// Takes (or renews) the lease on building `lock_hash`'s prefix. False
    /// when another worker holds a lease that has not run out.
    pub async fn acquire_prefix_lease(
        &self,
        lock_hash: &ContentHash,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, DbError> {
        let now = now_millis();
        let taken = sqlx::query(
            "INSERT INTO prefix_leases (lock_hash, worker, locked_until) VALUES ($1, $2, $3) \
             ON CONFLICT (lock_hash) DO UPDATE SET worker = excluded.worker, locked_until = excluded.locked_until \
             WHERE prefix_leases.locked_until < $4 OR prefix_leases.worker = excluded.worker",
        )
        .bind(lock_hash.to_hex())
        .bind(worker)
        .bind(now + millis(lease))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    pub async fn release_prefix_lease(
        &self,
        lock_hash: &ContentHash,
        worker: &str,
    ) -> Result<(), DbError> {
        sqlx::query("DELETE FROM prefix_leases WHERE lock_hash = $1 AND worker = $2")
            .bind(lock_hash.to_hex())
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Database {
    /// Records the sha256 of a lock's packed prefix once it is published.
    pub async fn set_packed_prefix(
        &self,
        lock_hash: &ContentHash,
        sha256: &ContentHash,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE locks SET packed_prefix_sha256 = $2 WHERE lock_hash = $1")
            .bind(lock_hash.to_hex())
            .bind(sha256.to_hex())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The sha256 of a lock's published packed prefix, if there is one.
    pub async fn packed_prefix(
        &self,
        lock_hash: &ContentHash,
    ) -> Result<Option<ContentHash>, DbError> {
        // No row and a row without a packed prefix read the same: None.
        let text: Option<Option<String>> =
            sqlx::query_scalar("SELECT packed_prefix_sha256 FROM locks WHERE lock_hash = $1")
                .bind(lock_hash.to_hex())
                .fetch_optional(&self.pool)
                .await?;
        text.flatten()
            .map(|text| {
                text.parse()
                    .map_err(|error: envstore_core::ParseHashError| DbError::Corrupt {
                        column: "locks.packed_prefix_sha256",
                        reason: error.to_string(),
                    })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::databases;

    #[tokio::test]
    async fn one_holder_at_a_time_until_the_lease_runs_out() {
        for db in databases().await {
            let hash = ContentHash::of(b"lock");
            let short = Duration::from_millis(50);
            assert!(db.acquire_prefix_lease(&hash, "a", short).await.unwrap());
            assert!(!db.acquire_prefix_lease(&hash, "b", short).await.unwrap());
            assert!(
                db.acquire_prefix_lease(&hash, "a", short).await.unwrap(),
                "the holder renews"
            );
            tokio::time::sleep(Duration::from_millis(80)).await;
            // Taken over with a long lease, so a slow machine cannot let it run
            // out before the checks below.
            let long = Duration::from_secs(60);
            assert!(
                db.acquire_prefix_lease(&hash, "b", long).await.unwrap(),
                "an expired lease is taken over"
            );
            db.release_prefix_lease(&hash, "a").await.unwrap();
            assert!(
                !db.acquire_prefix_lease(&hash, "c", short).await.unwrap(),
                "only the holder releases"
            );
            db.release_prefix_lease(&hash, "b").await.unwrap();
            assert!(db.acquire_prefix_lease(&hash, "c", short).await.unwrap());
            db.finish().await;
        }
    }
}

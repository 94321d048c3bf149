//! What followers of a build need: word that a build changed state (its
//! end, a retry) as soon as a worker records it, and the log a running
//! attempt keeps in the database read from where a follower left off.
//! Between processes the word travels by PostgreSQL NOTIFY; within one
//! process (SQLite, or the API and workers together) by a broadcast.

use std::sync::LazyLock;

use tokio::sync::broadcast;

use crate::{Database, DbError, Dialect};

/// The PostgreSQL channel on which workers announce a build's change.
const BUILDS_CHANNEL: &str = "envstore_builds";

/// Announcements made in this process, whatever the database.
static IN_PROCESS: LazyLock<broadcast::Sender<String>> =
    LazyLock::new(|| broadcast::channel(1024).0);

/// Hears builds change state, here and (PostgreSQL) anywhere.
pub struct BuildChangeListener {
    local: broadcast::Receiver<String>,
    remote: Option<sqlx::postgres::PgListener>,
}

impl BuildChangeListener {
    /// Waits for the next change: the build's id, or None when changes may
    /// have been missed (too many at once, or the connection was made
    /// again), so the caller should look at every build it follows. An
    /// error means the listener could not reconnect; make a new one.
    pub async fn recv(&mut self) -> Result<Option<String>, DbError> {
        let remote = async {
            match &mut self.remote {
                Some(listener) => listener.try_recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            local = self.local.recv() => match local {
                Ok(build_id) => Ok(Some(build_id)),
                // The sender is static: never closed.
                Err(_) => Ok(None),
            },
            remote = remote => Ok(remote?.map(|notification| notification.payload().to_owned())),
        }
    }
}

/// The end of a running attempt's kept log from a follower's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLogSince {
    pub attempt: i64,
    /// The kept log's length in characters: the follower's next offset.
    pub length: i64,
    /// The kept log from the offset asked for on.
    pub text: String,
}

/// What [`Database::attempt_log_since`] selects.
#[derive(sqlx::FromRow)]
struct AttemptLogSinceRow {
    attempt: i64,
    length: i64,
    text: String,
}

impl Database {
    /// Tells every follower of the build that it changed state.
    pub async fn announce_build_change(&self, build_id: &str) -> Result<(), DbError> {
        let _ = IN_PROCESS.send(build_id.to_owned());
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(BUILDS_CHANNEL)
                .bind(build_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// A listener for builds changing state; with PostgreSQL it holds a
    /// connection of its own, so a process keeps one and shares what it
    /// hears.
    pub async fn build_change_listener(&self) -> Result<BuildChangeListener, DbError> {
        let local = IN_PROCESS.subscribe();
        let remote = if self.dialect == Dialect::Postgres {
            let mut listener = sqlx::postgres::PgListener::connect(&self.url)
                .await
                .map_err(DbError::Connect)?;
            listener.listen(BUILDS_CHANNEL).await?;
            Some(listener)
        } else {
            None
        };
        Ok(BuildChangeListener { local, remote })
    }

    /// The log the running attempt of a build keeps in the database, from
    /// character `from` on (0 for all of it), so a follower reads only what
    /// is new.
    pub async fn attempt_log_since(
        &self,
        build_id: &str,
        from: i64,
    ) -> Result<Option<AttemptLogSince>, DbError> {
        let row = sqlx::query_as::<_, AttemptLogSinceRow>(
            "SELECT attempt, CAST(length(text) AS BIGINT) AS length, \
             substr(text, CAST($2 AS INTEGER)) AS text FROM attempt_logs WHERE build_id = $1",
        )
        .bind(build_id)
        .bind(from.saturating_add(1))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| AttemptLogSince {
            attempt: row.attempt,
            length: row.length,
            text: row.text,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::testing::databases;

    #[tokio::test]
    async fn a_follower_reads_the_kept_log_from_its_offset() {
        for db in databases().await {
            assert_eq!(db.attempt_log_since("b1", 0).await.unwrap(), None);
            db.save_attempt_log("b1", 1, "one é\n").await.unwrap();
            let first = db.attempt_log_since("b1", 0).await.unwrap().unwrap();
            assert_eq!((first.attempt, first.length), (1, 6), "{:?}", db.dialect());
            assert_eq!(first.text, "one é\n");
            db.save_attempt_log("b1", 1, "one é\ntwo\n").await.unwrap();
            let next = db
                .attempt_log_since("b1", first.length)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(next.text, "two\n");
            assert_eq!(next.length, 10);
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn an_announced_change_is_heard() {
        for db in databases().await {
            let mut listener = db.build_change_listener().await.unwrap();
            db.announce_build_change("b-heard").await.unwrap();
            // Other tests announce too: wait for this one.
            let heard = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if listener.recv().await.unwrap().as_deref() == Some("b-heard") {
                        return;
                    }
                }
            })
            .await;
            assert!(heard.is_ok(), "{:?}", db.dialect());
            drop(listener);
            db.finish().await;
        }
    }
}

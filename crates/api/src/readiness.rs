//! Readiness: can this node do its work right now? The database answers and
//! takes a write, the object store answers, and the data folder takes a
//! file (created, written, synced, removed). Checked afresh on every probe,
//! so a node that was not ready (a full disk, a database restarting) is
//! ready again as soon as the condition goes away, without a restart.
//! Shared by the API's `/ready` and a worker-only node's metrics listener.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envstore_core::error_chain;
use envstore_db::Database;
use envstore_store::ArtifactStore;

use crate::ApiError;

/// How long a readiness check waits for each dependency. The object store
/// retries a refused connection for minutes; a probe must answer well
/// before the orchestrator gives up on it.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a node's readiness depends on.
#[derive(Clone)]
pub struct Readiness {
    pub db: Database,
    pub store: ArtifactStore,
    /// The node's data folder: prefixes, caches, temporary files.
    pub data_dir: PathBuf,
}

impl Readiness {
    /// The checks' results when all pass; otherwise a 503 that names what
    /// failed (`failed`) and why (`detail`).
    pub async fn check(&self) -> Result<envstore_api_types::Readiness, ApiError> {
        let (database, store, data_folder) = tokio::join!(
            within("the database", async {
                self.db.check_writable().await.map_err(|error| match error {
                    envstore_db::DbError::Unavailable { reason, .. } => reason,
                    other => error_chain(&other),
                })
            }),
            within("the object store", async {
                self.store
                    .check()
                    .await
                    .map_err(|error| error_chain(&error))
            }),
            within("the data folder", probe_folder(self.data_dir.clone())),
        );
        let mut failed = Vec::new();
        let mut reasons = Vec::new();
        if let Err(reason) = database {
            failed.push("database");
            reasons.push(format!("the database cannot be written: {reason}"));
        }
        if let Err(reason) = store {
            failed.push("store");
            reasons.push(format!("the object store does not answer: {reason}"));
        }
        if let Err(reason) = data_folder {
            failed.push("data_folder");
            reasons.push(format!(
                "the data folder '{}' cannot be written: {reason}",
                self.data_dir.display()
            ));
        }
        if failed.is_empty() {
            return Ok(envstore_api_types::Readiness::ready());
        }
        for reason in &reasons {
            tracing::warn!(reason = %reason, "not ready");
        }
        metrics::counter!("envstore_not_ready_total").increment(1);
        Err(ApiError::NotReady {
            failed,
            detail: format!("not ready: {}", reasons.join("; ")),
        })
    }
}

/// `check` under [`READY_CHECK_TIMEOUT`], its error as text.
async fn within<E: std::fmt::Display>(
    what: &str,
    check: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "{what} did not answer within {} s",
            READY_CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// Creates, writes, syncs and removes a small file in `folder`, off the
/// async runtime (a hung file system must not stall it).
async fn probe_folder(folder: PathBuf) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        // The chain: fs-err's message names the file, its source says why.
        probe_folder_now(&folder).map_err(|error| envstore_core::error_chain(&error))
    })
    .await
    .map_err(|error| format!("the probe stopped: {error}"))?
}

fn probe_folder_now(folder: &Path) -> std::io::Result<()> {
    let path = folder.join(format!(
        ".ready-probe-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    let written = (|| {
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        // One block's worth: what a full disk refuses where an empty file would pass.
        file.write_all(&[0u8; 4096])?;
        file.sync_all()
    })();
    let removed = fs_err::remove_file(&path);
    written?;
    match removed {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Unique enough for a probe file name among this process's probes.
fn uuid_like() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_is_a_file_fails_the_probe_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        probe_folder_now(dir.path()).unwrap();
        assert_eq!(
            fs_err::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe file is removed"
        );
        let file = dir.path().join("file");
        fs_err::write(&file, b"x").unwrap();
        let error = probe_folder_now(&file).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::NotADirectory,
            "ENOTDIR: {error}"
        );
        let reason = envstore_core::error_chain(&error);
        assert!(reason.contains("os error 20"), "{reason}");
    }
}

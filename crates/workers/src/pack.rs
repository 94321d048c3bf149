//! Packing a built prefix and publishing it, for nodes without a shared
//! filesystem to materialise.

use envstore_core::ContentHash;
use envstore_link::{ProgressSink, pack_prefix};
use envstore_store::keys;

use crate::context::BuildContext;
use crate::error::BuildError;
use crate::log::BuildLog;
use crate::pause::{TestPause, pause_for_test};

/// Publishes `prefixes/<lock_hash>.tar.zst` for nodes without a shared
/// filesystem, and records its sha256.
pub(crate) async fn publish_packed_prefix(
    ctx: &BuildContext,
    lock_hash: &ContentHash,
    log: &BuildLog,
) -> Result<(), BuildError> {
    let prefix = ctx.prefixes.prefix_path(lock_hash);
    let archive = ctx
        .layout
        .pack_file()
        .map_err(|error| BuildError::Task(error.to_string()))?;
    let archive_path = archive.path().to_owned();
    let sha256 = tokio::task::spawn_blocking(move || pack_prefix(&prefix, &archive_path))
        .await
        .map_err(|error| BuildError::Task(error.to_string()))??;
    pause_for_test(ctx.test_pause, TestPause::Packing, log).await;
    let key = keys::packed_prefix(lock_hash);
    // An archive there without a recorded sha256 was left by an attempt
    // that stopped before recording it; it may differ from this one.
    if ctx.store.exists(&key).await? {
        log.line(format!(
            "replacing {key}, which an earlier attempt left unrecorded"
        ));
        ctx.store.delete(&key).await?;
    }
    ctx.store.put_file_immutable(&key, archive.path()).await?;
    ctx.db.set_packed_prefix(lock_hash, &sha256).await?;
    log.line(format!(
        "published the packed prefix {key} (sha256 {sha256})"
    ));
    Ok(())
}

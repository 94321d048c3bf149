//! Publishing what a build made: its lockfiles, its logs, and the
//! environment link pointed at the current build's prefix.

use std::time::Duration;

use bytes::Bytes;
use envstore_core::{ContentHash, error_chain};
use envstore_db::{BuildRecord, DbError};
use envstore_link::point_environment;
use envstore_solve::Lock;
use envstore_store::artifact;
use envstore_store::keys;

use crate::backoff::Backoff;
use crate::context::BuildContext;
use crate::error::BuildError;
use crate::log::BuildLog;

/// How long a log the store would not take is tried again.
const LOG_RETRY_LIMIT: Duration = Duration::from_secs(3600);

/// Publishes the lock's files (`conda-lock.yml`, `pixi.lock`, one explicit
/// list per platform); returns their names.
pub(crate) async fn publish_lock(
    ctx: &BuildContext,
    lock: &Lock,
) -> Result<Vec<String>, BuildError> {
    let hash = lock.hash();
    let mut files = vec![
        (artifact::CONDA_LOCK.to_owned(), lock.render_conda_lock()?),
        (artifact::PIXI_LOCK.to_owned(), lock.render_pixi_lock()?),
    ];
    for platform in lock.platforms() {
        files.push((
            artifact::explicit(platform),
            lock.render_explicit(platform)?,
        ));
    }
    let mut names = Vec::with_capacity(files.len());
    for (name, text) in files {
        ctx.store
            .put_immutable(&keys::lock_artifact(&hash, &name), Bytes::from(text))
            .await?;
        names.push(name);
    }
    Ok(names)
}

/// Publishes the text of `log` under `key`.
pub(crate) async fn publish_log(ctx: &BuildContext, key: &str, log: &BuildLog) {
    publish_text(ctx, key, log.text()).await;
}

/// Publishes a finished build's log with its typed events (JSON Lines)
/// beside it, for followers who arrive after the end.
pub(crate) async fn publish_build_log(ctx: &BuildContext, build_id: &str, log: &BuildLog) {
    publish_log(ctx, &keys::build_log(build_id), log).await;
    let mut lines = String::new();
    for record in log.events_from(0) {
        match serde_json::to_string(&record) {
            Ok(line) => {
                lines.push_str(&line);
                lines.push('\n');
            }
            Err(error) => {
                tracing::warn!(build = %build_id, %error, "cannot write a build's events");
                return;
            }
        }
    }
    publish_text(ctx, &keys::build_events(build_id), lines).await;
}

/// Publishes a log; when the store fails (a full disk, say) it keeps
/// trying in the background with backoff, for at most an hour.
pub(crate) async fn publish_text(ctx: &BuildContext, key: &str, text: String) {
    let text = Bytes::from(text);
    let Err(error) = ctx.store.put_immutable(key, text.clone()).await else {
        return;
    };
    tracing::warn!(key, error = %error_chain(&error), "failed to publish a build log: trying again in the background");
    let store = ctx.store.clone();
    let key = key.to_owned();
    tokio::spawn(async move {
        let give_up = tokio::time::Instant::now() + LOG_RETRY_LIMIT;
        let mut backoff = Backoff::new();
        loop {
            let (delay, _) = backoff.failed();
            if tokio::time::Instant::now() + delay > give_up {
                tracing::warn!(key, "gave up publishing a build log");
                return;
            }
            tokio::time::sleep(delay).await;
            if store.put_immutable(&key, text.clone()).await.is_ok() {
                tracing::info!(key, "published the build log after all");
                return;
            }
        }
    });
}

/// Points the environment's link at the prefix of its current build.
pub(crate) async fn point_current(ctx: &BuildContext, build: &BuildRecord) -> Result<(), DbError> {
    let (Ok(namespace), Ok(name)) = (build.namespace.parse(), build.environment.parse()) else {
        return Ok(());
    };
    let Some(environment) = ctx.db.environment(&namespace, &name).await? else {
        return Ok(());
    };
    let Some(current) = environment.current_build_id else {
        return Ok(());
    };
    let Some(lock_hash) = ctx
        .db
        .build(&current)
        .await?
        .and_then(|build| build.lock_hash)
        .and_then(|hash| hash.parse::<ContentHash>().ok())
    else {
        return Ok(());
    };
    point_link(ctx, build, &lock_hash);
    Ok(())
}

/// Points the environment's link at a succeeding build's prefix before its
/// success is recorded, when it is about to become current: whoever is told
/// the build succeeded finds `envs/<namespace>/<name>` in place.
/// `point_current` after the record settles a race with a newer build.
pub(crate) async fn point_ahead(
    ctx: &BuildContext,
    build: &BuildRecord,
    lock_hash: &ContentHash,
) -> Result<(), DbError> {
    if ctx.db.would_become_current(&build.id).await? {
        point_link(ctx, build, lock_hash);
    }
    Ok(())
}

/// Points the build's environment link at the lock's prefix, when that
/// prefix is complete here; a failure is logged (the prefix stays usable
/// by its own path).
fn point_link(ctx: &BuildContext, build: &BuildRecord, lock_hash: &ContentHash) {
    if ctx.prefixes.complete_marker(lock_hash).is_none() {
        return;
    }
    let link = ctx
        .layout
        .environment_link(&build.namespace, &build.environment);
    let target = ctx.prefixes.prefix_path(lock_hash);
    if let Err(error) = point_environment(&link, &target) {
        tracing::warn!(link = %link.display(), error = %error_chain(&BuildError::Link(error)), "failed to point the environment");
    }
}

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envstore_core::ContentHash;
use envstore_store::artifact;

use crate::auth::Caller;
use crate::http_cache::{cache_control, if_none_match};
use crate::{ApiError, AppState};

/// A lock's artifact by its content address: it never changes, so it may be
/// cached forever; by shared caches only when a public namespace holds it
/// (otherwise the answer needed a token, and is `private`). This is the hot path of CI fetching pinned lockfiles: the
/// access data and the artifact come from in-process caches, so a repeated
/// request makes no database or store round trip.
#[utoipa::path(
    get,
    path = "/api/v1/locks/{lock_hash}/{file}",
    tag = "lockfiles",
    params(("lock_hash" = String, Path, description = "The lock's hash."), ("file" = String, Path, description = "conda-lock.yml, pixi.lock or explicit-<platform>.txt.")),
    responses(
        (status = 200, description = "The artifact; immutable.", body = String, content_type = "application/yaml"),
        (status = 304, description = "`If-None-Match` names it."),
        crate::openapi::SignedIn,
        (status = 404, description = "No such artifact, or the caller may not see it.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn get_lock_artifact(
    State(app): State<AppState>,
    caller: Caller,
    Path((lock_hash, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::NotFound(format!(
            "lock artifact '{}/{}' was not found",
            lock_hash.escape_debug(),
            file.escape_debug()
        ))
    };
    let hash: ContentHash = lock_hash.parse().map_err(|_| not_found())?;
    if !artifact::is_lock_artifact(&file) {
        return Err(not_found());
    }
    // Hashes parse from lowercase hex only: the path is the hex already.
    if !may_read_lock(&app, &caller, &lock_hash).await? {
        return Err(if caller.subject.is_none() {
            ApiError::Unauthorized
        } else {
            not_found()
        });
    }
    // Read (from memory once warm) before answering 304, so a name the lock
    // does not have is still a 404.
    let bytes = app.store.get_lock_artifact(&hash, &file).await?;
    let etag = format!("\"{lock_hash}\"");
    let cache_control = cache_control(
        lock_is_public(&app, &lock_hash).await?,
        "max-age=31536000, immutable",
    );
    if if_none_match(&headers, &etag) {
        tracing::debug!(lock = %lock_hash, file, "lock artifact not modified");
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
        )
            .into_response());
    }
    tracing::debug!(lock = %lock_hash, file, bytes = bytes.len(), "lock artifact served");
    // The path names a lock, not a namespace: counted per lock (in memory,
    // flushed in batches), and shown in every namespace holding the lock.
    app.db.count_artifact_download(&hash);
    let content_type = if file.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else {
        "application/yaml"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache_control),
        ],
        bytes,
    )
        .into_response())
}

/// A lock is shared by every namespace that built it: a viewer of any of
/// them may read it. The namespaces this process already knows are tried
/// first; only when none lets the caller in is the database asked, since
/// another namespace may have built the lock since.
async fn may_read_lock(app: &AppState, caller: &Caller, lock_hash: &str) -> Result<bool, ApiError> {
    let known = app.db.known_namespaces_with_lock(lock_hash);
    for namespace in &known {
        if caller.can_view(app, namespace).await? {
            return Ok(true);
        }
    }
    for namespace in app.db.namespaces_with_lock(lock_hash).await? {
        if !known.contains(&namespace) && caller.can_view(app, &namespace).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether anyone, without a token, may read the lock: a public namespace
/// this process knows holds it. Only the namespaces known in memory are
/// asked (this is the hot path); not knowing makes the answer `private`,
/// which is always safe.
async fn lock_is_public(app: &AppState, lock_hash: &str) -> Result<bool, ApiError> {
    for namespace in app.db.known_namespaces_with_lock(lock_hash) {
        if app.db.namespace_public_read(&namespace).await? == Some(true) {
            return Ok(true);
        }
    }
    Ok(false)
}

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use envstore_core::ContentHash;
use envstore_store::{artifact, keys};

use crate::auth::Caller;
use crate::{ApiError, AppState};

/// A lock's artifact by its content address: it never changes, so it may be
/// cached forever.
pub async fn get_lock_artifact(
    State(app): State<AppState>,
    caller: Caller,
    Path((lock_hash, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("lock artifact '{}/{}' was not found", lock_hash.escape_debug(), file.escape_debug()));
    let hash: ContentHash = lock_hash.parse().map_err(|_| not_found())?;
    if !artifact::is_lock_artifact(&file) {
        return Err(not_found());
    }
    // A lock is shared by every namespace that built it: a viewer of any of
    // them may read it.
    let mut visible = false;
    for namespace in app.db.namespaces_with_lock(&hash.to_hex()).await? {
        if caller.can_view(&app, &namespace).await? {
            visible = true;
            break;
        }
    }
    if !visible {
        return Err(if caller.subject.is_none() { ApiError::Unauthorized } else { not_found() });
    }
    let bytes = app.store.get(&keys::lock_artifact(&hash, &file)).await?;
    let content_type = if file.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else {
        "application/yaml"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::ETAG, format!("\"{hash}\"")),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use envstore_store::{StoreError, keys};

use envstore_core::Role;
use envstore_db::BuildRecord;

use crate::auth::Caller;
use crate::routes::environments::build_view;
use crate::routes::log_stream::follow_build;
use crate::views::BuildView;
use crate::{ApiError, AppState};

pub async fn get_build(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BuildView>, ApiError> {
    let build = visible_build(&app, &caller, &id).await?;
    Ok(Json(build_view(&app, build).await?))
}

/// A build the caller may view (as a viewer of its namespace).
async fn visible_build(app: &AppState, caller: &Caller, id: &str) -> Result<BuildRecord, ApiError> {
    let not_found = || ApiError::NotFound(format!("build '{}' was not found", id.escape_debug()));
    let build = app.db.build(id).await?.ok_or_else(not_found)?;
    caller
        .require(app, &build.namespace, Role::Viewer)
        .await
        .map_err(|error| match error {
            ApiError::NotFound(_) => not_found(),
            other => other,
        })?;
    Ok(build)
}

/// The build's log: the published one once the build ended, the live one
/// while it runs here. With `Accept: text/event-stream` (or `?follow=true`)
/// it is followed as Server-Sent Events until the build ends.
pub async fn get_build_log(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let build = visible_build(&app, &caller, &id).await?;
    let wants_stream = query.follow
        || headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|accept| accept.contains("text/event-stream"));
    if wants_stream {
        return Ok(follow_build(app, build.id).into_response());
    }
    let text = match app.store.get(&keys::build_log(&build.id)).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound(_)) => match app.events.live_log(&build.id) {
            Some(live) => live.into(),
            None => format!("build {} is {}\n", build.id, build.status).into(),
        },
        Err(error) => return Err(error.into()),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct LogQuery {
    /// Follow the build as Server-Sent Events.
    #[serde(default)]
    follow: bool,
}

/// Cancels a build: a queued one at once, a running one as soon as its
/// worker notices (within a second); its unfinished prefix is removed.
pub async fn cancel_build(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let build = visible_build(&app, &caller, &id).await?;
    caller.require(&app, &build.namespace, Role::Developer).await?;
    if build.status.is_final() {
        return Err(ApiError::Conflict(format!("build '{}' already {}", build.id, build.status)));
    }
    let reason = format!("cancelled by {}", caller.subject.as_deref().unwrap_or("anonymous"));
    let status = app.db.cancel_build(&build.id, &reason).await?;
    app.audit(&caller, "build.cancel", &build.id, serde_json::json!({ "status": status })).await?;
    Ok(Json(serde_json::json!({
        "build_id": build.id,
        "status": status,
        "cancelling": status == Some(envstore_core::BuildStatus::Running),
    })))
}

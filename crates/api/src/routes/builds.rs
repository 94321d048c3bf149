use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use envstore_store::{StoreError, keys};

use envstore_api_types::{BuildCancelled, BuildHistoryEntry, BuildView, BuildsPage};
use envstore_core::{EnvironmentName, Role};
use envstore_db::BuildRecord;

use crate::auth::{Caller, authorized_namespace};
use crate::log_stream::{Follower, follow_build};
use crate::paging::ListQuery;
use crate::views::{build_view, phase_view};
use crate::{ApiError, AppState};

/// A build: status, phases with timings, its spec and, once locked, its
/// packages and lockfile links.
#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}",
    tag = "builds",
    params(crate::openapi::BuildPath),
    responses(
        (status = 200, description = "Status, phases with timings, packages, error.", body = BuildView),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_build(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BuildView>, ApiError> {
    let build = visible_build(&app, &caller, &id).await?;
    Ok(Json(build_view(&app, build).await?))
}

/// The spec text a build was submitted with, byte for byte as received
/// (comments, order and spelling kept), in the content type it came with.
/// The build's hash is of its canonical form (in the build's `spec`).
#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}/spec",
    tag = "builds",
    params(crate::openapi::BuildPath),
    responses(
        (status = 200, description = "The submitted environment.yml (`application/yaml`) or JSON spec (`application/json`), as received.", content((String = "application/yaml"), (String = "application/json"))),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_build_spec(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let build = visible_build(&app, &caller, &id).await?;
    let no_text = || {
        ApiError::NotFound(format!(
            "build '{}' has no submitted spec text: it was made before texts were kept, or from a lockfile; its canonical spec is in the build's 'spec'",
            build.id
        ))
    };
    let submitted = app
        .db
        .submitted_spec(&build.id)
        .await?
        .flatten()
        .ok_or_else(no_text)?;
    let content_type = match submitted.format {
        envstore_core::SpecFormat::Yaml => "application/yaml",
        envstore_core::SpecFormat::Json => "application/json",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], submitted.text).into_response())
}

/// The builds of an environment, newest first, paged with
/// `?limit=&after=<build id>&q=` (`q` narrows to builds whose id, status or
/// submitter contains it; `next_after` names the next page's cursor while
/// there is one).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/environments/{name}/builds",
    tag = "builds",
    params(crate::openapi::EnvironmentPath, crate::openapi::PageQuery),
    responses(
        (status = 200, description = "The environment's builds, newest first.", body = BuildsPage),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn list_builds(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Json<BuildsPage>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let not_found = || {
        ApiError::NotFound(format!(
            "environment '{namespace}/{}' was not found",
            name.escape_debug()
        ))
    };
    let name: EnvironmentName = name.parse().map_err(|_| not_found())?;
    let environment = app
        .db
        .environment(&namespace, &name)
        .await?
        .ok_or_else(not_found)?;
    let limit = query.limit();
    let after = Some(query.after()).filter(|after| !after.is_empty());
    let mut page = app
        .db
        .builds_page(&namespace, &name, after, query.search(), limit as i64 + 1)
        .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_after = more
        .then(|| page.last().map(|entry| entry.build.id.clone()))
        .flatten();
    let current = environment.current_build_id.as_deref();
    let builds: Vec<BuildHistoryEntry> = page
        .into_iter()
        .map(|entry| {
            let build = entry.build;
            BuildHistoryEntry {
                current: current == Some(build.id.as_str()),
                url: format!("/api/v1/builds/{}", build.id),
                phases: build.phases.into_iter().map(phase_view).collect(),
                id: build.id,
                status: build.status,
                spec_hash: build.spec_hash,
                lock_hash: build.lock_hash,
                created_at: build.created_at,
                started_at: build.started_at,
                finished_at: build.finished_at,
                submitted_by: entry.submitted_by,
                error: build.error,
            }
        })
        .collect();
    Ok(Json(BuildsPage {
        namespace: namespace.to_string(),
        name: name.to_string(),
        current_build_id: environment.current_build_id,
        builds,
        next_after,
    }))
}

/// A build the caller may view (as a viewer of its namespace).
async fn visible_build(app: &AppState, caller: &Caller, id: &str) -> Result<BuildRecord, ApiError> {
    let not_found = || ApiError::NotFound(format!("build '{}' was not found", id.escape_debug()));
    let build = app
        .db
        .build(id)
        .await?
        .filter(|build| build.deleted_at.is_none())
        .ok_or_else(not_found)?;
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
#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}/log",
    tag = "builds",
    params(crate::openapi::BuildPath, ("follow" = Option<bool>, Query, description = "Follow as Server-Sent Events, as `Accept: text/event-stream` does.")),
    responses(
        (status = 200, description = "The log as text, or a stream of `line`, `status`, `reset` and `end` events.", content((String = "text/plain"), (String = "text/event-stream"))),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
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
        let follower = Follower {
            authorization: headers.get(header::AUTHORIZATION).cloned(),
            namespace: build.namespace.clone(),
            caller,
        };
        return Ok(follow_build(app, build.id, follower)?.into_response());
    }
    let text = match app.store.get(&keys::build_log(&build.id)).await {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound(_)) => match app.events.live_log(&build.id) {
            Some(live) => live.into(),
            // Running on another node: what its attempt kept in the database.
            None => match app.db.attempt_log(&build.id).await? {
                Some(kept) => kept.text.into(),
                None => format!("build {} is {}\n", build.id, build.status).into(),
            },
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
#[utoipa::path(
    post,
    path = "/api/v1/builds/{id}/cancel",
    tag = "builds",
    params(crate::openapi::BuildPath),
    responses(
        (status = 200, description = "Cancelled, or asked to stop.", body = BuildCancelled),
        (status = 409, description = "The build has ended.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn cancel_build(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BuildCancelled>, ApiError> {
    let build = visible_build(&app, &caller, &id).await?;
    caller
        .require(&app, &build.namespace, Role::Developer)
        .await?;
    if build.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "build '{}' already {}",
            build.id, build.status
        )));
    }
    let reason = format!(
        "cancelled by {}",
        caller.subject.as_deref().unwrap_or("anonymous")
    );
    let status = app.db.cancel_build(&build.id, &reason).await?;
    app.audit(
        &caller,
        "build.cancel",
        &build.id,
        serde_json::json!({ "status": status }),
    )
    .await?;
    Ok(Json(BuildCancelled {
        build_id: build.id,
        status,
        cancelling: status == Some(envstore_core::BuildStatus::Running),
    }))
}

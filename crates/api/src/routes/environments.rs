use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use envstore_api_types::{
    BuildQueued, CurrentBuild, CurrentBuildSet, EnvironmentDeleted, EnvironmentSummary,
    EnvironmentView, EnvironmentsPage,
};
use envstore_core::spec::MAX_SPEC_BYTES;
use envstore_core::{ContentHash, EnvironmentName, NamespaceName, Role};
use envstore_db::{EnvironmentRecord, SubmittedSpec};
use serde_json::json;

use crate::auth::{Caller, authorized_namespace};
use crate::extract::{parse_json, parse_spec, read_body, spec_format};
use crate::idempotency;
use crate::paging::ListQuery;
use crate::submission::{Queued, queue_build, rebuild_from_lock, replay_if_known, to_value};
use crate::views::{build_summary, build_view};
use crate::{ApiError, AppState};

/// The environments of a namespace by name, with the state of their current
/// and latest builds, paged with `?limit=&after=<name>&q=` (`next_after`
/// names the next page's cursor while there is one).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/environments",
    tag = "environments",
    params(crate::openapi::NamespacePath, crate::openapi::PageQuery),
    responses(
        (status = 200, description = "Environments with their current build.", body = EnvironmentsPage),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn list_environments(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<EnvironmentsPage>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let limit = query.limit();
    let mut page = app
        .db
        .environments_page(&namespace, query.after(), query.search(), limit as i64 + 1)
        .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_after = more
        .then(|| page.last().map(|environment| environment.name.clone()))
        .flatten();
    let environments = page
        .into_iter()
        .map(|environment| EnvironmentSummary {
            url: format!(
                "/api/v1/namespaces/{namespace}/environments/{}",
                environment.name
            ),
            name: environment.name,
            created_at: environment.created_at,
            current_build_id: environment.current_build_id,
            current_status: environment.current_status,
            latest_build_id: environment.latest_build_id,
            latest_status: environment.latest_status,
            latest_created_at: environment.latest_created_at,
        })
        .collect();
    Ok(Json(EnvironmentsPage {
        namespace: namespace.to_string(),
        environments,
        next_after,
    }))
}

/// Accepts an `environment.yml` (or the same as JSON) and queues a build.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/environments/{name}",
    tag = "environments",
    params(crate::openapi::EnvironmentPath, ("Idempotency-Key" = Option<String>, Header, description = "Optional: 1 to 255 visible ASCII characters (a UUID v7, say), fresh per request. Sent again with the same request within 24 h, the first answer is repeated (with `Idempotent-Replayed: true`) and no second build is queued; sent with a different request, 422.")),
    request_body(content = String, content_type = "application/yaml", description = "An environment.yml (or the same as JSON with `Content-Type: application/json`)."),
    responses(
        (status = 202, description = "A build was queued (or the same spec's build under way joined).", body = BuildQueued, headers(("Idempotent-Replayed" = String, description = "`true` when this is the kept answer of an earlier request with the same Idempotency-Key."))),
        (status = 400, description = "The spec is not valid YAML or JSON (with line and column), or the Idempotency-Key is longer than 255 bytes or not visible ASCII.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The spec is too large.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The spec or the namespace's policy refuses it, or the Idempotency-Key was already used for a different request.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The namespace is at its concurrent-build quota.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer; `Retry-After` says when to try again (with the same Idempotency-Key).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn submit_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Developer).await?;
    let name: EnvironmentName = name.parse()?;
    let body = read_body(body, MAX_SPEC_BYTES).await?;
    let key = idempotency::request_key(&caller, &headers, &Method::PUT, uri.path(), &body)?;
    if let Some(replayed) = replay_if_known(&app, key.as_ref()).await? {
        return Ok(replayed);
    }
    let submitted = submitted_text(&headers, &body);
    let spec = parse_spec(&headers, body).await?;
    let policy = app
        .default_policy
        .tightened_by(&app.db.namespace_policy(&namespace).await?);
    let spec = policy.apply(spec)?;
    let canonical = spec.canonicalize(&app.allowlist, app.default_platform)?;
    policy.check_canonical(&canonical)?;
    queue_build(
        &app,
        &caller,
        &namespace,
        &name,
        &policy,
        (&canonical, submitted.as_ref()),
        key.as_ref(),
    )
    .await
}

/// The spec text as received, to keep with the build: in the format
/// `parse_spec` reads it as. A body that parsed is UTF-8 (YAML and JSON
/// both require it), so nothing is lost.
fn submitted_text(headers: &HeaderMap, body: &axum::body::Bytes) -> Option<SubmittedSpec> {
    let text = std::str::from_utf8(body).ok()?.to_owned();
    Some(SubmittedSpec {
        text,
        format: spec_format(headers),
    })
}

/// An environment: its current build, its prefix on this node and the
/// history of its builds.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/environments/{name}",
    tag = "environments",
    params(crate::openapi::EnvironmentPath),
    responses(
        (status = 200, description = "The current build, its prefix and the history.", body = EnvironmentView),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<EnvironmentView>, ApiError> {
    let (namespace, name, environment) =
        existing_environment(&app, &caller, &namespace, &name).await?;
    let history = app.db.environment_builds(&namespace, &name).await?;
    let current_id = environment.current_build_id.as_deref();
    let current = match history
        .iter()
        .find(|build| Some(build.id.as_str()) == current_id)
    {
        Some(build) => Some(build_view(&app, build.clone()).await?),
        None => None,
    };
    let prefix = current
        .as_ref()
        .and_then(|build| build.lock_hash.as_deref())
        .and_then(|hash| hash.parse::<ContentHash>().ok())
        .map(|hash| app.prefixes_root.join(hash.short()).display().to_string());
    let history = history
        .iter()
        .map(|build| build_summary(build, current_id))
        .collect();
    Ok(Json(EnvironmentView {
        namespace: namespace.to_string(),
        name: name.to_string(),
        created_at: environment.created_at,
        current_build: current,
        prefix,
        history,
    }))
}

async fn existing_environment(
    app: &AppState,
    caller: &Caller,
    namespace: &str,
    name: &str,
) -> Result<(NamespaceName, EnvironmentName, EnvironmentRecord), ApiError> {
    let namespace = authorized_namespace(app, caller, namespace, Role::Viewer).await?;
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
    Ok((namespace, name, environment))
}

/// Rolls an environment back (or forward) to one of its succeeded builds:
/// the database first, then the environment link, swapped atomically. A
/// build whose prefix garbage collection released is rebuilt from its lock
/// instead (202): the environment stays on its current build until the
/// rebuild succeeds and becomes current in its turn, so it is never left
/// pointing at a prefix that is not there.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/environments/{name}/current",
    tag = "environments",
    params(crate::openapi::EnvironmentPath, ("Idempotency-Key" = Option<String>, Header, description = "Optional: 1 to 255 visible ASCII characters (a UUID v7, say), fresh per request. Sent again with the same request within 24 h, the first answer is repeated (with `Idempotent-Replayed: true`) and no second build is queued; sent with a different request, 422.")),
    request_body(content = CurrentBuild, content_type = "application/json", description = "`{\"build_id\": …}` of a succeeded build"),
    responses(
        (status = 200, description = "The build is current.", body = CurrentBuildSet),
        (status = 202, description = "Its prefix was collected: `rebuild` names the build restoring it from the lock, which becomes current when it succeeds. Kept under an Idempotency-Key (a 200 is not: doing it again is harmless).", body = CurrentBuildSet, headers(("Idempotent-Replayed" = String, description = "`true` when this is the kept answer of an earlier request with the same Idempotency-Key."))),
        (status = 400, description = "The Idempotency-Key is longer than 255 bytes or not visible ASCII.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was already used for a different request.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer; `Retry-After` says when to try again (with the same Idempotency-Key).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a succeeded build of this environment.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The namespace is at its concurrent-build quota (a rebuild is needed).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn set_current_build(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Developer).await?;
    let key = idempotency::request_key(&caller, &headers, &Method::PUT, uri.path(), &body)?;
    if let Some(replayed) = replay_if_known(&app, key.as_ref()).await? {
        return Ok(replayed);
    }
    let request: CurrentBuild = parse_json(&body, "{\"build_id\": \"…\"}")?;
    let (namespace, name, environment) =
        existing_environment(&app, &caller, namespace.as_str(), &name).await?;
    let not_succeeded = || {
        ApiError::Conflict(format!(
            "build '{}' is not a succeeded build of '{namespace}/{name}'",
            request.build_id.escape_debug()
        ))
    };
    let build = app
        .db
        .build(&request.build_id)
        .await?
        .filter(|build| {
            build.namespace == namespace.as_str()
                && build.environment == name.as_str()
                && build.status == envstore_core::BuildStatus::Succeeded
                && build.deleted_at.is_none()
        })
        .ok_or_else(not_succeeded)?;
    let prefix = build
        .lock_hash
        .as_deref()
        .and_then(|hash| hash.parse::<ContentHash>().ok())
        .map(|hash| app.prefixes_root.join(hash.short()))
        .filter(|prefix| envstore_link::is_complete(prefix));
    if build.prefix_collected_at.is_some() && prefix.is_none() {
        let answered = |rebuild: &BuildQueued| CurrentBuildSet {
            namespace: namespace.to_string(),
            name: name.to_string(),
            current_build_id: environment.current_build_id.clone(),
            prefix: None,
            rebuild: Some(rebuild.clone()),
        };
        let answer = |rebuild: &BuildQueued| (StatusCode::ACCEPTED, to_value(&answered(rebuild)));
        let rebuild = match rebuild_from_lock(
            &app,
            &caller,
            &namespace,
            &name,
            &build,
            key.as_ref(),
            answer,
        )
        .await?
        {
            Queued::New(rebuild) => rebuild,
            Queued::Replayed(stored, key) => return idempotency::replay(stored, &key),
        };
        app.audit(
            &caller,
            "environment.rollback",
            &format!("{namespace}/{name}"),
            json!({ "build_id": build.id, "rebuild_build_id": rebuild.build_id }),
        )
        .await?;
        return Ok((StatusCode::ACCEPTED, Json(answered(&rebuild))).into_response());
    }
    if !app
        .db
        .set_current_build(&namespace, &name, &build.id)
        .await?
    {
        return Err(not_succeeded());
    }
    if let Some(prefix) = &prefix {
        let link = app
            .environments_root
            .join(namespace.as_str())
            .join(name.as_str());
        envstore_link::point_environment(&link, prefix).map_err(|error| {
            ApiError::Conflict(format!(
                "the environment link could not be swapped: {error}"
            ))
        })?;
    }
    app.audit(
        &caller,
        "environment.rollback",
        &format!("{namespace}/{name}"),
        json!({ "build_id": build.id }),
    )
    .await?;
    Ok(Json(CurrentBuildSet {
        namespace: namespace.to_string(),
        name: name.to_string(),
        current_build_id: Some(build.id),
        prefix: prefix.map(|prefix| prefix.display().to_string()),
        rebuild: None,
    })
    .into_response())
}

/// Deletes an environment (namespace admins): hidden at once, its queued
/// builds cancelled and running ones stopped; garbage collection removes its
/// link, prefixes nothing else holds, logs and rows later. Its locks stay
/// available by hash to other namespaces that built them.
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{namespace}/environments/{name}",
    tag = "environments",
    params(crate::openapi::EnvironmentPath),
    responses(
        (status = 200, description = "Deleted: hidden at once, builds stopped, cleaned by garbage collection.", body = EnvironmentDeleted),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn delete_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<EnvironmentDeleted>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let not_found = || {
        ApiError::NotFound(format!(
            "environment '{namespace}/{}' was not found",
            name.escape_debug()
        ))
    };
    let environment: EnvironmentName = name.parse().map_err(|_| not_found())?;
    let deleted = app
        .db
        .delete_environment(&namespace, &environment)
        .await?
        .ok_or_else(not_found)?;
    let target = format!("{namespace}/{environment}");
    app.audit(
        &caller,
        "environment.delete",
        &target,
        json!({ "builds": deleted.builds, "stopped": deleted.stopped }),
    )
    .await?;
    tracing::info!(environment = %target, by = caller.subject.as_deref(), "environment deleted");
    Ok(Json(EnvironmentDeleted {
        namespace: namespace.to_string(),
        name: environment.to_string(),
        deleted: true,
        builds: deleted.builds,
        stopped_builds: deleted.stopped,
        cleanup: "its link, unshared prefixes, logs and records are removed by the next garbage collection (envstore gc)".to_owned(),
    }))
}

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envstore_core::{ContentHash, EnvironmentName, EnvironmentSpec, NamespaceName, Role, SpecFormat};
use envstore_core::spec::MAX_SPEC_BYTES;
use envstore_db::{BuildRecord, EnvironmentRecord};
use envstore_store::artifact;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::routes::{LockfileFormat, explicit_platform, if_none_match};
use crate::routes::namespaces::authorized_namespace;
use crate::views::{BuildSummary, BuildView};
use crate::{ApiError, AppState};

pub async fn list_environments(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let environments: Vec<Value> = app
        .db
        .list_environments(&namespace)
        .await?
        .into_iter()
        .map(|environment| {
            json!({
                "name": environment.name,
                "current_build_id": environment.current_build_id,
                "url": format!("/api/v1/namespaces/{}/environments/{}", environment.namespace, environment.name),
            })
        })
        .collect();
    Ok(Json(json!({ "namespace": namespace, "environments": environments })))
}

/// Accepts an `environment.yml` (or the same as JSON) and queues a build.
pub async fn submit_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Developer).await?;
    let name: EnvironmentName = name.parse()?;
    let spec = read_spec(&headers, body).await?;
    let policy = app.default_policy.tightened_by(&app.db.namespace_policy(&namespace).await?);
    let spec = policy.apply(spec)?;
    let canonical = spec.canonicalize(&app.allowlist, app.default_platform)?;
    policy.check_canonical(&canonical)?;
    if let Some(max) = policy.max_environments
        && app.db.environment(&namespace, &name).await?.is_none()
        && app.db.count_environments(&namespace).await? >= i64::try_from(max).unwrap_or(i64::MAX)
    {
        return Err(envstore_core::PolicyError::Violated {
            rule: "max_environments",
            message: format!("namespace '{namespace}' already holds {max} environments, its limit"),
        }
        .into());
    }
    let submitted = app.db.submit_build(&namespace, &name, &canonical).await?;
    if !submitted.joined {
        app.events.submitted();
    }
    let build = submitted.build;
    app.audit(
        &caller,
        "environment.submit",
        &format!("{namespace}/{name}"),
        json!({ "build_id": build.id, "spec_hash": build.spec_hash, "joined": submitted.joined }),
    )
    .await?;
    tracing::info!(namespace = %namespace, environment = %name, build = %build.id, joined = submitted.joined, by = caller.subject.as_deref(), "build submitted");
    let url = format!("/api/v1/builds/{}", build.id);
    let body = json!({
        "build_id": build.id,
        "status": build.status,
        "spec_hash": build.spec_hash,
        "joined": submitted.joined,
        "url": url,
    });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The spec in a request body: JSON when the content type says so,
/// environment.yml otherwise, at most [`MAX_SPEC_BYTES`].
pub(crate) async fn read_spec(headers: &HeaderMap, body: Body) -> Result<EnvironmentSpec, ApiError> {
    let body = axum::body::to_bytes(body, MAX_SPEC_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge { limit: MAX_SPEC_BYTES })?;
    let format = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    {
        Some(content_type) if content_type.contains("json") => SpecFormat::Json,
        _ => SpecFormat::Yaml,
    };
    Ok(EnvironmentSpec::parse(&body, format)?)
}

pub async fn get_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (namespace, name, environment) = existing_environment(&app, &caller, &namespace, &name).await?;
    let history = app.db.environment_builds(&namespace, &name).await?;
    let current_id = environment.current_build_id.as_deref();
    let current = match history.iter().find(|build| Some(build.id.as_str()) == current_id) {
        Some(build) => Some(build_view(&app, build.clone()).await?),
        None => None,
    };
    let prefix = current
        .as_ref()
        .and_then(|build| build.lock_hash.as_deref())
        .and_then(|hash| hash.parse::<ContentHash>().ok())
        .map(|hash| app.prefixes_root.join(hash.short()).display().to_string());
    let history: Vec<BuildSummary> = history
        .iter()
        .map(|build| BuildSummary::new(build, current_id))
        .collect();
    Ok(Json(json!({
        "namespace": namespace,
        "name": name,
        "created_at": environment.created_at,
        "current_build": current,
        "prefix": prefix,
        "history": history,
    })))
}

#[derive(Debug, Deserialize)]
pub struct LockfileQuery {
    format: Option<String>,
    platform: Option<String>,
}

/// The current lock of an environment in the asked format, tagged with the
/// lock hash so clients can revalidate cheaply. The environment's current
/// lock is read fresh on every request (one round trip), so a build that
/// just finished anywhere is served at once; the rest comes from caches.
pub async fn get_lockfile(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LockfileQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let not_found = || {
        ApiError::NotFound(format!(
            "environment '{namespace}/{}' was not found",
            name.escape_debug()
        ))
    };
    let name: EnvironmentName = name.parse().map_err(|_| not_found())?;
    let current = app.db.current_lock(&namespace, &name).await?.ok_or_else(not_found)?;
    let no_lock = || ApiError::NotFound(format!("environment '{namespace}/{name}' has no successful build yet"));
    let lock_hash: ContentHash = current
        .lock_hash
        .as_deref()
        .and_then(|hash| hash.parse().ok())
        .ok_or_else(no_lock)?;
    let format = LockfileFormat::parse(query.format.as_deref())?;
    let file = match format {
        LockfileFormat::CondaLock => artifact::CONDA_LOCK.to_owned(),
        LockfileFormat::Pixi => artifact::PIXI_LOCK.to_owned(),
        LockfileFormat::Explicit => {
            let platforms = app.db.lock_platforms(&lock_hash.to_hex()).await?.unwrap_or_default();
            artifact::explicit(&explicit_platform(&platforms, query.platform.as_deref())?)
        }
    };
    let etag = format!("\"{lock_hash}\"");
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let bytes = app.store.get_lock_artifact(&lock_hash, &file).await?;
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

/// A build with its spec and, once locked, its packages.
pub(crate) async fn build_view(app: &AppState, build: BuildRecord) -> Result<BuildView, ApiError> {
    let spec = app.db.spec(&build.spec_hash).await?;
    let packages = match &build.lock_hash {
        Some(hash) => app.db.lock(hash).await?.map(|lock| lock.packages),
        None => None,
    };
    Ok(BuildView::new(build, spec, packages))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentBuild {
    build_id: String,
}

/// Rolls an environment back (or forward) to one of its succeeded builds:
/// the database first, then the environment link, swapped atomically.
pub async fn set_current_build(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Developer).await?;
    let request: CurrentBuild = crate::routes::namespaces::parse_json(&body, "{\"build_id\": \"…\"}")?;
    let (namespace, name, _) = existing_environment(&app, &caller, namespace.as_str(), &name).await?;
    if !app.db.set_current_build(&namespace, &name, &request.build_id).await? {
        return Err(ApiError::Conflict(format!(
            "build '{}' is not a succeeded build of '{namespace}/{name}'",
            request.build_id.escape_debug()
        )));
    }
    let build = app
        .db
        .build(&request.build_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build '{}' was not found", request.build_id)))?;
    let prefix = build
        .lock_hash
        .as_deref()
        .and_then(|hash| hash.parse::<ContentHash>().ok())
        .map(|hash| app.prefixes_root.join(hash.short()))
        .filter(|prefix| prefix.join(envstore_link::MARKER_FILE).is_file());
    if let Some(prefix) = &prefix {
        let link = app.environments_root.join(namespace.as_str()).join(name.as_str());
        envstore_link::point_environment(&link, prefix).map_err(|error| {
            ApiError::Conflict(format!("the environment link could not be swapped: {error}"))
        })?;
    }
    app.audit(&caller, "environment.rollback", &format!("{namespace}/{name}"), json!({ "build_id": build.id }))
        .await?;
    Ok(Json(json!({
        "namespace": namespace,
        "name": name,
        "current_build_id": build.id,
        "prefix": prefix.map(|prefix| prefix.display().to_string()),
    })))
}

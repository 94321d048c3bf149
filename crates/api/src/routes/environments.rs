use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use envstore_core::body_limits;
use envstore_core::spec::MAX_SPEC_BYTES;
use envstore_core::{
    ContentHash, EnvironmentName, EnvironmentSpec, NamespaceName, Role, SpecFormat,
};
use envstore_db::{BuildRecord, EnvironmentRecord, IdempotencyKey, Submission, SubmittedBuild};
use envstore_store::artifact;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::idempotency;
use crate::routes::namespaces::{ListQuery, authorized_namespace};
use crate::routes::{LockfileFormat, cache_control, explicit_platform, if_none_match};
use crate::views::{BuildSummary, BuildView};
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
        (status = 200, description = "Environments with their current build.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn list_environments(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
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
    let environments: Vec<Value> = page
        .into_iter()
        .map(|environment| {
            json!({
                "url": format!("/api/v1/namespaces/{namespace}/environments/{}", environment.name),
                "name": environment.name,
                "created_at": environment.created_at,
                "current_build_id": environment.current_build_id,
                "current_status": environment.current_status,
                "latest_build_id": environment.latest_build_id,
                "latest_status": environment.latest_status,
                "latest_created_at": environment.latest_created_at,
            })
        })
        .collect();
    Ok(Json(
        json!({ "namespace": namespace, "environments": environments, "next_after": next_after }),
    ))
}

/// Accepts an `environment.yml` (or the same as JSON) and queues a build.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/environments/{name}",
    tag = "environments",
    params(crate::openapi::EnvironmentPath, ("Idempotency-Key" = Option<String>, Header, description = "Optional: 1 to 255 visible ASCII characters (a UUID v7, say), fresh per request. Sent again with the same request within 24 h, the first answer is repeated (with `Idempotent-Replayed: true`) and no second build is queued; sent with a different request, 422.")),
    request_body(content = String, content_type = "application/yaml", description = "An environment.yml (or the same as JSON with `Content-Type: application/json`)."),
    responses(
        (status = 202, description = "A build was queued (or the same spec's build under way joined).", body = serde_json::Value, headers(("Idempotent-Replayed" = String, description = "`true` when this is the kept answer of an earlier request with the same Idempotency-Key."))),
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
        &canonical,
        key.as_ref(),
    )
    .await
}

/// The answer kept under `key`, sent again (or 422 when the key was used
/// for another request); None when the key is new. Checked before any
/// expensive work (solving, verifying a lock against its channels).
pub(crate) async fn replay_if_known(
    app: &AppState,
    key: Option<&IdempotencyKey>,
) -> Result<Option<Response>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    match app.db.idempotent_answer(&key.caller, &key.key).await? {
        Some(stored) => idempotency::replay(stored, key).map(Some),
        None => Ok(None),
    }
}

/// Queues a build of `canonical` for `namespace/name` (or joins the same
/// spec's build already under way) and answers 202 with the build; under
/// an idempotency key, the key's first answer when it was used already.
pub(crate) async fn queue_build(
    app: &AppState,
    caller: &Caller,
    namespace: &NamespaceName,
    name: &EnvironmentName,
    policy: &envstore_core::Policy,
    canonical: &envstore_core::CanonicalSpec,
    key: Option<&IdempotencyKey>,
) -> Result<Response, ApiError> {
    let answer = |summary: &Value| (StatusCode::ACCEPTED, summary.clone());
    let queued = match queue(app, caller, namespace, name, policy, canonical, key, answer).await? {
        Queued::New(queued) => queued,
        Queued::Replayed(stored, key) => return idempotency::replay(stored, &key),
    };
    let location = queued["url"]
        .as_str()
        .and_then(|url| HeaderValue::from_str(url).ok());
    let mut response = (StatusCode::ACCEPTED, Json(queued)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// What [`queue`] came to.
enum Queued {
    /// The build's summary (queued now, or joined).
    New(Value),
    /// The idempotency key was used already: its kept answer.
    Replayed(envstore_db::StoredAnswer, IdempotencyKey),
}

/// What [`queue_build`] does, with the build's summary as JSON (its id,
/// status, spec hash, whether it joined one under way, and its URL).
/// `answer` makes the HTTP answer from the summary, kept under `key` in the
/// build's transaction.
#[allow(clippy::too_many_arguments)]
async fn queue(
    app: &AppState,
    caller: &Caller,
    namespace: &NamespaceName,
    name: &EnvironmentName,
    policy: &envstore_core::Policy,
    canonical: &envstore_core::CanonicalSpec,
    key: Option<&IdempotencyKey>,
    answer: impl FnOnce(&Value) -> (StatusCode, Value),
) -> Result<Queued, ApiError> {
    if let Some(max) = policy.max_environments
        && app.db.environment(namespace, name).await?.is_none()
        && app.db.count_environments(namespace).await? >= i64::try_from(max).unwrap_or(i64::MAX)
    {
        return Err(envstore_core::PolicyError::Violated {
            rule: "max_environments",
            message: format!("namespace '{namespace}' already holds {max} environments, its limit"),
        }
        .into());
    }
    crate::routes::check_quota(app, namespace, name, canonical).await?;
    let summary = |submitted: &SubmittedBuild| {
        let build = &submitted.build;
        json!({
            "build_id": build.id,
            "status": build.status,
            "spec_hash": build.spec_hash,
            "joined": submitted.joined,
            "url": format!("/api/v1/builds/{}", build.id),
        })
    };
    let keep = |submitted: &SubmittedBuild| {
        let (status, body) = answer(&summary(submitted));
        (status.as_u16(), body.to_string())
    };
    let submitted = match app
        .db
        .submit_build_once(
            namespace,
            name,
            canonical,
            caller.subject.as_deref(),
            key,
            keep,
        )
        .await?
    {
        Submission::Submitted(submitted) => *submitted,
        Submission::Replayed(stored) => {
            let key = key
                .cloned()
                .ok_or_else(|| ApiError::Conflict("a kept answer without a key".to_owned()))?;
            return Ok(Queued::Replayed(stored, key));
        }
    };
    if !submitted.joined {
        app.events.submitted();
    }
    let build = &submitted.build;
    app.audit(
        caller,
        "environment.submit",
        &format!("{namespace}/{name}"),
        json!({ "build_id": build.id, "spec_hash": build.spec_hash, "joined": submitted.joined, "from_lock": canonical.from_lock }),
    )
    .await?;
    tracing::info!(namespace = %namespace, environment = %name, build = %build.id, joined = submitted.joined, by = caller.subject.as_deref(), "build submitted");
    Ok(Queued::New(summary(&submitted)))
}

/// The spec in a request body: JSON when the content type says so,
/// environment.yml otherwise, at most [`MAX_SPEC_BYTES`] nesting at most
/// [`body_limits::MAX_NESTING`] levels, parsed off the async runtime.
pub(crate) async fn read_spec(
    headers: &HeaderMap,
    body: Body,
) -> Result<EnvironmentSpec, ApiError> {
    parse_spec(headers, read_body(body, MAX_SPEC_BYTES).await?).await
}

/// A request body of at most `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge { limit })
}

/// [`read_spec`] of a body already read.
async fn parse_spec(
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Result<EnvironmentSpec, ApiError> {
    let format = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    {
        Some(content_type) if content_type.contains("json") => SpecFormat::Json,
        _ => SpecFormat::Yaml,
    };
    // Refused before the parser sees it: libyaml's time grows with the body
    // times its nesting.
    match format {
        SpecFormat::Json => body_limits::check_json(&body, body_limits::MAX_NESTING)?,
        SpecFormat::Yaml => body_limits::check_yaml(&body, body_limits::MAX_NESTING)?,
    }
    crate::routes::parse_off_runtime(move || EnvironmentSpec::parse(&body, format)).await
}

/// An environment: its current build, its prefix on this node and the
/// history of its builds.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/environments/{name}",
    tag = "environments",
    params(crate::openapi::EnvironmentPath),
    responses(
        (status = 200, description = "The current build, its prefix and the history.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
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
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/environments/{name}/lockfile",
    tag = "lockfiles",
    params(crate::openapi::EnvironmentPath, ("format" = Option<String>, Query, description = "conda-lock (default), pixi or explicit."), ("platform" = Option<String>, Query, description = "The platform of an explicit file.")),
    responses(
        (status = 200, description = "The current lockfile; `ETag` is the lock hash.", body = String, content_type = "application/yaml"),
        (status = 304, description = "`If-None-Match` names the current lock."),
        (status = 400, description = "Unknown format, or a platform is needed.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
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
    let current = app
        .db
        .current_lock(&namespace, &name)
        .await?
        .ok_or_else(not_found)?;
    let no_lock = || {
        ApiError::NotFound(format!(
            "environment '{namespace}/{name}' has no successful build yet"
        ))
    };
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
            let platforms = app
                .db
                .lock_platforms(&lock_hash.to_hex())
                .await?
                .unwrap_or_default();
            artifact::explicit(&explicit_platform(&platforms, query.platform.as_deref())?)
        }
    };
    let etag = format!("\"{lock_hash}\"");
    // A private namespace's lock needed a token: no shared cache may keep it.
    let public = app.db.namespace_public_read(namespace.as_str()).await? == Some(true);
    let cache_control = cache_control(public, "no-cache");
    if if_none_match(&headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
        )
            .into_response());
    }
    let bytes = app.store.get_lock_artifact(&lock_hash, &file).await?;
    // Counted in memory and flushed in batches: this GET is a hot path.
    app.db.count_lockfile_download(namespace.as_str());
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache_control),
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
    request_body(content = serde_json::Value, content_type = "application/json", description = "`{\"build_id\": …}` of a succeeded build"),
    responses(
        (status = 200, description = "The build is current.", body = serde_json::Value),
        (status = 202, description = "Its prefix was collected: `rebuild` names the build restoring it from the lock, which becomes current when it succeeds. Kept under an Idempotency-Key (a 200 is not: doing it again is harmless).", body = serde_json::Value, headers(("Idempotent-Replayed" = String, description = "`true` when this is the kept answer of an earlier request with the same Idempotency-Key."))),
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
    let request: CurrentBuild =
        crate::routes::namespaces::parse_json(&body, "{\"build_id\": \"…\"}")?;
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
        .filter(|prefix| prefix.join(envstore_link::MARKER_FILE).is_file());
    if build.prefix_collected_at.is_some() && prefix.is_none() {
        let answer = |rebuild: &Value| {
            let body = json!({
                "namespace": namespace,
                "name": name,
                "current_build_id": environment.current_build_id,
                "prefix": null,
                "rebuild": rebuild,
            });
            (StatusCode::ACCEPTED, body)
        };
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
            json!({ "build_id": build.id, "rebuild_build_id": rebuild["build_id"] }),
        )
        .await?;
        return Ok((StatusCode::ACCEPTED, Json(answer(&rebuild).1)).into_response());
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
    Ok(Json(json!({
        "namespace": namespace,
        "name": name,
        "current_build_id": build.id,
        "prefix": prefix.map(|prefix| prefix.display().to_string()),
        "rebuild": null,
    }))
    .into_response())
}

/// Queues a build that installs `build`'s lock again, with its variables.
async fn rebuild_from_lock(
    app: &AppState,
    caller: &Caller,
    namespace: &NamespaceName,
    name: &EnvironmentName,
    build: &BuildRecord,
    key: Option<&IdempotencyKey>,
    answer: impl FnOnce(&Value) -> (StatusCode, Value),
) -> Result<Queued, ApiError> {
    let missing = || {
        ApiError::Conflict(format!(
            "build '{}' has no lock to rebuild its prefix from",
            build.id
        ))
    };
    let lock_hash: ContentHash = build
        .lock_hash
        .as_deref()
        .and_then(|hash| hash.parse().ok())
        .ok_or_else(missing)?;
    let lock = app
        .db
        .lock(&lock_hash.to_hex())
        .await?
        .ok_or_else(missing)?;
    let spec = app.db.spec(&build.spec_hash).await?.ok_or_else(missing)?;
    let canonical = envstore_core::CanonicalSpec::from_lock(
        lock_hash,
        spec.channels,
        lock.platforms,
        lock.variables,
    );
    let policy = app
        .default_policy
        .tightened_by(&app.db.namespace_policy(namespace).await?);
    queue(
        app, caller, namespace, name, &policy, &canonical, key, answer,
    )
    .await
}

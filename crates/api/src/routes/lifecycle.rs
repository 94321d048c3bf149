//! An environment's life beyond submitting specs: installing a lockfile as
//! it is, and deleting environments and namespaces (soft: hidden at once,
//! cleaned by garbage collection).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use envstore_core::{CanonicalSpec, EnvironmentName, NamespaceName, Role};
use envstore_solve::Lock;
use envstore_store::{artifact, keys};
use serde_json::{Value, json};
use url::Url;

use crate::auth::Caller;
use crate::routes::environments::{queue_build, read_body, replay_if_known};
use crate::routes::namespaces::authorized_namespace;
use crate::{ApiError, AppState};

/// Largest lockfile accepted: a conda-lock file of a few hundred packages on
/// several platforms is well under a megabyte.
pub const MAX_LOCKFILE_BYTES: usize = 16 * 1024 * 1024;

/// Installs a lockfile as it is, without solving: `pixi.lock` or
/// conda-lock's `conda-lock.yml`, as `GET …/lockfile` serves them. The lock
/// must keep to the namespace's policy (channels, platforms, required
/// packages); it keeps its hash, so a lock exported here names the same
/// prefix again.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/environments/{name}/lockfile",
    tag = "environments",
    params(crate::openapi::EnvironmentPath, ("Idempotency-Key" = Option<String>, Header, description = "Optional: 1 to 255 visible ASCII characters (a UUID v7, say), fresh per request. Sent again with the same request within 24 h, the first answer is repeated (with `Idempotent-Replayed: true`) and no second build is queued; sent with a different request, 422.")),
    request_body(content = String, content_type = "application/yaml", description = "A pixi.lock or conda-lock.yml (v1)."),
    responses(
        (status = 202, description = "A build installing the lock as it is was queued.", body = serde_json::Value, headers(("Idempotent-Replayed" = String, description = "`true` when this is the kept answer of an earlier request with the same Idempotency-Key."))),
        (status = 400, description = "The Idempotency-Key is longer than 255 bytes or not visible ASCII.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a usable lockfile, or outside the namespace's policy, or the Idempotency-Key was already used for a different request.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer; `Retry-After` says when to try again (with the same Idempotency-Key).", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The namespace is at its concurrent-build quota.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn submit_lockfile(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Developer).await?;
    let name: EnvironmentName = name.parse()?;
    let body = read_body(body, MAX_LOCKFILE_BYTES).await?;
    let key = crate::idempotency::request_key(&caller, &headers, &Method::PUT, uri.path(), &body)?;
    // Before the lock is checked against its channels: a retry costs nothing.
    if let Some(replayed) = replay_if_known(&app, key.as_ref()).await? {
        return Ok(replayed);
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("the lockfile is not UTF-8 text".to_owned()))?;
    envstore_core::body_limits::check_yaml(
        text.as_bytes(),
        envstore_core::body_limits::MAX_NESTING,
    )?;
    let lock = crate::routes::parse_off_runtime(move || {
        Lock::parse_lockfile(&text).map_err(ApiError::InvalidLockfile)
    })
    .await?;
    let policy = app
        .default_policy
        .tightened_by(&app.db.namespace_policy(&namespace).await?);
    let packages: BTreeMap<String, Vec<(String, Url)>> = lock
        .platforms()
        .map(|platform| {
            let records = lock.records(platform).unwrap_or_default();
            let named = records
                .iter()
                .map(|record| {
                    (
                        record.package_record.name.as_normalized().to_owned(),
                        record.url.clone(),
                    )
                })
                .collect();
            (platform.to_owned(), named)
        })
        .collect();
    policy.check_lock(&app.allowlist, lock.channels(), &packages)?;
    // The hash covers URLs and checksums only: before anything is kept
    // under it, every record must be the channel's own (see
    // `envstore_solve::VerifyError`), and what is kept is the channel's.
    let lock = app.solver.verify_lock(&lock).await?;
    // The worker reads the lock from its content-addressed pixi.lock, where
    // the build that publishes it would put it anyway.
    app.store
        .put_immutable(
            &keys::lock_artifact(&lock.hash(), artifact::PIXI_LOCK),
            Bytes::from(lock.render_pixi_lock()?),
        )
        .await?;
    let canonical = CanonicalSpec::from_lock(
        lock.hash(),
        lock.channels().iter().map(Url::to_string).collect(),
        lock.platforms().map(str::to_owned).collect(),
        BTreeMap::new(),
    );
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
        (status = 200, description = "Deleted: hidden at once, builds stopped, cleaned by garbage collection.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn delete_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "namespace": namespace,
        "name": environment,
        "deleted": true,
        "builds": deleted.builds,
        "stopped_builds": deleted.stopped,
        "cleanup": "its link, unshared prefixes, logs and records are removed by the next garbage collection (envstore gc)",
    })))
}

/// Deletes a namespace (server admins), with every environment in it and
/// the role bindings that name it; cleaned like a deleted environment.
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{namespace}",
    tag = "namespaces",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "Deleted: hidden at once, cleaned by garbage collection.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn delete_namespace(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_server_admin()?;
    let not_found = || {
        ApiError::NotFound(format!(
            "namespace '{}' was not found",
            namespace.escape_debug()
        ))
    };
    let name: NamespaceName = namespace.parse().map_err(|_| not_found())?;
    let deleted = app
        .db
        .delete_namespace(&name)
        .await?
        .ok_or_else(not_found)?;
    app.audit(
        &caller,
        "namespace.delete",
        name.as_str(),
        json!({ "environments": deleted.environments, "builds": deleted.builds, "stopped": deleted.stopped }),
    )
    .await?;
    tracing::info!(namespace = %name, by = caller.subject.as_deref(), "namespace deleted");
    Ok(Json(json!({
        "namespace": name,
        "deleted": true,
        "environments": deleted.environments,
        "builds": deleted.builds,
        "stopped_builds": deleted.stopped,
        "cleanup": "environment links, unshared prefixes, logs and records are removed by the next garbage collection (envstore gc)",
    })))
}

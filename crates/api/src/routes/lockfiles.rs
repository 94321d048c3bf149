//! An environment's lockfile: `GET …/lockfile` serves the current one in
//! the asked format; `PUT …/lockfile` installs one as it is, without
//! solving.

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use envstore_core::{CanonicalSpec, ContentHash, EnvironmentName, Role};
use envstore_solve::Lock;
use envstore_store::{artifact, keys};
use serde::Deserialize;
use url::Url;

use crate::auth::{Caller, authorized_namespace};
use crate::extract::{parse_off_runtime, read_body};
use crate::http_cache::{cache_control, if_none_match};
use crate::lockfile_format::{
    ExportFormat, LockfileFormat, PinnedPackage, environment_platform, explicit_platform,
    pinned_environment_yml,
};
use crate::submission::{queue_build, replay_if_known};
use crate::{ApiError, AppState};

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
    params(crate::openapi::EnvironmentPath, ("format" = Option<String>, Query, description = "conda-lock (default), pixi, explicit (an `@EXPLICIT` list) or environment (an environment.yml with `name`, the lock's `channels` and every package pinned as `name=version=build`, for `conda env create -f`)."), ("platform" = Option<String>, Query, description = "The platform of an explicit file (optional when the lock has one) or of an environment.yml (required).")),
    responses(
        (status = 200, description = "The current lockfile; `ETag` is the lock hash.", content((String = "application/yaml"), (String = "text/plain"))),
        (status = 304, description = "`If-None-Match` names the current lock."),
        (status = 400, description = "Unknown format, or a platform is needed (an environment.yml needs one the lock has).", body = crate::openapi::Problem, content_type = "application/problem+json"),
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
    let format = ExportFormat::parse(query.format.as_deref())?;
    let platforms = || async {
        Ok::<_, ApiError>(
            app.db
                .lock_platforms(&lock_hash.to_hex())
                .await?
                .unwrap_or_default(),
        )
    };
    // A pinned environment.yml is made from the pixi.lock, for this platform.
    let mut pinned_platform = None;
    let file = match format {
        ExportFormat::Lockfile(LockfileFormat::CondaLock) => artifact::CONDA_LOCK.to_owned(),
        ExportFormat::Lockfile(LockfileFormat::Pixi) => artifact::PIXI_LOCK.to_owned(),
        ExportFormat::Lockfile(LockfileFormat::Explicit) => artifact::explicit(&explicit_platform(
            &platforms().await?,
            query.platform.as_deref(),
        )?),
        ExportFormat::Environment => {
            pinned_platform = Some(environment_platform(
                &platforms().await?,
                query.platform.as_deref(),
            )?);
            artifact::PIXI_LOCK.to_owned()
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
    let mut bytes = app.store.get_lock_artifact(&lock_hash, &file).await?;
    if let Some(platform) = pinned_platform {
        bytes = pinned_environment(bytes, name.to_string(), platform).await?;
    }
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

/// The pinned `environment.yml` of one platform of a `pixi.lock`, named
/// `name`; parsed off the runtime (a lock can hold thousands of packages).
async fn pinned_environment(
    pixi_lock: Bytes,
    name: String,
    platform: String,
) -> Result<Bytes, ApiError> {
    parse_off_runtime(move || {
        // Written by envstore, so a failure here is the server's (500).
        let lock = Lock::parse_lockfile(&String::from_utf8_lossy(&pixi_lock))?;
        let records = lock.records(&platform).unwrap_or_default();
        let packages = records.iter().map(|record| PinnedPackage {
            name: record.package_record.name.as_normalized(),
            version: record.package_record.version.to_string(),
            build: record.package_record.build.as_str(),
        });
        let channels = lock.channels().iter().map(Url::as_str);
        Ok::<_, ApiError>(Bytes::from(pinned_environment_yml(
            &name, channels, packages,
        )))
    })
    .await
}

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
        (status = 202, description = "A build installing the lock as it is was queued.", body = envstore_api_types::BuildQueued, headers(("Idempotent-Replayed" = String, description = "`true` when this is the kept answer of an earlier request with the same Idempotency-Key."))),
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
    let lock =
        parse_off_runtime(move || Lock::parse_lockfile(&text).map_err(ApiError::InvalidLockfile))
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
    let wheels: BTreeMap<String, Vec<(String, Url)>> = lock
        .pypi_packages()
        .into_iter()
        .map(|(platform, wheels)| {
            let named = wheels
                .into_iter()
                .filter_map(|wheel| Some((wheel.name, Url::parse(&wheel.url).ok()?)))
                .collect();
            (platform, named)
        })
        .collect();
    policy.check_lock_wheels(&wheels)?;
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
        (&canonical, None),
        key.as_ref(),
    )
    .await
}

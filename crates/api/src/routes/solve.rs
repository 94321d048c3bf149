//! `POST /api/v1/namespaces/{ns}/solve`: a spec solved and locked under the
//! namespace's policy, without a build. CI pins with it what it would get,
//! before anything is queued or installed; nothing is stored.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use envstore_core::Role;
use envstore_solve::Lock;
use rattler_conda_types::Subdir;
use serde::Deserialize;

use crate::auth::Caller;
use crate::auth::authorized_namespace;
use crate::extract::read_spec;
use crate::lockfile_format::{LockfileFormat, explicit_platform};
use crate::{ApiError, AppState};

/// The response header naming the lock's content hash, the same hash a
/// build of the spec would publish its lockfiles under.
pub const LOCK_HASH_HEADER: &str = "x-envstore-lock-hash";

#[derive(Debug, Deserialize)]
pub struct SolveQuery {
    /// `conda-lock` (default), `pixi` or `explicit`.
    format: Option<String>,
    /// Platforms to lock for, comma-separated, instead of the spec's own.
    platforms: Option<String>,
    /// The platform of an `explicit` file when the lock has several.
    platform: Option<String>,
}

/// Solves a spec under the namespace's policy and returns its lockfile,
/// building and storing nothing: what CI pins before (or instead of) a build.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{namespace}/solve",
    tag = "lockfiles",
    params(crate::openapi::NamespacePath, ("format" = Option<String>, Query, description = "conda-lock (default), pixi or explicit."), ("platforms" = Option<String>, Query, description = "Comma-separated platforms instead of the spec's."), ("platform" = Option<String>, Query, description = "The platform of an explicit file.")),
    request_body(content = String, content_type = "application/yaml", description = "An environment.yml (or the same as JSON with `Content-Type: application/json`)."),
    responses(
        (status = 200, description = "The lockfile; `X-Envstore-Lock-Hash` names the lock.", body = String, content_type = "application/yaml"),
        (status = 422, description = "Unsolvable (with the solver's explanation), or refused by the policy.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn solve_spec(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    Query(query): Query<SolveQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Developer).await?;
    let format = LockfileFormat::parse(query.format.as_deref())?;
    let mut spec = read_spec(&headers, body).await?;
    if let Some(platforms) = &query.platforms {
        spec.platforms = parse_platforms(platforms)?;
    }
    let policy = app
        .default_policy
        .tightened_by(&app.db.namespace_policy(&namespace).await?);
    let spec = policy.apply(spec)?;
    let canonical = spec.canonicalize(&app.allowlist, app.default_platform)?;
    policy.check_canonical(&canonical)?;

    let (solved, wheels) = {
        let _permit = app
            .solve_permits
            .acquire()
            .await
            .map_err(|_| ApiError::BadRequest("the server is shutting down".to_owned()))?;
        let solved = app.solver.solve(&canonical).await?;
        let wheels = envstore_pypi::resolve_solved(&canonical, &solved, &app.pypi_index).await?;
        (solved, wheels)
    };
    // As a build of the spec in this namespace locks it: with its
    // variables, and so (when it has any) under this namespace's own hash.
    let lock = Lock::new(solved)
        .with_pypi(wheels)
        .with_variables(canonical.variables.clone())
        .for_namespace(namespace.as_str());
    let text = match format {
        LockfileFormat::CondaLock => lock.render_conda_lock()?,
        LockfileFormat::Pixi => lock.render_pixi_lock()?,
        LockfileFormat::Explicit => {
            let platforms: Vec<String> = lock.platforms().map(str::to_owned).collect();
            lock.render_explicit(&explicit_platform(&platforms, query.platform.as_deref())?)?
        }
    };
    tracing::debug!(namespace = %namespace, lock = %lock.hash(), by = caller.subject.as_deref(), "spec solved without a build");
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], text).into_response();
    if let Ok(value) = HeaderValue::from_str(&lock.hash().to_string()) {
        response.headers_mut().insert(LOCK_HASH_HEADER, value);
    }
    Ok(response)
}

fn parse_platforms(text: &str) -> Result<Vec<Subdir>, ApiError> {
    text.split(',')
        .map(str::trim)
        .filter(|platform| !platform.is_empty())
        .map(|platform| match platform.parse::<Subdir>() {
            Ok(subdir) if subdir != Subdir::NoArch => Ok(subdir),
            _ => Err(ApiError::BadRequest(format!(
                "unknown platform '{}' in ?platforms= (e.g. linux-64,osx-arm64)",
                platform.escape_debug()
            ))),
        })
        .collect()
}

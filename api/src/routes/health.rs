//! What operators and orchestrators ask of a node: is the process alive, can
//! it serve (database and store answer), and what it has been doing.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use envstore_core::error_chain;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// How long a readiness check waits for each dependency. The object store
/// retries a refused connection for minutes; a probe must answer well
/// before the orchestrator gives up on it.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers when the database answers.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers.", body = serde_json::Value),
        (status = 500, description = "The database does not answer.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn health(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.db.ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}

/// Liveness: the process answers HTTP. It checks no dependency, so an
/// outage of the database or the store never gets healthy processes
/// restarted; readiness takes them out of rotation instead.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The process answers.", body = serde_json::Value)
    ),
    security((), ("bearer" = []))
)]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database and the object store both answer. A 503 names
/// the ones that did not in `failed`; the log says why.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "The database and the store answer.", body = serde_json::Value),
        (status = 503, description = "A dependency does not answer; `failed` names it.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn ready(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (database, store) = tokio::join!(
        tokio::time::timeout(READY_CHECK_TIMEOUT, app.db.ping()),
        tokio::time::timeout(READY_CHECK_TIMEOUT, app.store.check()),
    );
    let mut failed = Vec::new();
    match database {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(error = %error_chain(&error), "not ready: the database does not answer");
            failed.push("database");
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_CHECK_TIMEOUT, "not ready: the database does not answer in time");
            failed.push("database");
        }
    }
    match store {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(error = %error_chain(&error), "not ready: the object store does not answer");
            failed.push("store");
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_CHECK_TIMEOUT, "not ready: the object store does not answer in time");
            failed.push("store");
        }
    }
    if failed.is_empty() {
        return Ok(Json(json!({ "status": "ready", "checks": { "database": "ok", "store": "ok" } })));
    }
    let named: Vec<String> = failed.iter().map(|name| format!("the {name}")).collect();
    let detail = format!("not ready: {} did not answer", named.join(" and "));
    Err(ApiError::NotReady { failed, detail })
}

/// The Prometheus exposition. Anyone may read it, as `/health`: scrapers
/// hold no token, and its labels are fixed sets (route templates, states,
/// phases), never a namespace, environment or subject, so it says how busy
/// the service is and nothing of what it holds.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The Prometheus text exposition.", body = String, content_type = "text/plain; version=0.0.4")
    ),
    security((), ("bearer" = []))
)]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)],
        crate::prometheus::render(&app.db).await,
    )
}

//! What operators and orchestrators ask of a node: is the process alive, can
//! it serve (database and store answer), and what it has been doing.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use envstore_api_types::{Liveness, Readiness};

use crate::{ApiError, AppState};

/// Answers when the database answers.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers.", body = Liveness),
        (status = 503, description = "The database does not answer; `Retry-After` says when to ask again.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn health(State(app): State<AppState>) -> Result<Json<Liveness>, ApiError> {
    app.db.ping().await?;
    Ok(Json(Liveness::ok()))
}

/// Liveness: the process answers HTTP. It checks no dependency, so an
/// outage of the database or the store never gets healthy processes
/// restarted; readiness takes them out of rotation instead.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The process answers.", body = Liveness)
    ),
    security((), ("bearer" = []))
)]
pub async fn live() -> Json<Liveness> {
    Json(Liveness::ok())
}

/// Readiness: the database answers and takes a write, the object store
/// answers, and the data folder takes a file. A 503 names the ones that
/// did not in `failed` (`database`, `store`, `data_folder`) and why in
/// `detail`; checked afresh each time, so it recovers on its own.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "The database takes writes, the store answers, the data folder can be written.", body = Readiness),
        (status = 503, description = "A dependency does not answer or cannot be written; `failed` names it, `detail` says why.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn ready(State(app): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let readiness = crate::readiness::Readiness {
        db: app.db.clone(),
        store: app.store.clone(),
        data_dir: app.data_dir.clone(),
    };
    Ok(Json(readiness.check().await?))
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

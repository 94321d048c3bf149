mod builds;
mod environments;
mod health;
mod locks;
mod namespaces;

use axum::Router;
use axum::routing::get;

use crate::{ApiError, AppState};

/// All routes of the API, in one place.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health::health))
        .route(
            "/api/v1/namespaces",
            get(namespaces::list_namespaces).post(namespaces::create_namespace),
        )
        .route("/api/v1/namespaces/{namespace}", get(namespaces::get_namespace))
        .route(
            "/api/v1/namespaces/{namespace}/environments",
            get(environments::list_environments),
        )
        .route(
            "/api/v1/namespaces/{namespace}/environments/{name}",
            get(environments::get_environment).put(environments::submit_environment),
        )
        .route(
            "/api/v1/namespaces/{namespace}/environments/{name}/lockfile",
            get(environments::get_lockfile),
        )
        .route("/api/v1/builds/{id}", get(builds::get_build))
        .route("/api/v1/builds/{id}/log", get(builds::get_build_log))
        .route("/api/v1/locks/{lock_hash}/{file}", get(locks::get_lock_artifact))
        .fallback(not_found)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such resource: {}", uri.path()))
}


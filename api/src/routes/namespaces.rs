use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use envstore_core::NamespaceName;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNamespace {
    name: String,
}

pub async fn create_namespace(
    State(app): State<AppState>,
    _admin: Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: NewNamespace = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!("expected a JSON body like {{\"name\": \"team-ml\"}}: {error}"))
    })?;
    let name: NamespaceName = request.name.parse()?;
    app.db.create_namespace(&name).await?;
    tracing::info!(namespace = %name, "namespace created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "url": format!("/api/v1/namespaces/{name}") })),
    ))
}

pub async fn list_namespaces(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let namespaces: Vec<Value> = app
        .db
        .list_namespaces()
        .await?
        .into_iter()
        .map(|(name, created_at)| json!({ "name": name, "created_at": created_at }))
        .collect();
    Ok(Json(json!({ "namespaces": namespaces })))
}

pub async fn get_namespace(
    State(app): State<AppState>,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let namespace = existing_namespace(&app, &namespace).await?;
    let environments: Vec<String> = app
        .db
        .list_environments(&namespace)
        .await?
        .into_iter()
        .map(|environment| environment.name)
        .collect();
    Ok(Json(json!({ "name": namespace, "environments": environments })))
}

/// Parses a namespace from the path and checks that it exists.
pub(crate) async fn existing_namespace(app: &AppState, name: &str) -> Result<NamespaceName, ApiError> {
    let not_found = || ApiError::NotFound(format!("namespace '{}' was not found", name.escape_debug()));
    let namespace: NamespaceName = name.parse().map_err(|_| not_found())?;
    if !app.db.namespace_exists(&namespace).await? {
        return Err(not_found());
    }
    Ok(namespace)
}

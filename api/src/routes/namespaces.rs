use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use envstore_core::{NamespaceName, Policy, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNamespace {
    name: String,
    #[serde(default)]
    public_read: bool,
}

/// Server admins create namespaces.
pub async fn create_namespace(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_server_admin()?;
    let request: NewNamespace = parse_json(&body, "{\"name\": \"team-ml\"}")?;
    let name: NamespaceName = request.name.parse()?;
    app.db.create_namespace(&name).await?;
    if request.public_read {
        app.db.set_public_read(&name, true).await?;
    }
    app.audit(&caller, "namespace.create", name.as_str(), json!({ "public_read": request.public_read }))
        .await?;
    tracing::info!(namespace = %name, by = caller.subject.as_deref(), "namespace created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "public_read": request.public_read, "url": format!("/api/v1/namespaces/{name}") })),
    ))
}

/// The namespaces the caller may view.
pub async fn list_namespaces(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut namespaces = Vec::new();
    for (name, created_at, public_read) in app.db.list_namespaces().await? {
        if caller.grants.role_in(&name, public_read).is_some() {
            namespaces.push(json!({ "name": name, "created_at": created_at, "public_read": public_read }));
        }
    }
    Ok(Json(json!({ "namespaces": namespaces })))
}

pub async fn get_namespace(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let environments: Vec<String> = app
        .db
        .list_environments(&namespace)
        .await?
        .into_iter()
        .map(|environment| environment.name)
        .collect();
    let public_read = app.db.namespace_public_read(namespace.as_str()).await?.unwrap_or(false);
    Ok(Json(json!({ "name": namespace, "public_read": public_read, "environments": environments })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Visibility {
    public_read: bool,
}

/// Namespace admins open a namespace to anonymous readers (students picking
/// environments), or close it.
pub async fn set_visibility(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let request: Visibility = parse_json(&body, "{\"public_read\": true}")?;
    app.db.set_public_read(&namespace, request.public_read).await?;
    app.audit(&caller, "namespace.visibility", namespace.as_str(), json!({ "public_read": request.public_read }))
        .await?;
    Ok(Json(json!({ "name": namespace, "public_read": request.public_read })))
}

/// Parses a namespace from the path and checks the caller's role in it.
pub(crate) async fn authorized_namespace(
    app: &AppState,
    caller: &Caller,
    name: &str,
    needed: Role,
) -> Result<NamespaceName, ApiError> {
    let not_found = || ApiError::NotFound(format!("namespace '{}' was not found", name.escape_debug()));
    let namespace: NamespaceName = name.parse().map_err(|_| not_found())?;
    caller.require(app, namespace.as_str(), needed).await?;
    Ok(namespace)
}

/// A JSON body, or a 400 that shows what was expected.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("expected a JSON body like {example}: {error}")))
}

/// A namespace's own policy and the one in effect (the server's, tightened).
pub async fn get_policy(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let own = app.db.namespace_policy(&namespace).await?;
    let effective = app.default_policy.tightened_by(&own);
    Ok(Json(json!({ "namespace": namespace, "policy": own, "effective": effective })))
}

/// Namespace admins set their namespace's policy; it can only tighten the
/// server's.
pub async fn set_policy(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let policy: Policy = parse_json(&body, "{\"required_packages\": [\"ipykernel\"]}")?;
    policy.validate()?;
    app.db.set_namespace_policy(&namespace, &policy).await?;
    app.audit(&caller, "policy.set", namespace.as_str(), serde_json::to_value(&policy).unwrap_or_default())
        .await?;
    let effective = app.default_policy.tightened_by(&policy);
    Ok(Json(json!({ "namespace": namespace, "policy": policy, "effective": effective })))
}

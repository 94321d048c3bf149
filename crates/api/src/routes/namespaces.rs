use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
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
#[utoipa::path(
    post,
    path = "/api/v1/namespaces",
    tag = "namespaces",
    request_body(content = serde_json::Value, content_type = "application/json", description = "`{\"name\": \"team-ml\", \"public_read\": false}`"),
    responses(
        (status = 201, description = "The namespace was created.", body = serde_json::Value),
        (status = 409, description = "It exists already.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::SignedIn
    ),
    security(("bearer" = []))
)]
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
    app.audit(
        &caller,
        "namespace.create",
        name.as_str(),
        json!({ "public_read": request.public_read }),
    )
    .await?;
    tracing::info!(namespace = %name, by = caller.subject.as_deref(), "namespace created");
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "name": name, "public_read": request.public_read, "url": format!("/api/v1/namespaces/{name}") }),
        ),
    ))
}

/// `?limit=&after=&q=` of the listings that grow without bound: at most
/// `limit` entries after the cursor `after` (a previous page's
/// `next_after`), narrowed to those containing `q`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
    q: Option<String>,
}

impl ListQuery {
    /// Entries per page unless `?limit=` says otherwise, and the most it may say.
    const DEFAULT_LIMIT: usize = 100;
    const MAX_LIMIT: usize = 1000;

    pub(crate) fn limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }

    /// The cursor; empty: from the start.
    pub(crate) fn after(&self) -> &str {
        self.after.as_deref().unwrap_or_default()
    }

    pub(crate) fn search(&self) -> Option<&str> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|search| !search.is_empty())
    }
}

/// Namespaces read from the database per round trip while filling a page:
/// some may be invisible to the caller, so a page can take several.
const SCAN_BATCH: usize = 500;

/// The namespaces the caller may view, by name, paged with
/// `?limit=&after=<name>&q=` (`next_after` names the next page's cursor
/// while there is one).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces",
    tag = "namespaces",
    params(crate::openapi::PageQuery),
    responses(
        (status = 200, description = "The namespaces the caller may see.", body = serde_json::Value)
    ),
    security((), ("bearer" = []))
)]
pub async fn list_namespaces(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit();
    let mut cursor = query.after().to_owned();
    let mut namespaces = Vec::new();
    let mut more = false;
    'scan: loop {
        let batch = app
            .db
            .namespaces_page(&cursor, query.search(), SCAN_BATCH as i64)
            .await?;
        let exhausted = batch.len() < SCAN_BATCH;
        for namespace in batch {
            cursor.clone_from(&namespace.name);
            if caller
                .grants
                .role_in(&namespace.name, namespace.public_read)
                .is_none()
            {
                continue;
            }
            if namespaces.len() == limit {
                more = true;
                break 'scan;
            }
            namespaces.push(namespace);
        }
        if exhausted {
            break;
        }
    }
    let next_after = more
        .then(|| namespaces.last().map(|namespace| namespace.name.clone()))
        .flatten();
    let namespaces: Vec<Value> = namespaces
        .into_iter()
        .map(|namespace| {
            json!({ "name": namespace.name, "created_at": namespace.created_at, "public_read": namespace.public_read })
        })
        .collect();
    Ok(Json(
        json!({ "namespaces": namespaces, "next_after": next_after }),
    ))
}

/// A namespace, its visibility and its environments.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}",
    tag = "namespaces",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "The namespace and its environments.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
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
    let public_read = app
        .db
        .namespace_public_read(namespace.as_str())
        .await?
        .unwrap_or(false);
    Ok(Json(
        json!({ "name": namespace, "public_read": public_read, "environments": environments }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Visibility {
    public_read: bool,
}

/// Namespace admins open a namespace to anonymous readers (students picking
/// environments), or close it.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/visibility",
    tag = "namespaces",
    params(crate::openapi::NamespacePath),
    request_body(content = serde_json::Value, content_type = "application/json", description = "`{\"public_read\": true}`"),
    responses(
        (status = 200, description = "Visibility set.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn set_visibility(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let request: Visibility = parse_json(&body, "{\"public_read\": true}")?;
    app.db
        .set_public_read(&namespace, request.public_read)
        .await?;
    app.audit(
        &caller,
        "namespace.visibility",
        namespace.as_str(),
        json!({ "public_read": request.public_read }),
    )
    .await?;
    Ok(Json(
        json!({ "name": namespace, "public_read": request.public_read }),
    ))
}

/// Parses a namespace from the path and checks the caller's role in it.
pub(crate) async fn authorized_namespace(
    app: &AppState,
    caller: &Caller,
    name: &str,
    needed: Role,
) -> Result<NamespaceName, ApiError> {
    let not_found =
        || ApiError::NotFound(format!("namespace '{}' was not found", name.escape_debug()));
    let namespace: NamespaceName = name.parse().map_err(|_| not_found())?;
    caller.require(app, namespace.as_str(), needed).await?;
    Ok(namespace)
}

/// A JSON body, or a 400 that shows what was expected.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    example: &str,
) -> Result<T, ApiError> {
    envstore_core::body_limits::check_size(body, envstore_core::body_limits::MAX_JSON_BYTES)?;
    envstore_core::body_limits::check_json(body, envstore_core::body_limits::MAX_NESTING)?;
    serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!("expected a JSON body like {example}: {error}"))
    })
}

/// A namespace's own policy and the one in effect (the server's, tightened).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/policy",
    tag = "policy",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "The namespace's policy and the one in effect.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_policy(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let own = app.db.namespace_policy(&namespace).await?;
    let effective = app.default_policy.tightened_by(&own);
    Ok(Json(
        json!({ "namespace": namespace, "policy": own, "effective": effective }),
    ))
}

/// Namespace admins set their namespace's policy; it can only tighten the
/// server's.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/policy",
    tag = "policy",
    params(crate::openapi::NamespacePath),
    request_body(content = serde_json::Value, content_type = "application/json", description = "A policy: allowed channels and platforms, required, default and included packages, limits."),
    responses(
        (status = 200, description = "Policy set.", body = serde_json::Value),
        (status = 422, description = "The policy is not valid.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
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
    app.audit(
        &caller,
        "policy.set",
        namespace.as_str(),
        serde_json::to_value(&policy).unwrap_or_default(),
    )
    .await?;
    let effective = app.default_policy.tightened_by(&policy);
    Ok(Json(
        json!({ "namespace": namespace, "policy": policy, "effective": effective }),
    ))
}

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use envstore_api_types::{
    NamespaceCreated, NamespaceDeleted, NamespaceSummary, NamespaceView, NamespacesPage,
    NewNamespace, PolicyView, Visibility, VisibilitySet,
};
use envstore_core::{NamespaceName, Policy, Role};
use serde_json::json;

use crate::auth::{Caller, authorized_namespace};
use crate::extract::{JsonBody, JsonExample};
use crate::paging::ListQuery;
use crate::{ApiError, AppState};

impl JsonExample for NewNamespace {
    const EXAMPLE: &'static str = "{\"name\": \"team-ml\"}";
}

/// Server admins create namespaces.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces",
    tag = "namespaces",
    request_body(content = NewNamespace, content_type = "application/json", description = "`{\"name\": \"team-ml\", \"public_read\": false}`"),
    responses(
        (status = 201, description = "The namespace was created.", body = NamespaceCreated),
        (status = 409, description = "It exists already.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::SignedIn
    ),
    security(("bearer" = []))
)]
pub async fn create_namespace(
    State(app): State<AppState>,
    caller: Caller,
    body: JsonBody<NewNamespace>,
) -> Result<(StatusCode, Json<NamespaceCreated>), ApiError> {
    caller.require_server_admin()?;
    let request = body.parse()?;
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
        Json(NamespaceCreated {
            url: format!("/api/v1/namespaces/{name}"),
            name: name.to_string(),
            public_read: request.public_read,
        }),
    ))
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
        (status = 200, description = "The namespaces the caller may see.", body = NamespacesPage)
    ),
    security((), ("bearer" = []))
)]
pub async fn list_namespaces(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<NamespacesPage>, ApiError> {
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
    let namespaces = namespaces
        .into_iter()
        .map(|namespace| NamespaceSummary {
            name: namespace.name,
            created_at: namespace.created_at,
            public_read: namespace.public_read,
        })
        .collect();
    Ok(Json(NamespacesPage {
        namespaces,
        next_after,
    }))
}

/// A namespace, its visibility and its environments.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}",
    tag = "namespaces",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "The namespace and its environments.", body = NamespaceView),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_namespace(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<NamespaceView>, ApiError> {
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
    Ok(Json(NamespaceView {
        name: namespace.to_string(),
        public_read,
        environments,
    }))
}

/// Deletes a namespace (server admins), with every environment in it and
/// the role bindings that name it; cleaned like a deleted environment.
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{namespace}",
    tag = "namespaces",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "Deleted: hidden at once, cleaned by garbage collection.", body = NamespaceDeleted),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn delete_namespace(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<NamespaceDeleted>, ApiError> {
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
    Ok(Json(NamespaceDeleted {
        namespace: name.to_string(),
        deleted: true,
        environments: deleted.environments,
        builds: deleted.builds,
        stopped_builds: deleted.stopped,
        cleanup: "environment links, unshared prefixes, logs and records are removed by the next garbage collection (envstore gc)".to_owned(),
    }))
}

impl JsonExample for Visibility {
    const EXAMPLE: &'static str = "{\"public_read\": true}";
}

impl JsonExample for Policy {
    const EXAMPLE: &'static str = "{\"required_packages\": [\"ipykernel\"]}";
}

/// Namespace admins open a namespace to anonymous readers (students picking
/// environments), or close it.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/visibility",
    tag = "namespaces",
    params(crate::openapi::NamespacePath),
    request_body(content = Visibility, content_type = "application/json", description = "`{\"public_read\": true}`"),
    responses(
        (status = 200, description = "Visibility set.", body = VisibilitySet),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn set_visibility(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    body: JsonBody<Visibility>,
) -> Result<Json<VisibilitySet>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let request = body.parse()?;
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
    Ok(Json(VisibilitySet {
        name: namespace.to_string(),
        public_read: request.public_read,
    }))
}

/// A namespace's own policy and the one in effect (the server's, tightened).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/policy",
    tag = "policy",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "The namespace's policy and the one in effect.", body = PolicyView),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_policy(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let own = app.db.namespace_policy(&namespace).await?;
    let effective = app.default_policy.tightened_by(&own);
    Ok(Json(PolicyView {
        namespace: namespace.to_string(),
        policy: own,
        effective,
    }))
}

/// Namespace admins set their namespace's policy; it can only tighten the
/// server's.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/policy",
    tag = "policy",
    params(crate::openapi::NamespacePath),
    request_body(content = Policy, content_type = "application/json", description = "A policy: allowed channels and platforms, required, default and included packages, limits."),
    responses(
        (status = 200, description = "Policy set.", body = PolicyView),
        (status = 422, description = "The policy is not valid.", body = crate::openapi::Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn set_policy(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    body: JsonBody<Policy>,
) -> Result<Json<PolicyView>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let policy = body.parse()?;
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
    Ok(Json(PolicyView {
        namespace: namespace.to_string(),
        policy,
        effective,
    }))
}

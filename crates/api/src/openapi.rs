//! The OpenAPI document of the API, generated from the handlers: each one
//! carries its `#[utoipa::path]` (method, path, parameters, bodies,
//! responses, who may call it), and the route table registers handlers
//! through it, so a route cannot be served without being documented.

use std::sync::OnceLock;

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, Server};

/// An error answer (RFC 9457), as every route gives it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// `/problems/<slug>`, e.g. `/problems/unsolvable`.
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    /// What went wrong, for a person to act on.
    detail: String,
}

/// The document's parts that no handler carries: what the API is, how to
/// authenticate, the error schema.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "envstore",
        description = "Conda environments built, locked and served per namespace: submit specs, follow builds, fetch lockfiles.",
    ),
    components(schemas(Problem)),
    modifiers(&BearerTokens),
    tags(
        (name = "namespaces", description = "Namespaces and who may see them"),
        (name = "environments", description = "Environments: submit, history, roll back, delete"),
        (name = "builds", description = "Builds: status, phases, logs, cancellation"),
        (name = "lockfiles", description = "Lockfiles of environments and locks, and solving without a build"),
        (name = "kernels", description = "Environments as Jupyter kernels"),
        (name = "access", description = "Members, tokens, role bindings, the audit log"),
        (name = "policy", description = "What a namespace allows"),
        (name = "usage", description = "Disk, build time and downloads per namespace, and quotas"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub(crate) struct ApiDocument;

struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.servers = Some(vec![Server::new("/")]);
    }
}

static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();

/// The whole document: [`ApiDocument`] merged with every route's operation.
pub fn document() -> &'static OpenApi {
    DOCUMENT.get_or_init(|| crate::routes::table().document)
}

/// This document, as JSON.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = serde_json::Value)),
    security((), ("bearer" = []))
)]
pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// `{namespace}` in a route's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct NamespacePath {
    /// The namespace.
    namespace: String,
}

/// `{namespace}/…/{name}` in a route's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct EnvironmentPath {
    /// The namespace.
    namespace: String,
    /// The environment's name.
    name: String,
}

/// `{id}` in a build's path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct BuildPath {
    /// The build's id.
    id: String,
}

/// A page of a listing that can grow.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// Only entries containing this: names; for builds, their id, status or
    /// submitter.
    q: Option<String>,
    /// Entries per page.
    limit: Option<u32>,
    /// The previous page's `next_after`.
    after: Option<String>,
}

/// The refusals of a route that needs a signed-in caller.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum SignedIn {
    /// No token, or one that is unknown, expired or revoked.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role does not allow this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
}

/// The refusals of a route within a namespace (or on one of its builds).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum InNamespace {
    /// No token, or one that is unknown, expired or revoked.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The caller's role in the namespace does not allow this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such namespace, environment or build, or the caller may not see it.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
}

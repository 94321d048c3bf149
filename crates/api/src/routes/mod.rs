mod access;
mod builds;
mod environments;
mod health;
mod kernels;
mod lockfiles;
mod locks;
mod namespaces;
mod packages;
mod solve;
mod usage;

use axum::Router;
use axum::http::Method;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::{ApiError, AppState};

pub use kernels::{KERNEL_PACKAGE, kernel_id};
pub use solve::LOCK_HASH_HEADER;
pub use usage::{Figures as UsageFigures, UsageSettings};

/// The routes of the API and their OpenAPI document, built in one place
/// from the handlers' `#[utoipa::path]` annotations: a handler's method and
/// path are the ones it documents, so nothing is served undocumented, and
/// the list of routes is what the authorisation tests walk, so a new route
/// cannot miss a row.
pub(crate) struct RouteTable {
    router: Router<AppState>,
    routes: Vec<(Method, String)>,
    pub(crate) document: utoipa::openapi::OpenApi,
}

/// A handler as its annotation registers it, with its requests observed
/// (counted by route template and status, the template in the log span).
fn observed(route: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, paths, handler) = route;
    let handler = match paths.paths.iter().next() {
        Some((path, item)) => {
            let method = methods(item).into_iter().next().unwrap_or(Method::GET);
            crate::observe::observe_route(handler, &method, path)
        }
        None => handler,
    };
    (schemas, paths, handler)
}

/// The methods a documented path answers.
fn methods(item: &utoipa::openapi::PathItem) -> Vec<Method> {
    [
        (Method::GET, item.get.is_some()),
        (Method::PUT, item.put.is_some()),
        (Method::POST, item.post.is_some()),
        (Method::DELETE, item.delete.is_some()),
        (Method::PATCH, item.patch.is_some()),
        (Method::HEAD, item.head.is_some()),
        (Method::OPTIONS, item.options.is_some()),
    ]
    .into_iter()
    .filter_map(|(method, present)| present.then_some(method))
    .collect()
}

pub(crate) fn table() -> RouteTable {
    let (router, document) = OpenApiRouter::with_openapi(crate::openapi::ApiDocument::openapi())
        .routes(observed(routes!(health::health)))
        .routes(observed(routes!(health::live)))
        .routes(observed(routes!(health::ready)))
        .routes(observed(routes!(health::metrics)))
        .routes(observed(routes!(crate::openapi::openapi_json)))
        .routes(observed(routes!(namespaces::list_namespaces)))
        .routes(observed(routes!(namespaces::create_namespace)))
        .routes(observed(routes!(namespaces::get_namespace)))
        .routes(observed(routes!(namespaces::delete_namespace)))
        .routes(observed(routes!(namespaces::set_visibility)))
        .routes(observed(routes!(namespaces::get_policy)))
        .routes(observed(routes!(namespaces::set_policy)))
        .routes(observed(routes!(usage::get_namespace_usage)))
        .routes(observed(routes!(usage::get_quota)))
        .routes(observed(routes!(usage::set_quota)))
        .routes(observed(routes!(usage::list_usage)))
        .routes(observed(routes!(access::list_members)))
        .routes(observed(routes!(access::set_member)))
        .routes(observed(routes!(access::remove_member)))
        .routes(observed(routes!(environments::list_environments)))
        .routes(observed(routes!(environments::get_environment)))
        .routes(observed(routes!(environments::submit_environment)))
        .routes(observed(routes!(environments::delete_environment)))
        .routes(observed(routes!(builds::list_builds)))
        .routes(observed(routes!(environments::set_current_build)))
        .routes(observed(routes!(lockfiles::get_lockfile)))
        .routes(observed(routes!(lockfiles::submit_lockfile)))
        .routes(observed(routes!(solve::solve_spec)))
        .routes(observed(routes!(builds::get_build)))
        .routes(observed(routes!(builds::get_build_log)))
        .routes(observed(routes!(builds::get_build_spec)))
        .routes(observed(routes!(builds::cancel_build)))
        .routes(observed(routes!(locks::get_lock_artifact)))
        .routes(observed(routes!(locks::get_packed_prefix)))
        .routes(observed(routes!(access::list_tokens)))
        .routes(observed(routes!(access::whoami)))
        .routes(observed(routes!(access::create_token)))
        .routes(observed(routes!(access::revoke_token)))
        .routes(observed(routes!(access::list_role_bindings)))
        .routes(observed(routes!(access::set_role_binding)))
        .routes(observed(routes!(access::list_audit)))
        .routes(observed(routes!(kernels::list_kernels)))
        .routes(observed(routes!(packages::search_packages)))
        .split_for_parts();
    let routes = document
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            methods(item)
                .into_iter()
                .map(|method| (method, path.clone()))
        })
        .collect();
    RouteTable {
        router,
        routes,
        document,
    }
}

/// Every route of the API, as (method, path template).
pub fn routes() -> Vec<(Method, String)> {
    table().routes
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    // Refused changes go to the audit log (bounded: see audit_denied).
    let denied = axum::middleware::from_fn_with_state(
        crate::audit_denied::DeniedAudit::new(state.clone()),
        crate::audit_denied::record,
    );
    crate::observe::observe(table().router.route_layer(denied).fallback(not_found))
        .with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    crate::observe::count_unmatched(&method);
    ApiError::NotFound(format!("no such resource: {}", uri.path()))
}

mod access;
mod builds;
mod environments;
mod health;
mod kernels;
mod lifecycle;
mod locks;
mod log_stream;
mod namespaces;
mod solve;
mod usage;

use axum::Router;
use axum::http::{HeaderMap, Method, header};
use axum::routing::{MethodRouter, delete, get, post, put};

use crate::{ApiError, AppState};

pub use kernels::{KERNEL_PACKAGE, kernel_id};
pub use solve::LOCK_HASH_HEADER;
pub use usage::UsageSettings;
pub(crate) use usage::{QuotaExceeded, check_quota};

/// The routes of the API, registered and listed in one place: the list is
/// what the authorisation tests walk, so a new route cannot miss a row.
struct RouteTable {
    router: Router<AppState>,
    routes: Vec<(Method, &'static str)>,
}

impl RouteTable {
    fn add(mut self, method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, crate::observe::observe_route(handler, &method, path));
        self.routes.push((method, path));
        self
    }
}

fn table() -> RouteTable {
    let table = RouteTable {
        router: Router::new(),
        routes: Vec::new(),
    };
    table
        .add(Method::GET, "/api/v1/health", get(health::health))
        .add(Method::GET, "/health", get(health::live))
        .add(Method::GET, "/ready", get(health::ready))
        .add(Method::GET, "/metrics", get(health::metrics))
        .add(Method::GET, "/api/v1/namespaces", get(namespaces::list_namespaces))
        .add(Method::POST, "/api/v1/namespaces", post(namespaces::create_namespace))
        .add(Method::GET, "/api/v1/namespaces/{namespace}", get(namespaces::get_namespace))
        .add(Method::DELETE, "/api/v1/namespaces/{namespace}", delete(lifecycle::delete_namespace))
        .add(Method::PUT, "/api/v1/namespaces/{namespace}/visibility", put(namespaces::set_visibility))
        .add(Method::GET, "/api/v1/namespaces/{namespace}/policy", get(namespaces::get_policy))
        .add(Method::PUT, "/api/v1/namespaces/{namespace}/policy", put(namespaces::set_policy))
        .add(Method::GET, "/api/v1/namespaces/{namespace}/usage", get(usage::get_namespace_usage))
        .add(Method::GET, "/api/v1/namespaces/{namespace}/quota", get(usage::get_quota))
        .add(Method::PUT, "/api/v1/namespaces/{namespace}/quota", put(usage::set_quota))
        .add(Method::GET, "/api/v1/usage", get(usage::list_usage))
        .add(Method::GET, "/api/v1/namespaces/{namespace}/members", get(access::list_members))
        .add(Method::PUT, "/api/v1/namespaces/{namespace}/members/{subject}", put(access::set_member))
        .add(Method::DELETE, "/api/v1/namespaces/{namespace}/members/{subject}", delete(access::remove_member))
        .add(Method::GET, "/api/v1/namespaces/{namespace}/environments", get(environments::list_environments))
        .add(Method::GET, "/api/v1/namespaces/{namespace}/environments/{name}", get(environments::get_environment))
        .add(Method::PUT, "/api/v1/namespaces/{namespace}/environments/{name}", put(environments::submit_environment))
        .add(
            Method::DELETE,
            "/api/v1/namespaces/{namespace}/environments/{name}",
            delete(lifecycle::delete_environment),
        )
        .add(
            Method::GET,
            "/api/v1/namespaces/{namespace}/environments/{name}/builds",
            get(builds::list_builds),
        )
        .add(
            Method::PUT,
            "/api/v1/namespaces/{namespace}/environments/{name}/current",
            put(environments::set_current_build),
        )
        .add(
            Method::GET,
            "/api/v1/namespaces/{namespace}/environments/{name}/lockfile",
            get(environments::get_lockfile),
        )
        .add(
            Method::PUT,
            "/api/v1/namespaces/{namespace}/environments/{name}/lockfile",
            put(lifecycle::submit_lockfile),
        )
        .add(Method::POST, "/api/v1/namespaces/{namespace}/solve", post(solve::solve_spec))
        .add(Method::GET, "/api/v1/builds/{id}", get(builds::get_build))
        .add(Method::GET, "/api/v1/builds/{id}/log", get(builds::get_build_log))
        .add(Method::POST, "/api/v1/builds/{id}/cancel", post(builds::cancel_build))
        .add(Method::GET, "/api/v1/locks/{lock_hash}/{file}", get(locks::get_lock_artifact))
        .add(Method::GET, "/api/v1/tokens", get(access::list_tokens))
        .add(Method::POST, "/api/v1/tokens", post(access::create_token))
        .add(Method::DELETE, "/api/v1/tokens/{id}", delete(access::revoke_token))
        .add(Method::GET, "/api/v1/role-bindings", get(access::list_role_bindings))
        .add(Method::PUT, "/api/v1/role-bindings", put(access::set_role_binding))
        .add(Method::GET, "/api/v1/audit", get(access::list_audit))
        .add(Method::GET, "/api/v1/kernels", get(kernels::list_kernels))
}

/// Every route of the API, as (method, path template).
pub fn routes() -> Vec<(Method, &'static str)> {
    table().routes
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    crate::observe::observe(table().router.fallback(not_found)).with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    crate::observe::count_unmatched(&method);
    ApiError::NotFound(format!("no such resource: {}", uri.path()))
}

/// The platform whose `@EXPLICIT` file is asked for: the one named, which
/// the lock must have, or the lock's only one.
pub(crate) fn explicit_platform(platforms: &[String], asked: Option<&str>) -> Result<String, ApiError> {
    match asked {
        Some(platform) if platforms.iter().any(|known| known == platform) => Ok(platform.to_owned()),
        Some(platform) => Err(ApiError::NotFound(format!(
            "the lock has no platform '{}'; it has {}",
            platform.escape_debug(),
            platforms.join(", ")
        ))),
        None => match platforms {
            [only] => Ok(only.clone()),
            _ => Err(ApiError::BadRequest(format!(
                "the lock has several platforms ({}): choose one with ?platform=",
                platforms.join(", ")
            ))),
        },
    }
}

/// A lockfile format a client may ask for with `?format=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockfileFormat {
    CondaLock,
    Pixi,
    Explicit,
}

impl LockfileFormat {
    /// `?format=` as given; conda-lock when absent.
    pub(crate) fn parse(format: Option<&str>) -> Result<Self, ApiError> {
        match format.unwrap_or("conda-lock") {
            "conda-lock" => Ok(Self::CondaLock),
            "pixi" => Ok(Self::Pixi),
            "explicit" => Ok(Self::Explicit),
            other => Err(ApiError::BadRequest(format!(
                "unknown lockfile format '{}': use conda-lock, pixi or explicit",
                other.escape_debug()
            ))),
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::CondaLock | Self::Pixi => "application/yaml",
            Self::Explicit => "text/plain; charset=utf-8",
        }
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`), so the client's copy is
/// current and a 304 will do. Weak comparison, as RFC 9110 asks for this
/// header: `W/"x"` matches `"x"`.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn if_none_match_names_the_etag_in_any_of_its_forms() {
        let etag = "\"abc\"";
        for matching in [&["\"abc\""][..], &["\"x\", \"abc\""], &["W/\"abc\""], &["*"], &["\"x\"", "\"abc\""]] {
            assert!(if_none_match(&headers(matching), etag), "{matching:?}");
        }
        for other in [&[][..], &["\"abcd\""], &["abc"], &["\"x\", W/\"y\""]] {
            assert!(!if_none_match(&headers(other), etag), "{other:?}");
        }
    }
}

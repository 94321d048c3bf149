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
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::{ApiError, AppState};

pub use kernels::{KERNEL_PACKAGE, kernel_id};
pub use log_stream::{EventStreamLimits, EventStreams};
pub use solve::LOCK_HASH_HEADER;
pub use usage::{Figures as UsageFigures, UsageSettings};
pub(crate) use usage::{QuotaExceeded, check_quota};

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
        .routes(observed(routes!(lifecycle::delete_namespace)))
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
        .routes(observed(routes!(lifecycle::delete_environment)))
        .routes(observed(routes!(builds::list_builds)))
        .routes(observed(routes!(environments::set_current_build)))
        .routes(observed(routes!(environments::get_lockfile)))
        .routes(observed(routes!(lifecycle::submit_lockfile)))
        .routes(observed(routes!(solve::solve_spec)))
        .routes(observed(routes!(builds::get_build)))
        .routes(observed(routes!(builds::get_build_log)))
        .routes(observed(routes!(builds::cancel_build)))
        .routes(observed(routes!(locks::get_lock_artifact)))
        .routes(observed(routes!(access::list_tokens)))
        .routes(observed(routes!(access::create_token)))
        .routes(observed(routes!(access::revoke_token)))
        .routes(observed(routes!(access::list_role_bindings)))
        .routes(observed(routes!(access::set_role_binding)))
        .routes(observed(routes!(access::list_audit)))
        .routes(observed(routes!(kernels::list_kernels)))
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
    crate::observe::observe(table().router.fallback(not_found)).with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    crate::observe::count_unmatched(&method);
    ApiError::NotFound(format!("no such resource: {}", uri.path()))
}

/// How long parsing one request body may take. A body within the size and
/// nesting limits parses in milliseconds; past this it is refused.
pub const PARSE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// Request bodies parsed at once, off the async runtime: a burst of
/// expensive bodies keeps at most this many CPU threads busy, and the
/// runtime (health checks, other requests, shutdown) keeps answering.
pub const PARSE_SLOTS: usize = 4;

static PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARSE_SLOTS);

/// Runs `parse` on a blocking thread under [`PARSE_BUDGET`] (waiting for a
/// free slot included). The slot is held until the parse really ends, even
/// when the request gave up on it: a parser cannot be interrupted.
pub(crate) async fn parse_off_runtime<T, E>(
    parse: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    let deadline = tokio::time::Instant::now() + PARSE_BUDGET;
    let permit = tokio::time::timeout_at(deadline, PARSES.acquire())
        .await
        .map_err(|_| ApiError::Busy)?
        .map_err(|_| ApiError::Busy)?;
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        parse()
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(parsed)) => Ok(parsed?),
        Ok(Err(join)) => Err(ApiError::BadRequest(format!(
            "the request body could not be read: {join}"
        ))),
        Err(_) => Err(ApiError::ParseBudget {
            seconds: PARSE_BUDGET.as_secs(),
        }),
    }
}

/// The platform whose `@EXPLICIT` file is asked for: the one named, which
/// the lock must have, or the lock's only one.
pub(crate) fn explicit_platform(
    platforms: &[String],
    asked: Option<&str>,
) -> Result<String, ApiError> {
    match asked {
        Some(platform) if platforms.iter().any(|known| known == platform) => {
            Ok(platform.to_owned())
        }
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

/// A `Cache-Control` value: `public` only for what anyone may read without
/// a token, `private` (no shared cache may keep it) for everything else.
pub(crate) fn cache_control(public: bool, directives: &str) -> String {
    let scope = if public { "public" } else { "private" };
    format!("{scope}, {directives}")
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
        for matching in [
            &["\"abc\""][..],
            &["\"x\", \"abc\""],
            &["W/\"abc\""],
            &["*"],
            &["\"x\"", "\"abc\""],
        ] {
            assert!(if_none_match(&headers(matching), etag), "{matching:?}");
        }
        for other in [&[][..], &["\"abcd\""], &["abc"], &["\"x\", W/\"y\""]] {
            assert!(!if_none_match(&headers(other), etag), "{other:?}");
        }
    }
}

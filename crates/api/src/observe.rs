//! What the operator learns of each request: its id (`x-request-id`, the
//! client's or a new one, echoed in the response), a tracing span carrying
//! the id, method, route template and status so every log line of the
//! request names it, a count by method, route template and status, and a
//! latency histogram by method and route template.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;
use metrics::{Counter, Histogram};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::AppState;

/// The header that carries a request's id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

const HTTP_REQUESTS_METRIC: &str = "envstore_http_requests_total";

/// Seconds from a request's arrival to its response's head (a streamed
/// body, such as a log followed live or a packed prefix, is not waited for).
pub(crate) const HTTP_DURATION_METRIC: &str = "envstore_http_request_duration_seconds";

/// The `route` label of requests no route matched: never their path, which
/// may name anything.
const UNMATCHED_ROUTE: &str = "unmatched";

/// Status codes counted under their own label, in ascending order; others
/// are counted as `other`, so the label has a fixed set of values.
const COUNTED_STATUSES: [(u16, &str); 26] = [
    (200, "200"),
    (201, "201"),
    (202, "202"),
    (204, "204"),
    (206, "206"),
    (301, "301"),
    (302, "302"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (406, "406"),
    (409, "409"),
    (410, "410"),
    (412, "412"),
    (413, "413"),
    (415, "415"),
    (416, "416"),
    (422, "422"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];

fn status_label(status: StatusCode) -> (usize, &'static str) {
    match COUNTED_STATUSES.binary_search_by_key(&status.as_u16(), |(code, _)| *code) {
        Ok(index) => (index, COUNTED_STATUSES[index].1),
        Err(_) => (COUNTED_STATUSES.len(), "other"),
    }
}

/// A method as a label: the standard ones by name, any other as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The request counters of one route, one per status label, each
/// registered on first use and then kept, and its latency histogram:
/// counting a request is an index into this array and one atomic add, with
/// no lock, lookup or allocation, which is what a lockfile GET at tens of
/// thousands per second can afford.
struct RouteCounters {
    method: &'static str,
    route: Arc<str>,
    by_status: [OnceLock<Counter>; COUNTED_STATUSES.len() + 1],
    duration: Histogram,
}

impl RouteCounters {
    fn count(&self, status: StatusCode, took: Duration) {
        let (index, label) = status_label(status);
        self.by_status[index]
            .get_or_init(|| {
                metrics::counter!(HTTP_REQUESTS_METRIC, "method" => self.method, "route" => self.route.to_string(), "status" => label)
            })
            .increment(1);
        self.duration.record(took.as_secs_f64());
    }
}

/// `handler`, serving `method` on `route`, with its requests counted and
/// timed and its route template recorded in the request's span.
pub(crate) fn observe_route(
    handler: MethodRouter<AppState>,
    method: &Method,
    route: &str,
) -> MethodRouter<AppState> {
    let route: Arc<str> = Arc::from(route);
    let method = method_label(method);
    let counters = Arc::new(RouteCounters {
        method,
        route: route.clone(),
        by_status: Default::default(),
        duration: metrics::histogram!(HTTP_DURATION_METRIC, "method" => method, "route" => route.to_string()),
    });
    handler.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let (route, counters) = (route.clone(), counters.clone());
            async move {
                let started = Instant::now();
                Span::current().record("route", &*route);
                let response = next.run(request).await;
                counters.count(response.status(), started.elapsed());
                response
            }
        },
    ))
}

/// Counts a request no route matched (answered 404). Not a hot path: it
/// looks its counter up each time.
pub(crate) fn count_unmatched(method: &Method) {
    Span::current().record("route", UNMATCHED_ROUTE);
    metrics::counter!(
        HTTP_REQUESTS_METRIC,
        "method" => method_label(method),
        "route" => UNMATCHED_ROUTE,
        "status" => "404"
    )
    .increment(1);
}

/// The span of one request. Its id is set before (by the request-id layer,
/// from the client's header or a new UUID); route and status are filled in
/// once known.
fn request_span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        route = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

fn record_response(response: &Response, latency: Duration, span: &Span) {
    span.record("status", response.status().as_u16());
    // One line per request is for debugging (ENVSTORE_LOG=info,envstore::access=debug):
    // at tens of thousands of requests a second it would be the main cost.
    tracing::debug!(target: "envstore::access", latency_ms = latency.as_secs_f64() * 1000.0, "answered");
}

/// Longest request id taken from a client; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// Whether a client's request id may be kept: it goes into every log line
/// of the request, so it must be short and printable, with no room for
/// forged log fields or line breaks.
fn acceptable_request_id(value: &axum::http::HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/+=".contains(byte))
}

/// Drops a client's request id that [`acceptable_request_id`] refuses, so
/// the request gets a fresh one instead.
fn drop_unacceptable_request_id(mut request: Request) -> Request {
    if request
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|value| !acceptable_request_id(value))
    {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

/// `router` with request ids and request spans around every request,
/// matched or not.
pub(crate) fn observe(router: Router<AppState>) -> Router<AppState> {
    router.layer(
        tower::ServiceBuilder::new()
            .map_request(drop_unacceptable_request_id)
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_request(())
                    .on_response(record_response),
            )
            .layer(PropagateRequestIdLayer::x_request_id()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_a_fixed_set() {
        assert!(
            COUNTED_STATUSES
                .windows(2)
                .all(|pair| pair[0].0 < pair[1].0),
            "sorted, for the search"
        );
        for (code, label) in COUNTED_STATUSES {
            assert_eq!(label, code.to_string());
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(status_label(status).1, label);
        }
        assert_eq!(
            status_label(StatusCode::IM_A_TEAPOT),
            (COUNTED_STATUSES.len(), "other")
        );
        assert_eq!(
            method_label(&Method::from_bytes(b"PROPFIND").unwrap()),
            "other"
        );
    }

    #[test]
    fn only_short_printable_request_ids_are_kept() {
        let id = |text: &str| axum::http::HeaderValue::from_str(text).unwrap();
        for kept in [
            "abc123",
            "0193a1b2-7c1d-7e0f-8a9b-0c1d2e3f4a5b",
            "ci:job/42",
            "YWJj+Lw==",
        ] {
            assert!(acceptable_request_id(&id(kept)), "{kept}");
        }
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        for dropped in ["", "a b", "a\"b", "a{b}", "é", long.as_str()] {
            assert!(
                !acceptable_request_id(
                    &axum::http::HeaderValue::from_bytes(dropped.as_bytes()).unwrap()
                ),
                "{dropped:?}"
            );
        }
    }
}

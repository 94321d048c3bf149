//! Denied attempts in the audit log. A request that would change something
//! (any method but GET, HEAD and OPTIONS) and was refused with 401 or 403,
//! or with a 404 that hides an existing namespace from a signed-in caller
//! who may not see it, is recorded as `request.denied`: who (the subject
//! when the credential was valid, else `anonymous`), what (method, route
//! template, namespace), the status, and outcome `denied`. Reads are not
//! recorded: a refused read changes nothing and crawlers make many.
//!
//! Bounded, so a caller hammering the API cannot grow the log without end:
//!
//! - at most one row per subject, method and route each minute
//!   ([`WINDOW_MILLIS`]); the denials after it in that minute are only
//!   counted, and the count goes into that key's next row as
//!   `unrecorded_before`;
//! - at most [`MAX_ROWS_PER_WINDOW`] rows a minute per API process for all
//!   keys together (further denials are counted as above);
//! - at most [`MAX_KEYS`] keys held in memory; past that a denial is only
//!   logged (one warning a minute). Keys are subjects with a valid
//!   credential (or `anonymous`) times the API's fixed route templates, so
//!   an attacker without valid tokens has a single subject.
//!
//! The subject is found again after the answer, through the same
//! credential check as the route's (served from the access cache), and
//! only for refused changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use envstore_core::NamespaceName;
use serde_json::json;

use crate::{AppState, Caller};

/// The audit action of a denied attempt.
pub(crate) const ACTION: &str = "request.denied";

/// Each subject, method and route writes at most one row in this long.
pub(crate) const WINDOW_MILLIS: i64 = 60_000;

/// Rows one API process writes a window, all keys together.
pub(crate) const MAX_ROWS_PER_WINDOW: u32 = 120;

/// Keys (subject, method, route) held in memory at once.
pub(crate) const MAX_KEYS: usize = 4096;

/// Who tried what: subject, method, route template.
type Key = (String, Method, String);

/// A key's last row and the denials not written since.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The window of its last row; None before its first.
    window: Option<i64>,
    unrecorded: u64,
}

#[derive(Debug, Default)]
struct LimiterState {
    window: i64,
    rows: u32,
    keys: HashMap<Key, Pending>,
    /// Whether this window already warned that a denial went unrecorded.
    warned: bool,
}

/// Decides which denials get a row (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct DeniedLimiter {
    state: Mutex<LimiterState>,
}

impl DeniedLimiter {
    /// Whether the denial of `key` at `now` gets a row: Some(denials of
    /// the key not written since its last row), or None (only counted).
    fn admit(&self, key: Key, now: i64) -> Option<u64> {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        let window = now.div_euclid(WINDOW_MILLIS);
        if state.window != window {
            state.window = window;
            state.rows = 0;
            state.warned = false;
            // Keys with nothing left to report are forgotten.
            state.keys.retain(|_, pending| pending.unrecorded > 0);
        }
        let capped = state.rows >= MAX_ROWS_PER_WINDOW;
        let full = state.keys.len() >= MAX_KEYS;
        match state.keys.get_mut(&key) {
            Some(pending) if capped || pending.window == Some(window) => {
                pending.unrecorded += 1;
                None
            }
            Some(pending) => {
                let unrecorded = pending.unrecorded;
                *pending = Pending {
                    window: Some(window),
                    unrecorded: 0,
                };
                state.rows += 1;
                Some(unrecorded)
            }
            None if full => {
                if !std::mem::replace(&mut state.warned, true) {
                    tracing::warn!(
                        subject = %key.0,
                        method = %key.1,
                        route = %key.2,
                        "too many denied requests to audit each: this one and others this minute are not in the audit log"
                    );
                }
                None
            }
            None => {
                let pending = if capped {
                    Pending {
                        window: None,
                        unrecorded: 1,
                    }
                } else {
                    state.rows += 1;
                    Pending {
                        window: Some(window),
                        unrecorded: 0,
                    }
                };
                state.keys.insert(key, pending);
                (!capped).then_some(0)
            }
        }
    }
}

/// What the middleware needs: the app (database, credential check) and
/// the limiter of this router.
#[derive(Clone)]
pub(crate) struct DeniedAudit {
    app: AppState,
    limiter: Arc<DeniedLimiter>,
}

impl DeniedAudit {
    pub(crate) fn new(app: AppState) -> Self {
        Self {
            app,
            limiter: Arc::default(),
        }
    }
}

/// The namespace a request's path names, where its route template has a
/// `{namespace}` segment and the segment is a valid name.
fn namespace_in(route: &str, path: &str) -> Option<NamespaceName> {
    let position = route.split('/').position(|part| part == "{namespace}")?;
    path.split('/').nth(position)?.parse().ok()
}

/// Middleware (on every route): records refused changes in the audit log.
pub(crate) async fn record(
    State(audit): State<DeniedAudit>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|route| route.as_str().to_owned());
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let namespace = route
        .as_deref()
        .and_then(|route| namespace_in(route, request.uri().path()));
    let response = next.run(request).await;
    let status = response.status();
    if let Some(route) = route
        && matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        )
    {
        audit
            .denied(method, route, namespace, authorization, status)
            .await;
    }
    response
}

impl DeniedAudit {
    /// The caller a credential stands for: (subject, how the credential
    /// fared).
    async fn caller(&self, authorization: Option<HeaderValue>) -> (Option<Caller>, &'static str) {
        let Some(authorization) = authorization else {
            return (None, "none");
        };
        let Ok((mut parts, ())) = axum::http::Request::builder()
            .header(header::AUTHORIZATION, authorization)
            .body(())
            .map(axum::http::Request::into_parts)
        else {
            return (None, "invalid");
        };
        match Caller::from_request_parts(&mut parts, &self.app).await {
            Ok(caller) if caller.subject.is_some() => (Some(caller), "valid"),
            Ok(_) => (None, "none"),
            Err(_) => (None, "invalid"),
        }
    }

    async fn denied(
        &self,
        method: Method,
        route: String,
        namespace: Option<NamespaceName>,
        authorization: Option<HeaderValue>,
        status: StatusCode,
    ) {
        let (caller, credential) = self.caller(authorization).await;
        if status == StatusCode::NOT_FOUND {
            // Only a 404 that hides a namespace the caller may not see;
            // other 404s are things that do not exist.
            let (Some(caller), Some(namespace)) = (&caller, &namespace) else {
                return;
            };
            let hidden = match self.app.db.namespace_public_read(namespace.as_str()).await {
                Ok(Some(_)) => !caller
                    .can_view(&self.app, namespace.as_str())
                    .await
                    .unwrap_or(true),
                Ok(None) | Err(_) => false,
            };
            if !hidden {
                return;
            }
        }
        let subject = caller
            .and_then(|caller| caller.subject)
            .unwrap_or_else(|| "anonymous".to_owned());
        let key = (subject.clone(), method.clone(), route.clone());
        let Some(unrecorded) = self.limiter.admit(key, envstore_db::now_millis()) else {
            return;
        };
        let target = namespace
            .as_ref()
            .map_or_else(|| route.clone(), ToString::to_string);
        let detail = json!({
            "outcome": "denied",
            "method": method.as_str(),
            "route": route,
            "namespace": namespace.as_ref().map(ToString::to_string),
            "status": status.as_u16(),
            "credential": credential,
            "unrecorded_before": unrecorded,
        });
        if let Err(error) = self
            .app
            .db
            .record_audit(&subject, ACTION, &target, &detail)
            .await
        {
            tracing::warn!(error = %envstore_core::error_chain(&error), "failed to record a denied request in the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(subject: &str, route: &str) -> Key {
        (subject.to_owned(), Method::POST, route.to_owned())
    }

    #[test]
    fn one_row_per_key_a_minute_and_the_rest_counted_into_its_next_row() {
        let limiter = DeniedLimiter::default();
        let t0 = 10 * WINDOW_MILLIS;
        assert_eq!(limiter.admit(key("mallory", "/a"), t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.admit(key("mallory", "/a"), t0 + 1_000), None);
        }
        assert_eq!(
            limiter.admit(key("mallory", "/b"), t0 + 1_000),
            Some(0),
            "another route"
        );
        assert_eq!(
            limiter.admit(key("alice", "/a"), t0 + 1_000),
            Some(0),
            "another subject"
        );
        assert_eq!(
            limiter.admit(key("mallory", "/a"), t0 + WINDOW_MILLIS),
            Some(5),
            "the next minute's row carries the five not written"
        );
        assert_eq!(
            limiter.admit(key("mallory", "/a"), t0 + 3 * WINDOW_MILLIS),
            Some(0)
        );
    }

    #[test]
    fn rows_a_minute_and_keys_held_are_bounded() {
        let limiter = DeniedLimiter::default();
        let t0 = 0;
        let rows = (0..MAX_ROWS_PER_WINDOW + 50)
            .filter_map(|n| limiter.admit(key(&format!("s{n}"), "/a"), t0))
            .count();
        assert_eq!(rows, MAX_ROWS_PER_WINDOW as usize);
        // Those held back report themselves in a later minute.
        let late = format!("s{}", MAX_ROWS_PER_WINDOW + 10);
        assert_eq!(limiter.admit(key(&late, "/a"), WINDOW_MILLIS), Some(1));

        // Keys held back survive their minute; past MAX_KEYS a newcomer is
        // neither written nor held.
        let limiter = DeniedLimiter::default();
        let mut last = 0;
        for window in 0..1_000 {
            if limiter.state.lock().unwrap().keys.len() >= MAX_KEYS {
                break;
            }
            last = window * WINDOW_MILLIS;
            for n in 0..MAX_ROWS_PER_WINDOW * 2 {
                limiter.admit(key(&format!("w{window}-{n}"), "/a"), last);
            }
        }
        assert_eq!(limiter.state.lock().unwrap().keys.len(), MAX_KEYS);
        assert_eq!(limiter.admit(key("newcomer", "/a"), last), None);
        assert_eq!(limiter.state.lock().unwrap().keys.len(), MAX_KEYS);
    }

    #[test]
    fn the_namespace_comes_from_the_route_templates_segment() {
        let route = "/api/v1/namespaces/{namespace}/environments/{environment}";
        assert_eq!(
            namespace_in(route, "/api/v1/namespaces/team/environments/env")
                .map(|ns| ns.to_string()),
            Some("team".to_owned())
        );
        assert_eq!(
            namespace_in(route, "/api/v1/namespaces/Bad%20Name/environments/env"),
            None
        );
        assert_eq!(namespace_in("/api/v1/tokens", "/api/v1/tokens"), None);
    }
}

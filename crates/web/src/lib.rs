//! The web UI of envstore: server-rendered pages for people who would rather
//! click than curl, served by the API process under `/ui`.
//!
//! Every page is a client of the JSON API, called in-process: a handler
//! sends the API's own router a request carrying the session's token as
//! `Authorization: Bearer` (or none, for a visitor not signed in, who sees
//! what the API shows anyone: public namespaces), and renders what comes
//! back. People sign in with a token or through the identity provider
//! (`pages::oidc`). Authorisation,
//! policy, validation and errors are therefore exactly the API's; this crate
//! decides nothing but how things look. Pages work without JavaScript; the
//! small script only follows a running build's log live.

mod api;
mod error;
mod layout;
mod links;
mod pages;
mod roles;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use envstore_api::AppState;
use envstore_api_types::WhoAmI;

pub use session::{LOGIN_COOKIE, SESSION_COOKIE};

use crate::api::Api;
use crate::session::{Identified, Session};

/// The UI's router, to merge beside the API's: `/` and `/ui/...`. It has no
/// fallback, so unknown paths still get the API's problem+json 404.
pub fn router(app: AppState) -> Router {
    let policy = content_security_policy(&app);
    let api = Api::new(app);
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/namespaces") }))
        .route(
            "/ui/sign-in",
            get(pages::sign_in::form).post(pages::sign_in::sign_in),
        )
        .route("/ui/sign-out", post(pages::sign_in::sign_out))
        .route("/ui/logout", post(pages::sign_in::sign_out))
        .route("/ui/login", get(pages::oidc::login))
        .route(session::CALLBACK_PATH, get(pages::oidc::callback))
        .route("/ui/namespaces", get(pages::namespaces::show))
        .route("/ui/namespaces/{namespace}", get(pages::namespace::show))
        .route(
            "/ui/namespaces/{namespace}/settings",
            get(pages::settings::show),
        )
        .route(
            "/ui/namespaces/{namespace}/settings/visibility",
            post(pages::settings::set_visibility),
        )
        .route(
            "/ui/namespaces/{namespace}/settings/members",
            post(pages::settings::set_member),
        )
        .route(
            "/ui/namespaces/{namespace}/settings/members/remove",
            post(pages::settings::remove_member),
        )
        .route(
            "/ui/namespaces/{namespace}/settings/policy",
            post(pages::settings::set_policy),
        )
        .route(
            "/ui/namespaces/{namespace}/submit",
            get(pages::submit::form).post(pages::submit::submit),
        )
        .route(
            "/ui/namespaces/{namespace}/environments/{name}",
            get(pages::environment::show),
        )
        .route(
            "/ui/namespaces/{namespace}/environments/{name}/current",
            post(pages::environment::make_current),
        )
        .route(
            "/ui/namespaces/{namespace}/environments/{name}/delete",
            post(pages::environment::delete),
        )
        .route(
            "/ui/namespaces/{namespace}/environments/{name}/lockfile",
            get(pages::downloads::current_lockfile),
        )
        .route("/ui/builds/{id}", get(pages::build::show))
        .route("/ui/builds/{id}/cancel", post(pages::build::cancel))
        .route("/ui/builds/{id}/log", get(pages::build::log_text))
        .route("/ui/builds/{id}/events", get(pages::build::events))
        .route("/ui/builds/{id}/packages", get(pages::packages::show))
        .route("/ui/diff", get(pages::diff::show))
        .route("/ui/usage", get(pages::usage::show))
        .route("/ui/packages", get(pages::search::show))
        .route("/ui/admin", get(pages::admin::index))
        .route("/ui/admin/tokens", get(pages::admin::tokens))
        .route("/ui/admin/tokens/revoke", post(pages::admin::revoke_token))
        .route(
            "/ui/admin/role-bindings",
            get(pages::admin::role_bindings).post(pages::admin::set_role_binding),
        )
        .route("/ui/admin/namespaces", get(pages::admin::namespaces))
        .route("/ui/admin/namespaces/quota", post(pages::admin::set_quota))
        .route("/ui/admin/audit", get(pages::admin::audit))
        .route(
            "/ui/locks/{lock_hash}/{file}",
            get(pages::downloads::lock_artifact),
        )
        .route("/ui/static/style.css", get(style))
        .route("/ui/static/app.js", get(script))
        .layer(middleware::from_fn_with_state(api.clone(), identify))
        .layer(middleware::from_fn_with_state(policy, security_headers))
        .with_state(api)
}

/// Asks the API who a request's session is (`GET /api/v1/whoami`) before
/// its page runs, so every page can say who is signed in and offer only
/// the actions the roles allow. A token the API refuses is left for the
/// page's own call to turn into a new sign-in.
async fn identify(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    let static_asset = request.uri().path().starts_with("/ui/static/");
    if !static_asset && let Some(session) = Session::from_headers(request.headers()) {
        match api.get::<WhoAmI>(&session, "/api/v1/whoami").await {
            Ok(who) => {
                request.extensions_mut().insert(Identified(Arc::new(who)));
            }
            Err(error) => tracing::debug!(%error, "the session's token was not recognised"),
        }
    }
    next.run(request).await
}

const STYLE: &str = include_str!("../static/style.css");
const SCRIPT: &str = include_str!("../static/app.js");

async fn style() -> Response {
    static_asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    static_asset("text/javascript; charset=utf-8", SCRIPT)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The UI's Content-Security-Policy: scripts, styles and forms from this
/// origin only; with a web sign-in, forms may also lead to the identity
/// provider's origin (signing out redirects to its end-session endpoint,
/// and browsers hold a form's redirects to `form-action`).
fn content_security_policy(app: &AppState) -> HeaderValue {
    let provider = app
        .oidc
        .as_ref()
        .filter(|oidc| oidc.web_sign_in())
        .and_then(|oidc| url::Url::parse(&oidc.config().issuer).ok())
        .map(|issuer| issuer.origin())
        .filter(url::Origin::is_tuple)
        .map(|origin| format!(" {}", origin.ascii_serialization()))
        .unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'{provider}; frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
    })
}

/// Headers every UI answer carries: no framing (clickjacking), scripts and
/// styles from this origin only, forms posted only here (and to the
/// identity provider), no MIME sniffing, and pages (which hold CSRF tokens)
/// never cached.
async fn security_headers(
    State(policy): State<HeaderValue>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

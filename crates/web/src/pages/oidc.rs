//! Signing in through the organisation's identity provider: `/ui/login`
//! sends the browser there (authorization code with PKCE, see
//! `envstore_api::oidc`), `/ui/oidc/callback` brings it back, starts a web
//! session and returns to the page first asked for.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{CookieJar, SameSite};
use envstore_api::oidc::{LoginState, OidcError, OidcVerifier};
use maud::html;
use serde::Deserialize;

use crate::api::Api;
use crate::error::{ProblemExt, problem_of};
use crate::layout::{self, Chrome};
use crate::links;
use crate::session::{self, CALLBACK_PATH, LOGIN_COOKIE, Session};

/// What the key sealing sign-in states is derived for.
const LOGIN_KEY_PURPOSE: &str = "envstore web sign-in state v1";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// The identity provider, when the web UI signs people in through it.
fn provider(api: &Api) -> Option<&OidcVerifier> {
    api.app().oidc.as_ref().filter(|oidc| oidc.web_sign_in())
}

/// `path` on envstore's public URL: the configured `public_url`, else the
/// scheme and host the browser used (`X-Forwarded-Proto`/`-Host` behind a
/// proxy). None for a host no URL can hold.
pub(crate) fn public_url(oidc: &OidcVerifier, headers: &HeaderMap, path: &str) -> Option<String> {
    if let Some(base) = &oidc.config().sign_in.public_url {
        return Some(format!("{}{path}", base.as_str().trim_end_matches('/')));
    }
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let host = text("x-forwarded-host")
        .or_else(|| text(header::HOST.as_str()))?
        .trim();
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    let scheme = if session::served_over_https(headers) {
        "https"
    } else {
        "http"
    };
    plain.then(|| format!("{scheme}://{host}{path}"))
}

/// Whether cookies must be Secure: the public URL is https.
fn secure(oidc: &OidcVerifier, headers: &HeaderMap) -> bool {
    match &oidc.config().sign_in.public_url {
        Some(base) => base.scheme() == "https",
        None => session::served_over_https(headers),
    }
}

/// `GET /ui/login?next=`: to the provider, the sign-in's state sealed in a
/// cookie for the callback.
pub(crate) async fn login(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = links::local_next(query.next.as_deref());
    let Some(oidc) = provider(&api) else {
        return Redirect::to(&links::sign_in(Some(&next), None)).into_response();
    };
    let Some(redirect_uri) = public_url(oidc, &headers, CALLBACK_PATH) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "the request names no host to come back to: set public_url in [oidc]",
            &next,
        );
    };
    let key = api.app().admin_token.derived_key(LOGIN_KEY_PURPOSE);
    match oidc.begin(&redirect_uri, &next).await {
        Ok((to, state)) => match state.seal(&key) {
            Ok(sealed) => {
                let jar =
                    CookieJar::new().add(session::login_cookie(sealed, secure(oidc, &headers)));
                (jar, Redirect::to(to.as_str())).into_response()
            }
            Err(error) => refused(&error, &next),
        },
        Err(error) => refused(&error, &next),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// The issuer of the answer (RFC 9207), when the provider says.
    iss: Option<String>,
}

/// `GET /ui/oidc/callback`: the sign-in's sealed state opened and its
/// `state` matched, the code exchanged and the ID token checked, then a web
/// session started and the browser sent back to the page it asked for.
pub(crate) async fn callback(
    State(api): State<Api>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let home = links::namespaces();
    let Some(oidc) = provider(&api) else {
        return Redirect::to(&links::sign_in(None, None)).into_response();
    };
    let done = CookieJar::new().add(session::login_cookie_removal());
    let key = api.app().admin_token.derived_key(LOGIN_KEY_PURPOSE);
    let login = match jar
        .get(LOGIN_COOKIE)
        .map(|cookie| LoginState::open(cookie.value(), &key))
    {
        Some(Ok(login)) => login,
        Some(Err(error)) => return (done, refused(&error, &home)).into_response(),
        None => {
            let error = OidcError::LoginState(
                "no sign-in was started in this browser, or it took too long".to_owned(),
            );
            return (done, refused(&error, &home)).into_response();
        }
    };
    let next = login.next().to_owned();
    if let Some(error) = query.error {
        let detail = match query.error_description {
            Some(description) => format!("{error}: {description}"),
            None => error,
        };
        return (done, refused(&OidcError::SignInRefused(detail), &next)).into_response();
    }
    if let Err(error) = login.check_state(query.state.as_deref().unwrap_or_default()) {
        return (done, refused(&error, &next)).into_response();
    }
    // An answer naming another issuer is a mix-up attack's (RFC 9207 §2.4).
    if query
        .iss
        .as_deref()
        .is_some_and(|iss| iss != oidc.config().issuer)
    {
        let error = OidcError::SignInRefused("the answer names another issuer".to_owned());
        return (done, refused(&error, &next)).into_response();
    }
    let Some(code) = query.code.filter(|code| !code.is_empty()) else {
        let error = OidcError::SignInRefused("the provider sent no code".to_owned());
        return (done, refused(&error, &next)).into_response();
    };
    let identity = match oidc.complete(&login, &code).await {
        Ok(identity) => identity,
        Err(error) => return (done, refused(&error, &next)).into_response(),
    };
    let token = match envstore_api::oidc::session::start(api.app(), &identity).await {
        Ok(token) => token,
        Err(error) => {
            tracing::error!(error = %envstore_core::error_chain(&error), "a web session could not start");
            return (
                done,
                failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session could not be started; try again in a moment",
                    &next,
                ),
            )
                .into_response();
        }
    };
    let cookie = Session::new(&token).cookie(secure(oidc, &headers), SameSite::Lax);
    (
        done.add(cookie),
        Redirect::to(&links::local_next(Some(&next))),
    )
        .into_response()
}

/// A sign-in that did not happen: logged, and shown with the way to try again.
fn refused(error: &OidcError, next: &str) -> Response {
    tracing::info!(error = %envstore_core::error_chain(error), "a sign-in through the identity provider failed");
    let status = match error {
        OidcError::Keys(_) | OidcError::Provider(..) | OidcError::Discovery(..) => {
            StatusCode::BAD_GATEWAY
        }
        _ => StatusCode::FORBIDDEN,
    };
    failure(status, &error.to_string(), next)
}

fn failure(status: StatusCode, detail: &str, next: &str) -> Response {
    let problem = problem_of(status, detail.to_owned());
    let again = links::with_query("/ui/login", &[("next", Some(next))]);
    let body = html! {
        (problem.render())
        p.actions { a.button href=(again) { "Sign in again" } }
        p { a href=(links::namespaces()) { "Browse the public namespaces" } }
    };
    (
        problem.status_code(),
        layout::page("Not signed in", Chrome::default(), &[], body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn verifier(public_url: Option<&str>) -> OidcVerifier {
        let mut config: envstore_api::oidc::OidcConfig =
            serde_json::from_value(serde_json::json!({
                "issuer": "https://id.example.org", "audience": "envstore",
                "jwks_url": "https://id.example.org/jwks",
            }))
            .unwrap();
        config.sign_in.public_url = public_url.map(|url| url.parse().unwrap());
        OidcVerifier::new(config).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_redirect_uri_is_the_public_url_s_or_the_request_s() {
        let configured = verifier(Some("https://envstore.example.org/"));
        let any = headers(&[("host", "evil.example")]);
        assert_eq!(
            public_url(&configured, &any, CALLBACK_PATH).as_deref(),
            Some("https://envstore.example.org/ui/oidc/callback")
        );
        assert!(secure(&configured, &any));

        let derived = verifier(None);
        assert_eq!(
            public_url(
                &derived,
                &headers(&[("host", "127.0.0.1:8080")]),
                CALLBACK_PATH
            )
            .as_deref(),
            Some("http://127.0.0.1:8080/ui/oidc/callback")
        );
        let proxied = headers(&[
            ("host", "10.0.0.1"),
            ("x-forwarded-host", "envstore.example.org"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            public_url(&derived, &proxied, CALLBACK_PATH).as_deref(),
            Some("https://envstore.example.org/ui/oidc/callback")
        );
        assert!(secure(&derived, &proxied));
        for host in ["evil.example/x?", "a b", "", "user@evil.example"] {
            let mut odd = HeaderMap::new();
            odd.insert("host", HeaderValue::from_str(host).unwrap());
            assert!(
                public_url(&derived, &odd, CALLBACK_PATH).is_none(),
                "{host}"
            );
        }
    }
}

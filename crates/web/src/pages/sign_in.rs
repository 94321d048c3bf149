//! Signing in, through the organisation's identity provider (see
//! [`crate::pages::oidc`]) or with an API token, and out.

use axum::Form;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{CookieJar, SameSite};
use maud::{Markup, html};
use serde::Deserialize;

use crate::api::{self, Api};
use envstore_api_types::Problem;

use crate::error::{ProblemExt, UiError};
use crate::layout::{self, Chrome};
use crate::links;
use crate::session::{self, Session};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SignInQuery {
    next: Option<String>,
    notice: Option<String>,
}

pub(crate) async fn form(State(api): State<Api>, Query(query): Query<SignInQuery>) -> Markup {
    let notice = match query.notice.as_deref() {
        Some("ended") => Some("Your session has ended: it expired or was revoked. Sign in again."),
        Some("signed-out") => Some("You are signed out."),
        _ => None,
    };
    render(&api, query.next.as_deref(), notice, None)
}

/// The sign-in page: the identity provider first when there is one, the
/// API token form beside it (for robots' tokens and the admin token).
fn render(
    api: &Api,
    next: Option<&str>,
    notice: Option<&str>,
    problem: Option<&Problem>,
) -> Markup {
    let next = links::local_next(next);
    let provider = api
        .app()
        .oidc
        .as_ref()
        .is_some_and(|oidc| oidc.web_sign_in());
    let token_form = html! {
        form.stacked method="post" action="/ui/sign-in" {
            input type="hidden" name="next" value=(next);
            label for="token" { "API token" }
            p.hint #token-hint {
                "The server's admin token, an API token ("
                code { "POST /api/v1/tokens" } "), or a token from your organisation's identity provider."
            }
            input #token type="password" name="token" required autocomplete="current-password"
                aria-describedby="token-hint" autofocus[!provider];
            button type="submit" { "Sign in" }
        }
    };
    let body = html! {
        @if let Some(notice) = notice { (layout::notice(notice)) }
        @if let Some(problem) = problem { (problem.render()) }
        @if provider {
            p.actions {
                a.button #sign-in-provider href=(links::with_query("/ui/login", &[("next", Some(&next))])) {
                    "Sign in with your organisation's account"
                }
            }
            details #token-sign-in open[problem.is_some()] {
                summary { "Sign in with an API token instead" }
                (token_form)
            }
        } @else {
            (token_form)
        }
        p { a href=(links::namespaces()) { "Browse the public namespaces" } }
    };
    layout::page("Sign in", Chrome::default(), &[], body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignInForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// Checks the token against the API (any signed-in caller may list its own
/// tokens) before keeping it in the session cookie.
pub(crate) async fn sign_in(
    State(api): State<Api>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Err(error) = session::check_origin(&headers) {
        return error.into_response();
    }
    let token = form.token.trim();
    let session = Session::new(token);
    let refused = |detail: &str| Problem {
        status: StatusCode::UNAUTHORIZED.as_u16(),
        title: "Not signed in".to_owned(),
        detail: detail.to_owned(),
        ..Problem::default()
    };
    let outcome = match api
        .call(&session, Method::GET, "/api/v1/tokens", &[], Body::empty())
        .await
    {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(match api::problem(response).await {
            UiError::Problem(problem) => *problem,
            _ => refused("the token is not valid: unknown, expired or revoked"),
        }),
        Err(UiError::SessionEnded { .. }) => Err(refused(
            "the token is not valid: unknown, expired or revoked",
        )),
        Err(_) => Err(refused(
            "the token is not valid: it holds characters a token cannot have",
        )),
    };
    match outcome {
        Ok(()) => {
            tracing::info!("a session was signed in");
            let cookie = session.cookie(session::served_over_https(&headers), SameSite::Strict);
            let jar = CookieJar::new().add(cookie);
            (jar, Redirect::to(&links::local_next(form.next.as_deref()))).into_response()
        }
        Err(problem) => (
            problem.status_code(),
            render(&api, form.next.as_deref(), None, Some(&problem)),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session: a web session's row is revoked (an API token pasted
/// in stays valid: it was not made for this session), the cookie removed,
/// and, after a sign-in through the provider, the browser sent to the
/// provider's end-session endpoint when it advertises one, so its own
/// session ends too.
pub(crate) async fn sign_out(
    State(api): State<Api>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Result<Response, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let app = api.app();
    let ended = envstore_api::oidc::session::end(app, session.token())
        .await
        .map_err(|error| UiError::Unexpected(format!("the session could not be ended: {error}")))?;
    let jar = CookieJar::new().add(Session::removal());
    let signed_out = links::sign_in(None, Some("signed-out"));
    let provider = match (&app.oidc, ended) {
        (Some(oidc), true) => {
            let back = crate::pages::oidc::public_url(oidc, &headers, &signed_out);
            match back {
                Some(back) => oidc.end_session_url(&back).await,
                None => None,
            }
        }
        _ => None,
    };
    let to = provider.map_or(signed_out, |url| url.to_string());
    Ok((jar, Redirect::to(&to)).into_response())
}

//! Signing in with an API token, and out.

use axum::Form;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
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

pub(crate) async fn form(Query(query): Query<SignInQuery>) -> Markup {
    let notice = match query.notice.as_deref() {
        Some("ended") => {
            Some("Your session has ended: the token expired or was revoked. Sign in again.")
        }
        Some("signed-out") => Some("You are signed out."),
        _ => None,
    };
    render(query.next.as_deref(), notice, None)
}

fn render(next: Option<&str>, notice: Option<&str>, problem: Option<&Problem>) -> Markup {
    let body = html! {
        @if let Some(notice) = notice { (layout::notice(notice)) }
        @if let Some(problem) = problem { (problem.render()) }
        form.stacked method="post" action="/ui/sign-in" {
            input type="hidden" name="next" value=(links::local_next(next));
            label for="token" { "API token" }
            p.hint #token-hint {
                "The server's admin token, an API token ("
                code { "POST /api/v1/tokens" } "), or a token from your organisation's identity provider."
            }
            input #token type="password" name="token" required autocomplete="current-password"
                aria-describedby="token-hint" autofocus;
            button type="submit" { "Sign in" }
        }
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
        Err(_) => Err(refused(
            "the token is not valid: it holds characters a token cannot have",
        )),
    };
    match outcome {
        Ok(()) => {
            tracing::info!("a session was signed in");
            let jar = CookieJar::new().add(session.cookie(session::served_over_https(&headers)));
            (jar, Redirect::to(&links::local_next(form.next.as_deref()))).into_response()
        }
        Err(problem) => (
            problem.status_code(),
            render(form.next.as_deref(), None, Some(&problem)),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn sign_out(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Result<Response, UiError> {
    session.check_form(&headers, &form.csrf)?;
    let jar = CookieJar::new().add(Session::removal());
    Ok((jar, Redirect::to(&links::sign_in(None, Some("signed-out")))).into_response())
}

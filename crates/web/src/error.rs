//! What a page shows when it cannot show what was asked: the API's problem
//! as a readable message (never the raw JSON), or a trip to the sign-in page.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use maud::{Markup, html};
use serde::Deserialize;

use crate::layout::{self, Chrome};
use crate::links;
use crate::session::{Session, SessionError};

/// An `application/problem+json` answer of the API, with the extensions
/// that point at the cause.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Problem {
    pub status: u16,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub rule: Option<String>,
    pub dependency: Option<String>,
    pub platform: Option<String>,
}

impl Problem {
    pub(crate) fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem as an alert: its title, its detail, and where it lies.
    pub(crate) fn render(&self) -> Markup {
        let mut pointers = Vec::new();
        if let (Some(line), Some(column)) = (self.line, self.column) {
            pointers.push(format!("at line {line}, column {column}"));
        }
        if let Some(dependency) = &self.dependency {
            pointers.push(format!("dependency: {dependency}"));
        }
        if let Some(rule) = &self.rule {
            pointers.push(format!("policy rule: {rule}"));
        }
        if let Some(platform) = &self.platform {
            pointers.push(format!("platform: {platform}"));
        }
        html! {
            div.alert role="alert" {
                p.alert-title { strong { (self.title) } }
                p.alert-detail { (self.detail) }
                @if !pointers.is_empty() {
                    ul.alert-pointers { @for pointer in &pointers { li { (pointer) } } }
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UiError {
    /// No session: sign in, then come back to `next`.
    #[error("sign in to see this page")]
    SignIn { next: Option<String> },
    /// The API refused the session's token: it expired or was revoked.
    #[error("the session has ended: its token is unknown, expired or revoked")]
    SessionEnded,
    /// What the API answered instead (boxed: it is much larger than the rest).
    #[error("{}", .0.detail)]
    Problem(Box<Problem>),
    /// A form the UI will not pass on (CSRF, another origin).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    BadRequest(String),
    /// The API answered something this UI cannot read: a bug, logged.
    #[error("{0}")]
    Unexpected(String),
}

impl UiError {
    pub(crate) fn bad_input(value: &str) -> Self {
        Self::BadRequest(format!("'{}' cannot be sent on", value.escape_debug()))
    }

    fn problem(&self) -> Problem {
        let (status, detail) = match self {
            Self::Problem(problem) => return problem.as_ref().clone(),
            Self::Refused(detail) => (StatusCode::FORBIDDEN, detail.clone()),
            Self::BadRequest(detail) => (StatusCode::BAD_REQUEST, detail.clone()),
            Self::SignIn { .. } | Self::SessionEnded => {
                (StatusCode::UNAUTHORIZED, self.to_string())
            }
            Self::Unexpected(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong on the server; the error was logged".to_owned(),
            ),
        };
        Problem {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            detail,
            ..Problem::default()
        }
    }
}

impl From<SessionError> for UiError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::SignIn { next } => Self::SignIn { next },
            SessionError::Ended => Self::SessionEnded,
            SessionError::Refused(detail) => Self::Refused(detail),
        }
    }
}

/// A request without a usable session gets the page [`UiError`] gives it.
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        UiError::from(self).into_response()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match &self {
            Self::SignIn { next } => {
                return Redirect::to(&links::sign_in(next.as_deref(), None)).into_response();
            }
            Self::SessionEnded => {
                let jar = CookieJar::new().add(Session::removal());
                return (jar, Redirect::to(&links::sign_in(None, Some("ended")))).into_response();
            }
            Self::Unexpected(message) => tracing::error!(error = %message, "a UI page failed"),
            _ => {}
        }
        let problem = self.problem();
        let body = html! {
            (problem.render())
            p { a href=(links::namespaces()) { "Back to the namespaces" } }
        };
        let page = layout::page(&problem.title, Chrome::default(), &[], body);
        (problem.status(), page).into_response()
    }
}

//! What a page shows when it cannot show what was asked: the API's problem
//! as a readable message (never the raw JSON), or a trip to the sign-in page.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use envstore_api_types::Problem;
use maud::{Markup, html};

use crate::layout::{self, Chrome};
use crate::links;
use crate::session::{Session, SessionError};

/// What the UI does with the API's problems (the wire type is shared with
/// the API, so the UI-only parts live here): answer with its status and
/// show it as an alert.
pub(crate) trait ProblemExt {
    /// The HTTP status to answer the page with (500 for one out of range).
    fn status_code(&self) -> StatusCode;

    /// The problem as an alert: its title, its detail, and where it lies.
    fn render(&self) -> Markup;
}

impl ProblemExt for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn render(&self) -> Markup {
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
        if let Some(package) = &self.package {
            pointers.push(format!("package: {package}"));
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

/// A problem the UI finds itself (or an API answer that is not one): the
/// status's reason phrase as its title.
pub(crate) fn problem_of(status: StatusCode, detail: String) -> Problem {
    Problem {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        detail,
        ..Problem::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UiError {
    /// No session: sign in, then come back to `next`.
    #[error("sign in to see this page")]
    SignIn { next: Option<String> },
    /// The API refused the session's token: it expired or was revoked.
    /// Signing in again comes back to `next`.
    #[error("the session has ended: its token is unknown, expired or revoked")]
    SessionEnded { next: Option<String> },
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
            Self::SignIn { .. } | Self::SessionEnded { .. } => {
                (StatusCode::UNAUTHORIZED, self.to_string())
            }
            Self::Unexpected(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong on the server; the error was logged".to_owned(),
            ),
        };
        problem_of(status, detail)
    }
}

impl From<SessionError> for UiError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::SignIn { next } => Self::SignIn { next },
            SessionError::Ended { next } => Self::SessionEnded { next },
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
            Self::SessionEnded { next } => {
                let jar = CookieJar::new().add(Session::removal());
                let to = links::sign_in(next.as_deref(), Some("ended"));
                return (jar, Redirect::to(&to)).into_response();
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
        (problem.status_code(), page).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_session_signs_in_again_and_comes_back() {
        let response = UiError::SessionEnded {
            next: Some("/ui/namespaces/team".to_owned()),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = response.headers()[axum::http::header::LOCATION]
            .to_str()
            .unwrap();
        assert_eq!(
            location,
            "/ui/sign-in?next=%2Fui%2Fnamespaces%2Fteam&notice=ended"
        );
        let cookie = response.headers()[axum::http::header::SET_COOKIE]
            .to_str()
            .unwrap();
        assert!(
            cookie.starts_with("envstore_session=;") && cookie.contains("Max-Age=0"),
            "{cookie}"
        );
        let first_visit = UiError::SignIn { next: None }.into_response();
        assert_eq!(
            first_visit.headers()[axum::http::header::LOCATION],
            "/ui/sign-in"
        );
        assert!(
            first_visit
                .headers()
                .get(axum::http::header::SET_COOKIE)
                .is_none()
        );
    }

    #[test]
    fn an_api_problem_renders_its_title_detail_and_pointers() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "/problems/invalid-spec", "title": "Unprocessable Entity", "status": 422,
            "detail": "the spec is not valid YAML", "line": 3, "column": 7,
            "dependency": "numpy>=", "package": "six"
        }))
        .expect("the API's problem decodes");
        assert_eq!(problem.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = problem.render().into_string();
        for expected in [
            "Unprocessable Entity",
            "the spec is not valid YAML",
            "at line 3, column 7",
            "dependency: numpy&gt;=",
            "package: six",
        ] {
            assert!(html.contains(expected), "{expected} in {html}");
        }
        let made = problem_of(StatusCode::FORBIDDEN, "not here".to_owned());
        assert_eq!((made.status, made.title.as_str()), (403, "Forbidden"));
        assert!(!made.render().into_string().contains("alert-pointers"));
    }
}

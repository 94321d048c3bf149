//! The JSON API, called in-process: each request goes through the API's own
//! router (the same extractors, checks and errors as over HTTP) with the
//! session's token, and its answer is decoded into the API's own wire types
//! (`envstore-api-types`), so the UI reads exactly what the API sends.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use envstore_api::AppState;
use envstore_core::ChannelAllowlist;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use envstore_api_types::Problem;

use crate::error::{UiError, problem_of};
use crate::session::{Session, SessionError, Visitor};

/// Who a page calls the API as: a session's token, or nobody (public
/// pages), and where to send them when the API wants a signature.
pub(crate) trait Credentials {
    /// The `Authorization` header to send, if any.
    fn authorization(&self) -> Result<Option<HeaderValue>, SessionError>;
    /// What a 401 from the API means for them: sign in (again), then come
    /// back to the page.
    fn signature_needed(&self) -> UiError;
}

impl Credentials for Session {
    fn authorization(&self) -> Result<Option<HeaderValue>, SessionError> {
        Session::authorization(self).map(Some)
    }

    fn signature_needed(&self) -> UiError {
        UiError::SessionEnded { next: self.next() }
    }
}

impl Credentials for Visitor {
    fn authorization(&self) -> Result<Option<HeaderValue>, SessionError> {
        self.session().map(Session::authorization).transpose()
    }

    fn signature_needed(&self) -> UiError {
        match self.session() {
            Some(session) => session.signature_needed(),
            None => UiError::SignIn { next: self.next() },
        }
    }
}

/// The largest API answer a page reads whole (a build with its packages
/// for several platforms, a long log).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The UI's state: the API's router, and the server's channel names to
/// show beside package URLs.
#[derive(Clone)]
pub(crate) struct Api {
    router: Router,
    app: AppState,
}

impl Api {
    pub(crate) fn new(app: AppState) -> Self {
        Self {
            router: envstore_api::router(app.clone()),
            app,
        }
    }

    pub(crate) fn allowlist(&self) -> &ChannelAllowlist {
        &self.app.allowlist
    }

    /// The API's shared state (the identity provider, the database).
    pub(crate) fn app(&self) -> &AppState {
        &self.app
    }

    /// Sends one request to the API as the session's caller (or as nobody).
    pub(crate) async fn call(
        &self,
        session: &impl Credentials,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
        body: Body,
    ) -> Result<Response, UiError> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(authorization) = session.authorization()? {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        for (name, value) in headers {
            request = request.header(
                name,
                HeaderValue::from_str(value).map_err(|_| UiError::bad_input(value))?,
            );
        }
        let request = request.body(body).map_err(|error| {
            UiError::Unexpected(format!("the request for {uri} could not be made: {error}"))
        })?;
        match self.router.clone().oneshot(request).await {
            Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                Err(session.signature_needed())
            }
            Ok(response) => Ok(response),
            Err(never) => match never {},
        }
    }

    /// GETs `uri` and decodes its JSON; API errors become [`UiError`]s.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        session: &impl Credentials,
        uri: &str,
    ) -> Result<T, UiError> {
        let response = self
            .call(session, Method::GET, uri, &[], Body::empty())
            .await?;
        decode(response, uri).await
    }

    /// GETs `uri` and returns its body as text (a spec, a log); API errors
    /// become [`UiError`]s.
    pub(crate) async fn get_text(
        &self,
        session: &impl Credentials,
        uri: &str,
    ) -> Result<String, UiError> {
        let response = self
            .call(session, Method::GET, uri, &[], Body::empty())
            .await?;
        if !response.status().is_success() {
            return Err(problem(response).await);
        }
        let bytes = read(response).await?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            UiError::Unexpected(format!("the API's answer to {uri} is not UTF-8 text"))
        })
    }

    /// Sends `body` with `content_type` and decodes the JSON answer.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        session: &impl Credentials,
        method: Method,
        uri: &str,
        content_type: &str,
        body: String,
    ) -> Result<T, UiError> {
        let response = self
            .call(
                session,
                method,
                uri,
                &[(header::CONTENT_TYPE, content_type)],
                Body::from(body),
            )
            .await?;
        decode(response, uri).await
    }
}

impl Api {
    /// Sends `body` (JSON, or nothing) and only checks that it succeeded:
    /// for the API's answers without a body (204) or whose body the page
    /// does not read.
    pub(crate) async fn act(
        &self,
        session: &impl Credentials,
        method: Method,
        uri: &str,
        json: Option<String>,
    ) -> Result<(), UiError> {
        let content_type = [(header::CONTENT_TYPE, "application/json")];
        let (headers, body): (&[(header::HeaderName, &str)], Body) = match json {
            Some(json) => (&content_type, Body::from(json)),
            None => (&[], Body::empty()),
        };
        let response = self.call(session, method, uri, headers, body).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(problem(response).await)
        }
    }
}

/// The answer's JSON when it succeeded, else the problem it reports.
async fn decode<T: DeserializeOwned>(response: Response, uri: &str) -> Result<T, UiError> {
    if !response.status().is_success() {
        return Err(problem(response).await);
    }
    let bytes = read(response).await?;
    serde_json::from_slice(&bytes).map_err(|error| {
        UiError::Unexpected(format!(
            "the API's answer to {uri} could not be read: {error}"
        ))
    })
}

/// The problem an unsuccessful API answer reports (RFC 9457).
pub(crate) async fn problem(response: Response) -> UiError {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        return UiError::SessionEnded { next: None };
    }
    let bytes = read(response).await.unwrap_or_default();
    let problem = serde_json::from_slice::<Problem>(&bytes)
        .unwrap_or_else(|_| problem_of(status, String::from_utf8_lossy(&bytes).into_owned()));
    UiError::Problem(Box::new(problem))
}

async fn read(response: Response) -> Result<Bytes, UiError> {
    axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|error| {
            UiError::Unexpected(format!("the API's answer could not be read: {error}"))
        })
}

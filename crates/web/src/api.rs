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
use crate::session::Session;

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

    /// Sends one request to the API as the session's caller.
    pub(crate) async fn call(
        &self,
        session: &Session,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
        body: Body,
    ) -> Result<Response, UiError> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, session.authorization()?);
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
            Ok(response) => Ok(response),
            Err(never) => match never {},
        }
    }

    /// GETs `uri` and decodes its JSON; API errors become [`UiError`]s.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        session: &Session,
        uri: &str,
    ) -> Result<T, UiError> {
        let response = self
            .call(session, Method::GET, uri, &[], Body::empty())
            .await?;
        decode(response, uri).await
    }

    /// GETs `uri` and returns its body as text (a spec, a log); API errors
    /// become [`UiError`]s.
    pub(crate) async fn get_text(&self, session: &Session, uri: &str) -> Result<String, UiError> {
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
        session: &Session,
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
        return UiError::SessionEnded;
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

//! The JSON API, called in-process: each request goes through the API's own
//! router (the same extractors, checks and errors as over HTTP) with the
//! session's token, and its answer is decoded into the types below, which
//! name only the fields the pages show.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use envstore_api::AppState;
use envstore_core::{BuildStatus, CanonicalSpec, ChannelAllowlist};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use crate::error::{Problem, UiError};
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
    let problem = serde_json::from_slice::<Problem>(&bytes).unwrap_or_else(|_| Problem {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        detail: String::from_utf8_lossy(&bytes).into_owned(),
        ..Problem::default()
    });
    UiError::Problem(Box::new(problem))
}

async fn read(response: Response) -> Result<Bytes, UiError> {
    axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|error| {
            UiError::Unexpected(format!("the API's answer could not be read: {error}"))
        })
}

/// A page of a listing, with the cursor of the next page.
#[derive(Debug, Deserialize)]
pub(crate) struct NamespacesPage {
    pub namespaces: Vec<NamespaceItem>,
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NamespaceItem {
    pub name: String,
    pub created_at: i64,
    pub public_read: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EnvironmentsPage {
    pub environments: Vec<EnvironmentItem>,
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EnvironmentItem {
    pub name: String,
    pub created_at: i64,
    pub current_build_id: Option<String>,
    pub current_status: Option<BuildStatus>,
    pub latest_build_id: Option<String>,
    pub latest_status: Option<BuildStatus>,
    pub latest_created_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BuildsPage {
    pub current_build_id: Option<String>,
    pub builds: Vec<HistoryItem>,
    pub next_after: Option<String>,
}

/// One build of an environment's history.
#[derive(Debug, Deserialize)]
pub(crate) struct HistoryItem {
    pub id: String,
    pub status: BuildStatus,
    pub created_at: i64,
    pub submitted_by: Option<String>,
    pub current: bool,
    pub phases: Vec<Phase>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Phase {
    pub phase: String,
    pub started_at: i64,
    pub duration_ms: Option<i64>,
    pub detail: Option<String>,
}

/// A build as `GET /api/v1/builds/{id}` shows it.
#[derive(Debug, Deserialize)]
pub(crate) struct Build {
    pub id: String,
    pub namespace: String,
    pub environment: String,
    pub status: BuildStatus,
    pub spec: Option<CanonicalSpec>,
    pub lock_hash: Option<String>,
    pub reused: Reuse,
    pub phases: Vec<Phase>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Packages per platform, once the build has a lock.
    pub packages: Option<BTreeMap<String, Vec<Package>>>,
    /// Related resources by name: `self`, `log`, and each lock artifact
    /// (`conda-lock.yml`, `pixi.lock`, `explicit-<platform>.txt`).
    pub links: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Reuse {
    pub lock: bool,
    pub prefix: bool,
}

/// One locked package.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Package {
    pub name: String,
    pub version: String,
    pub build: String,
    pub url: String,
}

/// The API's answer to a submitted spec.
#[derive(Debug, Deserialize)]
pub(crate) struct Submitted {
    pub build_id: String,
    pub joined: bool,
}

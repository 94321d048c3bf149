//! Request bodies: read within their limits, refused before a parser sees
//! a body that nests too deep, parsed off the async runtime when parsing
//! can be expensive, and every refusal a problem+json answer.

use std::marker::PhantomData;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use envstore_core::body_limits;
use envstore_core::spec::MAX_SPEC_BYTES;
use envstore_core::{EnvironmentSpec, SpecFormat};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// How long parsing one request body may take. A body within the size and
/// nesting limits parses in milliseconds; past this it is refused.
pub const PARSE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// Request bodies parsed at once, off the async runtime: a burst of
/// expensive bodies keeps at most this many CPU threads busy, and the
/// runtime (health checks, other requests, shutdown) keeps answering.
pub const PARSE_SLOTS: usize = 4;

static PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARSE_SLOTS);

/// Runs `parse` on a blocking thread under [`PARSE_BUDGET`] (waiting for a
/// free slot included). The slot is held until the parse really ends, even
/// when the request gave up on it: a parser cannot be interrupted.
pub(crate) async fn parse_off_runtime<T, E>(
    parse: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    let deadline = tokio::time::Instant::now() + PARSE_BUDGET;
    let permit = tokio::time::timeout_at(deadline, PARSES.acquire())
        .await
        .map_err(|_| ApiError::Busy)?
        .map_err(|_| ApiError::Busy)?;
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        parse()
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(parsed)) => Ok(parsed?),
        Ok(Err(join)) => Err(ApiError::BadRequest(format!(
            "the request body could not be read: {join}"
        ))),
        Err(_) => Err(ApiError::ParseBudget {
            seconds: PARSE_BUDGET.as_secs(),
        }),
    }
}

/// A JSON request body to be read as `T`. The bytes are taken by the
/// extractor; [`JsonBody::parse`] applies the limits
/// ([`body_limits::MAX_JSON_BYTES`], [`body_limits::MAX_NESTING`]) and
/// answers 400 with [`JsonExample::EXAMPLE`] when the body does not parse.
/// Parsing is the handler's call, after it checked the caller: a caller
/// who may not use the route learns that (401, 403, 404) whatever it sent.
/// Unlike axum's `Json` it accepts any content type, as the API always has,
/// and every refusal is problem+json.
pub(crate) struct JsonBody<T> {
    bytes: Bytes,
    kind: PhantomData<fn() -> T>,
}

/// What a JSON body of this type looks like, shown when one does not parse.
pub(crate) trait JsonExample {
    const EXAMPLE: &'static str;
}

impl<T: DeserializeOwned + JsonExample> JsonBody<T> {
    /// The body as `T`, or the 400 or 413 that says why not.
    pub(crate) fn parse(&self) -> Result<T, ApiError> {
        parse_json(&self.bytes, T::EXAMPLE)
    }
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge {
                        limit: body_limits::MAX_JSON_BYTES,
                    },
                    _ => ApiError::BadRequest(rejection.body_text()),
                })?;
        Ok(Self {
            bytes,
            kind: PhantomData,
        })
    }
}

/// A JSON body, or a 400 that shows what was expected.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8], example: &str) -> Result<T, ApiError> {
    envstore_core::body_limits::check_size(body, envstore_core::body_limits::MAX_JSON_BYTES)?;
    envstore_core::body_limits::check_json(body, envstore_core::body_limits::MAX_NESTING)?;
    serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!("expected a JSON body like {example}: {error}"))
    })
}

/// The spec in a request body: JSON when the content type says so,
/// environment.yml otherwise, at most [`MAX_SPEC_BYTES`] nesting at most
/// [`body_limits::MAX_NESTING`] levels, parsed off the async runtime.
pub(crate) async fn read_spec(
    headers: &HeaderMap,
    body: Body,
) -> Result<EnvironmentSpec, ApiError> {
    parse_spec(headers, read_body(body, MAX_SPEC_BYTES).await?).await
}

/// A request body of at most `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge { limit })
}

/// The format a spec body is read as: JSON when the content type says so,
/// environment.yml otherwise.
pub(crate) fn spec_format(headers: &HeaderMap) -> SpecFormat {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    {
        Some(content_type) if content_type.contains("json") => SpecFormat::Json,
        _ => SpecFormat::Yaml,
    }
}

/// [`read_spec`] of a body already read.
pub(crate) async fn parse_spec(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<EnvironmentSpec, ApiError> {
    let format = spec_format(headers);
    // Refused before the parser sees it: libyaml's time grows with the body
    // times its nesting.
    match format {
        SpecFormat::Json => body_limits::check_json(&body, body_limits::MAX_NESTING)?,
        SpecFormat::Yaml => body_limits::check_yaml(&body, body_limits::MAX_NESTING)?,
    }
    parse_off_runtime(move || EnvironmentSpec::parse(&body, format)).await
}

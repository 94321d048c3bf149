//! The one HTTP client the service uses towards channels, for repodata (the
//! gateway) and package downloads (the installer): every request must lie
//! inside an allowed channel, redirects are followed only into an allowed
//! channel, connects and reads have time limits, and the credentials taken
//! out of the configured channel URLs are put back on the wire here and
//! nowhere else. What fails is reported by channel and channel-relative
//! path; what the channel's server answered stays in the server log.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use envstore_core::{ChannelAllowlist, ChannelCredential, public_url};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use url::Url;

/// How long connecting to a channel's server may take, unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a channel's server may stay silent (waiting for its answer, or
/// between two reads of it), unless configured.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest repodata answer read from a channel, unless configured: far
/// above conda-forge's biggest `repodata.json` (a few hundred MiB).
pub const DEFAULT_MAX_REPODATA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// How long transient errors of repodata requests are retried, unless
/// configured: a channel restarting or a proxy briefly failing should not
/// fail a build.
pub const DEFAULT_TRANSIENT_RETRY: Duration = Duration::from_secs(120);

/// Redirects followed for one request, each into an allowed channel.
const MAX_REDIRECTS: usize = 5;

/// The first and the longest pause between two tries of a repodata request
/// (exponential, with jitter).
const RETRY_MIN_DELAY: Duration = Duration::from_millis(500);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(15);

/// The longest `Retry-After` honoured: a server asking for more is asked
/// again sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Time and size limits of requests towards channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkLimits {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Bytes one answer that is not a package archive (repodata, shards)
    /// may carry on the wire; archives are bounded by the package limits.
    pub max_repodata_bytes: u64,
    /// How long a repodata request is retried after transient errors
    /// (refused or reset connections, timeouts, 5xx, 429); zero: never.
    /// Package archives are retried by the installer, not here.
    pub transient_retry: Duration,
}

impl Default for NetworkLimits {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_repodata_bytes: DEFAULT_MAX_REPODATA_BYTES,
            transient_retry: DEFAULT_TRANSIENT_RETRY,
        }
    }
}

pub use envstore_core::channel_request::{ChannelRequestError, RequestFailure, Retried};

/// The refusal a redirect out of the allowed channels gets from the policy.
#[derive(Debug, thiserror::Error)]
#[error("a redirect outside the allowed channels")]
struct RedirectRefused;

#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("failed to build the HTTP client for channels")]
    Build(#[source] reqwest::Error),
}

/// The client towards the allowed channels, and what it needs to keep
/// their secrets out of messages.
#[derive(Clone)]
pub struct ChannelClient {
    client: ClientWithMiddleware,
    allowlist: Arc<ChannelAllowlist>,
    limits: NetworkLimits,
}

impl std::fmt::Debug for ChannelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelClient")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ChannelClient {
    pub fn new(
        allowlist: &ChannelAllowlist,
        limits: NetworkLimits,
    ) -> Result<Self, HttpClientError> {
        let allowlist = Arc::new(allowlist.clone());
        let redirects = allowlist.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS || redirects.locate(attempt.url()).is_err()
            {
                attempt.error(RedirectRefused)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("envstore/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(limits.connect_timeout)
            .read_timeout(limits.read_timeout)
            .redirect(policy)
            .build()
            .map_err(HttpClientError::Build)?;
        let client = reqwest_middleware::ClientBuilder::new(client)
            .with(ChannelGuard {
                allowlist: allowlist.clone(),
                limits,
            })
            .build();
        Ok(Self {
            client,
            allowlist,
            limits,
        })
    }

    /// The client, as rattler's gateway and installer take it.
    pub fn lazy(&self) -> rattler_networking::LazyClient {
        self.client.clone().into()
    }

    pub fn client(&self) -> &ClientWithMiddleware {
        &self.client
    }

    pub fn limits(&self) -> NetworkLimits {
        self.limits
    }

    /// `text` with the channels' secrets masked.
    pub fn redact(&self, text: &str) -> String {
        self.allowlist.redact_text(text)
    }
}

/// The middleware that checks, authenticates and reports every request.
struct ChannelGuard {
    allowlist: Arc<ChannelAllowlist>,
    limits: NetworkLimits,
}

impl ChannelGuard {
    fn refuse(
        &self,
        channel: &str,
        path: String,
        failure: RequestFailure,
    ) -> reqwest_middleware::Error {
        reqwest_middleware::Error::middleware(ChannelRequestError {
            channel: channel.to_owned(),
            path,
            failure,
            retried: None,
        })
    }

    fn classify(&self, error: &reqwest_middleware::Error) -> RequestFailure {
        match error {
            reqwest_middleware::Error::Reqwest(error) if error.is_redirect() => {
                RequestFailure::Redirected
            }
            reqwest_middleware::Error::Reqwest(error) if error.is_connect() => {
                RequestFailure::Unreachable
            }
            reqwest_middleware::Error::Reqwest(error) if error.is_timeout() => {
                RequestFailure::TimedOut(self.limits.read_timeout)
            }
            _ => RequestFailure::Failed,
        }
    }
}

/// Whether a path below a channel names a package archive (rather than
/// repodata, whose missing variants the gateway probes for with 404s).
fn is_package(path: &str) -> bool {
    path.ends_with(".conda") || path.ends_with(".tar.bz2")
}

/// What one try of a request came to.
enum Outcome {
    Done(reqwest_middleware::Result<Response>),
    /// Worth another try: the failure, what the log says about it, and the
    /// pause the server asked for.
    Transient {
        failure: RequestFailure,
        detail: String,
        retry_after: Option<Duration>,
    },
}

#[async_trait::async_trait]
impl Middleware for ChannelGuard {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let url = request.url().clone();
        let (channel, channel_url, path) = match self.allowlist.locate(&url) {
            Ok((channel, path)) => (
                channel.name.clone(),
                public_url(&channel.url).to_string(),
                path.relative(),
            ),
            Err(defect) => {
                let shown = public_url(&url).to_string();
                tracing::warn!(url = %self.allowlist.redact_text(&shown), %defect, "refused a request outside the allowed channels");
                return Err(self.refuse("(none)", shown, RequestFailure::Outside));
            }
        };
        authenticate(&self.allowlist, &mut request, &url);
        // Package archives are retried by the installer, around the whole
        // download; a request whose body cannot be sent twice is not retried.
        let budget = if is_package(&path) {
            Duration::ZERO
        } else {
            self.limits.transient_retry
        };
        let started = std::time::Instant::now();
        let mut delays = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(RETRY_MIN_DELAY)
                .with_max_delay(RETRY_MAX_DELAY)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
        );
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let again = if budget.is_zero() {
                None
            } else {
                request.try_clone()
            };
            let outcome =
                self.try_once(&channel, &path, next.clone().run(request, extensions).await);
            let (failure, detail, retry_after) = match outcome {
                Outcome::Done(result) => return result,
                Outcome::Transient {
                    failure,
                    detail,
                    retry_after,
                } => (failure, detail, retry_after),
            };
            let elapsed = started.elapsed();
            // The last try comes when the budget ends, not a pause before.
            let pause = retry_after
                .map(|asked| asked.min(MAX_RETRY_AFTER))
                .or_else(|| delays.next())
                .unwrap_or(RETRY_MAX_DELAY)
                .min(budget.saturating_sub(elapsed));
            let again = match again {
                Some(again) if elapsed < budget => again,
                unsent => {
                    tracing::warn!(channel, path, error = %detail, attempts, seconds = elapsed.as_secs_f64(), "a request to a channel failed");
                    let retried = unsent.is_some().then(|| Retried {
                        url: channel_url.clone(),
                        attempts,
                        after: elapsed,
                    });
                    return Err(reqwest_middleware::Error::middleware(ChannelRequestError {
                        channel,
                        path,
                        failure,
                        retried,
                    }));
                }
            };
            tracing::warn!(
                channel,
                path,
                error = %detail,
                attempt = attempts,
                retry_in_seconds = pause.as_secs_f64(),
                "a request to a channel failed; retrying"
            );
            tokio::time::sleep(pause).await;
            request = again;
        }
    }
}

impl ChannelGuard {
    /// What the answer (or failure) of one try comes to.
    fn try_once(
        &self,
        channel: &str,
        path: &str,
        result: reqwest_middleware::Result<Response>,
    ) -> Outcome {
        match result {
            Ok(response) => {
                let status = response.status();
                let passes = status.is_success()
                    || status.is_redirection()
                    || (status == StatusCode::NOT_FOUND && !is_package(path));
                if passes && is_package(path) {
                    return Outcome::Done(Ok(response));
                }
                if passes {
                    let limit = self.limits.max_repodata_bytes;
                    if response
                        .content_length()
                        .is_some_and(|length| length > limit)
                    {
                        tracing::warn!(
                            channel,
                            path,
                            limit,
                            "a channel's answer is over the repodata limit"
                        );
                        return Outcome::Done(Err(self.refuse(
                            channel,
                            path.to_owned(),
                            RequestFailure::TooLarge(limit),
                        )));
                    }
                    return Outcome::Done(Ok(bounded(response, limit)));
                }
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    return Outcome::Transient {
                        failure: RequestFailure::Unavailable,
                        detail: format!("the server answered {status}"),
                        retry_after: retry_after(&response),
                    };
                }
                tracing::warn!(channel, path, %status, "a channel's server answered with an error");
                Outcome::Done(Err(self.refuse(
                    channel,
                    path.to_owned(),
                    RequestFailure::Answered,
                )))
            }
            Err(error) => {
                let failure = self.classify(&error);
                let detail = self
                    .allowlist
                    .redact_text(&envstore_core::error_chain(&error));
                if is_transient(&error) {
                    return Outcome::Transient {
                        failure,
                        detail,
                        retry_after: None,
                    };
                }
                tracing::warn!(channel, path, error = %detail, "a request to a channel failed");
                Outcome::Done(Err(self.refuse(channel, path.to_owned(), failure)))
            }
        }
    }
}

/// Whether a request that got no answer may get one when sent again:
/// refused, reset or timed-out connections, not a refused redirect or a
/// request that could not be built.
fn is_transient(error: &reqwest_middleware::Error) -> bool {
    match error {
        reqwest_middleware::Error::Reqwest(error) => {
            !error.is_redirect() && !error.is_builder() && !error.is_decode() && !error.is_status()
        }
        reqwest_middleware::Error::Middleware(_) => false,
    }
}

/// The pause a 503 or 429 asks for (`Retry-After` in seconds).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `response` with its body cut off with an error past `limit` bytes, for
/// answers that do not say their length up front.
fn bounded(response: Response, limit: u64) -> Response {
    use reqwest::ResponseBuilderExt;
    let url = response.url().clone();
    let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    let limited = reqwest::Body::wrap(http_body_util::Limited::new(
        body,
        usize::try_from(limit).unwrap_or(usize::MAX),
    ));
    let mut builder = http::Response::builder()
        .status(parts.status)
        .version(parts.version)
        .url(url);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers;
    }
    match builder.body(limited) {
        Ok(rebuilt) => Response::from(rebuilt),
        // Status, version and headers came from a valid answer.
        Err(_) => Response::from(http::Response::new(reqwest::Body::from(Vec::new()))),
    }
}

/// Puts the credentials configured for the request's channel on it: basic
/// authentication as a header, a token as the `/t/<token>/` path prefix.
fn authenticate(allowlist: &ChannelAllowlist, request: &mut Request, url: &Url) {
    let Some(secret) = allowlist
        .secrets()
        .iter()
        .find(|secret| url.as_str().starts_with(secret.channel.as_str()))
    else {
        return;
    };
    for credential in &secret.credentials {
        match credential {
            ChannelCredential::Basic { username, password } => {
                let pair = format!("{username}:{}", password.as_deref().unwrap_or_default());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {encoded}")) {
                    value.set_sensitive(true);
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
            }
            ChannelCredential::Token(token) => {
                let path = format!("/t/{token}{}", request.url().path());
                request.url_mut().set_path(&path);
            }
        }
    }
}

/// The failed request inside a gateway or installer error, if the failure
/// was a request of this client's.
pub fn request_error(error: &(dyn std::error::Error + 'static)) -> Option<ChannelRequestError> {
    fn from_middleware(error: &reqwest_middleware::Error) -> Option<ChannelRequestError> {
        match error {
            reqwest_middleware::Error::Middleware(inner) => {
                inner.downcast_ref::<ChannelRequestError>().cloned()
            }
            reqwest_middleware::Error::Reqwest(_) => None,
        }
    }
    fn from_anyhow(error: &anyhow::Error) -> Option<ChannelRequestError> {
        error
            .downcast_ref::<ChannelRequestError>()
            .cloned()
            .or_else(|| {
                error
                    .downcast_ref::<reqwest_middleware::Error>()
                    .and_then(from_middleware)
            })
    }
    use rattler_repodata_gateway::GatewayError;
    use rattler_repodata_gateway::fetch::FetchRepoDataError;
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<ChannelRequestError>() {
            return Some(found.clone());
        }
        let found = if let Some(error) = error.downcast_ref::<reqwest_middleware::Error>() {
            from_middleware(error)
        } else if let Some(FetchRepoDataError::HttpError(error)) =
            error.downcast_ref::<FetchRepoDataError>()
        {
            from_middleware(error)
        } else if let Some(error) = error.downcast_ref::<GatewayError>() {
            match error {
                GatewayError::FetchRepoDataError(FetchRepoDataError::HttpError(error)) => {
                    from_middleware(error)
                }
                GatewayError::ReqwestMiddlewareError(error) => from_anyhow(error),
                _ => None,
            }
        } else {
            None
        };
        if found.is_some() {
            return found;
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use envstore_core::NamedChannel;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A loopback server answering each request line (with `auth=` whether
    /// it had an Authorization header) through `answer`; `None` never answers.
    async fn server(answer: fn(&str) -> Option<String>) -> (Url, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = Url::parse(&format!(
            "http://{}/",
            listener.local_addr().expect("an address")
        ))
        .expect("a URL");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let line = format!(
                        "{} auth={}",
                        head.lines().next().unwrap_or_default(),
                        head.contains("\r\nauthorization: basic ")
                    );
                    log.lock().expect("the log").push(line.clone());
                    match answer(&line) {
                        Some(response) => {
                            let _ = stream.write_all(response.as_bytes()).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        (url, seen)
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn client(channels: &[(&str, String)], limits: NetworkLimits) -> ChannelClient {
        let channels = channels
            .iter()
            .map(|(name, url)| NamedChannel::parse(&format!("{name}={url}")).expect("a channel"))
            .collect();
        ChannelClient::new(&ChannelAllowlist::new(channels), limits).expect("a client")
    }

    fn failure(error: reqwest_middleware::Error) -> ChannelRequestError {
        request_error(&error).unwrap_or_else(|| panic!("not a channel request error: {error}"))
    }

    #[tokio::test]
    async fn repodata_answers_are_bounded_with_or_without_a_length() {
        let big = "x".repeat(4096);
        let (url, _) = server(|line| {
            let body = "x".repeat(4096);
            Some(if line.contains("unsized") {
                // No length: the body runs until the connection closes.
                format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}")
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            })
        })
        .await;
        let limits = NetworkLimits {
            max_repodata_bytes: 1024,
            ..NetworkLimits::default()
        };
        let client = client(&[("chan", format!("{url}chan/"))], limits);
        let error = client
            .client()
            .get(url.join("chan/noarch/repodata.json").expect("a URL"))
            .send()
            .await
            .expect_err("over the limit");
        let failure = failure(error);
        assert_eq!(failure.failure, RequestFailure::TooLarge(1024));
        assert_eq!(failure.path, "noarch/repodata.json");
        assert!(
            failure
                .to_string()
                .contains("larger than the repodata limit of 1024 bytes"),
            "{failure}"
        );

        let response = client
            .client()
            .get(
                url.join("chan/noarch/unsized-repodata.json")
                    .expect("a URL"),
            )
            .send()
            .await
            .expect("the head is under no limit");
        assert!(
            response.bytes().await.is_err(),
            "the body stops at the limit"
        );

        let archive = client
            .client()
            .get(url.join("chan/noarch/pkg-1.0-0.conda").expect("a URL"))
            .send()
            .await
            .expect("archives are bounded by the package limits instead");
        assert_eq!(
            archive.bytes().await.expect("the whole archive"),
            big.as_bytes()
        );
    }

    #[tokio::test]
    async fn requests_outside_the_allowed_channels_are_never_sent() {
        let (url, seen) = server(|_| Some(ok("x"))).await;
        let client = client(&[("chan", format!("{url}chan/"))], NetworkLimits::default());
        for outside in [
            "chan-sibling/noarch/repodata.json",
            "chan/noarch%2F..%2F..%2Fsecret",
            "other/x",
        ] {
            let error = client
                .client()
                .get(url.join(outside).expect("a URL"))
                .send()
                .await
                .expect_err("a channel request error");
            assert_eq!(failure(error).failure, RequestFailure::Outside, "{outside}");
        }
        assert!(seen.lock().expect("the log").is_empty());
    }

    #[tokio::test]
    async fn redirects_are_followed_into_an_allowed_channel_only() {
        let (outside, outside_seen) = server(|_| Some(ok("outside"))).await;
        let (url, _) = server(|line| {
            Some(if line.contains("/chan/inside") {
                "HTTP/1.1 302 Found\r\nLocation: /chan/target\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            } else if line.contains("/chan/target") {
                ok("target")
            } else {
                // The port of the outside server is unknown here: any other host will do.
                "HTTP/1.1 302 Found\r\nLocation: http://localhost:9/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            })
        })
        .await;
        let client = client(
            &[
                ("chan", format!("{url}chan/")),
                ("other", format!("{outside}other/")),
            ],
            NetworkLimits::default(),
        );
        let response = client
            .client()
            .get(url.join("chan/inside").expect("a URL"))
            .send()
            .await
            .expect("followed");
        assert_eq!(response.text().await.expect("a body"), "target");
        let error = client
            .client()
            .get(url.join("chan/away").expect("a URL"))
            .send()
            .await
            .expect_err("a channel request error");
        let failed = failure(error);
        assert_eq!(
            (failed.channel.as_str(), failed.path.as_str()),
            ("chan", "away")
        );
        assert_eq!(failed.failure, RequestFailure::Redirected);
        assert!(!failed.to_string().contains("localhost:9"), "{failed}");
        assert!(outside_seen.lock().expect("the log").is_empty());
    }

    #[tokio::test]
    async fn credentials_go_on_the_wire_and_nowhere_else() {
        let (url, seen) = server(|line| {
            Some(
                if line.contains("/secret-path/") || line.contains("error") {
                    ok("x")
                } else {
                    ok("y")
                },
            )
        })
        .await;
        let host = url.authority().to_owned();
        let client = client(
            &[
                ("basic", format!("http://reader:hunter2-pass@{host}/basic/")),
                ("tokened", format!("http://{host}/t/tk-SECRET-9/tokened/")),
            ],
            NetworkLimits::default(),
        );
        for path in ["basic/noarch/repodata.json", "tokened/noarch/repodata.json"] {
            let response = client
                .client()
                .get(url.join(path).expect("a URL"))
                .send()
                .await
                .expect("answered");
            assert!(response.status().is_success());
        }
        let seen = seen.lock().expect("the log").clone();
        assert_eq!(
            seen,
            [
                "get /basic/noarch/repodata.json http/1.1 auth=true",
                "get /t/tk-secret-9/tokened/noarch/repodata.json http/1.1 auth=false"
            ]
        );
        assert!(!format!("{client:?}").contains("hunter2"));
        assert_eq!(
            client.redact("at /t/tk-SECRET-9/ with hunter2-pass"),
            "at /t/********/ with ********"
        );
    }

    #[tokio::test]
    async fn package_archives_are_left_to_the_installer_to_retry() {
        let (url, seen) = server(|_| {
            Some("HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned())
        })
        .await;
        let client = client(&[("chan", format!("{url}chan/"))], NetworkLimits::default());
        let error = client
            .client()
            .get(url.join("chan/noarch/x-1-0.conda").expect("a URL"))
            .send()
            .await
            .expect_err("a channel request error");
        let failed = failure(error);
        assert_eq!(
            (failed.failure, failed.retried),
            (RequestFailure::Unavailable, None)
        );
        assert_eq!(seen.lock().expect("the log").len(), 1, "sent once");
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let response = |value: &str| {
            Response::from(
                http::Response::builder()
                    .status(503)
                    .header(reqwest::header::RETRY_AFTER, value)
                    .body(reqwest::Body::from(Vec::new()))
                    .expect("a response"),
            )
        };
        assert_eq!(retry_after(&response("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&response("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }

    #[tokio::test]
    async fn a_silent_server_runs_into_the_read_limit_and_errors_echo_nothing() {
        let (url, _) = server(|line| {
            if line.contains("silent") {
                None
            } else {
                Some("HTTP/1.1 500 SECRET-STATUS\r\nContent-Length: 11\r\nConnection: close\r\n\r\nSECRET-BODY".to_owned())
            }
        })
        .await;
        let limits = NetworkLimits {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_millis(300),
            transient_retry: Duration::ZERO,
            ..NetworkLimits::default()
        };
        let client = client(&[("chan", format!("{url}chan/"))], limits);
        let started = std::time::Instant::now();
        let error = client
            .client()
            .get(url.join("chan/silent").expect("a URL"))
            .send()
            .await
            .expect_err("a channel request error");
        assert_eq!(
            failure(error).failure,
            RequestFailure::TimedOut(limits.read_timeout)
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        let error = client
            .client()
            .get(url.join("chan/noarch/x-1-0.conda").expect("a URL"))
            .send()
            .await
            .expect_err("a channel request error");
        let failed = failure(error);
        assert_eq!(failed.failure, RequestFailure::Unavailable);
        let shown = failed.to_string();
        assert!(
            shown.contains("channel 'chan': fetching 'noarch/x-1-0.conda'"),
            "{shown}"
        );
        assert!(
            !shown.contains("SECRET") && !shown.contains("500"),
            "{shown}"
        );
    }
}

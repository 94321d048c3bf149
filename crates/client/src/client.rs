//! The HTTP client: requests, retries and answers.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use envstore_api_types::{BuildQueued, BuildStatus, BuildView, Kernel, KernelsPage, UsageTable};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::progress::{BuildProgress, Downloads};
use crate::sse::EventParser;

/// How often `--wait` asks for the build's state.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How long a submission is retried (same request, same `Idempotency-Key`)
/// while the server cannot be reached or answers 502, 503 or 504: about
/// what a restarting database or API node takes to come back.
const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(30);

/// The first wait between two tries of a submission; doubled each time up
/// to [`MAX_RETRY_WAIT`], or what the server's `Retry-After` asks.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(500);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

pub struct Client {
    base: url::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let mut base =
            url::Url::parse(server).with_context(|| format!("invalid server URL '{server}'"))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            base,
            token,
            http: reqwest::Client::new(),
        })
    }

    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let url = self.base.join(path.trim_start_matches('/'))?;
        let request = self.http.request(method, url);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }

    /// Submits `body` for `namespace/name`; returns the build id. A
    /// lockfile (`pixi.lock`, `conda-lock.yml`) is installed as it is, a
    /// spec is solved. Sent with a fresh `Idempotency-Key` and retried with
    /// the same key for [`SUBMIT_RETRY_FOR`] while the server cannot be
    /// reached or is unavailable, so a lost answer never makes two builds.
    pub async fn submit(
        &self,
        environment: &str,
        body: Vec<u8>,
        json: bool,
    ) -> anyhow::Result<String> {
        let (namespace, name) = split_environment(environment)?;
        let content_type = if json {
            "application/json"
        } else {
            "application/yaml"
        };
        let target = if is_lockfile(&body) { "/lockfile" } else { "" };
        let path = format!("api/v1/namespaces/{namespace}/environments/{name}{target}");
        let key = uuid::Uuid::now_v7().to_string();
        let send = || async {
            self.request(reqwest::Method::PUT, &path)?
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .header("idempotency-key", &key)
                .body(body.clone())
                .send()
                .await
                .context("the server did not answer")
        };
        let response = retry_unavailable(SUBMIT_RETRY_FOR, send).await?;
        let queued: BuildQueued = expect_success(response).await?;
        Ok(queued.build_id)
    }

    /// Follows a build until it ends, reporting each phase on stderr, and
    /// returns its final state.
    pub async fn wait(&self, build_id: &str) -> anyhow::Result<BuildView> {
        let progress = BuildProgress::new(false);
        loop {
            let build = self.build(build_id).await?;
            let phase = build
                .phases
                .last()
                .map_or("queued", |phase| phase.phase.as_str());
            progress.report(match build.status {
                BuildStatus::Queued | BuildStatus::Running => format!("{}: {phase}", build.status),
                BuildStatus::Succeeded | BuildStatus::Failed | BuildStatus::Cancelled => {
                    build.status.to_string()
                }
            });
            if build.status.is_final() {
                return Ok(build);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Follows a build through its event stream (`…/log` as Server-Sent
    /// Events) until it ends: a progress bar of its phases and of packages
    /// downloaded and linked on a terminal, one line per phase otherwise.
    /// Falls back to polling when the stream cannot be had or breaks off.
    /// Also returns what the stream told of the packages' downloads.
    pub async fn follow(&self, build_id: &str) -> anyhow::Result<Followed> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("api/v1/builds/{build_id}/log"),
            )?
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await;
        let mut response = match response {
            Ok(response) if response.status().is_success() => response,
            _ => {
                return Ok(Followed {
                    build: self.wait(build_id).await?,
                    downloads: None,
                });
            }
        };
        let progress = BuildProgress::new(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let mut events = EventParser::default();
        while let Ok(Some(chunk)) = response.chunk().await {
            for event in events.feed(&chunk) {
                match event.name.as_str() {
                    "progress" => progress.event(&event.data),
                    "status" => progress.status(&event.data),
                    "end" => {
                        progress.finish();
                        let build = self.build(build_id).await?;
                        progress.report(build.status.to_string());
                        return Ok(Followed {
                            build,
                            downloads: progress.downloads(),
                        });
                    }
                    _ => {}
                }
            }
        }
        progress.finish();
        let downloads = progress.downloads();
        Ok(Followed {
            build: self.wait(build_id).await?,
            downloads,
        })
    }

    /// A build's state, phases, packages and error (`GET /api/v1/builds/{id}`).
    pub async fn build(&self, build_id: &str) -> anyhow::Result<BuildView> {
        let response = self
            .request(reqwest::Method::GET, &format!("api/v1/builds/{build_id}"))?
            .send()
            .await
            .context("the server did not answer")?;
        expect_success(response).await
    }

    /// The current lockfile of `namespace/name` in a format.
    pub async fn lockfile(
        &self,
        environment: &str,
        format: &str,
        platform: Option<&str>,
    ) -> anyhow::Result<String> {
        let (namespace, name) = split_environment(environment)?;
        let mut request = self
            .request(
                reqwest::Method::GET,
                &format!("api/v1/namespaces/{namespace}/environments/{name}/lockfile"),
            )?
            .query(&[("format", format)]);
        if let Some(platform) = platform {
            request = request.query(&[("platform", platform)]);
        }
        let response = request.send().await.context("the server did not answer")?;
        if response.status().is_success() {
            return Ok(response.text().await?);
        }
        Err(problem(response).await)
    }
}

/// A build followed to its end.
#[derive(Debug, Clone)]
pub struct Followed {
    pub build: BuildView,
    /// What its event stream told of the package downloads; None when the
    /// stream sent none (a reused prefix, a build followed by polling).
    pub downloads: Option<Downloads>,
}

/// What `envstore solve` asks of the server.
pub struct SolveRequest<'a> {
    pub namespace: &'a str,
    pub body: Vec<u8>,
    pub json: bool,
    /// Replace the spec's platforms (empty: keep them).
    pub platforms: &'a [String],
    pub format: &'a str,
    /// The platform of an explicit file.
    pub platform: Option<&'a str>,
}

impl Client {
    /// Solves a spec under a namespace's policy without a build and returns
    /// the lockfile.
    pub async fn solve(&self, request: SolveRequest<'_>) -> anyhow::Result<String> {
        let content_type = if request.json {
            "application/json"
        } else {
            "application/yaml"
        };
        let mut http = self
            .request(
                reqwest::Method::POST,
                &format!("api/v1/namespaces/{}/solve", request.namespace),
            )?
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .query(&[("format", request.format)]);
        if !request.platforms.is_empty() {
            http = http.query(&[("platforms", request.platforms.join(","))]);
        }
        if let Some(platform) = request.platform {
            http = http.query(&[("platform", platform)]);
        }
        let response = http
            .body(request.body)
            .send()
            .await
            .context("the server did not answer")?;
        if response.status().is_success() {
            return Ok(response.text().await?);
        }
        Err(problem(response).await)
    }
}

impl Client {
    /// Every kernel the server lists for this caller, following
    /// `next_after` across pages.
    pub async fn kernels(&self) -> anyhow::Result<Vec<Kernel>> {
        let mut kernels = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = self.request(reqwest::Method::GET, "api/v1/kernels")?;
            if let Some(after) = &after {
                request = request.query(&[("after", after.as_str())]);
            }
            let response = request.send().await.context("the server did not answer")?;
            let page: KernelsPage = expect_success(response).await?;
            kernels.extend(page.kernels);
            match page.next_after {
                Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                _ => return Ok(kernels),
            }
        }
    }
}

impl Client {
    /// Usage of the namespaces this caller may see (or of one), as the
    /// server's table: `namespaces` rows and `totals`, over all time or the
    /// period from `since` to `until` (RFC 3339 times or dates, checked by
    /// the server).
    pub async fn usage(
        &self,
        namespace: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
    ) -> anyhow::Result<UsageTable> {
        let path = match namespace {
            Some(namespace) => format!("api/v1/namespaces/{namespace}/usage"),
            None => "api/v1/usage".to_owned(),
        };
        let period: Vec<(&str, &str)> = [("since", since), ("until", until)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
        let response = self
            .request(reqwest::Method::GET, &path)?
            .query(&period)
            .send()
            .await
            .context("the server did not answer")?;
        expect_success(response).await
    }
}

/// Sends with `send` until the server answers something other than 502,
/// 503 or 504 and the connection works, for at most `budget`; then the
/// last answer (or error) stands. Waits double from [`FIRST_RETRY_WAIT`],
/// or follow the server's `Retry-After`, up to [`MAX_RETRY_WAIT`].
async fn retry_unavailable<F, Fut>(budget: Duration, send: F) -> anyhow::Result<reqwest::Response>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<reqwest::Response>>,
{
    let deadline = Instant::now() + budget;
    let mut wait = FIRST_RETRY_WAIT;
    loop {
        let outcome = send().await;
        let retry_after = match &outcome {
            Ok(response) if is_unavailable(response.status()) => retry_after(response),
            Ok(_) => return outcome,
            // Only a failure to reach the server or to hear its answer:
            // a request that cannot be built will not work later either.
            Err(error)
                if error
                    .downcast_ref::<reqwest::Error>()
                    .is_some_and(is_transport_error) =>
            {
                None
            }
            Err(_) => return outcome,
        };
        let pause = retry_after.unwrap_or(wait).min(MAX_RETRY_WAIT);
        if Instant::now() + pause > deadline {
            return outcome;
        }
        match &outcome {
            Ok(response) => eprintln!(
                "the server answered {}; trying again in {:.1} s",
                response.status(),
                pause.as_secs_f64()
            ),
            Err(error) => eprintln!("{error:#}; trying again in {:.1} s", pause.as_secs_f64()),
        }
        tokio::time::sleep(pause).await;
        wait = (wait * 2).min(MAX_RETRY_WAIT);
    }
}

/// 502, 503 and 504: the server or a proxy before it cannot answer now.
fn is_unavailable(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

fn is_transport_error(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
}

/// The server's `Retry-After` in seconds, if it sent one.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

pub(crate) fn split_environment(environment: &str) -> anyhow::Result<(&str, &str)> {
    environment
        .split_once('/')
        .filter(|(namespace, name)| {
            !namespace.is_empty() && !name.is_empty() && !name.contains('/')
        })
        .with_context(|| format!("'{environment}' is not NAMESPACE/NAME"))
}

/// The body of a successful answer, as the wire type `T`; a problem
/// otherwise.
pub(crate) async fn expect_success<T: DeserializeOwned>(
    response: reqwest::Response,
) -> anyhow::Result<T> {
    if response.status().is_success() {
        return response
            .json()
            .await
            .context("the server's answer is not what this client understands");
    }
    Err(problem(response).await)
}

/// The server's problem+json as an error a person can read (an
/// [`ApiError`] inside).
pub(crate) async fn problem(response: reqwest::Response) -> anyhow::Error {
    anyhow::Error::new(ApiError::read(response).await)
}

/// What `envstore submit --wait` makes of a finished build: Ok when it
/// succeeded, otherwise its error.
pub fn build_outcome(build: &BuildView) -> anyhow::Result<()> {
    match build.status {
        BuildStatus::Succeeded => Ok(()),
        status @ (BuildStatus::Queued
        | BuildStatus::Running
        | BuildStatus::Failed
        | BuildStatus::Cancelled) => bail!(
            "build {} {status}:\n{}",
            build.id,
            build.error.as_deref().unwrap_or("no error was recorded")
        ),
    }
}

/// A spec file's bytes (`-`: standard input) and whether it is JSON.
pub fn read_spec_file(file: &std::path::Path) -> anyhow::Result<(Vec<u8>, bool)> {
    let body = if file.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)?;
        body
    } else {
        fs_err::read(file)?
    };
    Ok((
        body,
        file.extension()
            .is_some_and(|extension| extension == "json"),
    ))
}

/// Whether a file is a lockfile rather than a spec: pixi.lock has
/// `version` and `environments`, conda-lock.yml `metadata` and `package`.
pub fn is_lockfile(body: &[u8]) -> bool {
    let Ok(serde_yaml::Value::Mapping(document)) =
        serde_yaml::from_slice::<serde_yaml::Value>(body)
    else {
        return false;
    };
    let has = |key: &str| document.contains_key(key);
    (has("version") && has("environments")) || (has("metadata") && has("package"))
}

#[cfg(test)]
mod retry_tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    use super::*;

    /// A server that answers 503 `unavailable` times, then 202; it keeps
    /// the Idempotency-Key of every request.
    async fn flaky_server(
        unavailable: usize,
        listener: tokio::net::TcpListener,
    ) -> Arc<Mutex<Vec<String>>> {
        let keys = Arc::new(Mutex::new(Vec::new()));
        let seen = keys.clone();
        let handler = move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .map(|value| value.to_str().unwrap().to_owned());
                let mut seen = seen.lock().unwrap();
                seen.push(key.unwrap_or_default());
                if seen.len() <= unavailable {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "0")],
                        "{}",
                    )
                        .into_response();
                }
                (
                    StatusCode::ACCEPTED,
                    axum::Json(BuildQueued {
                        build_id: "b1".to_owned(),
                        status: BuildStatus::Queued,
                        spec_hash: "h".to_owned(),
                        joined: false,
                        url: "/api/v1/builds/b1".to_owned(),
                    }),
                )
                    .into_response()
            }
        };
        let router = axum::Router::new().route(
            "/api/v1/namespaces/team/environments/env",
            axum::routing::put(handler),
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        keys
    }

    #[tokio::test]
    async fn a_submission_is_retried_with_its_key_while_the_server_is_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client =
            Client::new(&format!("http://{}", listener.local_addr().unwrap()), None).unwrap();
        let keys = flaky_server(2, listener).await;
        let build = client
            .submit("team/env", b"dependencies: [python]\n".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(build, "b1");
        let keys = keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 3, "two 503s, then the answer");
        assert_eq!(keys[0].len(), 36, "a UUID: {}", keys[0]);
        assert!(
            keys.iter().all(|key| *key == keys[0]),
            "one key for every try: {keys:?}"
        );
    }

    #[tokio::test]
    async fn a_submission_waits_for_a_server_that_is_not_listening_yet() {
        // A port nothing listens on for a while, then the server.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = Client::new(&format!("http://{address}"), None).unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            flaky_server(0, tokio::net::TcpListener::bind(address).await.unwrap()).await
        });
        let build = client
            .submit("team/env", b"dependencies: [python]\n".to_vec(), false)
            .await
            .unwrap();
        assert_eq!(build, "b1");
        assert_eq!(late.await.unwrap().lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn other_answers_are_not_retried() {
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let send = || {
            *counted.lock().unwrap() += 1;
            async { Err::<reqwest::Response, _>(anyhow::anyhow!("not a transport error")) }
        };
        assert!(
            retry_unavailable(Duration::from_secs(30), send)
                .await
                .is_err()
        );
        assert_eq!(*calls.lock().unwrap(), 1);
        assert!(is_unavailable(reqwest::StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_unavailable(reqwest::StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!is_unavailable(reqwest::StatusCode::TOO_MANY_REQUESTS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfiles_are_told_from_specs() {
        assert!(is_lockfile(b"version: 6\nenvironments: {}\npackages: []\n"));
        assert!(is_lockfile(b"version: 1\nmetadata: {}\npackage: []\n"));
        assert!(!is_lockfile(b"name: env\ndependencies: [python]\n"));
        assert!(!is_lockfile(b"{\"dependencies\": [\"python\"]}"));
        assert!(!is_lockfile(b"[unclosed"));
    }
}

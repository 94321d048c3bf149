//! The client side of `envstore`, for CI and people: submit a spec and wait
//! for its build, fetch a lockfile. Server and token come from flags or
//! `ENVSTORE_URL` / `ENVSTORE_TOKEN`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

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

    fn request(
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
        let answer = expect_success(response).await?;
        answer["build_id"]
            .as_str()
            .map(str::to_owned)
            .context("the server's answer has no build id")
    }

    /// Follows a build until it ends, reporting each phase on stderr, and
    /// returns its final state.
    pub async fn wait(&self, build_id: &str) -> anyhow::Result<Value> {
        let progress = BuildProgress::new(false);
        loop {
            let build = self.build_state(build_id).await?;
            let status = build["status"].as_str().unwrap_or("unknown").to_owned();
            let phase = build["phases"]
                .as_array()
                .and_then(|phases| phases.last())
                .and_then(|phase| phase["phase"].as_str())
                .unwrap_or("queued");
            progress.report(if matches!(status.as_str(), "queued" | "running") {
                format!("{status}: {phase}")
            } else {
                status.clone()
            });
            if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
                return Ok(build);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Follows a build through its event stream (`…/log` as Server-Sent
    /// Events) until it ends: a progress bar of its phases and of packages
    /// downloaded and linked on a terminal, one line per phase otherwise.
    /// Falls back to polling when the stream cannot be had or breaks off.
    pub async fn follow(&self, build_id: &str) -> anyhow::Result<Value> {
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
            _ => return self.wait(build_id).await,
        };
        let progress = BuildProgress::new(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let mut events = EventParser::default();
        while let Ok(Some(chunk)) = response.chunk().await {
            for event in events.feed(&chunk) {
                match event.name.as_str() {
                    "line" => progress.line(&event.data),
                    "status" => progress.status(&event.data),
                    "end" => {
                        progress.finish();
                        let build = self.build_state(build_id).await?;
                        progress.report(build["status"].as_str().unwrap_or("unknown").to_owned());
                        return Ok(build);
                    }
                    _ => {}
                }
            }
        }
        progress.finish();
        self.wait(build_id).await
    }

    async fn build_state(&self, build_id: &str) -> anyhow::Result<Value> {
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
    pub async fn kernels(&self) -> anyhow::Result<Vec<crate::kernels::Kernel>> {
        let mut kernels = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = self.request(reqwest::Method::GET, "api/v1/kernels")?;
            if let Some(after) = &after {
                request = request.query(&[("after", after.as_str())]);
            }
            let response = request.send().await.context("the server did not answer")?;
            let mut page = expect_success(response).await?;
            let items: Vec<crate::kernels::Kernel> = serde_json::from_value(page["kernels"].take())
                .context("the server's kernel list is not what this client understands")?;
            kernels.extend(items);
            match page["next_after"].as_str() {
                Some(next) if after.as_deref() != Some(next) => after = Some(next.to_owned()),
                _ => return Ok(kernels),
            }
        }
    }
}

impl Client {
    /// Usage of the namespaces this caller may see (or of one), as the
    /// server's table: `namespaces` rows and `totals`.
    pub async fn usage(&self, namespace: Option<&str>) -> anyhow::Result<Value> {
        let path = match namespace {
            Some(namespace) => format!("api/v1/namespaces/{namespace}/usage"),
            None => "api/v1/usage".to_owned(),
        };
        let response = self
            .request(reqwest::Method::GET, &path)?
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

fn split_environment(environment: &str) -> anyhow::Result<(&str, &str)> {
    environment
        .split_once('/')
        .filter(|(namespace, name)| {
            !namespace.is_empty() && !name.is_empty() && !name.contains('/')
        })
        .with_context(|| format!("'{environment}' is not NAMESPACE/NAME"))
}

async fn expect_success(response: reqwest::Response) -> anyhow::Result<Value> {
    if response.status().is_success() {
        return Ok(response.json().await?);
    }
    Err(problem(response).await)
}

/// The server's problem+json as an error a person can read.
async fn problem(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|problem| problem["detail"].as_str().map(str::to_owned))
        .unwrap_or(body);
    anyhow::anyhow!("the server answered {status}: {detail}")
}

/// What `envstore submit --wait` makes of a finished build: Ok when it
/// succeeded, otherwise its error.
pub fn build_outcome(build: &Value) -> anyhow::Result<()> {
    match build["status"].as_str() {
        Some("succeeded") => Ok(()),
        Some(status) => bail!(
            "build {} {status}:\n{}",
            build["id"].as_str().unwrap_or_default(),
            build["error"].as_str().unwrap_or("no error was recorded")
        ),
        None => bail!("the build has no status"),
    }
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

/// One Server-Sent Event: its name and its data lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub name: String,
    pub data: String,
}

/// Reads `text/event-stream` as it arrives, in chunks that may split lines
/// anywhere (only the fields envstore sends: `event` and `data`).
#[derive(Default)]
pub struct EventParser {
    buffer: Vec<u8>,
    name: Option<String>,
    data: Vec<String>,
}

impl EventParser {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<StreamEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() || self.name.is_some() {
                    events.push(StreamEvent {
                        name: self.name.take().unwrap_or_else(|| "message".to_owned()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.name = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        events
    }
}

/// What `submit --wait` shows while a build runs.
struct BuildProgress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    reported: std::cell::RefCell<String>,
}

impl BuildProgress {
    fn new(terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed:>4}] {msg:<28} {wide_bar} {pos}/{len}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            reported: std::cell::RefCell::new(String::new()),
        }
    }

    /// A `status` event: `{"status", "phase", "detail"}`.
    fn status(&self, data: &str) {
        let state: Value = serde_json::from_str(data).unwrap_or_default();
        let status = state["status"].as_str().unwrap_or("unknown");
        let text = match state["phase"].as_str() {
            Some(phase) if matches!(status, "queued" | "running") => format!("{status}: {phase}"),
            _ => status.to_owned(),
        };
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => self.report(text),
        }
    }

    /// A log line; `downloading N/M …` and `linking N/M …` move the bar.
    fn line(&self, line: &str) {
        let Some((phase, done, total)) = counted_step(line) else {
            return;
        };
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("running: {phase}"));
            }
            None if done == total => self.report(format!("running: {phase} {done}/{total}")),
            None => {}
        }
    }

    fn report(&self, text: String) {
        let mut reported = self.reported.borrow_mut();
        if *reported != text {
            eprintln!("[{:6.1}s] {text}", self.started.elapsed().as_secs_f64());
            *reported = text;
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `[   0.120s] downloading 3/26 name…` → ("downloading", 3, 26); the
/// log's time stamp is optional.
fn counted_step(line: &str) -> Option<(&str, u64, u64)> {
    let line = match line.trim_start().strip_prefix('[') {
        Some(stamped) => stamped.split_once(']').map_or(line, |(_, rest)| rest),
        None => line,
    };
    let mut words = line.split_whitespace();
    let phase = words
        .next()
        .filter(|word| matches!(*word, "downloading" | "linking"))?;
    let (done, total) = words.next()?.split_once('/')?;
    Some((phase, done.parse().ok()?, total.parse().ok()?))
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
                    axum::Json(serde_json::json!({ "build_id": "b1" })),
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
mod stream_tests {
    use super::*;

    #[test]
    fn events_are_read_whatever_the_chunks_split() {
        let stream = b"event: status\ndata: {\"status\":\"running\"}\n\nevent: line\r\ndata: linking 2/5 python\n\n: keep-alive\n\nevent: end\ndata: a\ndata: b\n\n";
        for size in [1, 3, 7, stream.len()] {
            let mut parser = EventParser::default();
            let events: Vec<StreamEvent> = stream
                .chunks(size)
                .flat_map(|chunk| parser.feed(chunk))
                .collect();
            let names: Vec<&str> = events.iter().map(|event| event.name.as_str()).collect();
            assert_eq!(names, ["status", "line", "end"], "chunks of {size}");
            assert_eq!(events[1].data, "linking 2/5 python");
            assert_eq!(events[2].data, "a\nb");
        }
        assert_eq!(counted_step("linking 2/5 python"), Some(("linking", 2, 5)));
        assert_eq!(
            counted_step("[   0.120s] linking 5/5 python"),
            Some(("linking", 5, 5))
        );
        assert_eq!(
            counted_step("downloading 26/26 x.conda (cached)"),
            Some(("downloading", 26, 26))
        );
        assert_eq!(counted_step("linking 26 packages"), None);
        assert_eq!(counted_step("solving [python]"), None);
    }

    #[test]
    fn lockfiles_are_told_from_specs() {
        assert!(is_lockfile(b"version: 6\nenvironments: {}\npackages: []\n"));
        assert!(is_lockfile(b"version: 1\nmetadata: {}\npackage: []\n"));
        assert!(!is_lockfile(b"name: env\ndependencies: [python]\n"));
        assert!(!is_lockfile(b"{\"dependencies\": [\"python\"]}"));
        assert!(!is_lockfile(b"[unclosed"));
    }
}

//! The client side of `envstore`, for CI and people: submit a spec and wait
//! for its build, fetch a lockfile. Server and token come from flags or
//! `ENVSTORE_URL` / `ENVSTORE_TOKEN`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// How often `--wait` asks for the build's state.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub struct Client {
    base: url::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        let mut base = url::Url::parse(server).with_context(|| format!("invalid server URL '{server}'"))?;
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

    fn request(&self, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        let url = self.base.join(path.trim_start_matches('/'))?;
        let request = self.http.request(method, url);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }

    /// Submits `body` for `namespace/name`; returns the build id.
    pub async fn submit(&self, environment: &str, body: Vec<u8>, json: bool) -> anyhow::Result<String> {
        let (namespace, name) = split_environment(environment)?;
        let content_type = if json { "application/json" } else { "application/yaml" };
        let response = self
            .request(reqwest::Method::PUT, &format!("api/v1/namespaces/{namespace}/environments/{name}"))?
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .context("the server did not answer")?;
        let answer = expect_success(response).await?;
        answer["build_id"]
            .as_str()
            .map(str::to_owned)
            .context("the server's answer has no build id")
    }

    /// Follows a build until it ends, reporting each phase on stderr, and
    /// returns its final state.
    pub async fn wait(&self, build_id: &str) -> anyhow::Result<Value> {
        let started = Instant::now();
        let mut reported = String::new();
        loop {
            let response = self
                .request(reqwest::Method::GET, &format!("api/v1/builds/{build_id}"))?
                .send()
                .await
                .context("the server did not answer")?;
            let build = expect_success(response).await?;
            let status = build["status"].as_str().unwrap_or("unknown").to_owned();
            let phase = build["phases"]
                .as_array()
                .and_then(|phases| phases.last())
                .and_then(|phase| phase["phase"].as_str())
                .unwrap_or("queued");
            let line = if matches!(status.as_str(), "queued" | "running") {
                format!("{status}: {phase}")
            } else {
                status.clone()
            };
            if line != reported {
                eprintln!("[{:6.1}s] {line}", started.elapsed().as_secs_f64());
                reported = line;
            }
            if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
                return Ok(build);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The current lockfile of `namespace/name` in a format.
    pub async fn lockfile(&self, environment: &str, format: &str, platform: Option<&str>) -> anyhow::Result<String> {
        let (namespace, name) = split_environment(environment)?;
        let mut request = self
            .request(reqwest::Method::GET, &format!("api/v1/namespaces/{namespace}/environments/{name}/lockfile"))?
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
        let content_type = if request.json { "application/json" } else { "application/yaml" };
        let mut http = self
            .request(reqwest::Method::POST, &format!("api/v1/namespaces/{}/solve", request.namespace))?
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .query(&[("format", request.format)]);
        if !request.platforms.is_empty() {
            http = http.query(&[("platforms", request.platforms.join(","))]);
        }
        if let Some(platform) = request.platform {
            http = http.query(&[("platform", platform)]);
        }
        let response = http.body(request.body).send().await.context("the server did not answer")?;
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

fn split_environment(environment: &str) -> anyhow::Result<(&str, &str)> {
    environment
        .split_once('/')
        .filter(|(namespace, name)| !namespace.is_empty() && !name.is_empty() && !name.contains('/'))
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

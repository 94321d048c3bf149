//! The harness of the end-to-end tests: a real `envstore` server on a random
//! port of 127.0.0.1, fed by generated channels served over HTTP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envstore_core::NamedChannel;
use envstore_fixtures::{DownloadGate, ServedChannel};
use envstore_server::config::ServerConfig;
use envstore_server::server::RunningServer;
use reqwest::StatusCode;
use serde_json::Value;

pub mod channels;
mod prefix_check;
mod services;

pub use services::{Backend, Services};

/// How long a test waits for a build before it gives up.
const BUILD_WAIT: Duration = Duration::from_secs(180);

/// The demo channel, generated into a temporary folder and served over HTTP.
pub struct DemoChannel {
    pub served: ServedChannel,
    /// Open unless a test holds the channel's package downloads.
    pub downloads: DownloadGate,
    _dir: tempfile::TempDir,
}

impl DemoChannel {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        envstore_fixtures::write_demo_channel(dir.path())
            .await
            .expect("the demo channel is written");
        let downloads = DownloadGate::new();
        let served =
            envstore_fixtures::serve_channel_gated(dir.path().to_path_buf(), downloads.clone())
                .await
                .expect("the demo channel is served");
        Self {
            served,
            downloads,
            _dir: dir,
        }
    }

    pub fn allowed_as(&self, name: &str) -> NamedChannel {
        NamedChannel {
            name: name.to_owned(),
            url: self.served.url.clone(),
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub backend: Backend,
    /// What the server was started with, to start more nodes beside it.
    pub config: ServerConfig,
    server: Option<RunningServer>,
    _data: tempfile::TempDir,
}

impl TestServer {
    /// A server with two in-process workers, on the backend the environment
    /// names (`ENVSTORE_TEST_DATABASE`, `ENVSTORE_TEST_STORE`; SQLite and a
    /// local folder by default).
    pub async fn start(channels: Vec<NamedChannel>) -> Self {
        let data = tempfile::tempdir().expect("a temporary folder");
        let backend = Backend::from_env(data.path()).await;
        Self::start_with(data, backend, channels, 2).await
    }

    /// A server on `backend` with `workers` in-process workers (0: API only).
    pub async fn start_with(
        data: tempfile::TempDir,
        backend: Backend,
        channels: Vec<NamedChannel>,
        workers: usize,
    ) -> Self {
        Self::start_configured(data, backend, channels, workers, |_| {}).await
    }

    /// Like [`Self::start_with`], with a last say on the configuration.
    pub async fn start_configured(
        data: tempfile::TempDir,
        backend: Backend,
        channels: Vec<NamedChannel>,
        workers: usize,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let data_dir = fs_err::canonicalize(data.path()).expect("an absolute data folder");
        let mut config = ServerConfig {
            bind: "127.0.0.1:0".parse().expect("an address"),
            database: backend.database.clone(),
            store: backend.store.clone(),
            workers,
            channels,
            admin_token: Some("test-admin-token-0123456789abcdef".to_owned()),
            lease: Duration::from_secs(30),
            publish_packed_prefixes: backend.store.scheme() != "file",
            test_pause: None,
            policy: envstore_core::Policy::default(),
            oidc: None,
            usage: envstore_server::config::UsageConfig::default(),
            limits: envstore_server::config::TimeLimits::default(),
            event_streams: envstore_api::EventStreamLimits::default(),
            package_limits: Default::default(),
            data_dir: data_dir.clone(),
        };
        configure(&mut config);
        let server = envstore_server::server::start(config.clone())
            .await
            .expect("the server starts");
        Self {
            base: format!("http://{}", server.local_addr.expect("the API listens")),
            token: server.admin_token.clone().expect("an admin token"),
            client: reqwest::Client::new(),
            data_dir,
            backend,
            config,
            server: Some(server),
            _data: data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET with the server admin's token.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET is answered")
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self.get(path).await;
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Sends `body` as JSON with the server admin's token (`None`: no body).
    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the request is answered")
    }

    pub async fn create_namespace(&self, name: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/namespaces"))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("POST is answered")
    }

    /// PUTs an environment.yml (or JSON, by content type) for `ns/name`.
    pub async fn submit(
        &self,
        namespace: &str,
        name: &str,
        content_type: &str,
        body: &str,
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!(
                "/api/v1/namespaces/{namespace}/environments/{name}"
            )))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT is answered")
    }

    /// Submits and returns the build id, asserting the 202.
    pub async fn submit_yaml(&self, namespace: &str, name: &str, body: &str) -> String {
        self.submit_yaml_as(&self.token, namespace, name, body)
            .await
    }

    /// Submits as the holder of `token` (a namespace developer, say) and
    /// returns the build id, asserting the 202.
    pub async fn submit_yaml_as(
        &self,
        token: &str,
        namespace: &str,
        name: &str,
        body: &str,
    ) -> String {
        let response = self
            .client
            .put(self.url(&format!(
                "/api/v1/namespaces/{namespace}/environments/{name}"
            )))
            .bearer_auth(token)
            .header("content-type", "application/yaml")
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT is answered");
        let status = response.status();
        let json: Value = response.json().await.expect("a JSON body");
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        json["build_id"].as_str().expect("a build id").to_owned()
    }

    /// Polls the build until it ends and returns its final view.
    pub async fn wait_for_build(&self, build_id: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, build) = self.get_json(&format!("/api/v1/builds/{build_id}")).await;
            assert_eq!(status, StatusCode::OK, "{build}");
            if matches!(
                build["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return build;
            }
            assert!(
                started.elapsed() < BUILD_WAIT,
                "build {build_id} did not end: {build}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn environment_link(&self, namespace: &str, name: &str) -> PathBuf {
        self.data_dir.join("envs").join(namespace).join(name)
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("the server stops cleanly");
        }
        prefix_check::check_prefixes(&self.data_dir);
    }
}

/// Asserts an RFC 9457 problem response and returns its body.
pub async fn expect_problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let problem: Value = response.json().await.expect("a problem body");
    assert_eq!(problem["status"], status.as_u16());
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("/problems/")),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{problem}"
    );
    problem
}

/// The demo spec whose linux-64 solve the fixtures crate documents.
pub fn demo_spec_yaml(channel: &str) -> String {
    let dependencies: Vec<String> = envstore_fixtures::DEMO_SOLVE_SPECS
        .iter()
        .map(|spec| format!("  - {spec}"))
        .collect();
    format!(
        "name: analysis\nchannels:\n  - {channel}\ndependencies:\n{}\nplatforms: [linux-64]\n",
        dependencies.join("\n")
    )
}

/// The `envstore` binary cargo built beside this test executable (the
/// tests crate gets no `CARGO_BIN_EXE_envstore`): `cargo test --workspace`
/// builds it; a message saying how when it is missing.
pub fn envstore_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| format!("no test executable: {error}"))?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("envstore"))
        .ok_or_else(|| format!("{} has no target folder", exe.display()))?;
    if !binary.is_file() {
        return Err(format!(
            "the envstore binary is not built at {} (cargo build -p envstore-server --bin envstore; scripts/test's cargo test --workspace builds it)",
            binary.display()
        ));
    }
    Ok(binary)
}

/// Reads a file of an installed prefix.
pub fn read(prefix: &Path, path: &str) -> Vec<u8> {
    fs_err::read(prefix.join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

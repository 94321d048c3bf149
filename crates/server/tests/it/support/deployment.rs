//! A distributed deployment made of real processes: one `envstore serve
//! --workers 0` API process and any number of `envstore worker` processes,
//! sharing one data folder (as a shared filesystem would), one PostgreSQL
//! database and one S3 prefix. Tests kill and restart them to inject faults.
//!
//! ```ignore
//! let deployment = Deployment::builder().channel(format!("demo={}", url)).start().await;
//! deployment.start_worker("worker-a");
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use envstore_tests::{Backend, Services};
use serde_json::Value;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The server admin token of every deployment.
pub const TOKEN: &str = "distributed-test-token-0123456789abcdef";
/// How long a test waits for anything (a build, a log line, a process).
pub const WAIT: Duration = Duration::from_secs(180);

/// What a deployment is made of; every setting has a default.
pub struct DeploymentBuilder {
    data_dir: Option<PathBuf>,
    logs_dir: Option<PathBuf>,
    database: Option<String>,
    store: Option<url::Url>,
    channels: Vec<String>,
    env: Vec<(String, String)>,
    api_env: Vec<(String, String)>,
    api_args: Vec<String>,
    worker_env: Vec<(String, String)>,
    worker_args: Vec<String>,
    log_level: String,
    workers_per_process: usize,
    lease_seconds: u64,
}

impl Default for DeploymentBuilder {
    fn default() -> Self {
        Self {
            data_dir: None,
            logs_dir: None,
            database: None,
            store: None,
            channels: Vec::new(),
            env: Vec::new(),
            api_env: Vec::new(),
            api_args: Vec::new(),
            worker_env: Vec::new(),
            worker_args: Vec::new(),
            log_level: "info,sqlx=warn,envstore::build=debug".to_owned(),
            workers_per_process: 1,
            lease_seconds: 2,
        }
    }
}

impl DeploymentBuilder {
    /// The shared data folder (a tmpfs, say); default: a new temporary folder.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }

    /// Where the processes' logs go; default `<data>/logs`.
    pub fn logs_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.logs_dir = Some(path.into());
        self
    }

    /// The database URL; default: a fresh database on the shared PostgreSQL.
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.database = Some(url.into());
        self
    }

    /// The store URL; default: a fresh prefix of the shared S3 bucket.
    pub fn store(mut self, url: url::Url) -> Self {
        self.store = Some(url);
        self
    }

    /// An allowed channel, as `NAME=URL`; repeat for more.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channels.push(channel.into());
        self
    }

    /// An environment variable of every process (API, workers, gc,
    /// materialize), set after the `AWS_*` ones of [`Services`] so it can
    /// override them (`AWS_ENDPOINT` through a proxy, say).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn api_env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.api_env.push((key.to_owned(), value.into()));
        self
    }

    pub fn api_arg(mut self, arg: impl Into<String>) -> Self {
        self.api_args.push(arg.into());
        self
    }

    pub fn worker_env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.worker_env.push((key.to_owned(), value.into()));
        self
    }

    pub fn worker_arg(mut self, arg: impl Into<String>) -> Self {
        self.worker_args.push(arg.into());
        self
    }

    /// `ENVSTORE_LOG` of every process; default `info,sqlx=warn,envstore::build=debug`
    /// (the last puts every build log line in the worker's process log too).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// `--workers` of each worker process; default 1.
    pub fn workers_per_process(mut self, workers: usize) -> Self {
        self.workers_per_process = workers;
        self
    }

    /// `--lease-seconds` of every process; default 2, so a killed worker's
    /// job is taken over quickly.
    pub fn lease_seconds(mut self, seconds: u64) -> Self {
        self.lease_seconds = seconds;
        self
    }

    /// Makes the backend and folders and starts the API process.
    pub async fn start(self) -> Deployment {
        let (data, data_dir) = match &self.data_dir {
            Some(path) => {
                fs_err::create_dir_all(path).unwrap();
                (None, fs_err::canonicalize(path).unwrap())
            }
            None => {
                let data = tempfile::tempdir().unwrap();
                let path = fs_err::canonicalize(data.path()).unwrap();
                (Some(data), path)
            }
        };
        let logs_dir = self
            .logs_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("logs"));
        fs_err::create_dir_all(&logs_dir).unwrap();
        let backend = match (&self.database, &self.store) {
            (Some(database), Some(store)) => Backend {
                database: database.clone(),
                store: store.clone(),
            },
            _ => {
                let fresh = Services::get().fresh_backend().await;
                Backend {
                    database: self.database.clone().unwrap_or(fresh.database),
                    store: self.store.clone().unwrap_or(fresh.store),
                }
            }
        };
        let deployment = Deployment {
            data_dir,
            logs_dir,
            backend,
            settings: self,
            api: tokio::sync::Mutex::new(None),
            api_addr: Mutex::new(None),
            workers: Mutex::new(BTreeMap::new()),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            _data: data,
        };
        deployment.start_api().await;
        deployment
    }
}

struct ApiProcess {
    child: Child,
    /// Kept open so the API process can go on writing to its stdout.
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

/// The processes of one distributed deployment. Every process is killed
/// when the deployment is dropped.
pub struct Deployment {
    pub data_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub backend: Backend,
    settings: DeploymentBuilder,
    api: tokio::sync::Mutex<Option<ApiProcess>>,
    /// Where the API listens: kept across restarts, so the base URL stays.
    api_addr: Mutex<Option<SocketAddr>>,
    workers: Mutex<BTreeMap<String, Child>>,
    pub client: reqwest::Client,
    _data: Option<tempfile::TempDir>,
}

impl Deployment {
    pub fn builder() -> DeploymentBuilder {
        DeploymentBuilder::default()
    }

    /// A deployment with the defaults and one channel (`NAME=URL`).
    pub async fn start(channel: impl Into<String>) -> Self {
        Self::builder().channel(channel).start().await
    }

    /// The API's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base(&self) -> String {
        let addr = self.api_addr.lock().unwrap().expect("the API was started");
        format!("http://{addr}")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// An `envstore` command with the deployment's environment (the `AWS_*`
    /// variables of the services and the builder's `env`).
    pub fn envstore(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_envstore"));
        command
            .envs(Services::get().aws_env.iter().cloned())
            .envs(self.settings.env.iter().cloned())
            .env("ENVSTORE_LOG", &self.settings.log_level)
            .kill_on_drop(true);
        command
    }

    /// `--data-dir`, `--database`, `--store`, `--channel`s, `--lease-seconds`.
    pub fn node_args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
            "--database".to_owned(),
            self.backend.database.clone(),
            "--store".to_owned(),
            self.backend.store.to_string(),
            "--lease-seconds".to_owned(),
            self.settings.lease_seconds.to_string(),
        ];
        for channel in &self.settings.channels {
            args.push("--channel".to_owned());
            args.push(channel.clone());
        }
        args
    }

    /// A log file `<logs>/<name>.log`, appended to (a restarted process
    /// keeps the lines of the one before).
    pub fn log_file(&self, name: &str) -> std::fs::File {
        fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs_dir.join(format!("{name}.log")))
            .unwrap()
            .into_file()
    }

    /// Starts the API process (on the port it had before, if it ran before).
    pub async fn start_api(&self) {
        let mut api = self.api.lock().await;
        assert!(api.is_none(), "the API process already runs");
        let bind = self
            .api_addr
            .lock()
            .unwrap()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "127.0.0.1:0".to_owned());
        let started = Instant::now();
        loop {
            let mut child = self
                .envstore()
                .args([
                    "serve",
                    "--workers",
                    "0",
                    "--bind",
                    &bind,
                    "--admin-token",
                    TOKEN,
                ])
                .args(self.node_args())
                .args(&self.settings.api_args)
                .envs(self.settings.api_env.iter().cloned())
                .stdout(Stdio::piped())
                .stderr(self.log_file("api"))
                .spawn()
                .expect("the API process starts");
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let line = tokio::time::timeout(WAIT, lines.next_line()).await;
            if let Ok(Ok(Some(line))) = line {
                let address = line
                    .strip_prefix("envstore listening on http://")
                    .unwrap_or_else(|| panic!("the listening line, not {line:?}"));
                *self.api_addr.lock().unwrap() = Some(address.parse().unwrap());
                *api = Some(ApiProcess {
                    child,
                    _stdout: lines,
                });
                return;
            }
            // The port may still be held for a moment after a kill.
            let _ = child.kill().await;
            assert!(
                started.elapsed() < WAIT,
                "the API process did not start on {bind}:\n{}",
                self.process_log("api")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILLs the API process.
    pub async fn kill_api(&self) {
        if let Some(mut api) = self.api.lock().await.take() {
            api.child.kill().await.unwrap();
        }
    }

    /// SIGKILLs the API process and starts it again on the same port.
    pub async fn restart_api(&self) {
        self.kill_api().await;
        self.start_api().await;
    }

    /// Starts an `envstore worker` process named `name` (its log is
    /// `<logs>/<name>.log`) with the builder's worker settings.
    pub fn start_worker(&self, name: &str) {
        self.start_worker_with(name, &[]);
    }

    /// Like [`Self::start_worker`], with more environment for this worker
    /// (`ENVSTORE_TEST_PAUSE`, say).
    pub fn start_worker_with(&self, name: &str, env: &[(&str, &str)]) {
        let child = self
            .envstore()
            .args([
                "worker",
                "--workers",
                &self.settings.workers_per_process.to_string(),
            ])
            .args(self.node_args())
            .args(&self.settings.worker_args)
            .envs(self.settings.worker_env.iter().cloned())
            .envs(
                env.iter()
                    .map(|(key, value)| (key.to_string(), value.to_string())),
            )
            .stdout(Stdio::null())
            .stderr(self.log_file(name))
            .spawn()
            .expect("a worker process starts");
        let previous = self.workers.lock().unwrap().insert(name.to_owned(), child);
        assert!(previous.is_none(), "a worker named {name} already runs");
    }

    /// A worker paused at `phase` (`ENVSTORE_TEST_PAUSE`), to be killed there.
    pub fn start_paused_worker(&self, name: &str, phase: &str) {
        self.start_worker_with(name, &[("ENVSTORE_TEST_PAUSE", phase)]);
    }

    /// Starts `count` workers named `worker-0`, `worker-1`, …
    pub fn start_workers(&self, count: usize) -> Vec<String> {
        let names: Vec<String> = (0..count).map(|index| format!("worker-{index}")).collect();
        for name in &names {
            self.start_worker(name);
        }
        names
    }

    /// SIGKILLs the worker process `name`.
    pub async fn kill_worker(&self, name: &str) {
        let child = self.workers.lock().unwrap().remove(name);
        let mut child = child.unwrap_or_else(|| panic!("no worker named {name}"));
        child.kill().await.unwrap();
    }

    /// Whether the worker process `name` still runs (not exited by itself).
    pub fn worker_runs(&self, name: &str) -> bool {
        self.workers
            .lock()
            .unwrap()
            .get_mut(name)
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// One request with the admin token; `Err` when nothing answered (the
    /// API is down, say).
    pub async fn try_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/yaml")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// One request with the admin token; panics when nothing answers.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        self.try_request(method, path, body)
            .await
            .expect("the API answers")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn create_namespace(&self, name: &str) {
        let response = self
            .client
            .post(self.url("/api/v1/namespaces"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "namespace {name}");
    }

    /// PUTs an environment.yml and returns the build id, asserting the 202.
    pub async fn submit(&self, namespace: &str, name: &str, spec: String) -> String {
        let path = format!("/api/v1/namespaces/{namespace}/environments/{name}");
        let (status, body) = self.request(reqwest::Method::PUT, &path, Some(spec)).await;
        assert_eq!(status, 202, "{body}");
        body["build_id"].as_str().unwrap().to_owned()
    }

    /// PUTs an environment.yml with an `Idempotency-Key`; `Err` when nothing
    /// answered (the caller retries with the same key).
    pub async fn try_submit_with_key(
        &self,
        namespace: &str,
        name: &str,
        spec: &str,
        key: &str,
    ) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .client
            .put(self.url(&format!(
                "/api/v1/namespaces/{namespace}/environments/{name}"
            )))
            .bearer_auth(TOKEN)
            .header("content-type", "application/yaml")
            .header("idempotency-key", key)
            .body(spec.to_owned())
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The build's JSON view, retried while the API does not answer.
    pub async fn build(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            match self
                .try_request(reqwest::Method::GET, &format!("/api/v1/builds/{id}"), None)
                .await
            {
                Ok((200, build)) => return build,
                Ok((status, body)) if status < 500 => panic!("build {id}: {status} {body}"),
                _ => {}
            }
            assert!(
                started.elapsed() < WAIT,
                "the API did not answer for build {id}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls the build until it ends and returns its final view.
    pub async fn wait_for_build(&self, id: &str) -> Value {
        self.wait_for_build_within(id, WAIT).await
    }

    pub async fn wait_for_build_within(&self, id: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let build = self.build(id).await;
            if matches!(
                build["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return build;
            }
            assert!(
                started.elapsed() < limit,
                "build {id} did not end: {build:#}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The build's log as the API serves it.
    pub async fn log(&self, id: &str) -> String {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/builds/{id}/log")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    /// Waits until the build's log holds `needle`, and returns the log.
    pub async fn wait_for_log(&self, id: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log(id).await;
            if log.contains(needle) {
                return log;
            }
            let build = self.build(id).await;
            assert!(
                started.elapsed() < WAIT
                    && !matches!(build["status"].as_str(), Some("succeeded" | "failed")),
                "the log of build {id} never said {needle:?} (status {}, error {}):\n{log}",
                build["status"],
                build["error"],
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The environment's JSON view (with its `history`).
    pub async fn environment(&self, namespace: &str, name: &str) -> Value {
        let (status, environment) = self
            .get(&format!(
                "/api/v1/namespaces/{namespace}/environments/{name}"
            ))
            .await;
        assert_eq!(status, 200, "{environment}");
        environment
    }

    /// The prefix folders under `<data>/prefixes`, sorted.
    pub fn prefixes(&self) -> Vec<PathBuf> {
        let mut prefixes: Vec<PathBuf> = fs_err::read_dir(self.data_dir.join("prefixes"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        prefixes.sort();
        prefixes
    }

    /// Where each environment link under `<data>/envs` leads, by
    /// `namespace/name`.
    pub fn environment_links(&self) -> BTreeMap<String, PathBuf> {
        let mut links = BTreeMap::new();
        for namespace in fs_err::read_dir(self.data_dir.join("envs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for link in fs_err::read_dir(namespace.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(target) = fs_err::canonicalize(link.path()) {
                    let name = format!(
                        "{}/{}",
                        namespace.file_name().to_string_lossy(),
                        link.file_name().to_string_lossy()
                    );
                    links.insert(name, target);
                }
            }
        }
        links
    }

    /// What is wrong with the prefixes: a folder without the completion
    /// marker that an environment link leads into (half-built and visible).
    /// Empty when all is well.
    pub fn half_built_visible(&self) -> Vec<String> {
        let links = self.environment_links();
        let mut problems = Vec::new();
        for prefix in self.prefixes() {
            if is_complete(&prefix) {
                continue;
            }
            let canonical = fs_err::canonicalize(&prefix).unwrap_or(prefix.clone());
            for (environment, target) in &links {
                if target.starts_with(&canonical) {
                    problems.push(format!(
                        "{environment} leads to {}, which has no completion marker",
                        prefix.display()
                    ));
                }
            }
        }
        problems
    }

    /// Prefix folders without the completion marker, visible or not.
    pub fn incomplete_prefixes(&self) -> Vec<PathBuf> {
        self.prefixes()
            .into_iter()
            .filter(|prefix| !is_complete(prefix))
            .collect()
    }

    /// Temporary leftovers anywhere under the data folder: entries named
    /// `.envstore-*` (the validated-package records excepted) or `*.tmp`,
    /// and anything inside `.envstore-downloads`.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![self.data_dir.clone()];
        while let Some(folder) = pending.pop() {
            for entry in fs_err::read_dir(&folder).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
                if path == self.logs_dir || folder.ends_with(".envstore-validated") {
                    continue;
                }
                if name == ".envstore-downloads" {
                    for inner in fs_err::read_dir(&path).into_iter().flatten().flatten() {
                        found.push(inner.path());
                    }
                    continue;
                }
                let temporary = (name.starts_with(".envstore-") && name != ".envstore-validated")
                    || name.ends_with(".tmp")
                    || name.starts_with(".tmp");
                if temporary && name != envstore_link::MARKER_FILE {
                    found.push(path.clone());
                }
                // Prefix contents are the packages' files: not searched.
                if is_dir && !temporary && folder != self.data_dir.join("prefixes") {
                    pending.push(path);
                }
            }
        }
        found.sort();
        found
    }

    /// The log of one process (`api`, `worker-a`, …).
    pub fn process_log(&self, name: &str) -> String {
        fs_err::read_to_string(self.logs_dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until the process log of `name` holds `needle` (a build log
    /// line, say: workers log them at `envstore::build=debug`), and returns
    /// that log. Panics if the process exits first.
    pub async fn wait_for_process_log(&self, name: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.process_log(name);
            if log.contains(needle) {
                return log;
            }
            let runs = name == "api" || self.worker_runs(name);
            assert!(
                runs && started.elapsed() < WAIT,
                "the log of {name} never said {needle:?} (process runs: {runs}):\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 30 s) until the log a running attempt keeps in the
    /// database (`attempt_logs`, written every few seconds) holds `needle`,
    /// so a kill after it cannot lose that line. Returns whether it did.
    pub async fn wait_for_kept_log(&self, build_id: &str, needle: &str) -> bool {
        let started = Instant::now();
        let mut connection = self.pg().await;
        while started.elapsed() < Duration::from_secs(30) {
            let kept: Result<(i64,), _> = sqlx::query_as(
                "SELECT COUNT(*) FROM attempt_logs WHERE build_id = $1 AND strpos(text, $2) > 0",
            )
            .bind(build_id)
            .bind(needle)
            .fetch_one(&mut connection)
            .await;
            if kept.is_ok_and(|(count,)| count > 0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Every process's whole log.
    pub fn all_logs(&self) -> String {
        self.logs_tailed(usize::MAX)
    }

    /// Every process's log, for failure messages (the last 200 lines each).
    pub fn logs(&self) -> String {
        self.logs_tailed(200)
    }

    fn logs_tailed(&self, tail: usize) -> String {
        let mut text = String::new();
        let mut entries: Vec<PathBuf> = fs_err::read_dir(&self.logs_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .collect();
        entries.sort();
        for path in entries {
            let content = fs_err::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            text.push_str(&format!("--- {}\n", path.display()));
            for line in &lines[lines.len().saturating_sub(tail)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Runs `envstore gc` on the data folder; returns its output.
    pub async fn gc(&self, extra: &[&str]) -> std::process::Output {
        let output = self
            .envstore()
            .arg("gc")
            .args(self.node_args())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "envstore gc failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Runs `envstore materialize ns/name --root <root>` against the
    /// deployment's database and store; returns its output.
    pub async fn materialize(&self, environment: &str, root: &Path) -> std::process::Output {
        self.envstore()
            .args(["materialize", environment, "--root"])
            .arg(root)
            .args([
                "--database",
                &self.backend.database,
                "--store",
                self.backend.store.as_str(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap()
    }

    /// A connection to the deployment's PostgreSQL database.
    pub async fn pg(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.backend.database)
            .await
            .unwrap()
    }

    /// One `BIGINT` (or `COUNT`) the query selects.
    pub async fn pg_count(&self, query: &str) -> i64 {
        let mut connection = self.pg().await;
        let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{query}: {error}"));
        count
    }

    /// Whether the store holds `key` (`prefixes/<lock>.tar.zst`, say),
    /// asked with a plain HEAD of the shared S3 server (moto answers
    /// unsigned requests); `file://` stores are looked up on disk.
    pub async fn store_has(&self, key: &str) -> bool {
        let store = &self.backend.store;
        if store.scheme() == "file" {
            return store.to_file_path().unwrap().join(key).is_file();
        }
        let endpoint = Services::get()
            .aws_env
            .iter()
            .find(|(name, _)| name == "AWS_ENDPOINT")
            .map(|(_, value)| value.clone())
            .expect("AWS_ENDPOINT names the S3 server");
        let bucket = store.host_str().unwrap();
        let prefix = store.path().trim_matches('/');
        let object = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}/{key}")
        };
        let response = self
            .client
            .head(format!(
                "{}/{bucket}/{object}",
                endpoint.trim_end_matches('/')
            ))
            .send()
            .await
            .unwrap();
        response.status().is_success()
    }

    /// Kills every process.
    pub async fn stop(self) {
        self.kill_api().await;
        let workers: Vec<String> = self.workers.lock().unwrap().keys().cloned().collect();
        for name in workers {
            self.kill_worker(&name).await;
        }
    }
}

/// Whether the prefix has its completion marker.
pub fn is_complete(prefix: &Path) -> bool {
    envstore_link::is_complete(prefix)
}

/// The number of package records in the prefix's `conda-meta`.
pub fn linked_records(prefix: &Path) -> usize {
    fs_err::read_dir(prefix.join("conda-meta"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until `condition` holds, panicking with `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A generated channel served over HTTP for as long as it lives.
pub struct TestChannel {
    pub served: envstore_fixtures::ServedChannel,
    _dir: tempfile::TempDir,
}

impl TestChannel {
    /// `NAME=URL`, for [`DeploymentBuilder::channel`].
    pub fn allowed_as(&self, name: &str) -> String {
        format!("{name}={}", self.served.url)
    }
}

/// The number of packages in [`shared_package_channel`].
pub const SHARED_PACKAGES: usize = 40;

/// Forty small noarch packages that specs share: `core-00`…`core-09` depend
/// on nothing; `lib-00`…`lib-29` each depend on two `core-*` packages, and
/// `lib-10`… also on a lower `lib-*`. Every spec of [`shared_specs`] installs
/// the ten `lib-00`…`lib-09` plus one to three others, so most packages of
/// every build are shared with every other.
pub async fn shared_package_channel() -> TestChannel {
    use envstore_fixtures::{ArchiveFormat, NoArch, PackageSpec};
    let dir = tempfile::tempdir().unwrap();
    let mut packages = Vec::new();
    for index in 0..10 {
        let name = format!("core-{index:02}");
        packages.push(
            PackageSpec::new(&name, "1.0", "0")
                .subdir("noarch")
                .noarch(NoArch::Generic)
                .formats(&[ArchiveFormat::Conda])
                .plain_file(&format!("share/{name}/README"), format!("package {name}\n"))
                .plain_file(
                    &format!("share/{name}/data.bin"),
                    vec![index as u8; 16 * 1024],
                )
                .text_file(
                    &format!("etc/{name}.conf"),
                    format!("prefix = /opt/anaconda1anaconda2anaconda3\nname = {name}\n"),
                ),
        );
    }
    for index in 0..SHARED_PACKAGES - 10 {
        let name = format!("lib-{index:02}");
        let mut depends = vec![
            format!("core-{:02}", index % 10),
            format!("core-{:02}", (index + 3) % 10),
        ];
        if index >= 10 {
            depends.push(format!("lib-{:02}", index % 10));
        }
        packages.push(
            PackageSpec::new(&name, "1.0", "0")
                .subdir("noarch")
                .noarch(NoArch::Generic)
                .formats(&[ArchiveFormat::Conda])
                .depends(depends)
                .plain_file(&format!("share/{name}/README"), format!("package {name}\n"))
                .plain_file(
                    &format!("lib/{name}/module.py"),
                    format!("NAME = {name:?}\n"),
                )
                .plain_file(
                    &format!("share/{name}/data.bin"),
                    vec![index as u8; 8 * 1024],
                ),
        );
    }
    envstore_fixtures::write_channel(packages, dir.path())
        .await
        .unwrap();
    let served = envstore_fixtures::serve_channel(dir.path().to_path_buf())
        .await
        .unwrap();
    TestChannel { served, _dir: dir }
}

/// `count` distinct environment.yml texts on `channel` (made by
/// [`shared_package_channel`]): the ten `lib-00`…`lib-09` plus one to three
/// of `lib-10`…`lib-29`, different for each spec, so each has its own lock.
pub fn shared_specs(channel: &str, count: usize) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut specs = Vec::new();
    let mut index = 0usize;
    while specs.len() < count {
        let extras: std::collections::BTreeSet<usize> = (0..1 + index % 3)
            .map(|j| 10 + (index * 7 + j * 5 + index / 20) % 20)
            .collect();
        index += 1;
        assert!(index < count * 100, "fewer than {count} distinct specs");
        if !seen.insert(extras.clone()) {
            continue;
        }
        let mut dependencies: Vec<String> = (0..10).map(|lib| format!("lib-{lib:02}")).collect();
        dependencies.extend(extras.iter().map(|lib| format!("lib-{lib:02}")));
        specs.push(format!(
            "channels: [{channel}]\ndependencies: [{}]\nplatforms: [linux-64]\n",
            dependencies.join(", ")
        ));
    }
    specs
}

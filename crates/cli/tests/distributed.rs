//! Distributed mode with real processes: an API process and `envstore worker`
//! processes on one PostgreSQL and one S3 server (started on loopback by
//! `scripts/test-services.sh` when the environment names none). Workers are
//! killed with SIGKILL mid-build; builds must still end once, completely.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use envstore_fixtures::{ArchiveFormat, NoArch, PackageSpec};
use envstore_tests::{Backend, DemoChannel, Services, demo_spec_yaml};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "distributed-test-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(120);

/// The processes of one distributed deployment, sharing a data folder (as a
/// shared filesystem would) and a backend.
struct Deployment {
    data_dir: PathBuf,
    backend: Backend,
    channel: String,
    api: Child,
    /// Kept open so the API process can go on writing to its stdout.
    _api_stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    base: String,
    client: reqwest::Client,
    _data: tempfile::TempDir,
}

fn envstore(services: &Services) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_envstore"));
    command.envs(services.aws_env.iter().cloned()).kill_on_drop(true);
    command
}

impl Deployment {
    async fn start(channel: String) -> Self {
        Self::start_logging(channel, "info,sqlx=warn").await
    }

    /// Starts the API process with the given `ENVSTORE_LOG` filter.
    async fn start_logging(channel: String, level: &str) -> Self {
        let services = Services::get();
        let backend = services.fresh_backend().await;
        let data = tempfile::tempdir().unwrap();
        let data_dir = std::fs::canonicalize(data.path()).unwrap();
        let mut api = envstore(services)
            .args(["serve", "--workers", "0", "--bind", "127.0.0.1:0", "--admin-token", TOKEN])
            .env("ENVSTORE_LOG", level)
            .args(node_args(&data_dir, &backend, &channel))
            .stdout(Stdio::piped())
            .stderr(log_file(&data_dir, "api"))
            .spawn()
            .expect("the API process starts");
        let mut lines = BufReader::new(api.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
        let base = line.strip_prefix("envstore listening on ").expect("the listening line").to_owned();
        Self {
            data_dir,
            backend,
            channel,
            api,
            _api_stdout: lines,
            base,
            client: reqwest::Client::new(),
            _data: data,
        }
    }

    /// Starts an `envstore worker` process with one worker and short leases.
    fn worker(&self, name: &str, pause: Option<&str>) -> Child {
        self.worker_with(name, pause, "info,sqlx=warn")
    }

    fn worker_logging(&self, name: &str, level: &str) -> Child {
        self.worker_with(name, None, level)
    }

    fn worker_with(&self, name: &str, pause: Option<&str>, level: &str) -> Child {
        let mut command = envstore(Services::get());
        command.env("ENVSTORE_LOG", level);
        command
            .args(["worker", "--workers", "1", "--lease-seconds", "2"])
            .args(node_args(&self.data_dir, &self.backend, &self.channel))
            .stdout(Stdio::null())
            .stderr(log_file(&self.data_dir, name));
        if let Some(point) = pause {
            command.env("ENVSTORE_TEST_PAUSE", point);
        }
        command.spawn().expect("a worker process starts")
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: Option<String>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.header("content-type", "application/yaml").body(body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn create_namespace(&self, name: &str) {
        let response = self
            .client
            .post(format!("{}/api/v1/namespaces", self.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }

    async fn submit(&self, namespace: &str, name: &str, spec: String) -> String {
        let path = format!("/api/v1/namespaces/{namespace}/environments/{name}");
        let (status, body) = self.request(reqwest::Method::PUT, &path, Some(spec)).await;
        assert_eq!(status, 202, "{body}");
        body["build_id"].as_str().unwrap().to_owned()
    }

    async fn build(&self, id: &str) -> Value {
        self.request(reqwest::Method::GET, &format!("/api/v1/builds/{id}"), None).await.1
    }

    async fn wait_for_build(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let build = self.build(id).await;
            if matches!(build["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return build;
            }
            assert!(started.elapsed() < WAIT, "build {id} did not end: {build:#}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn log(&self, id: &str) -> String {
        let response = self
            .client
            .get(format!("{}/api/v1/builds/{id}/log", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    fn prefixes(&self) -> Vec<PathBuf> {
        let mut prefixes: Vec<PathBuf> = std::fs::read_dir(self.data_dir.join("prefixes"))
            .map(|entries| entries.map(|entry| entry.unwrap().path()).filter(|path| path.is_dir()).collect())
            .unwrap_or_default();
        prefixes.sort();
        prefixes
    }

    /// The processes' logs, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.data_dir.join("logs")).into_iter().flatten().flatten() {
            text.push_str(&format!("--- {}\n", entry.path().display()));
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        text
    }

    async fn stop(mut self) {
        let _ = self.api.kill().await;
    }
}

fn node_args(data_dir: &Path, backend: &Backend, channel: &str) -> Vec<String> {
    vec![
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--database".into(),
        backend.database.clone(),
        "--store".into(),
        backend.store.to_string(),
        "--channel".into(),
        channel.to_owned(),
    ]
}

fn log_file(data_dir: &Path, name: &str) -> std::fs::File {
    let folder = data_dir.join("logs");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::File::create(folder.join(format!("{name}.log"))).unwrap()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_complete(prefix: &Path) -> bool {
    prefix.join(envstore_link::MARKER_FILE).is_file()
}

fn linked_records(prefix: &Path) -> usize {
    std::fs::read_dir(prefix.join("conda-meta"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_linking_is_replaced_and_the_build_ends_once() {
    let channel = DemoChannel::start().await;
    let deployment = Deployment::start(format!("demo={}", channel.served.url)).await;
    deployment.create_namespace("team").await;
    let mut first = deployment.worker("worker-a", Some("linking"));
    let build_id = deployment.submit("team", "analysis", demo_spec_yaml("demo")).await;

    // The first worker links one package, then stops for good: kill it there.
    wait_until("a prefix is half linked", || {
        deployment.prefixes().first().is_some_and(|prefix| linked_records(prefix) >= 1)
    })
    .await;
    let prefix = deployment.prefixes()[0].clone();
    assert!(!is_complete(&prefix));
    assert_eq!(deployment.build(&build_id).await["status"], "running");
    first.kill().await.unwrap();

    let mut second = deployment.worker("worker-b", None);
    let build = deployment.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}\n{}", deployment.logs());
    let log = deployment.log(&build_id).await;
    assert!(log.contains("(attempt 2)"), "the second worker took the job over:\n{log}");

    let (_, environment) = deployment
        .request(reqwest::Method::GET, "/api/v1/namespaces/team/environments/analysis", None)
        .await;
    assert_eq!(environment["history"].as_array().unwrap().len(), 1, "one build, not two");
    assert_eq!(deployment.prefixes(), vec![prefix.clone()], "one prefix, no leftovers");
    assert!(is_complete(&prefix));
    let expected = envstore_fixtures::demo_expect::expected_linux64_filenames().len();
    assert_eq!(linked_records(&prefix), expected + 1, "every package and the marker");
    let output = std::process::Command::new(prefix.join("bin/python")).output().unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().lines().next().unwrap(),
        envstore_fixtures::demo_expect::demo_program_first_line(&prefix)
    );

    // Another node at the same path materialises the packed prefix.
    std::fs::remove_dir_all(&prefix).unwrap();
    let status = envstore(Services::get())
        .args(["materialize", "team/analysis", "--root"])
        .arg(&deployment.data_dir)
        .args(["--database", &deployment.backend.database, "--store", deployment.backend.store.as_str()])
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert!(is_complete(&prefix));
    let output = std::process::Command::new(deployment.data_dir.join("envs/team/analysis/bin/python"))
        .output()
        .unwrap();
    assert!(String::from_utf8(output.stdout).unwrap().contains(&prefix.display().to_string()));

    second.kill().await.unwrap();
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_publishing_is_replaced_and_the_build_ends_once() {
    let channel = DemoChannel::start().await;
    let deployment = Deployment::start(format!("demo={}", channel.served.url)).await;
    deployment.create_namespace("team").await;
    let mut first = deployment.worker("worker-a", Some("publishing"));
    let build_id = deployment.submit("team", "analysis", demo_spec_yaml("demo")).await;

    let started = Instant::now();
    loop {
        let build = deployment.build(&build_id).await;
        let phases: Vec<&str> = build["phases"]
            .as_array()
            .map(|phases| phases.iter().filter_map(|phase| phase["phase"].as_str()).collect())
            .unwrap_or_default();
        if phases.contains(&"publishing") {
            break;
        }
        assert!(started.elapsed() < WAIT, "the build never reached publishing: {build:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await.unwrap();

    let mut second = deployment.worker("worker-b", None);
    let build = deployment.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}\n{}", deployment.logs());
    assert_eq!(build["reused"]["prefix"], true, "the second worker found the prefix complete");
    let (status, _) = deployment
        .request(reqwest::Method::GET, "/api/v1/namespaces/team/environments/analysis/lockfile", None)
        .await;
    assert_eq!(status, 200);
    let (_, environment) = deployment
        .request(reqwest::Method::GET, "/api/v1/namespaces/team/environments/analysis", None)
        .await;
    assert_eq!(environment["history"].as_array().unwrap().len(), 1);
    assert_eq!(deployment.prefixes().len(), 1);
    assert!(is_complete(&deployment.prefixes()[0]));

    second.kill().await.unwrap();
    deployment.stop().await;
}

/// Twenty small independent packages: each spec `pkg-NN` has its own lock.
async fn twenty_package_channel(dir: &Path) -> envstore_fixtures::ServedChannel {
    let packages: Vec<PackageSpec> = (0..20)
        .map(|index| {
            PackageSpec::new(&format!("pkg-{index:02}"), "1.0", "0")
                .subdir("noarch")
                .noarch(NoArch::Generic)
                .formats(&[ArchiveFormat::Conda])
                .plain_file(&format!("share/pkg-{index:02}/README"), format!("package {index}\n"))
        })
        .collect();
    envstore_fixtures::write_channel(packages, dir).await.unwrap();
    envstore_fixtures::serve_channel(dir.to_path_buf()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_submissions_of_twenty_specs_build_twenty_locks() {
    let channel_dir = tempfile::tempdir().unwrap();
    let channel = twenty_package_channel(channel_dir.path()).await;
    let deployment = Deployment::start(format!("load={}", channel.url)).await;
    deployment.create_namespace("load").await;
    let mut workers = vec![deployment.worker("worker-a", None), deployment.worker("worker-b", None)];

    let submissions = (0..200).map(|index| {
        let deployment = &deployment;
        async move {
            let spec = format!("channels: [load]\ndependencies: [pkg-{:02}]\nplatforms: [linux-64]\n", index % 20);
            deployment.submit("load", &format!("env-{index:03}"), spec).await
        }
    });
    let build_ids = futures::future::join_all(submissions).await;
    assert_eq!(build_ids.len(), 200);

    let mut builds = Vec::new();
    for id in &build_ids {
        builds.push(deployment.wait_for_build(id).await);
    }
    let succeeded = builds.iter().filter(|build| build["status"] == "succeeded").count();
    let locks: std::collections::BTreeSet<&str> =
        builds.iter().filter_map(|build| build["lock_hash"].as_str()).collect();
    let prefixes_built = builds.iter().filter(|build| build["reused"]["prefix"] == false).count();
    let locks_new = builds.iter().filter(|build| build["reused"]["lock"] == false).count();
    let distinct_ids: std::collections::BTreeSet<&String> = build_ids.iter().collect();
    println!(
        "load: {} submissions, {} distinct builds, {succeeded} succeeded, {} distinct locks, \
         {locks_new} locks solved first, {prefixes_built} prefixes built, {} prefixes on disk",
        build_ids.len(),
        distinct_ids.len(),
        locks.len(),
        deployment.prefixes().len()
    );
    assert_eq!(distinct_ids.len(), 200, "no submission lost or merged");
    assert_eq!(succeeded, 200, "{}", deployment.logs());
    assert_eq!(locks.len(), 20);
    assert_eq!(locks_new, 20, "each lock recorded once");
    assert_eq!(prefixes_built, 20, "each prefix built once");
    assert_eq!(deployment.prefixes().len(), 20);

    for worker in &mut workers {
        worker.kill().await.unwrap();
    }
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs_of_a_full_build() {
    let channel = DemoChannel::start().await;
    let deployment = Deployment::start_logging(format!("demo={}", channel.served.url), "trace").await;
    deployment.create_namespace("team").await;
    let created = deployment
        .client
        .post(format!("{}/api/v1/tokens", deployment.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "name": "ci", "subject": "robot" }))
        .send()
        .await
        .unwrap();
    let created: Value = created.json().await.unwrap();
    let robot_token = created["token"].as_str().unwrap().to_owned();
    let response = deployment
        .client
        .put(format!("{}/api/v1/namespaces/team/members/robot", deployment.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "role": "developer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut worker = deployment.worker_logging("worker", "trace");
    let submitted = deployment
        .client
        .put(format!("{}/api/v1/namespaces/team/environments/analysis", deployment.base))
        .bearer_auth(&robot_token)
        .header("content-type", "application/yaml")
        .body(demo_spec_yaml("demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status().as_u16(), 202);
    let id = submitted.json::<Value>().await.unwrap()["build_id"].as_str().unwrap().to_owned();
    let build = deployment.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded");
    let lockfile = deployment
        .client
        .get(format!("{}/api/v1/namespaces/team/environments/analysis/lockfile", deployment.base))
        .bearer_auth(&robot_token)
        .send()
        .await
        .unwrap();
    assert_eq!(lockfile.status().as_u16(), 200);
    worker.kill().await.unwrap();

    let logs = deployment.logs();
    let build_log = deployment.log(&id).await;
    assert!(logs.len() > 10_000, "trace logs were written: {} bytes", logs.len());
    for secret in [TOKEN, robot_token.as_str()] {
        assert!(!logs.contains(secret), "a token is in the process logs");
        assert!(!build_log.contains(secret), "a token is in the build log");
    }
    deployment.stop().await;
}

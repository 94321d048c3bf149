//! The `envstore` binary's logs as a log collector reads them
//! (`--log-format json`): one JSON object per line, and every line of a
//! request carries that request's id.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "log-test-token-0123456789abcdef0123";
const WAIT: Duration = Duration::from_secs(60);

/// Starts `envstore ARGS --log-format json` with its log in `log`, and
/// returns it with the first line it prints (where it listens).
async fn start(args: &[&str], log: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_envstore"))
        .args(args)
        .args(["--log-format", "json"])
        .env("ENVSTORE_LOG", "info")
        .env_remove("ENVSTORE_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(fs_err::File::create(log).unwrap().into_file())
        .kill_on_drop(true)
        .spawn()
        .expect("envstore starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("envstore says where it listens")
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "envstore exited:\n{}",
                fs_err::read_to_string(log).unwrap_or_default()
            )
        });
    (child, line)
}

/// Every line of the log, each of which must be a JSON object.
fn json_lines(log: &Path) -> Vec<Value> {
    fs_err::read_to_string(log)
        .unwrap()
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
            assert!(
                value["timestamp"].is_string() && value["level"].is_string(),
                "{line}"
            );
            value
        })
        .collect()
}

/// The fields of every span a log line was written in.
fn spans(line: &Value) -> Vec<&Value> {
    line["spans"]
        .as_array()
        .map(|spans| spans.iter().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_of_each_request() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = fs_err::canonicalize(data.path()).unwrap();
    let data_arg = data_dir.to_str().unwrap();
    let log = data_dir.join("serve.log");
    let (_serve, listening) = start(
        &[
            "serve",
            "--workers",
            "0",
            "--bind",
            "127.0.0.1:0",
            "--admin-token",
            TOKEN,
            "--data-dir",
            data_arg,
        ],
        &log,
    )
    .await;
    let base = listening
        .strip_prefix("envstore listening on ")
        .expect("the listening line")
        .to_owned();

    let client = reqwest::Client::new();
    let request_id = "abc123-json-log";
    let response = client
        .post(format!("{base}/api/v1/namespaces"))
        .bearer_auth(TOKEN)
        .header("x-request-id", request_id)
        .json(&serde_json::json!({ "name": "logged" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], request_id);

    // The handler's line, written inside the request's span.
    let started = Instant::now();
    let line = loop {
        let found = json_lines(&log)
            .into_iter()
            .find(|line| line["message"] == "namespace created");
        if let Some(line) = found {
            break line;
        }
        assert!(
            started.elapsed() < WAIT,
            "no 'namespace created' line:\n{}",
            fs_err::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        line["namespace"], "logged",
        "the event's fields are at the top level: {line}"
    );
    let request = spans(&line)
        .into_iter()
        .find(|span| span["name"] == "request")
        .unwrap_or_else(|| panic!("not in a request span: {line}"));
    assert_eq!(request["request_id"], request_id, "{line}");
    assert_eq!(request["method"], "POST", "{line}");
    assert_eq!(request["route"], "/api/v1/namespaces", "{line}");
    // Lines outside requests (startup) carry no request id.
    let startup = json_lines(&log)
        .into_iter()
        .find(|line| line["message"] == "envstore is listening")
        .expect("the startup line");
    assert!(spans(&startup).is_empty(), "{startup}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_node_serves_its_metrics_and_logs_json() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = fs_err::canonicalize(data.path()).unwrap();
    let log = data_dir.join("worker.log");
    let (_worker, listening) = start(
        &[
            "worker",
            "--workers",
            "1",
            "--metrics-bind",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &log,
    )
    .await;
    let base = listening
        .strip_prefix("envstore worker metrics on ")
        .expect("the metrics line")
        .to_owned();
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), reqwest::StatusCode::OK);
    let text = metrics.text().await.unwrap();
    // Registered by the worker's solver and store as they were made.
    assert!(
        text.contains("# TYPE envstore_solve_cache_lookups_total counter"),
        "{text}"
    );
    assert!(
        text.contains("envstore_object_store_errors_total{operation=\"read\"} 0"),
        "{text}"
    );
    assert!(
        !text.contains("envstore_builds{"),
        "builds by state are the API's to show: {text}"
    );
    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "envstore workers are running"),
        "{lines:?}"
    );
}

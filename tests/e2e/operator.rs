//! The operator's view of a running server: `/metrics` in Prometheus' text
//! format, `/health` and `/ready`, and request ids.

use std::collections::BTreeMap;

use envstore_tests::{Backend, DemoChannel, TestServer, demo_spec_yaml, expect_problem};
use reqwest::StatusCode;
use serde_json::Value;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: the declared type of each family and the samples.
#[derive(Debug)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Parses Prometheus' text format (0.0.4), refusing anything malformed:
    /// a sample of an undeclared family, a bad label set, a non-number.
    fn parse(text: &str) -> Self {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.trim().is_empty() || line.starts_with("# HELP ") {
                continue;
            }
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declaration.split_once(' ').expect("# TYPE name kind");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{name} declared twice"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "an unknown comment: {line}");
            let sample = parse_sample(line);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = sample.name.strip_suffix(suffix)?;
                    matches!(
                        types.get(base).map(String::as_str),
                        Some("histogram" | "summary")
                    )
                    .then_some(base)
                })
                .unwrap_or(&sample.name);
            assert!(
                types.contains_key(family),
                "a sample of an undeclared family: {line}"
            );
            samples.push(sample);
        }
        Self { types, samples }
    }

    /// The value of the one sample of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {matching:?}"
        );
        matching.first().map(|sample| sample.value)
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "a bad metric name: {line}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = inside
                .split_once("=\"")
                .unwrap_or_else(|| panic!("a bad label: {line}"));
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, escaped)) => value.push(escaped),
                        None => panic!("an unfinished escape: {line}"),
                    },
                    Some((index, '"')) => break index,
                    Some((_, c)) => value.push(c),
                    None => panic!("an unfinished label value: {line}"),
                }
            };
            labels.insert(key.trim_start_matches(',').to_owned(), value);
            inside = &after_key[end + 1..];
            inside = inside.strip_prefix(',').unwrap_or(inside);
        }
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value: {line}"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {line}"));
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

async fn scrape(server: &TestServer) -> (String, Exposition) {
    // No token: a Prometheus scraper holds none.
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let exposition = Exposition::parse(&text);
    (text, exposition)
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let parsed = Exposition::parse(
        "# TYPE a counter\na{route=\"/x/{y}\",status=\"200\"} 3\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
    );
    assert_eq!(parsed.value("a", &[("route", "/x/{y}")]), Some(3.0));
    assert_eq!(parsed.value("h_count", &[]), Some(2.0));
    for bad in [
        "a 1\n",
        "# TYPE a counter\na{x=\"1} 1\n",
        "# TYPE a counter\na{x=\"1\"} one\n",
        "# TYPE a gauge\n# TYPE a gauge\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| Exposition::parse(bad)).is_err(),
            "{bad:?}"
        );
    }
}

/// Names no label may ever carry: the exposition is read without a token.
const NAMESPACE: &str = "quiet-team-7f3a";
const ENVIRONMENT: &str = "hidden-env-9b1c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_builds_show_states_phases_and_caches_and_no_names() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace(NAMESPACE).await.status(),
        StatusCode::CREATED
    );
    let spec = demo_spec_yaml("demo");
    let first = server.submit_yaml(NAMESPACE, ENVIRONMENT, &spec).await;
    assert_eq!(server.wait_for_build(&first).await["status"], "succeeded");
    // The same spec elsewhere: answered by the solve cache, its prefix reused.
    let second = server.submit_yaml(NAMESPACE, "again", &spec).await;
    let build = server.wait_for_build(&second).await;
    assert_eq!(build["status"], "succeeded");
    assert_eq!(build["reused"]["prefix"], true, "{build}");
    let lockfile = format!("/api/v1/namespaces/{NAMESPACE}/environments/{ENVIRONMENT}/lockfile");
    for _ in 0..2 {
        assert_eq!(server.get(&lockfile).await.status(), StatusCode::OK);
    }

    let (text, metrics) = scrape(&server).await;
    // From this server's database, read at scrape time.
    assert_eq!(metrics.types["envstore_builds"], "gauge");
    assert_eq!(
        metrics.value("envstore_builds", &[("state", "succeeded")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metrics.value("envstore_builds", &[("state", "failed")]),
        Some(0.0)
    );
    assert_eq!(metrics.value("envstore_queued_jobs", &[]), Some(0.0));
    assert_eq!(metrics.value("envstore_database_up", &[]), Some(1.0));

    // Recorded by the workers and caches of this process (other tests of
    // this binary add to them: only lower bounds hold).
    let at_least = |name: &str, labels: &[(&str, &str)], floor: f64| {
        let value = metrics
            .value(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
        assert!(
            value >= floor,
            "{name} {labels:?} = {value}, want at least {floor}"
        );
    };
    assert_eq!(
        metrics.types["envstore_build_phase_duration_seconds"],
        "histogram"
    );
    at_least(
        "envstore_build_phase_duration_seconds_count",
        &[("phase", "solving")],
        2.0,
    );
    let solves = metrics.value(
        "envstore_build_phase_duration_seconds_count",
        &[("phase", "solving")],
    );
    let in_last_bucket = metrics.value(
        "envstore_build_phase_duration_seconds_bucket",
        &[("phase", "solving"), ("le", "+Inf")],
    );
    assert_eq!(
        solves, in_last_bucket,
        "every solve falls in the +Inf bucket"
    );
    for phase in ["downloading", "linking", "publishing"] {
        at_least(
            "envstore_build_phase_duration_seconds_count",
            &[("phase", phase)],
            1.0,
        );
    }
    at_least(
        "envstore_solve_cache_lookups_total",
        &[("result", "miss")],
        1.0,
    );
    at_least(
        "envstore_solve_cache_lookups_total",
        &[("result", "hit")],
        1.0,
    );
    at_least(
        "envstore_lockfile_cache_lookups_total",
        &[("result", "hit")],
        1.0,
    );
    at_least("envstore_prefixes_total", &[("source", "built")], 1.0);
    at_least("envstore_prefixes_total", &[("source", "reused")], 1.0);
    let lockfile_gets = [
        ("method", "GET"),
        (
            "route",
            "/api/v1/namespaces/{namespace}/environments/{name}/lockfile",
        ),
        ("status", "200"),
    ];
    at_least("envstore_http_requests_total", &lockfile_gets, 2.0);

    // Unmatched paths are counted without their path.
    let response = server.get(&format!("/{NAMESPACE}/nothing-here")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (text, metrics) = scrape(&server).await;
    at_least_in(
        &metrics,
        "envstore_http_requests_total",
        &[("route", "unmatched"), ("status", "404")],
    );
    assert_eq!(
        metrics.types["envstore_object_store_errors_total"], "counter",
        "described even before any error"
    );
    for name in [NAMESPACE, ENVIRONMENT, "again", server.token.as_str()] {
        assert!(!text.contains(name), "the exposition names {name}:\n{text}");
    }
    server.stop().await;
}

fn at_least_in(metrics: &Exposition, name: &str, labels: &[(&str, &str)]) {
    let total: f64 = metrics
        .samples
        .iter()
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
        .sum();
    assert!(total >= 1.0, "no {name} {labels:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_request_ids() {
    let server = TestServer::start(Vec::new()).await;
    for path in ["/health", "/ready", "/api/v1/health"] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(
            matches!(body["status"].as_str(), Some("ok" | "ready")),
            "{path}: {body}"
        );
    }

    // A client's id is echoed; without one the server makes one; errors too.
    let response = server
        .client
        .get(server.url("/health"))
        .header("x-request-id", "abc123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc123");
    let response = server
        .client
        .get(server.url("/api/v1/namespaces/none"))
        .send()
        .await
        .unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
    let again = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert_ne!(
        again.headers()["x-request-id"].to_str().unwrap(),
        made,
        "one id per request"
    );
    // An id that would forge log fields, or run long, is replaced.
    for forged in ["a\" level=\"ERROR", &"x".repeat(500)] {
        let response = server
            .client
            .get(server.url("/health"))
            .header("x-request-id", forged)
            .send()
            .await
            .unwrap();
        let given = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(
            given.len(),
            36,
            "a fresh UUID instead of {forged:?}: {given}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_store_while_its_folder_cannot_hold_objects() {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let store_dir = fs_err::canonicalize(data.path())
        .unwrap()
        .join("local-store");
    let store = url::Url::from_directory_path(&store_dir).unwrap();
    let server = TestServer::start_configured(data, backend, Vec::new(), 0, move |config| {
        config.store = store;
    })
    .await;
    assert_eq!(
        server
            .client
            .get(server.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // The store's folder is replaced by a file, as when a mount goes wrong.
    fs_err::remove_dir_all(&store_dir).unwrap();
    fs_err::write(&store_dir, b"not a folder").unwrap();
    let response = server
        .client
        .get(server.url("/ready"))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(problem["failed"], serde_json::json!(["store"]), "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("store"),
        "{problem}"
    );
    // Alive all the same, and still scraped.
    assert_eq!(
        server
            .client
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let (_, metrics) = scrape(&server).await;
    assert!(
        metrics
            .value(
                "envstore_object_store_errors_total",
                &[("operation", "check")]
            )
            .unwrap_or_default()
            >= 1.0
    );

    fs_err::remove_file(&store_dir).unwrap();
    fs_err::create_dir(&store_dir).unwrap();
    assert_eq!(
        server
            .client
            .get(server.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "ready again"
    );
    server.stop().await;
}

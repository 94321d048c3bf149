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

    // Latency by route, queue wait, build duration by status: histograms.
    for histogram in [
        "envstore_http_request_duration_seconds",
        "envstore_build_queue_wait_seconds",
        "envstore_build_duration_seconds",
    ] {
        assert_eq!(metrics.types[histogram], "histogram", "{histogram}");
    }
    at_least(
        "envstore_http_request_duration_seconds_count",
        &lockfile_gets[..2],
        2.0,
    );
    at_least("envstore_build_queue_wait_seconds_count", &[], 2.0);
    at_least(
        "envstore_build_duration_seconds_count",
        &[("status", "succeeded")],
        2.0,
    );
    // The process, the version, the data folders.
    at_least("process_resident_memory_bytes", &[], 1.0);
    at_least("process_open_fds", &[], 1.0);
    assert_eq!(metrics.types["process_cpu_seconds_total"], "counter");
    assert_eq!(
        metrics.value(
            "envstore_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    for folder in ["prefixes", "environments", "package_cache", "pypi_cache"] {
        assert!(
            metrics.value("envstore_data_folder_bytes", &[("folder", folder)]) >= Some(0.0),
            "envstore_data_folder_bytes{{folder={folder:?}}} in\n{text}"
        );
        let size = metrics.value("envstore_data_filesystem_size_bytes", &[("folder", folder)]);
        let free = metrics.value("envstore_data_filesystem_free_bytes", &[("folder", folder)]);
        assert!(
            matches!((size, free), (Some(size), Some(free)) if size > 0.0 && free <= size),
            "{folder}: {size:?} {free:?}"
        );
    }

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

/// A rule file as Prometheus reads it (`rule_files:`), refusing fields it
/// would refuse.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The metric names a PromQL expression selects.
fn selected_metrics(expr: &str) -> Result<Vec<String>, String> {
    struct Names(Vec<String>);
    impl promql_parser::util::ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, String> {
            use promql_parser::parser::Expr;
            let selector = match expr {
                Expr::VectorSelector(selector) => selector,
                Expr::MatrixSelector(matrix) => &matrix.vs,
                _ => return Ok(true),
            };
            match &selector.name {
                Some(name) => self.0.push(name.clone()),
                None => return Err(format!("a selector without a metric name: {selector}")),
            }
            Ok(true)
        }
    }
    let parsed = promql_parser::parser::parse(expr)?;
    let mut names = Names(Vec::new());
    promql_parser::util::walk_expr(&mut names, &parsed)?;
    Ok(names.0)
}

/// Whether `name` is a series of a family the scrape declares: the family
/// itself, or a histogram's `_bucket`, `_sum` or `_count`.
fn exported(metrics: &Exposition, name: &str) -> bool {
    metrics.types.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| {
                metrics.types.get(base).map(String::as_str) == Some("histogram")
            })
        })
}

fn monitoring_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/monitoring")
        .join(name);
    fs_err::read_to_string(path).unwrap()
}

/// The alert rules and the Grafana dashboard in deploy/monitoring parse,
/// and every metric they name is one a running server exports (Prometheus'
/// own `up` aside): a renamed metric fails here, not silently in a
/// dashboard that shows nothing or an alert that never fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_the_dashboard_name_only_metrics_the_server_exports() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let build = server
        .submit_yaml("team", "env", &demo_spec_yaml("demo"))
        .await;
    assert_eq!(server.wait_for_build(&build).await["status"], "succeeded");
    let (text, metrics) = scrape(&server).await;
    server.stop().await;

    let mut problems = Vec::new();
    let mut check = |origin: String, expr: &str| match selected_metrics(expr) {
        Ok(names) if names.is_empty() => problems.push(format!("{origin}: selects no metric")),
        Ok(names) => {
            for name in names {
                if name != "up" && !exported(&metrics, &name) {
                    problems.push(format!("{origin}: {name} is not exported"));
                }
            }
        }
        Err(error) => problems.push(format!("{origin}: {error}\n  {expr}")),
    };

    let rules: RuleFile = serde_yaml::from_str(&monitoring_file("envstore-rules.yaml")).unwrap();
    let mut alerts = std::collections::BTreeSet::new();
    for group in &rules.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            let origin = format!("rule {}", rule.alert);
            assert!(alerts.insert(rule.alert.clone()), "{origin} twice");
            assert!(
                promql_parser::util::parse_duration(&rule.for_).is_ok(),
                "{origin}: for {:?}",
                rule.for_
            );
            assert!(
                ["critical", "warning", "info"]
                    .contains(&rule.labels.get("severity").map_or("", String::as_str)),
                "{origin}: severity {:?}",
                rule.labels
            );
            for key in ["summary", "description"] {
                let annotation = rule.annotations.get(key).map_or("", String::as_str);
                assert!(
                    !annotation.is_empty()
                        && annotation.matches("{{").count() == annotation.matches("}}").count(),
                    "{origin}: {key} {annotation:?}"
                );
            }
            check(origin, &rule.expr);
        }
    }
    assert!(alerts.len() >= 10, "{alerts:?}");

    let dashboard: Value =
        serde_json::from_str(&monitoring_file("grafana-dashboard.json")).unwrap();
    let mut targets = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            // Grafana's variables, as Grafana fills them in.
            let expr = expr.replace("$__rate_interval", "5m").replace("$job", ".*");
            check(format!("panel {:?}", panel["title"]), &expr);
            targets += 1;
        }
    }
    assert!(targets >= 20, "{targets} dashboard queries");
    assert!(problems.is_empty(), "{problems:#?}\n\nexported:\n{text}");
}

#[test]
fn the_metric_check_sees_every_selector() {
    assert_eq!(
        selected_metrics("sum(rate(a_total{x=\"1\"}[5m])) / on () b > 0 and c offset 1m").unwrap(),
        ["a_total", "b", "c"]
    );
    assert!(selected_metrics("sum(rate(a_total[5m]").is_err());
    assert!(selected_metrics("{job=\"x\"}").is_err(), "no metric name");
}

//! The Prometheus exposition (`GET /metrics`).
//!
//! The libraries record through the `metrics` facade and never learn who
//! reads it; [`install`] puts this process's Prometheus recorder behind the
//! facade, and [`render`] writes what it holds plus what the database says
//! at scrape time (builds by state, queue depth).
//!
//! Every label comes from a fixed set (route templates, status codes, build
//! states and phases, cache results, store operations): no namespace,
//! environment, subject, token or path is ever a label. That is what lets
//! `/metrics` be read without a token, as a Prometheus scraper does.

use std::fmt::Write as _;
use std::sync::OnceLock;

use envstore_core::BuildStatus;
use envstore_db::Database;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The content type of Prometheus' text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of every `*_seconds` histogram: build phases take from
/// milliseconds (a cached solve) to many minutes (a large download).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// What the metrics of this process are, for the `# HELP` lines.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "envstore_http_requests_total",
        "HTTP requests answered, by method, route template and status.",
    ),
    (
        "envstore_solve_cache_lookups_total",
        "Solve cache lookups, by result (hit or miss).",
    ),
    (
        "envstore_lockfile_cache_lookups_total",
        "In-memory lockfile cache lookups, by result (hit or miss).",
    ),
    (
        "envstore_prefixes_total",
        "Prefixes builds needed, by source: reused, materialised or built.",
    ),
    (
        "envstore_object_store_errors_total",
        "Object store requests that failed, by operation.",
    ),
    (
        "envstore_database_unavailable_total",
        "Requests answered 503 because the database did not answer or could not write.",
    ),
    (
        "envstore_not_ready_total",
        "Readiness probes answered 503 (database, store or data folder).",
    ),
    (
        "envstore_worker_failures_total",
        "Times a worker failed its bookkeeping (claiming or recording a job) and backed off.",
    ),
];

/// Series shown from the start, at zero, so that a rate over them is
/// defined before the first event (the caches register their own).
const ZERO_SERIES: &[(&str, &str, &[&str])] = &[
    (
        "envstore_object_store_errors_total",
        "operation",
        &["read", "write", "head", "check"],
    ),
    (
        "envstore_prefixes_total",
        "source",
        &["reused", "materialised", "built"],
    ),
];

/// Every histogram of this process, with what it measures.
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "envstore_build_phase_duration_seconds",
        "How long build phases took, by phase (solving, downloading, linking, publishing).",
    ),
    (
        crate::observe::HTTP_DURATION_METRIC,
        "Seconds from a request's arrival to its response's head, by method and route template.",
    ),
    (
        "envstore_build_queue_wait_seconds",
        "Seconds a build waited in the queue before a worker first started it.",
    ),
    (
        "envstore_build_duration_seconds",
        "Seconds a build's attempt ran on a worker until the build ended, by final status.",
    ),
];

/// Buckets of the request latency histogram: answers take from tens of
/// microseconds (a cached lockfile) to seconds (a solve).
const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The gauge whose labels say which build of envstore runs (value 1), as
/// `prometheus_build_info` does for Prometheus: a version skew between API
/// and worker nodes shows in one query.
pub const BUILD_INFO_METRIC: &str = "envstore_build_info";

/// This process's CPU, memory, file descriptors and start time, named as
/// Prometheus' own client libraries name them (`process_*`), read at each
/// scrape.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("failed to install the Prometheus recorder: {0}")]
pub struct InstallError(String);

static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process's Prometheus recorder behind the `metrics` facade;
/// later calls do nothing. Call it before the stores, solvers and routers
/// are made: they register their counters once, when they are made, and a
/// counter registered before the recorder is installed counts nothing.
pub fn install() -> Result<(), InstallError> {
    let installed = RECORDER.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(crate::observe::HTTP_DURATION_METRIC.to_owned()),
                    HTTP_DURATION_BUCKETS,
                )
            })
            .map_err(|error| error.to_string())?;
        // Histograms here are few per build, so their samples need no
        // periodic upkeep between scrapes.
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|error| error.to_string())?;
        for (name, help) in DESCRIPTIONS {
            metrics::describe_counter!(*name, *help);
        }
        for (name, help) in HISTOGRAMS {
            metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help);
        }
        metrics::describe_gauge!(
            BUILD_INFO_METRIC,
            "Always 1; its labels name the running envstore's version."
        );
        metrics::gauge!(BUILD_INFO_METRIC, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        PROCESS
            .get_or_init(metrics_process::Collector::default)
            .describe();
        for name in [
            "envstore_database_unavailable_total",
            "envstore_not_ready_total",
            "envstore_worker_failures_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        for (name, label, values) in ZERO_SERIES {
            for value in *values {
                metrics::counter!(*name, *label => *value).increment(0);
            }
        }
        Ok(handle)
    });
    installed
        .as_ref()
        .map(|_| ())
        .map_err(|message| InstallError(message.clone()))
}

/// What this process recorded (nothing before [`install`]).
pub fn render_process() -> String {
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    match RECORDER.get() {
        Some(Ok(handle)) => handle.render(),
        _ => String::new(),
    }
}

/// What this process recorded, then the builds by state and the queue depth
/// as the database has them now. When the database does not answer, the
/// rest is still shown, with `envstore_database_up 0`.
pub async fn render(db: &Database) -> String {
    let mut text = render_process();
    let counts = db.build_counts().await;
    let queued = db.queued_jobs().await;
    let up = counts.is_ok() && queued.is_ok();
    if let Ok(counts) = counts {
        gauge_header(
            &mut text,
            "envstore_builds",
            "Builds in the database, by state.",
        );
        for status in [
            BuildStatus::Queued,
            BuildStatus::Running,
            BuildStatus::Succeeded,
            BuildStatus::Failed,
            BuildStatus::Cancelled,
        ] {
            let count: i64 = counts
                .iter()
                .filter(|(counted, _)| *counted == status)
                .map(|(_, count)| count)
                .sum();
            let _ = writeln!(text, "envstore_builds{{state=\"{status}\"}} {count}");
        }
    }
    if let Ok(queued) = queued {
        gauge_header(
            &mut text,
            "envstore_queued_jobs",
            "Build jobs waiting for a worker.",
        );
        let _ = writeln!(text, "envstore_queued_jobs {queued}");
    }
    gauge_header(
        &mut text,
        "envstore_database_up",
        "Whether the database answered this scrape.",
    );
    let _ = writeln!(text, "envstore_database_up {}", u8::from(up));
    text
}

fn gauge_header(text: &mut String, name: &str, help: &str) {
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// The HTTP face of a workers-only node (`envstore worker --metrics-bind`):
/// its own metrics (build phases, solve cache, prefixes, store errors) and
/// liveness. Builds by state and queue depth come from the API nodes.
pub fn worker_router() -> axum::Router {
    use axum::routing::get;

    axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    render_process(),
                )
            }),
        )
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
}

/// [`worker_router`] with `/ready`: the same checks as the API's (the
/// database takes a write, the store answers, the data folder takes a
/// file), for an orchestrator to hold a worker-only node out while it
/// cannot build.
pub fn worker_router_with_readiness(readiness: crate::readiness::Readiness) -> axum::Router {
    use axum::response::IntoResponse;
    use axum::routing::get;

    worker_router().route(
        "/ready",
        get(move || {
            let readiness = readiness.clone();
            async move {
                match readiness.check().await {
                    Ok(checks) => axum::Json(checks).into_response(),
                    Err(error) => error.into_response(),
                }
            }
        }),
    )
}

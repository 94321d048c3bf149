//! Usage figures and quotas through the HTTP API: a prefix shared by two
//! namespaces counts once in the totals, builds and their minutes, download
//! counters that reach the database in batches, and quotas refused with
//! problem+json before anything is queued; figures over a period with the
//! server's currency, and refused changes in the audit log.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use envstore_core::usage::{DAY_MILLIS, format_time};
use envstore_tests::{Backend, DemoChannel, TestServer, demo_spec_yaml, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

/// How long a test waits for a periodic flush before it gives up.
const FLUSH_WAIT: Duration = Duration::from_secs(60);

const GIB: f64 = (1u64 << 30) as f64;

/// Bytes of the regular files under `path`, each inode once, links not
/// followed: worked out here, apart from the server's own measurement.
fn bytes_on_disk(path: &Path, seen: &mut HashSet<(u64, u64)>) -> i64 {
    let metadata = fs_err::symlink_metadata(path).unwrap();
    if metadata.is_dir() {
        return fs_err::read_dir(path)
            .unwrap()
            .map(|entry| bytes_on_disk(&entry.unwrap().path(), seen))
            .sum();
    }
    if metadata.is_file() && seen.insert((metadata.dev(), metadata.ino())) {
        return i64::try_from(metadata.len()).unwrap();
    }
    0
}

fn row<'a>(usage: &'a Value, namespace: &str) -> &'a Value {
    usage["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no row for {namespace}: {usage:#}"))
}

fn names(usage: &Value) -> Vec<&str> {
    usage["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["namespace"].as_str().unwrap())
        .collect()
}

/// A quota problem's quota, figure and limit.
fn quota_figures(problem: &Value) -> (Option<&str>, Option<i64>, Option<i64>) {
    (
        problem["quota"].as_str(),
        problem["used"].as_i64(),
        problem["limit"].as_i64(),
    )
}

async fn get_as(server: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = server.client.get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The download counts the database holds for a namespace's lockfiles and
/// for a lock's artifacts, read past the server.
async fn stored_downloads(database: &str, namespace: &str, lock_hash: &str) -> (i64, i64) {
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(database).await.unwrap();
    let lockfiles = sqlx::query_scalar::<_, i64>(
        "SELECT downloads FROM namespace_downloads WHERE namespace = $1",
    )
    .bind(namespace.to_owned())
    .fetch_optional(&mut connection)
    .await
    .unwrap();
    let artifacts =
        sqlx::query_scalar::<_, i64>("SELECT downloads FROM lock_downloads WHERE lock_hash = $1")
            .bind(lock_hash.to_owned())
            .fetch_optional(&mut connection)
            .await
            .unwrap();
    (lockfiles.unwrap_or(0), artifacts.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_two_namespaces_share_counts_once_in_the_totals_with_builds_and_downloads() {
    let channel = DemoChannel::start().await;
    // The database outlives the server (SQLite: outside its data folder),
    // to read what the server wrote on shutdown.
    let kept = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(kept.path()).await;
    let database = backend.database.clone();
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        |config| {
            config.usage.settings.price_per_gib_month = Some(2.0);
            config.usage.settings.price_per_build_minute = Some(0.5);
            config.usage.flush_interval = Duration::from_millis(100);
        },
    )
    .await;
    for namespace in ["alpha", "beta", "gamma"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let first = server
        .submit_yaml("alpha", "analysis", &demo_spec_yaml("demo"))
        .await;
    let first = server.wait_for_build(&first).await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    let copy = server
        .submit_yaml("beta", "copy", &demo_spec_yaml("demo"))
        .await;
    let copy = server.wait_for_build(&copy).await;
    assert_eq!(copy["reused"]["prefix"], true, "{copy:#}");
    let unsolvable =
        "channels: [demo]\ndependencies: [conflict-a, conflict-b]\nplatforms: [linux-64]\n";
    let broken = server.submit_yaml("alpha", "broken", unsolvable).await;
    assert_eq!(server.wait_for_build(&broken).await["status"], "failed");
    let lock_hash = first["lock_hash"].as_str().unwrap().to_owned();
    let prefix = server.data_dir.join("prefixes").join(&lock_hash[..16]);
    let prefix_bytes = bytes_on_disk(&prefix, &mut HashSet::new());
    assert!(prefix_bytes > 0);

    let (status, usage) = server.get_json("/api/v1/usage").await;
    assert_eq!(status, StatusCode::OK, "{usage:#}");
    assert_eq!(names(&usage), ["alpha", "beta", "gamma"]);
    for namespace in ["alpha", "beta"] {
        let row = row(&usage, namespace);
        assert_eq!(row["disk_bytes"], prefix_bytes, "{namespace}: {row:#}");
        assert_eq!(row["shared_disk_bytes"], prefix_bytes, "{row:#}");
        assert_eq!(
            (row["prefixes"].as_i64(), row["shared_prefixes"].as_i64()),
            (Some(1), Some(1))
        );
        assert_eq!(
            row["shared"],
            json!([{ "lock_hash": lock_hash, "bytes": prefix_bytes, "other_namespaces": 1 }])
        );
        assert_eq!(row["builds_succeeded"], 1);
        assert!(row["build_millis"].as_i64().unwrap() > 0, "{row:#}");
        let minutes = row["build_minutes"].as_f64().unwrap();
        assert!(
            (row["cost_builds"].as_f64().unwrap() - minutes * 0.5).abs() < 1e-9,
            "{row:#}"
        );
        let disk_cost = prefix_bytes as f64 / GIB * 2.0;
        assert!(
            (row["cost_disk_per_month"].as_f64().unwrap() - disk_cost).abs() < 1e-12,
            "{row:#}"
        );
        assert_eq!(
            (
                row["max_disk_bytes"].clone(),
                row["max_concurrent_builds"].clone()
            ),
            (Value::Null, Value::Null)
        );
    }
    let alpha = row(&usage, "alpha");
    assert_eq!(
        (
            alpha["builds_failed"].as_i64(),
            row(&usage, "beta")["builds_failed"].as_i64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(row(&usage, "gamma")["disk_bytes"], 0);
    let totals = &usage["totals"];
    assert_eq!(
        totals["disk_bytes"], prefix_bytes,
        "the shared prefix counts once: {totals:#}"
    );
    assert_eq!(
        (
            totals["prefixes"].as_i64(),
            totals["builds_succeeded"].as_i64()
        ),
        (Some(1), Some(2))
    );
    let summed: i64 = ["alpha", "beta", "gamma"]
        .iter()
        .map(|ns| row(&usage, ns)["build_millis"].as_i64().unwrap())
        .sum();
    assert_eq!(totals["build_millis"], summed);
    assert_eq!(
        usage["prices"],
        json!({ "per_gib_month": 2.0, "per_build_minute": 0.5 })
    );

    // Bodies served count, revalidations do not; a by-hash download shows in
    // every namespace holding the lock and once in the totals.
    let lockfile = "/api/v1/namespaces/alpha/environments/analysis/lockfile";
    for _ in 0..3 {
        assert_eq!(server.get(lockfile).await.status(), StatusCode::OK);
    }
    let revalidated = server
        .client
        .get(server.url(lockfile))
        .bearer_auth(&server.token)
        .header("if-none-match", format!("\"{lock_hash}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    for _ in 0..2 {
        assert_eq!(
            server
                .get(&format!("/api/v1/locks/{lock_hash}/conda-lock.yml"))
                .await
                .status(),
            StatusCode::OK
        );
    }
    // The counts reach the database with the periodic flush, before anyone
    // asks for the figures.
    let started = Instant::now();
    while stored_downloads(&database, "alpha", &lock_hash).await != (3, 2) {
        assert!(
            started.elapsed() < FLUSH_WAIT,
            "the download counts were never flushed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, usage) = server.get_json("/api/v1/usage").await;
    let downloads = |namespace: &str| {
        let row = row(&usage, namespace);
        (
            row["lockfile_downloads"].as_i64().unwrap(),
            row["artifact_downloads"].as_i64().unwrap(),
        )
    };
    assert_eq!(
        (downloads("alpha"), downloads("beta"), downloads("gamma")),
        ((3, 2), (0, 2), (0, 0))
    );
    let totals = &usage["totals"];
    assert_eq!(
        (
            totals["lockfile_downloads"].as_i64(),
            totals["artifact_downloads"].as_i64()
        ),
        (Some(3), Some(2))
    );

    // A viewer of alpha sees alpha only: that its prefix is shared, not with
    // whom; totals over what they see. Anonymous callers see public ones.
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/alpha/members/vera",
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let created: Value = server
        .admin_json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "usage", "subject": "vera" })),
        )
        .await
        .json()
        .await
        .unwrap();
    let vera = created["token"].as_str().unwrap();
    let seen: Value = get_as(&server, Some(vera), "/api/v1/usage")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&seen), ["alpha"]);
    assert_eq!(row(&seen, "alpha")["shared"][0]["other_namespaces"], 1);
    assert_eq!(seen["totals"]["disk_bytes"], prefix_bytes);
    assert_eq!(seen["totals"]["builds_failed"], 1);
    assert_eq!(
        get_as(&server, Some(vera), "/api/v1/namespaces/alpha/usage")
            .await
            .status(),
        StatusCode::OK
    );
    expect_problem(
        get_as(&server, Some(vera), "/api/v1/namespaces/beta/usage").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let anonymous: Value = get_as(&server, None, "/api/v1/usage")
        .await
        .json()
        .await
        .unwrap();
    assert!(names(&anonymous).is_empty(), "{anonymous:#}");
    let (_, one) = server.get_json("/api/v1/namespaces/beta/usage").await;
    assert_eq!(names(&one), ["beta"]);
    assert_eq!(one["totals"]["artifact_downloads"], 2);

    // What was counted after the last periodic flush is written on shutdown.
    for _ in 0..2 {
        assert_eq!(server.get(lockfile).await.status(), StatusCode::OK);
    }
    server.stop().await;
    assert_eq!(
        stored_downloads(&database, "alpha", &lock_hash).await,
        (5, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_over_the_concurrency_quota_are_refused_with_429_until_one_ends() {
    let channel = DemoChannel::start().await;
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    // No workers: submitted builds stay queued.
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        0,
        |config| {
            config.usage.settings.default_quota.max_concurrent_builds = Some(1);
        },
    )
    .await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let (_, quota) = server.get_json("/api/v1/namespaces/team/quota").await;
    assert_eq!(
        quota["quota"],
        json!({ "max_disk_bytes": null, "max_concurrent_builds": null })
    );
    assert_eq!(
        quota["effective"]["max_concurrent_builds"], 1,
        "the server's default: {quota:#}"
    );
    let spec = |python: &str| {
        format!("channels: [demo]\ndependencies: [python {python}]\nplatforms: [linux-64]\n")
    };

    let queued = server.submit_yaml("team", "one", &spec("3.11.*")).await;
    let response = server
        .submit("team", "two", "application/yaml", &spec("3.10.*"))
        .await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((5..=600).contains(&retry_after), "{retry_after}");
    let problem = expect_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "/problems/quota-exceeded");
    assert_eq!(
        quota_figures(&problem),
        (Some("max_concurrent_builds"), Some(1), Some(1))
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("1 builds queued or running") && detail.contains("limit is 1"),
        "{detail}"
    );
    assert!(detail.contains("cancel"), "{detail}");

    // Submitting the queued spec again joins its build: nothing is added.
    let again = server
        .submit("team", "one", "application/yaml", &spec("3.11.*"))
        .await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.json::<Value>().await.unwrap()["joined"], true);

    // The namespace's own quota overrides the default.
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/quota",
            Some(json!({ "max_concurrent_builds": 2 })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap()["effective"]["max_concurrent_builds"],
        2
    );
    server.submit_yaml("team", "two", &spec("3.10.*")).await;
    let refused = server
        .submit(
            "team",
            "three",
            "application/yaml",
            "channels: [demo]\ndependencies: [six]\n",
        )
        .await;
    expect_problem(refused, StatusCode::TOO_MANY_REQUESTS).await;

    // A cancelled build frees its slot.
    let response = server
        .admin_json(
            Method::POST,
            &format!("/api/v1/builds/{queued}/cancel"),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    server
        .submit_yaml("team", "three", "channels: [demo]\ndependencies: [six]\n")
        .await;

    let (_, usage) = server.get_json("/api/v1/namespaces/team/usage").await;
    let team = row(&usage, "team");
    assert_eq!(
        (
            team["builds_queued"].as_i64(),
            team["builds_cancelled"].as_i64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(team["max_concurrent_builds"], 2);

    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/quota",
            Some(json!({ "max_concurrent_builds": 0 })),
        )
        .await;
    expect_problem(response, StatusCode::BAD_REQUEST).await;
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/nowhere/quota",
            Some(json!({ "max_concurrent_builds": 2 })),
        )
        .await;
    expect_problem(response, StatusCode::NOT_FOUND).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_quota_refuses_new_prefixes_but_not_a_spec_that_reuses_one() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("full").await.status(),
        StatusCode::CREATED
    );
    let first = server
        .submit_yaml("full", "first", &demo_spec_yaml("demo"))
        .await;
    assert_eq!(server.wait_for_build(&first).await["status"], "succeeded");
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/full/quota",
            Some(json!({ "max_disk_bytes": 1 })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (_, usage) = server.get_json("/api/v1/namespaces/full/usage").await;
    let used = row(&usage, "full")["disk_bytes"].as_i64().unwrap();
    assert!(used > 1, "{usage:#}");

    let other = "channels: [demo]\ndependencies: [python 3.10.*]\nplatforms: [linux-64]\n";
    let response = server
        .submit("full", "second", "application/yaml", other)
        .await;
    let problem = expect_problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(problem["type"], "/problems/quota-exceeded");
    assert_eq!(
        quota_figures(&problem),
        (Some("max_disk_bytes"), Some(used), Some(1))
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("({used} bytes)")) && detail.contains("(1 bytes)"),
        "{detail}"
    );
    assert!(detail.contains("delete environments"), "{detail}");
    let (_, environments) = server
        .get_json("/api/v1/namespaces/full/environments")
        .await;
    assert_eq!(
        environments["environments"].as_array().unwrap().len(),
        1,
        "nothing was queued: {environments:#}"
    );

    // The spec whose prefix is on disk takes no more: accepted, and reused.
    let copy = server
        .submit_yaml("full", "copy", &demo_spec_yaml("demo"))
        .await;
    let copy = server.wait_for_build(&copy).await;
    assert_eq!(
        (copy["status"].as_str(), copy["reused"]["prefix"].as_bool()),
        (Some("succeeded"), Some(true))
    );
    let (_, usage) = server.get_json("/api/v1/namespaces/full/usage").await;
    assert_eq!(
        row(&usage, "full")["disk_bytes"],
        used,
        "one prefix, counted once"
    );
    server.stop().await;
}

fn now_millis() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The UTC date `days` from today, as `YYYY-MM-DD`.
fn date(days: i64) -> String {
    format_time(now_millis() + days * DAY_MILLIS)[..10].to_owned()
}

/// A usage table's figures for `namespace` over `query`.
async fn period_row(server: &TestServer, query: &str, namespace: &str) -> (Value, Value) {
    let (status, usage) = server.get_json(&format!("/api/v1/usage?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {usage:#}");
    (row(&usage, namespace).clone(), usage)
}

/// The audit log's denied requests, newest first.
async fn denied_entries(server: &TestServer) -> Vec<Value> {
    let (status, audit) = server.get_json("/api/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{audit:#}");
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "request.denied")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_takes_in_the_builds_and_downloads_made_in_it_with_costs_in_the_currency() {
    let channel = DemoChannel::start().await;
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        |config| {
            config.usage.settings.price_per_gib_month = Some(2.0);
            config.usage.settings.price_per_build_minute = Some(0.5);
            config.usage.settings.currency = Some("EUR".parse().unwrap());
        },
    )
    .await;
    let before = now_millis();
    assert_eq!(
        server.create_namespace("alpha").await.status(),
        StatusCode::CREATED
    );
    let build = server
        .submit_yaml("alpha", "analysis", &demo_spec_yaml("demo"))
        .await;
    let build = server.wait_for_build(&build).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let lockfile = "/api/v1/namespaces/alpha/environments/analysis/lockfile";
    for _ in 0..2 {
        assert_eq!(server.get(lockfile).await.status(), StatusCode::OK);
    }
    // Held for a moment before the period ends.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // All time: as before periods, with the currency and when daily counts began.
    let (_, all) = server.get_json("/api/v1/usage").await;
    assert_eq!(all["currency"], "EUR", "{all:#}");
    assert_eq!(all["period"]["since"], Value::Null);
    let counted_since = all["period"]["counted_since"].as_i64().unwrap();
    assert!(
        counted_since <= now_millis() && counted_since > before - 600_000,
        "{all:#}"
    );
    let alpha = row(&all, "alpha");
    assert_eq!(
        (
            alpha["builds_succeeded"].as_i64(),
            alpha["lockfile_downloads"].as_i64()
        ),
        (Some(1), Some(2))
    );

    // From yesterday to tomorrow (dates): the build, the downloads, and
    // the disk held since the build ended, priced.
    let (alpha, usage) = period_row(
        &server,
        &format!("since={}&until={}", date(-1), date(1)),
        "alpha",
    )
    .await;
    assert_eq!(usage["currency"], "EUR");
    assert_eq!(
        usage["period"]["until"].as_i64().unwrap() - usage["period"]["since"].as_i64().unwrap(),
        2 * DAY_MILLIS
    );
    assert_eq!(alpha["builds_succeeded"], 1, "{alpha:#}");
    assert_eq!(alpha["build_millis"], row(&all, "alpha")["build_millis"]);
    assert_eq!(alpha["lockfile_downloads"], 2);
    let gib_months = alpha["disk_gib_months"].as_f64().unwrap();
    let disk = alpha["disk_bytes"].as_f64().unwrap();
    let held_millis = gib_months * GIB * (730.0 * 3_600_000.0) / disk;
    assert!(
        held_millis > 150.0 && (held_millis as i64) < now_millis() - before,
        "held from the build's end to now: {held_millis} ms"
    );
    let cost_disk = alpha["cost_disk"].as_f64().unwrap();
    assert!((cost_disk - gib_months * 2.0).abs() < 1e-12, "{alpha:#}");
    let cost_builds = alpha["cost_builds"].as_f64().unwrap();
    assert!(
        (alpha["cost"].as_f64().unwrap() - (cost_disk + cost_builds)).abs() < 1e-12,
        "{alpha:#}"
    );

    // From tomorrow on, or up to yesterday (RFC 3339): nothing happened,
    // though the disk on hand is still there.
    let tomorrow = format_time(now_millis() + DAY_MILLIS);
    let yesterday = format_time(now_millis() - DAY_MILLIS);
    for query in [format!("since={tomorrow}"), format!("until={yesterday}")] {
        let (alpha, usage) = period_row(&server, &query, "alpha").await;
        assert_eq!(
            (
                alpha["builds_succeeded"].as_i64(),
                alpha["build_millis"].as_i64(),
                alpha["lockfile_downloads"].as_i64(),
                alpha["disk_gib_months"].as_f64(),
                alpha["cost"].as_f64()
            ),
            (Some(0), Some(0), Some(0), Some(0.0), Some(0.0)),
            "{query}: {alpha:#}"
        );
        assert_eq!(alpha["disk_bytes"], disk as i64, "{query}");
        assert_eq!(usage["totals"]["builds_succeeded"], 0);
    }
    let (status, one) = server
        .get_json(&format!("/api/v1/namespaces/alpha/usage?since={tomorrow}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["totals"]["builds_succeeded"], 0, "{one:#}");

    // Every problem of a period in one answer.
    let problem = expect_problem(
        server
            .get("/api/v1/usage?since=last-week&until=2026-02-30")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(problem["type"], "/problems/invalid-period", "{problem:#}");
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{problem:#}");
    assert!(
        errors[0]["detail"]
            .as_str()
            .unwrap()
            .contains("since 'last-week'")
    );
    assert!(
        errors[1]["detail"]
            .as_str()
            .unwrap()
            .contains("until '2026-02-30'")
    );
    let problem = expect_problem(
        server
            .get("/api/v1/namespaces/alpha/usage?since=2026-12-02&until=2026-12-01")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("must be before until"),
        "{problem:#}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_are_in_the_audit_log_once_a_minute_per_caller_and_route() {
    let server = TestServer::start(Vec::new()).await;
    for namespace in ["alpha", "hidden"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/alpha/members/vera",
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let created: Value = server
        .admin_json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "denied", "subject": "vera" })),
        )
        .await
        .json()
        .await
        .unwrap();
    let vera = created["token"].as_str().unwrap().to_owned();
    let send = |method: Method, path: &str, token: Option<&str>| {
        let mut request = server
            .client
            .request(method, server.url(path))
            .header("content-type", "application/yaml")
            .body("dependencies: [python]\n");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let submit = "/api/v1/namespaces/alpha/environments/env";

    // A viewer may not submit: 403, three times in a row, one row.
    for _ in 0..3 {
        let response = send(Method::PUT, submit, Some(&vera)).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // A namespace vera may not see answers 404 to her: hidden, recorded.
    let response = send(
        Method::PUT,
        "/api/v1/namespaces/hidden/visibility",
        Some(&vera),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // One that does not exist is not an attempt on anything.
    let response = send(
        Method::PUT,
        "/api/v1/namespaces/nowhere/policy",
        Some(&vera),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // No token, and a token that is not one.
    let response = send(Method::DELETE, "/api/v1/namespaces/alpha", None)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = send(Method::POST, "/api/v1/tokens", Some("envstore_not-a-token"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Refused reads are not recorded.
    let response = send(Method::GET, "/api/v1/namespaces/hidden", Some(&vera))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let denied = denied_entries(&server).await;
    let summary: Vec<(String, String, String, i64, String)> = denied
        .iter()
        .rev()
        .map(|entry| {
            (
                entry["subject"].as_str().unwrap().to_owned(),
                entry["detail"]["method"].as_str().unwrap().to_owned(),
                entry["target"].as_str().unwrap().to_owned(),
                entry["detail"]["status"].as_i64().unwrap(),
                entry["detail"]["credential"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |subject: &str, method: &str, target: &str, status: i64, credential: &str| {
        (
            subject.to_owned(),
            method.to_owned(),
            target.to_owned(),
            status,
            credential.to_owned(),
        )
    };
    assert_eq!(
        summary,
        [
            row("vera", "PUT", "alpha", 403, "valid"),
            row("vera", "PUT", "hidden", 404, "valid"),
            row("anonymous", "DELETE", "alpha", 401, "none"),
            row("anonymous", "POST", "/api/v1/tokens", 401, "invalid"),
        ],
        "{denied:#?}"
    );
    let first = denied.last().unwrap();
    assert_eq!(first["detail"]["outcome"], "denied");
    assert_eq!(
        first["detail"]["route"],
        "/api/v1/namespaces/{namespace}/environments/{name}"
    );
    assert_eq!(first["detail"]["namespace"], "alpha");
    assert_eq!(first["detail"]["unrecorded_before"], 0);
    server.stop().await;
}

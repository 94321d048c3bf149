//! The load test of issue 15: 1,000 submissions of 50 specs that share most
//! of their packages, spread over 50 environments in five namespaces, against
//! three `envstore worker` processes on one data folder, PostgreSQL and S3.
//! Everything must succeed, each distinct spec must make one lock, and every
//! prefix must be complete. It prints the counts and the drain time.
//!
//! It is `#[ignore]`d in the default `cargo test` and run by `.ci/run`:
//! `cargo test --locked -p envstore-server --test it -- --ignored --nocapture load::`.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::deployment::{shared_package_channel, shared_specs};
use support::{Deployment, TOKEN};

const SUBMISSIONS: usize = 1000;
const SPECS: usize = 50;
const ENVIRONMENTS: usize = 50;
const NAMESPACES: usize = 5;
const CONCURRENCY: usize = 32;
const WORKER_PROCESSES: usize = 3;
/// Generous: the whole drain must end within this on a 2-core CI machine.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the load test: run by .ci/run with --ignored"]
async fn a_thousand_submissions_of_fifty_shared_specs_all_succeed() {
    let channel = shared_package_channel().await;
    let deployment = Deployment::builder()
        .channel(channel.allowed_as("shared"))
        .lease_seconds(10)
        .start()
        .await;
    for namespace in 0..NAMESPACES {
        deployment
            .create_namespace(&format!("team-{namespace}"))
            .await;
    }
    for index in 0..WORKER_PROCESSES {
        deployment.start_worker(&format!("worker-{index}"));
    }
    let specs = shared_specs("shared", SPECS);
    // Submission i goes to environment i % 50 with a spec that changes from
    // round to round, so environments get new specs while older builds of
    // theirs are still queued.
    let submission = |index: usize| {
        let environment = index % ENVIRONMENTS;
        let namespace = format!("team-{}", environment % NAMESPACES);
        let name = format!("env-{environment:02}");
        let spec = (environment + 7 * (index / ENVIRONMENTS)) % SPECS;
        (namespace, name, spec)
    };

    let started = Instant::now();
    let results: Vec<(usize, String)> = futures::stream::iter(0..SUBMISSIONS)
        .map(|index| {
            let deployment = &deployment;
            let (namespace, name, spec) = submission(index);
            let body = specs[spec].clone();
            async move {
                let response = deployment
                    .client
                    .put(deployment.url(&format!(
                        "/api/v1/namespaces/{namespace}/environments/{name}"
                    )))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/yaml")
                    .header("idempotency-key", format!("load-{index}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                assert_eq!(
                    status, 202,
                    "submission {index} ({namespace}/{name}): {text}"
                );
                let body: serde_json::Value = serde_json::from_str(&text).unwrap();
                (index, body["build_id"].as_str().unwrap().to_owned())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let submitted_in = started.elapsed();
    assert_eq!(results.len(), SUBMISSIONS);

    // Drained: no build queued or running.
    loop {
        let pending = deployment
            .pg_count("SELECT COUNT(*) FROM builds WHERE status IN ('queued', 'running')")
            .await;
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < DRAIN_LIMIT,
            "{pending} builds still pending after {:?}\n{}",
            started.elapsed(),
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained_in = started.elapsed();

    let mut connection = deployment.pg().await;
    let rows: Vec<(String, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT id, status, lock_hash, error FROM builds")
            .fetch_all(&mut connection)
            .await
            .unwrap();
    let builds: BTreeMap<String, (String, Option<String>, Option<String>)> = rows
        .into_iter()
        .map(|(id, status, lock, error)| (id, (status, lock, error)))
        .collect();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for (status, ..) in builds.values() {
        *by_status.entry(status.as_str()).or_default() += 1;
    }
    let failed: Vec<String> = builds
        .iter()
        .filter(|(_, (status, ..))| status != "succeeded")
        .map(|(id, (status, _, error))| {
            format!("{id}: {status}: {}", error.as_deref().unwrap_or(""))
        })
        .collect();
    let distinct_ids: BTreeSet<&String> = results.iter().map(|(_, id)| id).collect();
    let mut locks_of_spec: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (index, id) in &results {
        let (_, _, spec) = submission(*index);
        if let Some((_, Some(lock), _)) = builds.get(id) {
            locks_of_spec.entry(spec).or_default().insert(lock.clone());
        }
    }
    let locks: BTreeSet<&String> = builds
        .values()
        .filter_map(|(_, lock, _)| lock.as_ref())
        .collect();
    let prefixes = deployment.prefixes();
    let incomplete = deployment.incomplete_prefixes();
    eprintln!(
        "load: {SUBMISSIONS} submissions ({} distinct builds, submitted in {:.1} s), {SPECS} specs, \
         {ENVIRONMENTS} environments in {NAMESPACES} namespaces, {WORKER_PROCESSES} worker processes; \
         builds by status {by_status:?}; {} distinct locks; {} prefixes ({} incomplete); \
         {} failed; drained in {:.1} s",
        distinct_ids.len(),
        submitted_in.as_secs_f64(),
        locks.len(),
        prefixes.len(),
        incomplete.len(),
        failed.len(),
        drained_in.as_secs_f64(),
    );

    assert!(
        failed.is_empty(),
        "every build succeeded:\n{}\n{}",
        failed.join("\n"),
        deployment.logs()
    );
    for (index, id) in &results {
        let status = builds.get(id).map(|(status, ..)| status.as_str());
        assert_eq!(status, Some("succeeded"), "submission {index} (build {id})");
    }
    assert_eq!(locks_of_spec.len(), SPECS, "every spec was built");
    assert!(
        locks_of_spec.values().all(|locks| locks.len() == 1),
        "each spec has one lock: {locks_of_spec:?}"
    );
    assert_eq!(locks.len(), SPECS, "distinct locks = distinct specs");
    assert_eq!(prefixes.len(), SPECS, "one prefix per lock");
    assert!(
        incomplete.is_empty(),
        "every prefix is complete: {incomplete:?}"
    );
    assert!(
        deployment.half_built_visible().is_empty(),
        "{:?}",
        deployment.half_built_visible()
    );
    deployment.stop().await;
}

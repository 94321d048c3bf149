//! Processes killed with SIGKILL (issue 15, "Must show"): a worker in every
//! phase of a build, and the API process with submissions in flight. Real
//! processes on one PostgreSQL, one S3 server and one shared data folder.
//! Nothing accepted is lost, nothing is built twice, nothing half-built is
//! visible, and the service recovers without a restart of anything else.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use envstore_tests::{DemoChannel, demo_spec_yaml};
use support::deployment::{is_complete, shared_package_channel, shared_specs};
use support::{Deployment, WAIT};

/// The line a worker writes to the build log when it stops at its
/// `ENVSTORE_TEST_PAUSE` ("paused for a fault test at <phase>").
const PAUSED: &str = "paused for a fault test";

/// Worker A stops at `phase` and is SIGKILLed there; workers B and C take
/// the build over. It must end `succeeded` once, completely published.
async fn killed_while(phase: &str) {
    let channel = DemoChannel::start().await;
    let deployment = Deployment::start(format!("demo={}", channel.served.url)).await;
    deployment.create_namespace("team").await;
    deployment.start_paused_worker("worker-a", phase);
    let build_id = deployment
        .submit("team", "analysis", demo_spec_yaml("demo"))
        .await;

    // The running build's log is in the worker (its process log has it).
    deployment.wait_for_process_log("worker-a", PAUSED).await;
    let build = deployment.build(&build_id).await;
    assert_eq!(build["status"], "running", "{phase}: {build:#}");
    // A running attempt keeps its log in the database every few seconds; a
    // kill loses at most the lines since. Kill once the pause line is kept,
    // so the final log must show it (asserted below).
    let kept = deployment.wait_for_kept_log(&build_id, PAUSED).await;
    deployment.kill_worker("worker-a").await;
    assert!(
        deployment.half_built_visible().is_empty(),
        "{phase}: {:?}",
        deployment.half_built_visible()
    );

    deployment.start_worker("worker-b");
    deployment.start_worker("worker-c");
    let build = deployment.wait_for_build(&build_id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{phase}: {build:#}\n{}",
        deployment.logs()
    );

    // Once: one build in the history, one job, the takeover in its log next
    // to the killed attempt's lines.
    let environment = deployment.environment("team", "analysis").await;
    let history = environment["history"].as_array().unwrap();
    assert_eq!(
        history.len(),
        1,
        "{phase}: one build, not two: {environment:#}"
    );
    let jobs = deployment
        .pg_count(&format!(
            "SELECT COUNT(*) FROM jobs WHERE build_id = '{build_id}'"
        ))
        .await;
    assert_eq!(jobs, 1, "{phase}: one job for the build");
    assert_eq!(
        deployment.pg_count("SELECT COUNT(*) FROM builds").await,
        1,
        "{phase}"
    );
    let log = deployment.log(&build_id).await;
    assert!(
        log.contains("(attempt 2)"),
        "{phase}: another worker took the job over:\n{log}"
    );
    assert!(
        log.contains("(attempt 1)"),
        "{phase}: the killed attempt's lines are kept:\n{log}"
    );
    assert!(
        kept && log.contains(PAUSED),
        "{phase}: the killed attempt's log is kept to its last line (kept in the database: {kept}):\n{log}"
    );

    // Complete, and nothing half-built anywhere.
    let prefixes = deployment.prefixes();
    assert_eq!(prefixes.len(), 1, "{phase}: one prefix: {prefixes:?}");
    assert!(
        is_complete(&prefixes[0]),
        "{phase}: the prefix has its marker"
    );
    assert!(deployment.incomplete_prefixes().is_empty(), "{phase}");
    let link = deployment.environment_links();
    assert_eq!(
        link.get("team/analysis"),
        Some(&fs_err::canonicalize(&prefixes[0]).unwrap()),
        "{phase}: the environment link leads to the prefix"
    );
    // What a killed process left (a pack file being written, say) is
    // removed once it is an hour old and nobody holds its lock: let that
    // hour pass for the files left now.
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    for leftover in deployment.leftovers() {
        if let Ok(file) = fs_err::File::open(&leftover) {
            let _ = file.file().set_modified(an_hour_ago);
        }
    }
    deployment.gc(&["--cache-idle-minutes", "0"]).await;
    assert_eq!(
        deployment.leftovers(),
        Vec::<std::path::PathBuf>::new(),
        "{phase}: temporary leftovers after gc"
    );
    assert!(
        is_complete(&prefixes[0]),
        "{phase}: gc kept the current prefix"
    );

    // Everything promised is published: the lockfile and the packed prefix.
    let lock_hash = build["lock_hash"].as_str().unwrap().to_owned();
    let (status, _) = deployment
        .get("/api/v1/namespaces/team/environments/analysis/lockfile")
        .await;
    assert_eq!(status, 200, "{phase}: the lockfile is published");
    assert!(
        deployment
            .store_has(&format!("prefixes/{lock_hash}.tar.zst"))
            .await,
        "{phase}: the packed prefix is published\n{log}"
    );
    let packed = deployment
        .pg_count(&format!(
            "SELECT COUNT(*) FROM locks WHERE lock_hash = '{lock_hash}' AND packed_prefix_sha256 IS NOT NULL"
        ))
        .await;
    assert_eq!(
        packed, 1,
        "{phase}: the packed prefix's checksum is recorded"
    );

    // Another node, with an empty data folder at the same path, materialises
    // the environment from the packed prefix.
    let workers = ["worker-b", "worker-c"];
    for worker in workers {
        deployment.kill_worker(worker).await;
    }
    deployment.kill_api().await;
    let first_node = deployment.data_dir.with_extension("first-node");
    fs_err::rename(&deployment.data_dir, &first_node).unwrap();
    let output = deployment
        .materialize("team/analysis", &deployment.data_dir)
        .await;
    let materialized = fs_err::canonicalize(deployment.data_dir.join("envs/team/analysis"));
    let environment = deployment.data_dir.join("envs/team/analysis");
    let python = environment.join("bin/python");
    let ran = std::process::Command::new(&python)
        .args(envstore_fixtures::DEMO_PROGRAM_ARGS)
        .output();
    fs_err::remove_dir_all(&deployment.data_dir).ok();
    fs_err::rename(&first_node, &deployment.data_dir).unwrap();
    assert!(
        output.status.success(),
        "{phase}: materialize on a fresh node:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let materialized = materialized.unwrap();
    assert!(
        is_complete(&materialized),
        "{phase}: the materialised prefix is complete"
    );
    let ran = ran.unwrap();
    // The stand-in prints the prefix it was installed into; the real
    // python prints `sys.prefix`, which follows the environment's link.
    let printed = String::from_utf8_lossy(&ran.stdout);
    assert!(
        printed.contains(&materialized.display().to_string())
            || printed.contains(&environment.display().to_string()),
        "{phase}: the materialised python runs from its prefix: {ran:?}"
    );
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_solving_is_replaced_and_the_build_ends_once() {
    killed_while("solving").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_downloading_is_replaced_and_the_build_ends_once() {
    killed_while("downloading").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_linking_is_replaced_and_the_build_ends_once_everywhere() {
    killed_while("linking").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_packing_is_replaced_and_the_packed_prefix_is_published() {
    killed_while("packing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_publishing_is_replaced_and_everything_is_published() {
    killed_while("publishing").await;
}

/// Thirty clients submit within three seconds, each with its own `Idempotency-Key`; the
/// API process is SIGKILLed once some have their answer and started again
/// on the same port. Clients retry what went unanswered with the same key,
/// and a few answered ones again, as a client whose answer was lost would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_killed_with_submissions_in_flight_loses_and_duplicates_nothing() {
    const CLIENTS: usize = 30;
    let channel = shared_package_channel().await;
    let deployment = Deployment::builder()
        .channel(channel.allowed_as("shared"))
        .start()
        .await;
    for namespace in ["alpha", "beta", "gamma"] {
        deployment.create_namespace(namespace).await;
    }
    deployment.start_worker("worker-a");
    deployment.start_worker("worker-b");
    let specs = shared_specs("shared", 10);
    let submission = |index: usize| {
        let namespace = ["alpha", "beta", "gamma"][index % 3];
        (
            namespace,
            format!("env-{index:02}"),
            specs[index % specs.len()].clone(),
            format!("key-{index:02}"),
        )
    };

    let answered = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let client = |index: usize| {
        let (namespace, name, spec, key) = submission(index);
        let (deployment, answered, refused) = (&deployment, &answered, &refused);
        async move {
            // Staggered over three seconds, so that some are still to come
            // or in flight when the API is killed, however fast it answers.
            tokio::time::sleep(Duration::from_millis(100) * index as u32).await;
            let started = Instant::now();
            loop {
                match deployment
                    .try_submit_with_key(namespace, &name, &spec, &key)
                    .await
                {
                    Ok((202 | 200, body)) => {
                        answered.fetch_add(1, Ordering::SeqCst);
                        return body["build_id"].as_str().unwrap().to_owned();
                    }
                    Ok((503, _)) | Err(_) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, body)) => panic!("{namespace}/{name}: {status} {body}"),
                }
                assert!(
                    started.elapsed() < WAIT,
                    "{namespace}/{name} was never accepted"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let killer = async {
        support::deployment::wait_until("some submissions are answered", || {
            answered.load(Ordering::SeqCst) >= 8
        })
        .await;
        deployment.kill_api().await;
        let answered_before = answered.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        deployment.start_api().await;
        answered_before
    };
    let (build_ids, answered_before) =
        tokio::join!(futures::future::join_all((0..CLIENTS).map(client)), killer);
    eprintln!(
        "api kill: {answered_before} of {CLIENTS} answered before the kill, {} failed attempts retried",
        refused.load(Ordering::SeqCst)
    );
    assert!(
        answered_before < CLIENTS,
        "the API was killed with submissions in flight"
    );

    // Answers that were lost: the same keys again give the same builds.
    for (index, expected) in build_ids.iter().enumerate().take(5) {
        let (namespace, name, spec, key) = submission(index);
        let (status, body) = deployment
            .try_submit_with_key(namespace, &name, &spec, &key)
            .await
            .unwrap();
        assert!(matches!(status, 200 | 202), "{status} {body}");
        assert_eq!(
            body["build_id"], *expected,
            "{namespace}/{name}: the key's build, not a new one"
        );
    }

    let distinct: BTreeSet<&String> = build_ids.iter().collect();
    assert_eq!(distinct.len(), CLIENTS, "one build per submission");
    for (index, id) in build_ids.iter().enumerate() {
        let build = deployment.wait_for_build(id).await;
        let (namespace, name, ..) = submission(index);
        assert_eq!(
            build["status"],
            "succeeded",
            "{namespace}/{name}: {build:#}\n{}",
            deployment.logs()
        );
    }
    let mut per_environment: BTreeMap<String, i64> = BTreeMap::new();
    let mut connection = deployment.pg().await;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT namespace, environment, COUNT(*) FROM builds GROUP BY namespace, environment",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    for (namespace, environment, count) in rows {
        per_environment.insert(format!("{namespace}/{environment}"), count);
    }
    assert_eq!(
        per_environment.len(),
        CLIENTS,
        "every submission is kept: {per_environment:?}"
    );
    assert!(
        per_environment.values().all(|count| *count == 1),
        "no submission made two builds: {per_environment:?}"
    );
    assert!(
        deployment.half_built_visible().is_empty(),
        "{:?}",
        deployment.half_built_visible()
    );
    assert!(
        deployment.incomplete_prefixes().is_empty(),
        "{:?}",
        deployment.incomplete_prefixes()
    );
    deployment.stop().await;
}

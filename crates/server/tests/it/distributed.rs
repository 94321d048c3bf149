//! Distributed mode with real processes: an API process and `envstore worker`
//! processes on one PostgreSQL and one S3 server (started on loopback by
//! `scripts/test-services.sh` when the environment names none). Workers are
//! killed with SIGKILL mid-build; builds must still end once, completely.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use envstore_fixtures::{ArchiveFormat, NoArch, PackageSpec};
use envstore_tests::{DemoChannel, demo_spec_yaml};
use serde_json::Value;
use support::deployment::{is_complete, linked_records, wait_until};
use support::{Deployment, TOKEN, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_linking_is_replaced_and_the_build_ends_once() {
    let channel = DemoChannel::start().await;
    let deployment = Deployment::start(format!("demo={}", channel.served.url)).await;
    deployment.create_namespace("team").await;
    deployment.start_paused_worker("worker-a", "linking");
    let build_id = deployment
        .submit("team", "analysis", demo_spec_yaml("demo"))
        .await;

    // The first worker links one package, then stops for good: kill it there.
    wait_until("a prefix is half linked", || {
        deployment
            .prefixes()
            .first()
            .is_some_and(|prefix| linked_records(prefix) >= 1)
    })
    .await;
    let prefix = deployment.prefixes()[0].clone();
    assert!(!is_complete(&prefix));
    assert_eq!(deployment.build(&build_id).await["status"], "running");
    deployment.kill_worker("worker-a").await;

    deployment.start_worker("worker-b");
    let build = deployment.wait_for_build(&build_id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build:#}\n{}",
        deployment.logs()
    );
    let log = deployment.log(&build_id).await;
    assert!(
        log.contains("(attempt 2)"),
        "the second worker took the job over:\n{log}"
    );

    let (_, environment) = deployment
        .request(
            reqwest::Method::GET,
            "/api/v1/namespaces/team/environments/analysis",
            None,
        )
        .await;
    assert_eq!(
        environment["history"].as_array().unwrap().len(),
        1,
        "one build, not two"
    );
    assert_eq!(
        deployment.prefixes(),
        vec![prefix.clone()],
        "one prefix, no leftovers"
    );
    assert!(is_complete(&prefix));
    let expected = envstore_fixtures::demo_expect::expected_linux64_filenames().len();
    assert_eq!(
        linked_records(&prefix),
        expected,
        "a record per package, and nothing else named *.json in conda-meta"
    );
    let output = std::process::Command::new(prefix.join("bin/python"))
        .args(envstore_fixtures::DEMO_PROGRAM_ARGS)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
        envstore_fixtures::demo_expect::demo_program_first_line(&prefix)
    );

    // Another node at the same path materialises the packed prefix.
    fs_err::remove_dir_all(&prefix).unwrap();
    let output = deployment
        .materialize("team/analysis", &deployment.data_dir)
        .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(is_complete(&prefix));
    let output =
        std::process::Command::new(deployment.data_dir.join("envs/team/analysis/bin/python"))
            .args(envstore_fixtures::DEMO_PROGRAM_ARGS)
            .output()
            .unwrap();
    // The stand-in prints the prefix it was installed into; the real
    // python prints `sys.prefix`, which follows the environment's link.
    let printed = String::from_utf8(output.stdout).unwrap();
    let environment = deployment.data_dir.join("envs/team/analysis");
    assert!(
        printed.contains(&prefix.display().to_string())
            || printed.contains(&environment.display().to_string()),
        "{printed}"
    );

    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_publishing_is_replaced_and_the_build_ends_once() {
    let channel = DemoChannel::start().await;
    let deployment = Deployment::start(format!("demo={}", channel.served.url)).await;
    deployment.create_namespace("team").await;
    deployment.start_paused_worker("worker-a", "publishing");
    let build_id = deployment
        .submit("team", "analysis", demo_spec_yaml("demo"))
        .await;

    let started = Instant::now();
    loop {
        let build = deployment.build(&build_id).await;
        let phases: Vec<&str> = build["phases"]
            .as_array()
            .map(|phases| {
                phases
                    .iter()
                    .filter_map(|phase| phase["phase"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if phases.contains(&"publishing") {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the build never reached publishing: {build:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deployment.kill_worker("worker-a").await;

    deployment.start_worker("worker-b");
    let build = deployment.wait_for_build(&build_id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build:#}\n{}",
        deployment.logs()
    );
    assert_eq!(
        build["reused"]["prefix"], true,
        "the second worker found the prefix complete"
    );
    let (status, _) = deployment
        .request(
            reqwest::Method::GET,
            "/api/v1/namespaces/team/environments/analysis/lockfile",
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, environment) = deployment
        .request(
            reqwest::Method::GET,
            "/api/v1/namespaces/team/environments/analysis",
            None,
        )
        .await;
    assert_eq!(environment["history"].as_array().unwrap().len(), 1);
    assert_eq!(deployment.prefixes().len(), 1);
    assert!(is_complete(&deployment.prefixes()[0]));

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
                .plain_file(
                    &format!("share/pkg-{index:02}/README"),
                    format!("package {index}\n"),
                )
        })
        .collect();
    envstore_fixtures::write_channel(packages, dir)
        .await
        .unwrap();
    envstore_fixtures::serve_channel(dir.to_path_buf())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_submissions_of_twenty_specs_build_twenty_locks() {
    let channel_dir = tempfile::tempdir().unwrap();
    let channel = twenty_package_channel(channel_dir.path()).await;
    let deployment = Deployment::start(format!("load={}", channel.url)).await;
    deployment.create_namespace("load").await;
    deployment.start_worker("worker-a");
    deployment.start_worker("worker-b");

    let submissions = (0..200).map(|index| {
        let deployment = &deployment;
        async move {
            let spec = format!(
                "channels: [load]\ndependencies: [pkg-{:02}]\nplatforms: [linux-64]\n",
                index % 20
            );
            deployment
                .submit("load", &format!("env-{index:03}"), spec)
                .await
        }
    });
    let build_ids = futures::future::join_all(submissions).await;
    assert_eq!(build_ids.len(), 200);

    let mut builds = Vec::new();
    for id in &build_ids {
        builds.push(deployment.wait_for_build(id).await);
    }
    let succeeded = builds
        .iter()
        .filter(|build| build["status"] == "succeeded")
        .count();
    let locks: std::collections::BTreeSet<&str> = builds
        .iter()
        .filter_map(|build| build["lock_hash"].as_str())
        .collect();
    let prefixes_built = builds
        .iter()
        .filter(|build| build["reused"]["prefix"] == false)
        .count();
    let locks_new = builds
        .iter()
        .filter(|build| build["reused"]["lock"] == false)
        .count();
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

    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs_of_a_full_build() {
    let channel = DemoChannel::start().await;
    let deployment = Deployment::builder()
        .channel(format!("demo={}", channel.served.url))
        .log_level("trace")
        .start()
        .await;
    deployment.create_namespace("team").await;
    let created = deployment
        .client
        .post(deployment.url("/api/v1/tokens"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "name": "ci", "subject": "robot" }))
        .send()
        .await
        .unwrap();
    let created: Value = created.json().await.unwrap();
    let robot_token = created["token"].as_str().unwrap().to_owned();
    let response = deployment
        .client
        .put(deployment.url("/api/v1/namespaces/team/members/robot"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "role": "developer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    deployment.start_worker("worker");
    let submitted = deployment
        .client
        .put(deployment.url("/api/v1/namespaces/team/environments/analysis"))
        .bearer_auth(&robot_token)
        .header("content-type", "application/yaml")
        .body(demo_spec_yaml("demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status().as_u16(), 202);
    let id = submitted.json::<Value>().await.unwrap()["build_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let build = deployment.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded");
    let lockfile = deployment
        .client
        .get(deployment.url("/api/v1/namespaces/team/environments/analysis/lockfile"))
        .bearer_auth(&robot_token)
        .send()
        .await
        .unwrap();
    assert_eq!(lockfile.status().as_u16(), 200);
    deployment.kill_worker("worker").await;

    let logs = deployment.all_logs();
    let build_log = deployment.log(&id).await;
    assert!(
        logs.len() > 10_000,
        "trace logs were written: {} bytes",
        logs.len()
    );
    for secret in [TOKEN, robot_token.as_str()] {
        assert!(!logs.contains(secret), "a token is in the process logs");
        assert!(!build_log.contains(secret), "a token is in the build log");
    }
    deployment.stop().await;
}

/// A newer API stored a spec with a field this release's workers do not
/// know: a worker leaves the build queued rather than build it without the
/// field, and the API says why it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_spec_needs_a_newer_worker_waits_and_says_why() {
    let channel = DemoChannel::start().await;
    let deployment = Deployment::start(format!("demo={}", channel.served.url)).await;
    deployment.create_namespace("team").await;
    let build_id = deployment
        .submit("team", "analysis", demo_spec_yaml("demo"))
        .await;
    let queued = deployment.build(&build_id).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued.get("waiting"), None, "no worker took it up yet");
    let spec_hash = queued["spec_hash"].as_str().unwrap().to_owned();
    let database = sqlx::PgPool::connect(&deployment.backend.database)
        .await
        .unwrap();
    let canonical: String = sqlx::query_scalar("SELECT canonical FROM specs WHERE spec_hash = $1")
        .bind(&spec_hash)
        .fetch_one(&database)
        .await
        .unwrap();
    let mut newer: Value = serde_json::from_str(&canonical).unwrap();
    newer["gpu"] = serde_json::json!({"cuda": "12.4"});
    sqlx::query("UPDATE specs SET canonical = $1 WHERE spec_hash = $2")
        .bind(newer.to_string())
        .bind(&spec_hash)
        .execute(&database)
        .await
        .unwrap();

    deployment.start_worker("worker-a");
    let started = Instant::now();
    let build = loop {
        let build = deployment.build(&build_id).await;
        if build.get("waiting").is_some() || started.elapsed() > WAIT {
            break build;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        build["status"],
        "queued",
        "{build:#}\n{}",
        deployment.logs()
    );
    let waiting = build["waiting"].as_str().unwrap_or_default();
    assert!(
        waiting.contains("the spec has fields this worker does not know (gpu)"),
        "{build:#}\n{}",
        deployment.logs()
    );
    assert_eq!(build["lock_hash"], Value::Null, "nothing was solved");
    deployment.stop().await;
}

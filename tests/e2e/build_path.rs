use std::path::PathBuf;

use envstore_fixtures::demo_expect::{
    PlaceholderKind, demo_program_first_line, expected_linux64_filenames,
    expected_linux64_placeholder_files,
};
use envstore_fixtures::{DEMO_PROGRAM, DEMO_PROGRAM_ARGS, DEMO_SOFTLINK};
use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml, read};
use rattler_conda_types::ExplicitEnvironmentSpec;
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_becomes_a_prefix_and_lockfiles_then_is_reused() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );

    let build_id = server
        .submit_yaml("team", "analysis", &demo_spec_yaml("demo"))
        .await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    assert_eq!(build["reused"]["prefix"], false);
    let phases: Vec<&str> = build["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["solving", "downloading", "linking", "publishing"]);
    assert!(
        build["phases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["duration_ms"].as_i64().is_some())
    );
    let lock_hash = build["lock_hash"].as_str().unwrap().to_owned();
    let expected_files = expected_linux64_filenames();
    let packages: Vec<String> = build["packages"]["linux-64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            package["url"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = packages.clone();
    sorted.sort();
    let mut expected_sorted = expected_files.clone();
    expected_sorted.sort();
    assert_eq!(sorted, expected_sorted);

    // conda-lock v1, with its ETag and a revalidation that costs nothing.
    let response = server
        .get("/api/v1/namespaces/team/environments/analysis/lockfile?format=conda-lock")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{lock_hash}\""));
    let conda_lock_text = response.text().await.unwrap();
    rattler_conda_lock::Document::parse(&conda_lock_text).expect("a valid conda-lock v1 document");
    let conda_lock: Value = serde_yaml::from_str(&conda_lock_text).unwrap();
    assert_eq!(conda_lock["version"], 1);
    let content_hash = conda_lock["metadata"]["content_hash"]["linux-64"]
        .as_str()
        .unwrap();
    assert_eq!(content_hash.len(), 64);
    assert_eq!(conda_lock["metadata"]["platforms"][0], "linux-64");
    let locked = conda_lock["package"].as_array().unwrap();
    assert_eq!(locked.len(), expected_files.len());
    for package in locked {
        assert_eq!(package["manager"], "conda");
        assert!(
            package["url"]
                .as_str()
                .unwrap()
                .starts_with(channel.served.url.as_str())
        );
        assert_eq!(package["hash"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(package["hash"]["md5"].as_str().unwrap().len(), 32);
    }
    let revalidated = server
        .client
        .get(server.url("/api/v1/namespaces/team/environments/analysis/lockfile"))
        .bearer_auth(&server.token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);

    // The @EXPLICIT list parses with rattler and pins every archive by sha256.
    let explicit = server
        .get("/api/v1/namespaces/team/environments/analysis/lockfile?format=explicit&platform=linux-64")
        .await
        .text()
        .await
        .unwrap();
    let explicit = ExplicitEnvironmentSpec::from_reader(explicit.as_bytes()).unwrap();
    assert_eq!(
        explicit.platform.map(|p| p.to_string()).as_deref(),
        Some("linux-64")
    );
    let explicit_files: Vec<String> = explicit
        .packages
        .iter()
        .map(|entry| entry.url.path().rsplit('/').next().unwrap().to_owned())
        .collect();
    let mut explicit_sorted = explicit_files.clone();
    explicit_sorted.sort();
    assert_eq!(
        explicit_sorted, sorted,
        "explicit lists the locked packages"
    );
    // conda installs an explicit list top to bottom: dependencies first.
    let position = |name: &str| {
        explicit_files
            .iter()
            .position(|file| file.starts_with(&format!("{name}-")))
            .unwrap_or_else(|| panic!("{name} is in {explicit_files:?}"))
    };
    assert!(position("python") < position("numpy"), "{explicit_files:?}");
    assert!(position("numpy") < position("pandas"), "{explicit_files:?}");
    assert!(
        explicit
            .packages
            .iter()
            .all(|entry| entry.package_archive_hash().unwrap().is_some())
    );

    // The pixi lock parses with rattler_lock and has the same packages.
    let pixi = server
        .get("/api/v1/namespaces/team/environments/analysis/lockfile?format=pixi")
        .await
        .text()
        .await
        .unwrap();
    let pixi = rattler_lock::LockFile::from_str_with_base_directory(&pixi, None).unwrap();
    let environment = pixi.default_environment().unwrap();
    let platform = environment.platforms().next().unwrap();
    assert_eq!(
        environment
            .conda_repodata_records(platform)
            .unwrap()
            .unwrap()
            .len(),
        expected_files.len()
    );

    // Content-addressed artifacts are immutable; a private namespace's are
    // for the token holder's cache only.
    let artifact = server
        .get(&format!("/api/v1/locks/{lock_hash}/conda-lock.yml"))
        .await;
    assert_eq!(artifact.status(), StatusCode::OK);
    assert_eq!(
        artifact.headers()["cache-control"],
        "private, max-age=31536000, immutable"
    );

    // The prefix: placeholders replaced, records written, the link and the program work.
    let (_, environment) = server
        .get_json("/api/v1/namespaces/team/environments/analysis")
        .await;
    assert_eq!(environment["current_build"]["id"], build_id.as_str());
    let prefix = PathBuf::from(environment["prefix"].as_str().unwrap());
    assert_eq!(
        prefix.file_name().unwrap().to_str().unwrap(),
        &lock_hash[..16]
    );
    assert!(prefix.join("conda-meta/envstore").is_file());
    let records = fs_err::read_dir(prefix.join("conda-meta"))
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json")
        })
        .count();
    assert_eq!(records, expected_files.len());
    let placeholder_files = expected_linux64_placeholder_files();
    assert!(
        placeholder_files
            .iter()
            .any(|file| file.kind == PlaceholderKind::Binary)
    );
    for file in &placeholder_files {
        let bytes = read(&prefix, &file.path);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&file.placeholder),
            "{} still holds its placeholder",
            file.path
        );
        assert!(
            text.contains(prefix.to_str().unwrap()),
            "{} does not name the prefix",
            file.path
        );
    }
    assert_eq!(
        fs_err::read_link(prefix.join(DEMO_SOFTLINK.0)).unwrap(),
        PathBuf::from(DEMO_SOFTLINK.1)
    );
    let output = std::process::Command::new(prefix.join(DEMO_PROGRAM))
        .args(DEMO_PROGRAM_ARGS)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().next().unwrap(),
        demo_program_first_line(&prefix)
    );
    assert_eq!(
        fs_err::read_link(server.environment_link("team", "analysis")).unwrap(),
        prefix
    );

    let log = server
        .get(&format!("/api/v1/builds/{build_id}/log"))
        .await
        .text()
        .await
        .unwrap();
    let total = expected_files.len();
    assert!(
        log.contains(&format!("downloading {total}/{total} ")),
        "{log}"
    );
    assert!(log.contains(&format!("linking {total}/{total} ")), "{log}");
    assert!(log.contains("build succeeded"), "{log}");
    let linking = &build["phases"][2]["detail"];
    assert!(
        linking.as_str().unwrap().starts_with(&format!(
            "{total} packages, {total} downloaded, {total} linked"
        )),
        "{linking}"
    );

    // The same spec in another namespace reuses the lock and the prefix.
    assert_eq!(
        server.create_namespace("other").await.status(),
        StatusCode::CREATED
    );
    let again_id = server
        .submit_yaml("other", "copy", &demo_spec_yaml("demo"))
        .await;
    let again = server.wait_for_build(&again_id).await;
    assert_eq!(again["status"], "succeeded", "{again:#}");
    assert_eq!(again["lock_hash"], lock_hash.as_str());
    assert_eq!(again["reused"]["lock"], true);
    assert_eq!(again["reused"]["prefix"], true);
    let phases: Vec<&str> = again["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["solving", "publishing"],
        "nothing downloaded or linked"
    );
    let log = server
        .get(&format!("/api/v1/builds/{again_id}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        log.contains("reusing it, nothing to download or link"),
        "{log}"
    );
    assert!(!log.contains("downloading 1/"), "{log}");
    assert!(!log.contains("linking 1/"), "{log}");
    assert_eq!(
        fs_err::read_link(server.environment_link("other", "copy")).unwrap(),
        prefix
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_rolls_back_to_an_earlier_build() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let spec = |python: &str| {
        format!("channels: [demo]\ndependencies: [python {python}]\nplatforms: [linux-64]\n")
    };
    let first = server.submit_yaml("team", "env", &spec("3.11.*")).await;
    let first_build = server.wait_for_build(&first).await;
    let second = server.submit_yaml("team", "env", &spec("3.10.*")).await;
    let second_build = server.wait_for_build(&second).await;
    assert_eq!(second_build["status"], "succeeded");
    let link = server.environment_link("team", "env");
    let prefix_of = |build: &Value| {
        server
            .data_dir
            .join("prefixes")
            .join(&build["lock_hash"].as_str().unwrap()[..16])
    };
    assert_eq!(fs_err::read_link(&link).unwrap(), prefix_of(&second_build));

    let rollback = |build_id: String| {
        server.admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/environments/env/current",
            Some(serde_json::json!({ "build_id": build_id })),
        )
    };
    assert_eq!(rollback(first.clone()).await.status(), StatusCode::OK);
    let (_, environment) = server
        .get_json("/api/v1/namespaces/team/environments/env")
        .await;
    assert_eq!(environment["current_build"]["id"], first.as_str());
    assert_eq!(
        fs_err::read_link(&link).unwrap(),
        prefix_of(&first_build),
        "the link follows"
    );
    let lockfile = server
        .get("/api/v1/namespaces/team/environments/env/lockfile")
        .await;
    assert_eq!(
        lockfile.headers()["etag"],
        format!("\"{}\"", first_build["lock_hash"].as_str().unwrap()).as_str()
    );

    // Only succeeded builds of this environment can be made current.
    let failed = server
        .submit_yaml(
            "team",
            "env",
            "channels: [demo]\ndependencies: [conflict-a, conflict-b]\nplatforms: [linux-64]\n",
        )
        .await;
    server.wait_for_build(&failed).await;
    envstore_tests::expect_problem(rollback(failed).await, StatusCode::CONFLICT).await;
    envstore_tests::expect_problem(rollback("no-such-build".into()).await, StatusCode::CONFLICT)
        .await;
    let (_, audit) = server.get_json("/api/v1/audit").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "environment.rollback")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_are_cancelled_queued_or_running() {
    // A channel that accepts connections and never answers keeps a build
    // solving until it is cancelled.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/", silent.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            connections.push(stream);
        }
    });
    let channel = DemoChannel::start().await;
    let slow = envstore_core::NamedChannel::parse(&format!("slow={silent_url}")).unwrap();
    let server = TestServer::start(vec![channel.allowed_as("demo"), slow]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let cancel = |id: String| {
        let server = &server;
        async move {
            server
                .admin_json(Method::POST, &format!("/api/v1/builds/{id}/cancel"), None)
                .await
        }
    };

    let running = server
        .submit_yaml(
            "team",
            "stuck",
            "channels: [slow]\ndependencies: [python]\n",
        )
        .await;
    let started = std::time::Instant::now();
    while server
        .get_json(&format!("/api/v1/builds/{running}"))
        .await
        .1["status"]
        != "running"
    {
        assert!(started.elapsed().as_secs() < 60, "the build never started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let response = cancel(running.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cancelling"], true);
    let build = server.wait_for_build(&running).await;
    assert_eq!(build["status"], "cancelled");
    assert_eq!(build["error"], "cancelled on request");
    let log = server
        .get(&format!("/api/v1/builds/{running}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains("cancelled on request: stopping"), "{log}");

    // The workers are free again: a normal build goes through.
    let normal = server
        .submit_yaml("team", "fine", &demo_spec_yaml("demo"))
        .await;
    assert_eq!(server.wait_for_build(&normal).await["status"], "succeeded");
    envstore_tests::expect_problem(cancel(normal).await, StatusCode::CONFLICT).await;
    server.stop().await;

    // With no workers, a build stays queued and is cancelled at once.
    let data = tempfile::tempdir().unwrap();
    let backend = envstore_tests::Backend::from_env(data.path()).await;
    let idle = TestServer::start_with(data, backend, vec![channel.allowed_as("demo")], 0).await;
    assert_eq!(
        idle.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let queued = idle
        .submit_yaml("team", "later", &demo_spec_yaml("demo"))
        .await;
    let response = idle
        .admin_json(
            Method::POST,
            &format!("/api/v1/builds/{queued}/cancel"),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (_, build) = idle.get_json(&format!("/api/v1/builds/{queued}")).await;
    assert_eq!(build["status"], "cancelled");
    assert_eq!(build["error"], "cancelled by admin");
    idle.stop().await;
}

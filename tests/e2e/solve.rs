//! `POST /api/v1/namespaces/{ns}/solve`: a lockfile without a build.

use envstore_fixtures::UNSOLVABLE_SPECS;
use envstore_fixtures::demo_expect::expected_linux64_filenames;
use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml, expect_problem};
use rattler_conda_types::ExplicitEnvironmentSpec;
use reqwest::StatusCode;
use serde_json::Value;

async fn solve(server: &TestServer, token: &str, query: &str, body: &str) -> reqwest::Response {
    server
        .client
        .post(server.url(&format!("/api/v1/namespaces/team/solve{query}")))
        .bearer_auth(token)
        .header("content-type", "application/yaml")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_is_solved_for_the_asked_platforms_and_nothing_is_built() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let spec = demo_spec_yaml("demo");

    // conda-lock for two platforms, the spec's own (linux-64) replaced.
    let response = solve(
        &server,
        &server.token,
        "?platforms=linux-64,osx-arm64",
        &spec,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let lock_hash = response.headers()[envstore_api::LOCK_HASH_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(lock_hash.len(), 64);
    let text = response.text().await.unwrap();
    rattler_conda_lock::Document::parse(&text).expect("a valid conda-lock v1 document");
    let conda_lock: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        conda_lock["metadata"]["platforms"],
        serde_json::json!(["linux-64", "osx-arm64"])
    );

    // The explicit file of one platform holds exactly the known solve.
    let response = solve(&server, &server.token, "?format=explicit", &spec).await;
    assert_eq!(response.status(), StatusCode::OK);
    let linux_lock_hash = response.headers()[envstore_api::LOCK_HASH_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(linux_lock_hash, lock_hash, "a lock covers its platforms");
    let explicit =
        ExplicitEnvironmentSpec::from_reader(response.text().await.unwrap().as_bytes()).unwrap();
    let mut files: Vec<String> = explicit
        .packages
        .iter()
        .map(|entry| entry.url.path().rsplit('/').next().unwrap().to_owned())
        .collect();
    files.sort();
    let mut expected = expected_linux64_filenames();
    expected.sort();
    assert_eq!(files, expected);

    // Nothing was queued, stored or built.
    let (status, environments) = server
        .get_json("/api/v1/namespaces/team/environments")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        environments["environments"].as_array().map(Vec::len),
        Some(0),
        "{environments}"
    );
    assert!(
        !server
            .data_dir
            .join("prefixes")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );

    // A build of the same spec publishes the same lock.
    let build_id = server.submit_yaml("team", "pinned", &spec).await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["lock_hash"], linux_lock_hash.as_str());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolvable_spec_is_a_422_with_the_solvers_explanation() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let spec = format!(
        "channels: [demo]\ndependencies: [{}]\nplatforms: [linux-64]\n",
        UNSOLVABLE_SPECS.join(", ")
    );
    let problem = expect_problem(
        solve(&server, &server.token, "", &spec).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["type"], "/problems/unsolvable");
    assert_eq!(problem["platform"], "linux-64");
    let detail = problem["detail"].as_str().unwrap();
    for name in UNSOLVABLE_SPECS {
        assert!(detail.contains(name), "{detail}");
    }

    let problem = expect_problem(
        solve(
            &server,
            &server.token,
            "?platforms=linux-64,no-such-os",
            &demo_spec_yaml("demo"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("no-such-os"),
        "{problem}"
    );
    let problem = expect_problem(
        solve(
            &server,
            &server.token,
            "?format=requirements",
            &demo_spec_yaml("demo"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("requirements"),
        "{problem}"
    );
    server.stop().await;
}

/// The hash `/solve` names is the one a build of the same spec in the same
/// namespace publishes its lockfiles under, variables and all (a lock with
/// variables is its namespace's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_with_variables_is_named_by_the_hash_its_build_publishes() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    for namespace in ["team", "other"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let spec = format!("{}variables:\n  MODE: fast\n", demo_spec_yaml("demo"));
    let response = solve(&server, &server.token, "", &spec).await;
    assert_eq!(response.status(), StatusCode::OK);
    let solved_hash = response.headers()[envstore_api::LOCK_HASH_HEADER]
        .to_str()
        .unwrap()
        .to_owned();

    let build = server.submit_yaml("team", "varied", &spec).await;
    let build = server.wait_for_build(&build).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert_eq!(build["lock_hash"], solved_hash.as_str(), "{build}");

    // The same spec in another namespace is another lock.
    let elsewhere = server
        .client
        .post(server.url("/api/v1/namespaces/other/solve"))
        .bearer_auth(&server.token)
        .header("content-type", "application/yaml")
        .body(spec)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::OK);
    assert_ne!(
        elsewhere.headers()[envstore_api::LOCK_HASH_HEADER]
            .to_str()
            .unwrap(),
        solved_hash
    );
    server.stop().await;
}

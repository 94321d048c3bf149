//! Every way a request can go wrong answers with a problem+json a person can
//! act on, and an unsolvable spec fails its build with the solver's reasons.

use envstore_fixtures::UNSOLVABLE_SPECS;
use envstore_tests::{DemoChannel, TestServer, expect_problem};
use reqwest::StatusCode;

async fn server_with_namespace() -> (DemoChannel, TestServer) {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    (channel, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_yaml_is_a_400_with_line_and_column() {
    let (_channel, server) = server_with_namespace().await;
    let body = "channels: [demo]\ndependencies:\n  - python\n - numpy: [\n";
    let response = server
        .submit("team", "broken", "application/yaml", body)
        .await;
    let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem["type"], "/problems/malformed-spec");
    assert_eq!(problem["line"], 4);
    assert!(problem["column"].as_u64().unwrap() >= 1);
    assert!(
        problem["detail"].as_str().unwrap().contains("line 4"),
        "{problem}"
    );

    let response = server
        .submit(
            "team",
            "broken",
            "application/json",
            "{\"dependencies\": [}",
        )
        .await;
    let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem["line"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_match_spec_is_a_422_naming_the_dependency() {
    let (_channel, server) = server_with_namespace().await;
    let body = "channels: [demo]\ndependencies:\n  - python\n  - numpy >=<1.0\n";
    let response = server
        .submit("team", "bad-spec", "application/yaml", body)
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "/problems/invalid-dependency");
    assert_eq!(problem["dependency"], "numpy >=<1.0");
    assert!(
        problem["detail"].as_str().unwrap().contains("numpy >=<1.0"),
        "{problem}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_is_not_allowed_is_a_422() {
    let (_channel, server) = server_with_namespace().await;
    for channel in ["conda-forge", "http://169.254.169.254/latest/meta-data"] {
        let body = format!("channels: [{channel}]\ndependencies: [python]\n");
        let response = server
            .submit("team", "elsewhere", "application/yaml", &body)
            .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["type"], "/problems/channel-not-allowed");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(channel) && detail.contains("allowed channels: demo"),
            "{detail}"
        );
    }
    let (_, environments) = server
        .get_json("/api/v1/namespaces/team/environments")
        .await;
    assert_eq!(
        environments["environments"].as_array().unwrap().len(),
        0,
        "nothing was recorded"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolvable_spec_fails_its_build_with_the_solvers_explanation() {
    let (_channel, server) = server_with_namespace().await;
    let body = format!(
        "channels: [demo]\ndependencies: [{}]\nplatforms: [linux-64]\n",
        UNSOLVABLE_SPECS.join(", ")
    );
    let build_id = server.submit_yaml("team", "conflict", &body).await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "failed");
    let error = build["error"].as_str().unwrap();
    assert!(error.contains("cannot be solved for linux-64"), "{error}");
    for name in UNSOLVABLE_SPECS.iter().chain(["libfoo"].iter()) {
        assert!(
            error.contains(name),
            "the explanation names {name}: {error}"
        );
    }
    let (_, environment) = server
        .get_json("/api/v1/namespaces/team/environments/conflict")
        .await;
    assert!(environment["current_build"].is_null());
    let response = server
        .get("/api/v1/namespaces/team/environments/conflict/lockfile")
        .await;
    expect_problem(response, StatusCode::NOT_FOUND).await;
    let log = server
        .get(&format!("/api/v1/builds/{build_id}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert!(log.contains("build failed"), "{log}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_namespaces_environments_and_builds_are_404() {
    let (_channel, server) = server_with_namespace().await;
    for path in [
        "/api/v1/namespaces/nobody",
        "/api/v1/namespaces/nobody/environments",
        "/api/v1/namespaces/team/environments/missing",
        "/api/v1/namespaces/team/environments/missing/lockfile",
        "/api/v1/namespaces/..%2f..%2fetc/environments",
        "/api/v1/builds/0190a5c4-0000-7000-8000-000000000000",
        "/api/v1/builds/0190a5c4-0000-7000-8000-000000000000/log",
        "/api/v1/locks/not-a-hash/conda-lock.yml",
        "/api/v1/locks/0000000000000000000000000000000000000000000000000000000000000000/conda-lock.yml",
        "/api/v1/nothing-here",
    ] {
        let response = server.get(path).await;
        expect_problem(response, StatusCode::NOT_FOUND).await;
    }
    let response = server
        .submit(
            "nobody",
            "env",
            "application/yaml",
            "dependencies: [python]\n",
        )
        .await;
    expect_problem(response, StatusCode::NOT_FOUND).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_valid_token() {
    let (_channel, server) = server_with_namespace().await;
    let anonymous = server
        .client
        .post(server.url("/api/v1/namespaces"))
        .json(&serde_json::json!({ "name": "sneaky" }))
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let wrong = server
        .client
        .put(server.url("/api/v1/namespaces/team/environments/env"))
        .bearer_auth("not-the-token")
        .body("dependencies: [python]\n")
        .send()
        .await
        .unwrap();
    expect_problem(wrong, StatusCode::UNAUTHORIZED).await;
    let invalid = server.create_namespace("../etc").await;
    expect_problem(invalid, StatusCode::UNPROCESSABLE_ENTITY).await;
    let duplicate = server.create_namespace("team").await;
    expect_problem(duplicate, StatusCode::CONFLICT).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_channel_is_retried_with_backoff_then_fails() {
    let channel = DemoChannel::start().await;
    let gone = envstore_core::NamedChannel::parse("gone=http://127.0.0.1:9/gone").unwrap();
    // Not retried by the channel client: each refusal fails the attempt.
    let data = tempfile::tempdir().unwrap();
    let backend = envstore_tests::Backend::from_env(data.path()).await;
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo"), gone],
        2,
        |config| {
            config.limits.network.transient_retry = std::time::Duration::ZERO;
        },
    )
    .await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let build_id = server
        .submit_yaml(
            "team",
            "offline",
            "channels: [gone]\ndependencies: [python]\nplatforms: [linux-64]\n",
        )
        .await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "failed");
    assert!(
        build["error"]
            .as_str()
            .unwrap()
            .contains("failed to load repodata"),
        "{build:#}"
    );
    let log = server
        .get(&format!("/api/v1/builds/{build_id}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(log.matches("will retry in").count(), 2, "{log}");
    for attempt in 1..=3 {
        assert!(log.contains(&format!("(attempt {attempt})")), "{log}");
    }

    // A permanent failure is not retried.
    let body = format!(
        "channels: [demo]\ndependencies: [{}]\nplatforms: [linux-64]\n",
        UNSOLVABLE_SPECS.join(", ")
    );
    let unsolvable = server.submit_yaml("team", "conflict", &body).await;
    server.wait_for_build(&unsolvable).await;
    let log = server
        .get(&format!("/api/v1/builds/{unsolvable}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !log.contains("will retry") && !log.contains("(attempt 2)"),
        "{log}"
    );
    server.stop().await;
}

//! Target system requirements: a spec declares the virtual packages of the
//! machines it is built for (`__cuda`, …), so a GPU environment solves and
//! builds on a worker without a GPU, and without them it is unsolvable.

use envstore_fixtures::{CUDA_DEMO_PACKAGE, CUDA_DEMO_VERSION};
use envstore_tests::{DemoChannel, TestServer, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::json;

const GPU_SPEC: &str = "channels: [demo]\ndependencies: [cuda-demo]\nplatforms: [linux-64]\n";

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
async fn a_gpu_spec_builds_on_a_worker_without_a_gpu_only_when_cuda_is_declared() {
    let (_channel, server) = server_with_namespace().await;

    let declared = format!("{GPU_SPEC}system_requirements:\n  cuda: '12.4'\n");
    let build_id = server.submit_yaml("team", "gpu", &declared).await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let prefix = server.environment_link("team", "gpu");
    assert!(
        prefix.join("share/cuda-demo/README").is_file(),
        "{CUDA_DEMO_PACKAGE} is installed in {}",
        prefix.display()
    );
    let record = fs_err::read_dir(prefix.join("conda-meta"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{CUDA_DEMO_PACKAGE}-{CUDA_DEMO_VERSION}-"))
        });
    assert!(record, "conda-meta holds the {CUDA_DEMO_PACKAGE} record");
    let log = server
        .get(&format!("/api/v1/builds/{build_id}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        log.contains("target system requirements for linux-64: cuda 12.4"),
        "{log}"
    );

    // The same spec without it: unsolvable, and the reason names `__cuda`.
    let build_id = server.submit_yaml("team", "cpu", GPU_SPEC).await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().unwrap();
    assert!(error.contains("cannot be solved for linux-64"), "{error}");
    assert!(error.contains("__cuda"), "{error}");

    // A version that is not one is refused before anything is queued.
    let response = server
        .submit(
            "team",
            "bad",
            "application/yaml",
            &format!("{GPU_SPEC}system_requirements: {{cuda: '>=12'}}\n"),
        )
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("system requirement 'cuda'"),
        "{problem}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_default_declares_cuda_for_specs_that_do_not() {
    let (_channel, server) = server_with_namespace().await;
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/policy",
            Some(json!({"system_requirements": {"linux-64": {"cuda": "12.2"}}})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let build_id = server.submit_yaml("team", "gpu", GPU_SPEC).await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");

    // A policy entry that cannot exist on its platform is refused.
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/policy",
            Some(json!({"system_requirements": {"osx-arm64": {"cuda": "12"}}})),
        )
        .await;
    assert!(response.status().is_client_error(), "{}", response.status());
    server.stop().await;
}

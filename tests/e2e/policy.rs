//! A namespace's policy is enforced before anything is queued, with errors
//! that name the rule.

use envstore_tests::{DemoChannel, TestServer, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_rule_is_enforced_before_queueing() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("class").await.status(),
        StatusCode::CREATED
    );
    let set_policy = |policy: serde_json::Value| {
        server.admin_json(Method::PUT, "/api/v1/namespaces/class/policy", Some(policy))
    };
    let response = set_policy(json!({
        "allowed_channels": ["demo"],
        "allowed_platforms": ["linux-64"],
        "required_packages": ["python"],
        "included_packages": ["ipykernel"],
        "max_dependencies": 3,
        "max_environments": 2,
    }))
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let refused = [
        ("dependencies: [numpy]\n", "required_packages"),
        (
            "dependencies: [python, numpy, pandas]\n",
            "max_dependencies",
        ),
        (
            "dependencies: [python]\nplatforms: [osx-arm64]\n",
            "allowed_platforms",
        ),
    ];
    for (spec, rule) in refused {
        let response = server
            .submit("class", "env-a", "application/yaml", spec)
            .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["type"], "/problems/policy-violation");
        assert_eq!(problem["rule"], rule, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(rule),
            "{problem}"
        );
    }

    // Included packages are added; channels default to the allowed ones.
    let build_id = server
        .submit_yaml("class", "env-a", "dependencies: [python 3.11.*]\n")
        .await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let dependencies = build["spec"]["dependencies"].as_array().unwrap();
    assert!(
        dependencies.iter().any(|d| d == "ipykernel"),
        "{dependencies:?}"
    );
    assert_eq!(build["spec"]["channels"][0], channel.served.url.as_str());

    // The namespace may hold two environments.
    server
        .submit_yaml("class", "env-b", "dependencies: [python]\n")
        .await;
    let response = server
        .submit(
            "class",
            "env-c",
            "application/yaml",
            "dependencies: [python]\n",
        )
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["rule"], "max_environments");
    let resubmit = server
        .submit(
            "class",
            "env-a",
            "application/yaml",
            "dependencies: [python 3.10.*]\n",
        )
        .await;
    assert_eq!(
        resubmit.status(),
        StatusCode::ACCEPTED,
        "an existing environment may be rebuilt"
    );

    // A policy with a typo is refused when it is set.
    let response = set_policy(json!({ "included_packages": ["numpy >=<1"] })).await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "/problems/invalid-policy");
    let response = set_policy(json!({ "max_enviroments": 3 })).await;
    expect_problem(response, StatusCode::BAD_REQUEST).await;
    let (_, policy) = server.get_json("/api/v1/namespaces/class/policy").await;
    assert_eq!(policy["effective"]["max_environments"], 2);

    // Default packages fill a spec that lists none; without them it is refused.
    assert_eq!(
        server.create_namespace("starter").await.status(),
        StatusCode::CREATED
    );
    let response = server
        .submit("starter", "empty", "application/yaml", "channels: [demo]\n")
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no dependencies"),
        "{problem}"
    );
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/starter/policy",
            Some(json!({ "default_packages": ["python 3.11.*", "six"] })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let build_id = server
        .submit_yaml("starter", "empty", "channels: [demo]\n")
        .await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let dependencies: Vec<&str> = build["spec"]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    assert_eq!(dependencies, ["python 3.11.*", "six"]);
    server.stop().await;
}

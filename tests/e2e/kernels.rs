//! `GET /api/v1/kernels`: the environments a caller may pick in Jupyter,
//! those whose current build succeeded with ipykernel in its lock.

use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The kernels `token` sees (None: anonymous), as `ns/name`, from one page.
async fn listed(server: &TestServer, token: Option<&str>, query: &str) -> Value {
    let mut request = server
        .client
        .get(server.url(&format!("/api/v1/kernels{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn names(page: &Value) -> Vec<String> {
    page["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kernel| kernel["display_name"].as_str().unwrap().to_owned())
        .collect()
}

async fn build(server: &TestServer, namespace: &str, name: &str, spec: &str) -> Value {
    let id = server.submit_yaml(namespace, name, spec).await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    build
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernels_are_the_visible_environments_with_ipykernel() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    for namespace in ["teach", "plain"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let demo = build(&server, "teach", "analysis", &demo_spec_yaml("demo")).await;
    build(
        &server,
        "plain",
        "bare",
        "channels: [demo]\ndependencies: [python 3.11.*]\nplatforms: [linux-64]\n",
    )
    .await;

    // The server admin sees every kernel: only the one with ipykernel.
    let page = listed(&server, Some(&server.token), "").await;
    assert_eq!(names(&page), ["teach/analysis"], "{page:#}");
    assert_eq!(page["next_after"], Value::Null);
    let kernel = &page["kernels"][0];
    assert_eq!(kernel["id"], envstore_api::kernel_id("teach", "analysis"));
    assert!(
        kernel["id"]
            .as_str()
            .unwrap()
            .starts_with("envstore-teach-analysis-"),
        "{kernel}"
    );
    assert_eq!(kernel["namespace"], "teach");
    assert_eq!(kernel["environment"], "analysis");
    assert_eq!(kernel["build_id"], demo["id"]);
    assert_eq!(kernel["lock_hash"], demo["lock_hash"]);
    assert_eq!(kernel["language"], "python");
    let prefix = server.environment_link("teach", "analysis");
    assert_eq!(kernel["prefix"], prefix.display().to_string());
    assert!(
        prefix.join("bin/python").is_file(),
        "the listed prefix is the environment on the server"
    );

    // A viewer of another namespace sees nothing; a viewer of teach sees it.
    let mut tokens = Vec::new();
    for (subject, namespace) in [("paula", "plain"), ("tom", "teach")] {
        let response = server
            .admin_json(
                Method::PUT,
                &format!("/api/v1/namespaces/{namespace}/members/{subject}"),
                Some(json!({ "role": "viewer" })),
            )
            .await;
        assert!(response.status().is_success());
        let created: Value = server
            .admin_json(
                Method::POST,
                "/api/v1/tokens",
                Some(json!({ "name": "jupyter", "subject": subject })),
            )
            .await
            .json()
            .await
            .unwrap();
        tokens.push(created["token"].as_str().unwrap().to_owned());
    }
    assert!(names(&listed(&server, Some(&tokens[0]), "").await).is_empty());
    assert_eq!(
        names(&listed(&server, Some(&tokens[1]), "").await),
        ["teach/analysis"]
    );

    // Anonymous students see it once the namespace is public, and not after.
    assert!(names(&listed(&server, None, "").await).is_empty());
    let visibility = |public: bool| {
        server.admin_json(
            Method::PUT,
            "/api/v1/namespaces/teach/visibility",
            Some(json!({ "public_read": public })),
        )
    };
    assert_eq!(visibility(true).await.status(), StatusCode::OK);
    assert_eq!(names(&listed(&server, None, "").await), ["teach/analysis"]);
    assert!(
        names(&listed(&server, Some(&tokens[0]), "").await) == ["teach/analysis"],
        "public for everyone"
    );
    assert_eq!(visibility(false).await.status(), StatusCode::OK);
    assert!(names(&listed(&server, None, "").await).is_empty());

    // Pages: every kernel once, in order, however small the page.
    for name in ["b-second", "c-third"] {
        build(&server, "teach", name, &demo_spec_yaml("demo")).await;
    }
    let mut seen = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let page = listed(&server, Some(&server.token), &query).await;
        let page_names = names(&page);
        assert!(page_names.len() <= 1, "{page:#}");
        seen.extend(page_names);
        match page["next_after"].as_str() {
            Some(next) => query = format!("?limit=1&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["teach/analysis", "teach/b-second", "teach/c-third"]);
    let page = listed(&server, Some(&server.token), "?limit=2").await;
    assert_eq!(page["next_after"], "teach/b-second");
    let response = server.get("/api/v1/kernels?after=nonsense").await;
    expect_problem(response, StatusCode::BAD_REQUEST).await;
    server.stop().await;
}

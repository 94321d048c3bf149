//! `GET /api/v1/packages`: which environments hold a package (the current
//! builds of the namespaces the caller may see), exact or by prefix, paged
//! by cursor; and `GET /api/v1/tokens?all=true` for the admin pages.

use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The search's answer for the holder of `token` (None: nobody signed in).
async fn search(server: &TestServer, token: Option<&str>, query: &str) -> (StatusCode, Value) {
    let mut request = server
        .client
        .get(server.url(&format!("/api/v1/packages{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// `namespace/environment` of each match.
fn environments(page: &Value) -> Vec<String> {
    page["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|found| {
            format!(
                "{}/{}",
                found["namespace"].as_str().unwrap(),
                found["environment"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_found_in_the_environments_a_caller_may_see() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    let mut builds = Vec::new();
    for namespace in ["open", "other", "team"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
        builds.push(
            server
                .submit_yaml(namespace, "analysis", &demo_spec_yaml("demo"))
                .await,
        );
    }
    for build in &builds {
        assert_eq!(server.wait_for_build(build).await["status"], "succeeded");
    }
    let public = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/open/visibility",
            Some(json!({ "public_read": true })),
        )
        .await;
    assert_eq!(public.status(), StatusCode::OK);
    let member = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/members/vera",
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(member.status(), StatusCode::OK);
    let created = server
        .admin_json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "search", "subject": "vera" })),
        )
        .await;
    let vera: Value = created.json().await.unwrap();
    let vera = vera["token"].as_str().unwrap().to_owned();
    let admin = server.token.clone();

    // Everyone sees what they may: admins all, a viewer its namespace and
    // the public one, nobody signed in the public one only.
    let (status, all) = search(&server, Some(&admin), "?name=numpy").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(
        environments(&all),
        ["open/analysis", "other/analysis", "team/analysis"]
    );
    let first = &all["packages"][0];
    assert_eq!(first["name"], "numpy");
    assert_eq!(first["platform"], "linux-64");
    assert!(!first["version"].as_str().unwrap().is_empty(), "{first}");
    assert_eq!(first["build_id"], builds[0].as_str());
    assert_eq!(all["next_after"], Value::Null);
    let (_, seen) = search(&server, Some(&vera), "?name=numpy").await;
    assert_eq!(environments(&seen), ["open/analysis", "team/analysis"]);
    let (_, anyone) = search(&server, None, "?name=NumPy").await;
    assert_eq!(
        environments(&anyone),
        ["open/analysis"],
        "names are lowercase"
    );

    // A prefix finds every name starting with it; an exact name is exact.
    let (_, prefixed) = search(&server, Some(&admin), "?name=pan&prefix=true").await;
    let names: Vec<&str> = prefixed["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|found| found["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"pandas"), "{prefixed}");
    assert!(
        names.iter().all(|name| name.starts_with("pan")),
        "{prefixed}"
    );
    let (_, exact) = search(&server, Some(&admin), "?name=pan").await;
    assert!(environments(&exact).is_empty(), "{exact}");

    // Pages of one, resumed by cursor, make the whole answer.
    let mut paged = Vec::new();
    let mut query = "?name=numpy&limit=1".to_owned();
    loop {
        let (status, page) = search(&server, Some(&admin), &query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        paged.extend(environments(&page));
        match page["next_after"].as_str() {
            Some(next) => {
                query = format!("?name=numpy&limit=1&after={}", urlencode(next));
            }
            None => break,
        }
        assert!(paged.len() <= 3, "paging ends");
    }
    assert_eq!(paged, environments(&all));

    // No name, or a cursor that is none, is a readable 400.
    let (status, problem) = search(&server, Some(&admin), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("name"));
    let (status, _) = search(&server, Some(&admin), "?name=numpy&after=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Server admins list every subject's tokens; nobody else may.
    let (status, tokens) = server.get_json("/api/v1/tokens?all=true").await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(
        tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|token| token["subject"] == "vera"),
        "{tokens}"
    );
    let refused = server
        .client
        .get(server.url("/api/v1/tokens?all=true"))
        .bearer_auth(&vera)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    server.stop().await;
}

/// A query value, percent-encoded.
fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

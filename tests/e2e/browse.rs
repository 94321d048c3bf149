//! The listings that grow without bound, paged by cursor and searchable:
//! namespaces, the environments of a namespace, the builds of an
//! environment (`?limit=&after=&q=`, answered with `next_after`).

use envstore_tests::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Every entry of a listing, page by page: (the names of each page's entries).
async fn pages(
    server: &TestServer,
    token: &str,
    path: &str,
    key: &str,
    field: &str,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{separator}limit=2");
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let response = server
            .client
            .get(server.url(&url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let page: Value = response.json().await.unwrap();
        let names: Vec<String> = page[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry[field].as_str().unwrap().to_owned())
            .collect();
        assert!(names.len() <= 2, "{page}");
        pages.push(names);
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(pages.len() < 50, "paging ends");
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_by_cursor_and_search_by_substring() {
    // No workers: builds stay queued, which is all a listing needs, and the
    // allowed channel is never fetched from.
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let channel = envstore_core::NamedChannel::parse("demo=http://127.0.0.1:9/demo").unwrap();
    let server = TestServer::start_with(data, backend, vec![channel], 0).await;
    let names = ["alpha", "beta", "team-ml", "team-web", "team_x", "zeta"];
    for name in names {
        assert_eq!(
            server.create_namespace(name).await.status(),
            StatusCode::CREATED
        );
    }

    // A server admin sees every namespace, two per page, in order.
    let admin = server.token.clone();
    let seen = pages(&server, &admin, "/api/v1/namespaces", "namespaces", "name").await;
    assert_eq!(seen.concat(), names);
    assert_eq!(seen.len(), 3);
    let (_, all) = server.get_json("/api/v1/namespaces").await;
    assert_eq!(
        all["namespaces"].as_array().unwrap().len(),
        names.len(),
        "one page by default"
    );
    assert_eq!(all["next_after"], Value::Null);

    // A viewer of two namespaces pages through only those; search narrows.
    for namespace in ["beta", "team-web"] {
        let response = server
            .admin_json(
                Method::PUT,
                &format!("/api/v1/namespaces/{namespace}/members/vera"),
                Some(json!({ "role": "viewer" })),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let created = server
        .admin_json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "browse", "subject": "vera" })),
        )
        .await;
    let vera: Value = created.json().await.unwrap();
    let vera = vera["token"].as_str().unwrap().to_owned();
    let visible = pages(&server, &vera, "/api/v1/namespaces", "namespaces", "name").await;
    assert_eq!(visible.concat(), ["beta", "team-web"]);
    let searched = pages(
        &server,
        &admin,
        "/api/v1/namespaces?q=TEAM",
        "namespaces",
        "name",
    )
    .await;
    assert_eq!(searched.concat(), ["team-ml", "team-web", "team_x"]);
    let literal = pages(
        &server,
        &admin,
        "/api/v1/namespaces?q=_",
        "namespaces",
        "name",
    )
    .await;
    assert_eq!(literal.concat(), ["team_x"], "'_' is matched literally");

    // Environments of a namespace, with their latest build.
    let spec = |python: &str| {
        format!("channels: [demo]\ndependencies: [python {python}]\nplatforms: [linux-64]\n")
    };
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    for environment in ["web", "analysis", "etl"] {
        server
            .submit_yaml("team", environment, &spec("3.11.*"))
            .await;
    }
    let environments = pages(
        &server,
        &server.token,
        "/api/v1/namespaces/team/environments",
        "environments",
        "name",
    )
    .await;
    assert_eq!(environments.concat(), ["analysis", "etl", "web"]);
    let (_, listed) = server
        .get_json("/api/v1/namespaces/team/environments?q=ET")
        .await;
    let listed = listed["environments"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "etl");
    assert_eq!(listed[0]["latest_status"], "queued");
    assert_eq!(listed[0]["current_build_id"], Value::Null);
    assert!(
        listed[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/environments/etl")
    );

    // Builds of an environment, newest first, with who submitted them.
    let (_, environment) = server
        .get_json("/api/v1/namespaces/team/environments/analysis")
        .await;
    let oldest = environment["history"][0]["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for python in ["3.10.*", "3.12.*", "3.9.*"] {
        ids.push(server.submit_yaml("team", "analysis", &spec(python)).await);
    }
    assert_eq!(
        server
            .submit_yaml("team", "analysis", &spec("3.11.*"))
            .await,
        oldest,
        "the same spec joins its queued build"
    );
    let history = pages(
        &server,
        &server.token,
        "/api/v1/namespaces/team/environments/analysis/builds",
        "builds",
        "id",
    )
    .await;
    assert_eq!(history.len(), 2);
    assert_eq!(
        history.concat(),
        [ids[2].clone(), ids[1].clone(), ids[0].clone(), oldest]
    );
    let (status, page) = server
        .get_json("/api/v1/namespaces/team/environments/analysis/builds?limit=1")
        .await;
    assert_eq!(status, StatusCode::OK);
    let newest = &page["builds"][0];
    assert_eq!(newest["submitted_by"], "admin");
    assert_eq!(newest["status"], "queued");
    assert_eq!(newest["current"], false);
    assert!(newest["phases"].as_array().unwrap().is_empty());
    assert_eq!(page["next_after"], newest["id"]);
    let (_, found) = server
        .get_json(&format!(
            "/api/v1/namespaces/team/environments/analysis/builds?q={}",
            &ids[0][24..]
        ))
        .await;
    assert_eq!(found["builds"].as_array().unwrap().len(), 1);
    assert_eq!(found["builds"][0]["id"], ids[0].as_str());
    let (status, _) = server
        .get_json("/api/v1/namespaces/team/environments/nothing/builds")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

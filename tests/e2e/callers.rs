//! Callers with a valid token who are not friendly: bodies built to stall
//! the parser, caching of token-protected artifacts, and event streams held
//! open (issue 14).

use std::time::Duration;

use envstore_tests::{Backend, DemoChannel, TestServer, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Generous: the API answers /health in milliseconds when it is not stalled.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Bodies at every limit, sent all at once from several connections: each is
/// refused with a problem, /health answers all along, and the server still
/// shuts down gracefully afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused_while_health_answers() {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_with(data, backend, Vec::new(), 0).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );

    // Each is a few hundred KB that libyaml would spend seconds on.
    let flow = "[".repeat(200_000);
    let mappings = "{a: ".repeat(60_000);
    let sequences = "[a, ".repeat(60_000);
    let json_nest = format!("{{\"dependencies\": {}", "[".repeat(200_000));
    let over_size = format!("dependencies: [{}]\n", "python, ".repeat(40_000));
    let lock_flow = "[".repeat(2_000_000);
    let environments = "/api/v1/namespaces/team/environments";
    let mut requests: Vec<(Method, String, &str, String, StatusCode)> = Vec::new();
    for round in 0..2 {
        for (index, body) in [&flow, &mappings, &sequences].into_iter().enumerate() {
            let path = format!("{environments}/yaml-{round}-{index}");
            requests.push((
                Method::PUT,
                path,
                "application/yaml",
                body.clone(),
                StatusCode::BAD_REQUEST,
            ));
        }
        let path = format!("{environments}/json-{round}");
        requests.push((
            Method::PUT,
            path,
            "application/json",
            json_nest.clone(),
            StatusCode::BAD_REQUEST,
        ));
        let path = format!("{environments}/big-{round}");
        requests.push((
            Method::PUT,
            path,
            "application/yaml",
            over_size.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ));
        let path = format!("{environments}/lock-{round}/lockfile");
        requests.push((
            Method::PUT,
            path,
            "application/yaml",
            lock_flow.clone(),
            StatusCode::BAD_REQUEST,
        ));
        let path = format!("{environments}/lock-{round}/lockfile");
        requests.push((
            Method::PUT,
            path,
            "application/yaml",
            mappings.clone(),
            StatusCode::BAD_REQUEST,
        ));
        // The small JSON routes: nested, and over their size limit.
        requests.push((
            Method::POST,
            "/api/v1/namespaces".to_owned(),
            "application/json",
            flow.clone(),
            StatusCode::BAD_REQUEST,
        ));
        let big_json = format!("{{\"name\": \"{}\"}}", "x".repeat(300_000));
        requests.push((
            Method::POST,
            "/api/v1/namespaces".to_owned(),
            "application/json",
            big_json,
            StatusCode::PAYLOAD_TOO_LARGE,
        ));
        requests.push((
            Method::PUT,
            "/api/v1/namespaces/team/policy".to_owned(),
            "application/json",
            json_nest.clone(),
            StatusCode::BAD_REQUEST,
        ));
    }

    let handles: Vec<_> = requests
        .into_iter()
        .map(|(method, path, content_type, body, status)| {
            let client = reqwest::Client::new();
            let url = server.url(&path);
            let token = server.token.clone();
            tokio::spawn(async move {
                let response = client
                    .request(method, url)
                    .bearer_auth(token)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .expect("the hostile request is answered");
                let problem = expect_problem(response, status).await;
                (path, problem)
            })
        })
        .collect();
    let hostile = tokio::spawn(async move {
        let mut problems = Vec::new();
        for handle in handles {
            problems.push(handle.await.expect("a hostile request ran"));
        }
        problems
    });

    // /health keeps answering while the bodies are in flight.
    let health = reqwest::Client::new();
    let mut answered = 0;
    while !hostile.is_finished() {
        let response =
            tokio::time::timeout(HEALTH_TIMEOUT, health.get(server.url("/health")).send())
                .await
                .expect("/health answers while hostile bodies are read")
                .expect("/health is reachable");
        assert_eq!(response.status(), StatusCode::OK);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let problems = hostile.await.expect("the hostile requests ran");
    for (path, problem) in &problems {
        let kind = problem["type"].as_str().unwrap_or_default();
        assert!(
            matches!(kind, "/problems/too-deep" | "/problems/too-large"),
            "{path}: {problem}"
        );
    }
    let deep = problems
        .iter()
        .find(|(_, problem)| problem["type"] == "/problems/too-deep")
        .unwrap();
    assert!(
        deep.1["detail"]
            .as_str()
            .unwrap()
            .contains("nests deeper than 64"),
        "{}",
        deep.1
    );
    println!(
        "{} hostile bodies refused, /health answered {answered} times meanwhile",
        problems.len()
    );

    // Nothing was queued, and an ordinary body still works.
    let (_, listed) = server.get_json(environments).await;
    assert_eq!(
        listed["environments"].as_array().unwrap().len(),
        0,
        "{listed}"
    );
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/visibility",
            Some(json!({ "public_read": false })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // A graceful shutdown completes.
    tokio::time::timeout(Duration::from_secs(60), server.stop())
        .await
        .expect("the server shuts down gracefully after hostile bodies");
}

/// Artifacts that needed a token are `private`: no shared cache may keep
/// one namespace's lock for another caller. A public namespace's may be
/// `public`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_protected_artifacts_are_private_and_public_ones_public() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("closed").await.status(),
        StatusCode::CREATED
    );
    let build_id = server
        .submit_yaml("closed", "env", &envstore_tests::demo_spec_yaml("demo"))
        .await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let lock_hash = build["lock_hash"].as_str().unwrap().to_owned();
    let lockfile = "/api/v1/namespaces/closed/environments/env/lockfile";
    let artifact = format!("/api/v1/locks/{lock_hash}/conda-lock.yml");

    let cache_control = |response: &reqwest::Response| {
        response
            .headers()
            .get("cache-control")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    for path in [lockfile, artifact.as_str()] {
        let response = server.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let value = cache_control(&response);
        assert!(
            value.starts_with("private"),
            "{path}: Cache-Control: {value}"
        );
        assert!(!value.contains("public"), "{path}: Cache-Control: {value}");
        // The revalidation answer says the same.
        let etag = response.headers()["etag"].clone();
        let revalidated = server
            .client
            .get(server.url(path))
            .bearer_auth(&server.token)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(
            cache_control(&revalidated).starts_with("private"),
            "{path}: {}",
            cache_control(&revalidated)
        );
    }

    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/closed/visibility",
            Some(json!({ "public_read": true })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    for path in [lockfile, artifact.as_str()] {
        // Anyone may read it now, without a token.
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let value = cache_control(&response);
        assert!(
            value.starts_with("public"),
            "{path}: Cache-Control: {value}"
        );
    }
    server.stop().await;
}

/// Reads a Server-Sent Events response until an event named `name` arrives,
/// and returns everything read.
async fn read_until_event(response: &mut reqwest::Response, name: &str, limit: Duration) -> String {
    let mut text = String::new();
    let needle = format!("event: {name}");
    let read = async {
        while let Some(chunk) = response.chunk().await.expect("the stream reads") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains(&needle) {
                return;
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("no '{name}' event within {limit:?}"));
    text
}

/// An API-only server (the build it queues stays queued, so its stream
/// would never end by itself) with these stream limits, and the path of that
/// build's event stream.
async fn streaming_server(limits: envstore_api::EventStreamLimits) -> (TestServer, String) {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    // Never fetched: no worker runs.
    let channel = envstore_core::NamedChannel {
        name: "demo".to_owned(),
        url: "http://127.0.0.1:9/demo/".parse().unwrap(),
    };
    let server = TestServer::start_configured(data, backend, vec![channel], 0, |config| {
        config.event_streams = limits;
    })
    .await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let build_id = server
        .submit_yaml("team", "env", "channels: [demo]\ndependencies: [python]\n")
        .await;
    (server, format!("/api/v1/builds/{build_id}/log?follow=true"))
}

async fn open_stream(server: &TestServer, path: &str, token: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("the stream request is answered")
}

/// Event streams: a cap per caller, and a longest life after which they
/// end (with a `closed` event, not `end`) and free their place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_caller_and_end_after_their_longest_life() {
    let (server, log) = streaming_server(envstore_api::EventStreamLimits {
        per_caller: 2,
        max_duration: Duration::from_secs(3),
        recheck: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let mut first = open_stream(&server, &log, &server.token).await;
    let mut second = open_stream(&server, &log, &server.token).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    let third = open_stream(&server, &log, &server.token).await;
    let problem = expect_problem(third, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(problem["type"], "/problems/too-many-streams", "{problem}");

    for stream in [&mut first, &mut second] {
        let text = read_until_event(stream, "closed", Duration::from_secs(60)).await;
        assert!(text.contains("longest life"), "{text}");
        assert!(!text.contains("event: end"), "{text}");
    }
    drop((first, second));
    // Their places are free again (the slot is released as the stream ends).
    let mut again = None;
    for _ in 0..50 {
        let response = open_stream(&server, &log, &server.token).await;
        if response.status() == StatusCode::OK {
            again = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "a stream opens once the others ended");
    drop(again);
    server.stop().await;
}

/// A stream opened with a token ends soon after that token is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_ends_when_its_token_is_revoked() {
    let (server, log) = streaming_server(envstore_api::EventStreamLimits {
        per_caller: 8,
        max_duration: Duration::from_secs(3600),
        recheck: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/members/alice",
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let response = server
        .admin_json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "watcher", "subject": "alice" })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: serde_json::Value = response.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["record"]["id"].as_str().unwrap().to_owned();

    let mut watched = open_stream(&server, &log, &token).await;
    assert_eq!(watched.status(), StatusCode::OK);
    read_until_event(&mut watched, "status", Duration::from_secs(30)).await;
    let response = server
        .admin_json(Method::DELETE, &format!("/api/v1/tokens/{token_id}"), None)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let text = read_until_event(&mut watched, "closed", Duration::from_secs(60)).await;
    assert!(text.contains("revoked"), "{text}");
    server.stop().await;
}

/// A lock's hash covers URLs and checksums only: a lockfile keeping a real
/// package's URL and sha256 but claiming another version and dependencies
/// is refused, naming the package, and nothing is kept under its hash; the
/// next namespace to build the real spec is served the channel's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_lockfile_cannot_poison_another_namespaces_lock() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    for namespace in ["mallory", "victim"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let spec = envstore_tests::demo_spec_yaml("demo");

    // The true lock, solved without a build.
    let response = server
        .client
        .post(server.url("/api/v1/namespaces/mallory/solve"))
        .bearer_auth(&server.token)
        .header("content-type", "application/yaml")
        .body(spec.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let lock_hash = response.headers()[envstore_api::LOCK_HASH_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();

    // The forgery: same URL and sha256, invented version and dependency.
    let mut document: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let package = &mut document["package"][0];
    let name = package["name"].as_str().unwrap().to_owned();
    let true_version = package["version"].as_str().unwrap().to_owned();
    package["version"] = "99.9.9".into();
    package["dependencies"]["invented-dependency"] = "*".into();
    let forged = serde_yaml::to_string(&document).unwrap();

    let response = server
        .client
        .put(server.url("/api/v1/namespaces/mallory/environments/env/lockfile"))
        .bearer_auth(&server.token)
        .header("content-type", "application/yaml")
        .body(forged)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "/problems/invalid-lockfile", "{problem}");
    assert_eq!(problem["package"], name.as_str(), "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&name) && detail.contains("99.9.9"),
        "{detail}"
    );

    // Nothing was kept or queued under the lock's hash.
    for file in ["pixi.lock", "conda-lock.yml"] {
        let response = server
            .get(&format!("/api/v1/locks/{lock_hash}/{file}"))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{file}");
    }
    let (_, builds) = server
        .get_json("/api/v1/namespaces/mallory/environments")
        .await;
    assert_eq!(
        builds["environments"].as_array().unwrap().len(),
        0,
        "{builds}"
    );

    // The victim's build of the real spec serves the channel's records.
    let build_id = server.submit_yaml("victim", "env", &spec).await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    assert_eq!(build["lock_hash"], lock_hash.as_str());
    for file in ["pixi.lock", "conda-lock.yml"] {
        let response = server
            .get(&format!("/api/v1/locks/{lock_hash}/{file}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        let served = response.text().await.unwrap();
        assert!(
            !served.contains("99.9.9") && !served.contains("invented-dependency"),
            "{file}: {served}"
        );
        assert!(served.contains(&true_version), "{file}");
    }

    // The true lockfile, submitted as is, is accepted.
    let response = server
        .client
        .put(server.url("/api/v1/namespaces/mallory/environments/env/lockfile"))
        .bearer_auth(&server.token)
        .header("content-type", "application/yaml")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    server.stop().await;
}

//! `Idempotency-Key` on submissions: a request sent again after its answer
//! was lost gets the first answer back (same build, `Idempotent-Replayed`),
//! never a second build; the same key with another request is refused; and
//! requests racing with one key make one build. The server has no workers,
//! so builds stay queued and can be cancelled: a cancelled build is not
//! joined by a new submission, so only the key can answer with it.

use envstore_tests::{Backend, DemoChannel, TestServer, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const SPEC: &str = "channels: [demo]\ndependencies: [python 3.11.*]\nplatforms: [linux-64]\n";

async fn api_only() -> (TestServer, DemoChannel) {
    let channel = DemoChannel::start().await;
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_with(data, backend, vec![channel.allowed_as("demo")], 0).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    (server, channel)
}

fn request(server: &TestServer, name: &str, key: &str, spec: &str) -> reqwest::RequestBuilder {
    server
        .client
        .put(server.url(&format!("/api/v1/namespaces/team/environments/{name}")))
        .bearer_auth(&server.token)
        .header("content-type", "application/yaml")
        .header("idempotency-key", key)
        .body(spec.to_owned())
}

async fn submit(server: &TestServer, name: &str, key: &str, spec: &str) -> reqwest::Response {
    request(server, name, key, spec).send().await.unwrap()
}

fn replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|value| value == "true")
}

async fn history(server: &TestServer, name: &str) -> Vec<Value> {
    let (status, environment) = server
        .get_json(&format!("/api/v1/namespaces/team/environments/{name}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{environment}");
    environment["history"].as_array().unwrap().clone()
}

async fn cancel(server: &TestServer, build_id: &str) {
    let response = server
        .admin_json(
            Method::POST,
            &format!("/api/v1/builds/{build_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_submission_replays_its_first_answer_and_a_different_one_is_refused() {
    let (server, _channel) = api_only().await;
    let key = "0193a3c4-5e6f-7a8b-9c0d-112233445566";
    let first = submit(&server, "env", key, SPEC).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(!replayed(&first));
    let location = first.headers()["location"].clone();
    let first_body = first.text().await.unwrap();
    let build_id = serde_json::from_str::<Value>(&first_body).unwrap()["build_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The build ends, so a plain resubmission would queue a new one.
    cancel(&server, &build_id).await;

    let again = submit(&server, "env", key, SPEC).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(replayed(&again), "{:?}", again.headers());
    assert_eq!(again.headers()["location"], location);
    assert_eq!(
        again.text().await.unwrap(),
        first_body,
        "the first answer, byte for byte"
    );
    assert_eq!(history(&server, "env").await.len(), 1, "no second build");

    // The same key for another request: refused, and nothing queued.
    let other = submit(
        &server,
        "env",
        key,
        &SPEC.replace("python 3.11.*", "python"),
    )
    .await;
    let problem = expect_problem(other, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "/problems/idempotency-key-reused");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "Idempotency-Key '{key}' was already used for a different request"
        )),
        "{detail}"
    );
    let elsewhere = submit(&server, "other", key, SPEC).await;
    expect_problem(elsewhere, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(history(&server, "env").await.len(), 1);

    // A fresh key is a fresh request; a key no client could mean is refused.
    let fresh = submit(&server, "env", "0193a3c4-5e6f-7a8b-9c0d-112233445567", SPEC).await;
    assert_eq!(fresh.status(), StatusCode::ACCEPTED);
    assert!(!replayed(&fresh));
    assert_eq!(history(&server, "env").await.len(), 2);
    for bad in ["k".repeat(256), "two words".to_owned()] {
        expect_problem(
            submit(&server, "env", &bad, SPEC).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_make_one_build() {
    let (server, _channel) = api_only().await;
    // Each round ends its build, so only the key can tie the next round's
    // requests to it; several rounds give the race several chances.
    let mut builds = Vec::new();
    for round in 0..3 {
        let key = format!("0193a3c4-5e6f-7a8b-9c0d-0000000000{round:02}");
        // Spawned at once, so they race on the server.
        let tasks: Vec<_> = (0..6)
            .map(|_| tokio::spawn(request(&server, "race", &key, SPEC).send()))
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap().unwrap());
        }
        let mut ids = Vec::new();
        let mut fresh = 0;
        for answer in answers {
            assert_eq!(answer.status(), StatusCode::ACCEPTED);
            fresh += usize::from(!replayed(&answer));
            let body: Value = answer.json().await.unwrap();
            ids.push(body["build_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            fresh, 1,
            "one request made the build, the others replayed it"
        );
        ids.dedup();
        assert_eq!(ids.len(), 1, "{ids:?}");
        cancel(&server, &ids[0]).await;
        builds.push(ids[0].clone());
    }
    assert_eq!(
        history(&server, "race").await.len(),
        builds.len(),
        "one build per key"
    );
    server.stop().await;
}

//! Build logs followed as Server-Sent Events while the build runs.

use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml};
use reqwest::StatusCode;
use serde_json::Value;

/// (event, data) pairs of an SSE body; multi-line data joined with `\n`.
fn events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_owned());
                } else if let Some(text) = line.strip_prefix("data:") {
                    data.push(text.strip_prefix(' ').unwrap_or(text).to_owned());
                }
            }
            event.map(|event| (event, data.join("\n")))
        })
        .collect()
}

async fn follow(server: &TestServer, build_id: &str) -> Vec<(String, String)> {
    let response = server
        .client
        .get(server.url(&format!("/api/v1/builds/{build_id}/log")))
        .bearer_auth(&server.token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    events(&response.text().await.unwrap())
}

fn lines(events: &[(String, String)]) -> Vec<String> {
    events
        .iter()
        .filter(|(event, _)| event == "line")
        .map(|(_, data)| data.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_build_streams_its_phases_progress_and_end() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let build_id = server
        .submit_yaml("team", "analysis", &demo_spec_yaml("demo"))
        .await;

    // Followed from the moment it was queued until it ends.
    let streamed = follow(&server, &build_id).await;
    let states: Vec<Value> = streamed
        .iter()
        .filter(|(event, _)| event == "status")
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect();
    assert!(!states.is_empty(), "{streamed:?}");
    assert_eq!(states.last().unwrap()["status"], "succeeded", "{states:?}");
    let (last_event, outcome) = streamed.last().unwrap();
    assert_eq!(last_event, "end");
    assert_eq!(
        serde_json::from_str::<Value>(outcome).unwrap()["status"],
        "succeeded"
    );

    // Every line of the published log arrived, in order, with progress.
    let lines = lines(&streamed);
    let published = server
        .get(&format!("/api/v1/builds/{build_id}/log"))
        .await
        .text()
        .await
        .unwrap();
    let published: Vec<&str> = published.lines().collect();
    let resets = streamed
        .iter()
        .filter(|(event, _)| event == "reset")
        .count();
    if resets == 0 {
        assert_eq!(lines, published);
    } else {
        assert!(
            lines.ends_with(
                &published
                    .iter()
                    .map(|line| line.to_string())
                    .collect::<Vec<_>>()
            )
        );
    }
    for progress in ["solving", "downloading 1/", "linking 1/", "build succeeded"] {
        assert!(
            lines.iter().any(|line| line.contains(progress)),
            "no '{progress}' in {lines:#?}"
        );
    }

    // A finished build replays its log and ends at once; so does ?follow=true.
    let replayed = follow(&server, &build_id).await;
    assert_eq!(replayed.last().unwrap().0, "end");
    assert_eq!(self::lines(&replayed), published);
    let response = server
        .get(&format!("/api/v1/builds/{build_id}/log?follow=true"))
        .await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    server.stop().await;
}

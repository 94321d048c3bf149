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

/// The `seq` numbers of the `progress` events, and the kind of the last.
fn progress_numbers(events: &[(String, String)]) -> (Vec<u64>, Option<Value>) {
    let records: Vec<Value> = events
        .iter()
        .filter(|(event, _)| event == "progress")
        .map(|(_, data)| serde_json::from_str(data).unwrap())
        .collect();
    let numbers = records
        .iter()
        .map(|record| record["seq"].as_u64().expect("a numbered event"))
        .collect();
    (
        numbers,
        records.last().map(|record| record["event"].clone()),
    )
}

/// Followers are sent each event once, numbered without gaps, and the end
/// of a build reaches them when its worker announces it, not on their next
/// look: here they look again (and check their caller again) only once an
/// hour. The follower connects to
/// an API without workers while the build waits; a worker node started
/// beside it then builds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_only_what_is_new_and_the_end_at_once() {
    let channel = DemoChannel::start().await;
    let data = tempfile::tempdir().unwrap();
    let backend = envstore_tests::Backend::from_env(data.path()).await;
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        0,
        |config| {
            config.event_streams.poll = std::time::Duration::from_secs(3600);
            config.event_streams.recheck = std::time::Duration::from_secs(3600);
        },
    )
    .await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let build_id = server
        .submit_yaml("team", "analysis", &demo_spec_yaml("demo"))
        .await;

    let mut response = server
        .client
        .get(server.url(&format!("/api/v1/builds/{build_id}/log")))
        .bearer_auth(&server.token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut text = String::new();
    // The first look: the build waits in the queue.
    while !text.contains("event: status") {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("queued"), "{text}");

    let mut node_config = server.config.clone();
    node_config.workers = 1;
    let node = envstore_server::server::start_workers(node_config)
        .await
        .unwrap();
    // A generous liveness limit, far below the hour between looks.
    let rest = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(
        rest.is_ok(),
        "the build's end did not reach the follower before its next look: {text}"
    );
    let streamed = events(&text);
    assert_eq!(streamed.last().unwrap().0, "end", "{streamed:?}");
    let (numbers, last) = progress_numbers(&streamed);
    let expected: Vec<u64> = (0..numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "each event once, in order, none missed");
    let last = last.expect("typed progress events");
    assert_eq!(last["kind"], "end", "{last}");
    assert_eq!(last["status"], "succeeded", "{last}");
    let kinds: Vec<String> = streamed
        .iter()
        .filter(|(event, _)| event == "progress")
        .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap()["event"]["kind"].to_string())
        .collect();
    for kind in ["\"phase\"", "\"downloading\"", "\"linking\""] {
        assert!(
            kinds.iter().any(|seen| seen == kind),
            "no {kind} in {kinds:?}"
        );
    }

    // The lines are the published log, each sent once.
    let published = server
        .get(&format!("/api/v1/builds/{build_id}/log"))
        .await
        .text()
        .await
        .unwrap();
    let published: Vec<String> = published.lines().map(str::to_owned).collect();
    assert_eq!(lines(&streamed), published);

    // A follower who arrives after the end gets the same typed events.
    let late = follow(&server, &build_id).await;
    let (late_numbers, _) = progress_numbers(&late);
    assert_eq!(late_numbers, numbers);
    assert_eq!(lines(&late), published);
    node.stop().await.unwrap();
    server.stop().await;
}

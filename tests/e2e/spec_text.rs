//! What the user wrote is kept: a build's submitted spec text is served
//! back byte for byte with its content type, the UI's edit form starts from
//! it, and a build without one (from a lockfile, or made before texts were
//! kept) answers 404. Also the pinned `environment.yml` export of a lock,
//! one platform at a time.

use envstore_tests::channels::{developer_token, ui_page, ui_session};
use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml, expect_problem};
use reqwest::StatusCode;

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_serves_back_the_text_it_was_submitted_with() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );

    // Comments, spacing and order are the user's; the hash is not of them.
    let written = format!(
        "# Our analysis stack: keep python first.\n{}",
        demo_spec_yaml("demo").replace("dependencies:", "dependencies:   # pinned below")
    );
    let build_id = server.submit_yaml("team", "analysis", &written).await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let response = server.get(&format!("/api/v1/builds/{build_id}/spec")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), "application/yaml");
    assert_eq!(response.text().await.unwrap(), written);

    // JSON comes back as JSON, as sent.
    let json =
        r#"{"channels": ["demo"],   "dependencies": ["python 3.11.*"], "platforms": ["linux-64"]}"#;
    let submitted = server
        .submit("team", "as-json", "application/json", json)
        .await;
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);
    let json_build: serde_json::Value = submitted.json().await.unwrap();
    let json_build = json_build["build_id"].as_str().unwrap();
    let response = server
        .get(&format!("/api/v1/builds/{json_build}/spec"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), "application/json");
    assert_eq!(response.text().await.unwrap(), json);

    // The edit form starts from the text as written.
    let token = developer_token(&server, "team", "alice").await;
    let cookie = ui_session(&server, &token).await;
    let form = ui_page(&server, &cookie, "/ui/namespaces/team/submit?name=analysis").await;
    assert!(
        form.contains("# Our analysis stack: keep python first."),
        "{form}"
    );

    // The pinned environment.yml of one platform.
    let lockfile = "/api/v1/namespaces/team/environments/analysis/lockfile";
    let response = server
        .get(&format!("{lockfile}?format=environment&platform=linux-64"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), "application/yaml");
    let exported: serde_yaml::Value =
        serde_yaml::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(exported["name"], "analysis");
    let channels = exported["channels"].as_sequence().unwrap();
    assert_eq!(channels.len(), 1, "{exported:?}");
    let pins: Vec<&str> = exported["dependencies"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|pin| pin.as_str().unwrap())
        .collect();
    let packages = build["packages"]["linux-64"].as_array().unwrap();
    assert_eq!(pins.len(), packages.len(), "{pins:?}");
    for package in packages {
        let pin = format!(
            "{}={}={}",
            package["name"].as_str().unwrap(),
            package["version"].as_str().unwrap(),
            package["build"].as_str().unwrap()
        );
        assert!(pins.contains(&pin.as_str()), "{pin} in {pins:?}");
    }
    for query in [
        "format=environment",
        "format=environment&platform=osx-arm64",
    ] {
        let problem = expect_problem(
            server.get(&format!("{lockfile}?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains("linux-64"),
            "{problem}"
        );
    }

    // A build from a lockfile has no text: 404 with a problem saying so,
    // and the edit form falls back to the canonical form.
    let pixi_lock = server
        .get(&format!("{lockfile}?format=pixi"))
        .await
        .text()
        .await
        .unwrap();
    let response = server
        .client
        .put(server.url("/api/v1/namespaces/team/environments/from-lock/lockfile"))
        .bearer_auth(&server.token)
        .header("content-type", "application/yaml")
        .body(pixi_lock)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let locked: serde_json::Value = response.json().await.unwrap();
    let locked = locked["build_id"].as_str().unwrap();
    let problem = expect_problem(
        server.get(&format!("/api/v1/builds/{locked}/spec")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no submitted spec text"),
        "{problem}"
    );
    let form = ui_page(
        &server,
        &cookie,
        "/ui/namespaces/team/submit?name=from-lock",
    )
    .await;
    assert!(
        form.contains("<textarea") && !form.contains("# Our analysis stack"),
        "{form}"
    );
    server.wait_for_build(locked).await;
    server.wait_for_build(json_build).await;
    server.stop().await;
}

/// What envstore changed from the spec as written (extras dropped, keys
/// ignored) is said in the build log, as conda says it when it reads the
/// file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_log_says_what_was_dropped_from_the_spec() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let written = "name: notes\ndescription: an analysis stack\nchannels: [demo]\n\
                   dependencies:\n  - python 3.11.*\n  - numpy[fast]\nplatforms: [linux-64]\n";
    let build_id = server.submit_yaml("team", "notes", written).await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let log = server
        .get(&format!("/api/v1/builds/{build_id}/log"))
        .await
        .text()
        .await
        .unwrap();
    let notes: Vec<&str> = log.lines().filter(|line| line.contains("note: ")).collect();
    assert_eq!(notes.len(), 2, "{log}");
    assert!(
        notes[0].contains("'numpy[fast]'") || notes[0].contains("[fast] were dropped"),
        "{log}"
    );
    assert!(notes[1].contains("'description'"), "{log}");
}

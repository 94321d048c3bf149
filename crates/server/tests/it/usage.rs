//! `envstore usage`: the server's usage table in a terminal, or its JSON.

use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml};
use reqwest::StatusCode;

async fn envstore(server: &TestServer, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_envstore"))
        .args(args)
        .env("ENVSTORE_URL", &server.base)
        .env("ENVSTORE_TOKEN", &server.token)
        .output()
        .await
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_prints_a_row_per_namespace_and_the_totals() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    for namespace in ["team", "other"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let build = server
        .submit_yaml("team", "analysis", &demo_spec_yaml("demo"))
        .await;
    assert_eq!(server.wait_for_build(&build).await["status"], "succeeded");

    let output = envstore(&server, &["usage"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE"), "{table}");
    let first_cell = |line: &str| line.split_whitespace().next().map(str::to_owned);
    let names: Vec<Option<String>> = lines[1..].iter().map(|line| first_cell(line)).collect();
    assert_eq!(
        names,
        [
            Some("other".to_owned()),
            Some("team".to_owned()),
            Some("total".to_owned())
        ],
        "{table}"
    );
    let team: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(
        team.contains(&"1/0/0"),
        "one succeeded build, none failed or cancelled: {table}"
    );

    let output = envstore(&server, &["usage", "-n", "team", "--json"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let usage: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(usage["namespaces"][0]["namespace"], "team");
    assert!(
        usage["namespaces"][0]["disk_bytes"].as_i64().unwrap() > 0,
        "{usage:#}"
    );

    let output = envstore(&server, &["usage", "-n", "nowhere"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("was not found"));
    server.stop().await;
}

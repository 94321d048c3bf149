//! `envstore usage`: the server's usage table in a terminal, or its JSON,
//! over all time or a period, with costs in the server's currency.

use envstore_core::usage::{DAY_MILLIS, format_time};
use envstore_tests::{Backend, DemoChannel, TestServer, demo_spec_yaml};
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

/// The UTC date `days` from today, as `YYYY-MM-DD`.
fn date(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format_time(i64::try_from(now).unwrap() + days * DAY_MILLIS)[..10].to_owned()
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_over_a_period_shows_it_and_every_cost_in_the_currency() {
    let channel = DemoChannel::start().await;
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        |config| {
            config.usage.settings.price_per_gib_month = Some(2.0);
            config.usage.settings.price_per_build_minute = Some(0.5);
            config.usage.settings.currency = Some("CHF".parse().unwrap());
        },
    )
    .await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let build = server
        .submit_yaml("team", "analysis", &demo_spec_yaml("demo"))
        .await;
    assert_eq!(server.wait_for_build(&build).await["status"], "succeeded");

    // From tomorrow: no builds, and a line naming the period.
    let tomorrow = date(1);
    let table = stdout(&envstore(&server, &["usage", "--since", &tomorrow]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("GIB-MONTHS") && lines[0].ends_with("COST"),
        "{table}"
    );
    let team = lines.iter().find(|line| line.starts_with("team ")).unwrap();
    assert!(team.contains(" 0/0/0 "), "{table}");
    assert!(
        team.ends_with("0.00 CHF"),
        "every cost in the currency: {table}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("period: {tomorrow}T00:00:00Z to now").as_str()),
        "{table}"
    );

    // From yesterday to tomorrow: the build, as JSON.
    let json = stdout(
        &envstore(
            &server,
            &[
                "usage",
                "-n",
                "team",
                "--since",
                &date(-1),
                "--until",
                &tomorrow,
                "--json",
            ],
        )
        .await,
    );
    let usage: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(usage["currency"], "CHF");
    assert_eq!(usage["namespaces"][0]["builds_succeeded"], 1, "{usage:#}");
    assert!(
        usage["namespaces"][0]["disk_gib_months"].as_f64().unwrap() > 0.0,
        "{usage:#}"
    );

    // All time: no period line; the currency still with each cost.
    let table = stdout(&envstore(&server, &["usage"]).await);
    assert!(
        !table.contains("period:") && !table.contains("GIB-MONTHS"),
        "{table}"
    );
    assert!(table.contains(" CHF"), "{table}");

    // A period the server refuses: every problem, and a failure.
    let output = envstore(&server, &["usage", "--since", "soon", "--until", "later"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("since 'soon'") && stderr.contains("until 'later'"),
        "{stderr}"
    );
    server.stop().await;
}

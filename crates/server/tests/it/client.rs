//! The `envstore` binary as CI uses it: submit and wait, then fetch the lock.

use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml};
use reqwest::StatusCode;

async fn envstore(server: &TestServer, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_envstore"));
    command
        .args(args)
        .env("ENVSTORE_URL", &server.base)
        .env_remove("ENVSTORE_TOKEN");
    if let Some(token) = token {
        command.env("ENVSTORE_TOKEN", token);
    }
    command.output().await.expect("the binary runs")
}

/// A server on the demo channel with the namespace `team`, and a folder
/// holding the demo spec as `environment.yml`.
async fn team_server() -> (DemoChannel, TestServer, tempfile::TempDir) {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("environment.yml"), demo_spec_yaml("demo")).unwrap();
    (channel, server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_submits_waits_and_fetches_the_lockfile() {
    let (_channel, server, dir) = team_server().await;
    let spec = dir.path().join("environment.yml");
    let token = server.token.clone();

    let output = envstore(
        &server,
        Some(&token),
        &["submit", "team/analysis", spec.to_str().unwrap(), "--wait"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let build_id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(build_id.len(), 36, "the build id is printed");
    assert!(stderr.contains("succeeded"), "{stderr}");
    // Followed through the build's event stream, whose log lines carry the
    // package counts (off a terminal, printed once each count is complete).
    assert!(
        stderr.lines().any(|line| line.contains("running: linking ")
            && line.trim_end().ends_with(|c: char| c.is_ascii_digit())),
        "{stderr}"
    );

    let output = envstore(
        &server,
        Some(&token),
        &["lock", "team/analysis", "--format", "conda-lock"],
    )
    .await;
    assert!(output.status.success());
    let conda_lock = String::from_utf8(output.stdout).unwrap();
    rattler_conda_lock_parses(&conda_lock);

    // The lockfile submitted back is installed as it is: nothing solved.
    let pinned = dir.path().join("conda-lock.yml");
    fs_err::write(&pinned, &conda_lock).unwrap();
    let output = envstore(
        &server,
        Some(&token),
        &["submit", "team/pinned", pinned.to_str().unwrap(), "--wait"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("succeeded") && !stderr.contains("solving"),
        "{stderr}"
    );
    let output = envstore(
        &server,
        Some(&token),
        &[
            "lock",
            "team/analysis",
            "--format",
            "explicit",
            "--platform",
            "linux-64",
        ],
    )
    .await;
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("@EXPLICIT")
    );

    // A failed build and a refused request exit non-zero with the reason.
    fs_err::write(
        &spec,
        "channels: [demo]\ndependencies: [conflict-a, conflict-b]\nplatforms: [linux-64]\n",
    )
    .unwrap();
    let output = envstore(
        &server,
        Some(&token),
        &["submit", "team/conflict", spec.to_str().unwrap(), "--wait"],
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed") && stderr.contains("libfoo"),
        "{stderr}"
    );
    let output = envstore(
        &server,
        None,
        &["submit", "team/analysis", spec.to_str().unwrap()],
    )
    .await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("401"),
        "no token"
    );
    let output = envstore(&server, Some(&token), &["lock", "team/nothing"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("was not found"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_solves_for_several_platforms_without_a_build() {
    let (_channel, server, dir) = team_server().await;
    let spec = dir.path().join("environment.yml");
    let token = server.token.clone();
    let spec_path = spec.to_str().unwrap();

    let output = envstore(
        &server,
        Some(&token),
        &[
            "solve",
            spec_path,
            "--namespace",
            "team",
            "--platform",
            "linux-64",
            "--platform",
            "osx-arm64",
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let conda_lock = String::from_utf8(output.stdout).unwrap();
    rattler_conda_lock_parses(&conda_lock);
    let parsed: serde_json::Value = serde_yaml::from_str(&conda_lock).unwrap();
    assert_eq!(
        parsed["metadata"]["platforms"],
        serde_json::json!(["linux-64", "osx-arm64"])
    );

    let output = envstore(
        &server,
        Some(&token),
        &[
            "solve",
            spec_path,
            "-n",
            "team",
            "--platform",
            "linux-64",
            "--platform",
            "osx-arm64",
            "--format",
            "explicit",
            "--explicit-platform",
            "osx-arm64",
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let explicit = String::from_utf8(output.stdout).unwrap();
    assert!(
        explicit.contains("@EXPLICIT") && explicit.contains("/osx-arm64/"),
        "{explicit}"
    );

    // Nothing was built, and an unsolvable spec exits non-zero with the reason.
    let (_, environments) = server
        .get_json("/api/v1/namespaces/team/environments")
        .await;
    assert_eq!(
        environments["environments"].as_array().map(Vec::len),
        Some(0)
    );
    fs_err::write(
        &spec,
        "channels: [demo]\ndependencies: [conflict-a, conflict-b]\nplatforms: [linux-64]\n",
    )
    .unwrap();
    let output = envstore(&server, Some(&token), &["solve", spec_path, "-n", "team"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("libfoo"),
        "{stderr}"
    );
    server.stop().await;
}

fn rattler_conda_lock_parses(text: &str) {
    let parsed: serde_json::Value = serde_yaml::from_str(text).unwrap();
    assert_eq!(parsed["version"], 1);
    assert!(!parsed["package"].as_array().unwrap().is_empty());
}

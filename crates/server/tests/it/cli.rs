//! The resource commands of the `envstore` binary (env, builds, namespaces,
//! tokens, whoami) and `submit --wait`'s summary and Ctrl-C, run as a
//! person or a script runs them, against a running server; each checks
//! what the command did through the API.

use std::process::{Output, Stdio};

use envstore_tests::{Backend, DemoChannel, TestServer, demo_spec_yaml};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// `envstore ARGS` with `ENVSTORE_URL` set to the server and
/// `ENVSTORE_TOKEN` to `token` (unset for None).
fn command(server: &TestServer, token: Option<&str>, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_envstore"));
    command
        .args(args)
        .env("ENVSTORE_URL", &server.base)
        .env_remove("ENVSTORE_TOKEN")
        .env_remove("ENVSTORE_LOG_FORMAT")
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("ENVSTORE_TOKEN", token);
    }
    command
}

async fn run(server: &TestServer, token: Option<&str>, args: &[&str]) -> Output {
    command(server, token, args)
        .output()
        .await
        .expect("the binary runs")
}

/// Runs as the server admin and expects success; returns standard output.
async fn ok(server: &TestServer, args: &[&str]) -> String {
    ok_as(server, &server.token, args).await
}

async fn ok_as(server: &TestServer, token: &str, args: &[&str]) -> String {
    let output = run(server, Some(token), args).await;
    assert!(
        output.status.success(),
        "envstore {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs with `--json` as the server admin and parses what it printed.
async fn json(server: &TestServer, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(server, &args).await;
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{args:?}: {error}\n{stdout}"))
}

/// Runs and expects failure; returns standard error.
async fn fails(server: &TestServer, token: Option<&str>, args: &[&str]) -> String {
    let output = run(server, token, args).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "envstore {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// Submits `file` for `environment` with `--wait`; returns the build id and
/// the summary line.
async fn submit_wait(
    server: &TestServer,
    environment: &str,
    file: &std::path::Path,
) -> (String, String) {
    let output = run(
        server,
        Some(&server.token),
        &["submit", environment, file.to_str().unwrap(), "--wait"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let build_id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(
        build_id.len(),
        36,
        "only the build id on stdout: {build_id}"
    );
    let summary = stderr.lines().last().expect("a summary line").to_owned();
    (build_id, summary)
}

/// The numbers of `N packages (C from the package cache, D downloaded)`.
fn summary_counts(summary: &str) -> (u64, u64, u64) {
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter(|word| !word.is_empty() && !word.contains('.'))
        .filter_map(|word| word.parse().ok())
        .collect();
    assert!(
        summary.contains(" packages (") && summary.contains(" from the package cache, "),
        "{summary}"
    );
    (numbers[0], numbers[1], numbers[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_and_builds_through_the_cli() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    let stdout = ok(&server, &["namespaces", "create", "team"]).await;
    assert!(
        stdout.contains("created namespace team (private)"),
        "{stdout}"
    );
    let dir = tempfile::tempdir().unwrap();
    let first_spec = dir.path().join("environment.yml");
    let first_text = format!("# the team's analysis\n{}", demo_spec_yaml("demo"));
    fs_err::write(&first_spec, &first_text).unwrap();
    let second_spec = dir.path().join("lean.yml");
    fs_err::write(
        &second_spec,
        "channels: [demo]\ndependencies:\n  - python 3.11.*\n  - numpy\n  - ipykernel\nplatforms: [linux-64]\n",
    )
    .unwrap();

    // submit --wait ends with a line of packages, cache use, time and use;
    // the first build downloads everything, the second takes all from the cache.
    let (first, summary) = submit_wait(&server, "team/analysis", &first_spec).await;
    let (_, build) = server.get_json(&format!("/api/v1/builds/{first}")).await;
    let locked = build["packages"]["linux-64"].as_array().unwrap().len() as u64;
    assert!(summary.starts_with("team/analysis is ready: "), "{summary}");
    assert_eq!(summary_counts(&summary), (locked, 0, locked), "{summary}");
    assert!(
        summary.contains("conda activate /") && summary.contains("envstore lock team/analysis"),
        "{summary}"
    );
    let (second, summary) = submit_wait(&server, "team/analysis", &second_spec).await;
    let (_, build) = server.get_json(&format!("/api/v1/builds/{second}")).await;
    let lean = build["packages"]["linux-64"].as_array().unwrap().len() as u64;
    assert!(lean < locked);
    assert_eq!(summary_counts(&summary), (lean, lean, 0), "{summary}");

    // env list
    let stdout = ok(&server, &["env", "list", "team"]).await;
    let row = stdout
        .lines()
        .find(|line| line.starts_with("team/analysis "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        row.contains(&second) && row.contains("succeeded"),
        "{stdout}"
    );
    assert!(stdout.starts_with("ENVIRONMENT "), "{stdout}");
    let page = json(&server, &["env", "list", "team"]).await;
    assert_eq!(page["namespace"], "team");
    assert_eq!(page["environments"][0]["current_build_id"], second);
    let all = json(&server, &["env", "list"]).await;
    assert_eq!(all[0]["environments"][0]["name"], "analysis", "{all}");

    // env show: the current build, and every build with who and when
    let stdout = ok(&server, &["env", "show", "team/analysis"]).await;
    let current_row = stdout
        .lines()
        .find(|line| line.starts_with('*'))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        current_row.contains(&second) && current_row.contains("admin"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.contains(&first) && !line.starts_with('*'))
    );
    assert!(stdout.contains("prefix"), "{stdout}");
    let shown = json(&server, &["env", "show", "team/analysis"]).await;
    assert_eq!(shown["current_build"]["id"], second);
    assert_eq!(shown["builds"].as_array().unwrap().len(), 2);
    assert_eq!(shown["builds"][1]["submitted_by"], "admin");

    // env diff: the current build against the one before it, and two named builds
    let stdout = ok(&server, &["env", "diff", "team/analysis"]).await;
    assert!(stdout.contains(&format!("from build {first}")), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with('-') && line.contains("pandas")),
        "{stdout}"
    );
    let compared = json(&server, &["env", "diff", &second, &first]).await;
    assert_eq!(compared["from"], second);
    let changes = compared["platforms"]["linux-64"]["changes"]
        .as_array()
        .unwrap();
    assert!(
        changes
            .iter()
            .any(|change| change["change"] == "added" && change["package"]["name"] == "pandas"),
        "{compared}"
    );
    assert_eq!(
        compared["platforms"]["linux-64"]["unchanged"]
            .as_u64()
            .unwrap()
            + changes.len() as u64,
        locked,
        "nothing removed going back: {compared}"
    );

    // env spec: the text as submitted, or the canonical spec
    assert_eq!(
        ok(
            &server,
            &["env", "spec", "team/analysis", "--build", &first]
        )
        .await,
        first_text
    );
    let canonical = json(&server, &["env", "spec", "team/analysis"]).await;
    assert_eq!(
        canonical["dependencies"].as_array().unwrap().len(),
        3,
        "{canonical}"
    );
    let stderr = fails(
        &server,
        Some(&server.token),
        &["env", "spec", "team/other", "--build", &first],
    )
    .await;
    assert!(stderr.contains("not of team/other"), "{stderr}");

    // env rollback: the API's current build is the old one
    let stdout = ok(&server, &["env", "rollback", "team/analysis", &first]).await;
    assert!(
        stdout.contains(&format!("now at build {first}")),
        "{stdout}"
    );
    let (_, environment) = server
        .get_json("/api/v1/namespaces/team/environments/analysis")
        .await;
    assert_eq!(environment["current_build"]["id"], first);

    // builds show, log, cancel
    let stdout = ok(&server, &["builds", "show", &first]).await;
    assert!(stdout.starts_with(&format!("build {first}\n")), "{stdout}");
    assert!(
        stdout.contains("succeeded") && stdout.contains("PHASE"),
        "{stdout}"
    );
    let shown = json(&server, &["builds", "show", &second]).await;
    assert_eq!(shown["id"], second);
    assert_eq!(shown["status"], "succeeded");
    let log = ok(&server, &["builds", "log", &first]).await;
    let published = server
        .get(&format!("/api/v1/builds/{first}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(log, published);
    let followed = ok(&server, &["builds", "log", &first, "--follow"]).await;
    assert!(followed.contains("linking"), "{followed}");
    let stderr = fails(&server, Some(&server.token), &["builds", "cancel", &first]).await;
    assert!(
        stderr.contains("409") && stderr.contains("already succeeded"),
        "{stderr}"
    );

    // A problem with its status and a hint; then env delete
    let stderr = fails(
        &server,
        Some(&server.token),
        &["env", "show", "team/nothing"],
    )
    .await;
    assert!(
        stderr.contains("404 Not Found") && stderr.contains("was not found"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: check the name"), "{stderr}");
    let stdout = ok(&server, &["env", "delete", "team/analysis"]).await;
    assert!(
        stdout.contains("deleted team/analysis: 2 builds hidden"),
        "{stdout}"
    );
    let (status, _) = server
        .get_json("/api/v1/namespaces/team/environments/analysis")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_tokens_and_whoami_through_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_with(data, backend, Vec::new(), 0).await;

    // whoami: the admin, then nobody
    let stdout = ok(&server, &["whoami"]).await;
    assert!(
        stdout.contains("subject") && stdout.contains("admin") && stdout.contains("yes"),
        "{stdout}"
    );
    let me = json(&server, &["whoami"]).await;
    assert_eq!(me["server_admin"], true);
    let output = run(&server, None, &["whoami"]).await;
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("anonymous"));

    // Without a token: 401 and what to do
    let stderr = fails(&server, None, &["namespaces", "create", "team"]).await;
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("hint: set ENVSTORE_TOKEN"), "{stderr}");

    // namespaces create, list
    ok(&server, &["namespaces", "create", "team"]).await;
    let created = json(&server, &["namespaces", "create", "open", "--public"]).await;
    assert_eq!(created["public_read"], true);
    let stdout = ok(&server, &["namespaces", "list"]).await;
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("open ") && line.contains("public")),
        "{stdout}"
    );
    let listed = json(&server, &["namespaces", "list"]).await;
    let names: Vec<&str> = listed["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|namespace| namespace["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["open", "team"]);

    // members: set and remove, subjects with characters a path must escape
    let stdout = ok(
        &server,
        &[
            "namespaces",
            "members",
            "team",
            "--set",
            "user:alice@example.org=developer",
            "--set",
            "bob=viewer",
        ],
    )
    .await;
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("user:alice@example.org ") && line.contains("developer")),
        "{stdout}"
    );
    let members = json(
        &server,
        &["namespaces", "members", "team", "--remove", "bob"],
    )
    .await;
    let (_, api) = server.get_json("/api/v1/namespaces/team/members").await;
    assert_eq!(members, api);
    assert_eq!(api["members"].as_array().unwrap().len(), 1, "{api}");
    assert_eq!(api["members"][0]["subject"], "user:alice@example.org");

    // visibility
    let stdout = ok(&server, &["namespaces", "visibility", "team", "public"]).await;
    assert!(stdout.contains("team is public"), "{stdout}");
    let (_, namespace) = server.get_json("/api/v1/namespaces/team").await;
    assert_eq!(namespace["public_read"], true);
    ok(&server, &["namespaces", "visibility", "team", "private"]).await;
    let stdout = ok(&server, &["namespaces", "visibility", "team"]).await;
    assert!(stdout.contains("team is private"), "{stdout}");

    // policy, from a YAML file
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yml");
    fs_err::write(
        &policy,
        "max_environments: 3\nrequired_packages: [ipykernel]\n",
    )
    .unwrap();
    let stdout = ok(
        &server,
        &[
            "namespaces",
            "policy",
            "team",
            "--set",
            policy.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("max_environments ") && line.contains('3')),
        "{stdout}"
    );
    let (_, api) = server.get_json("/api/v1/namespaces/team/policy").await;
    assert_eq!(api["policy"]["max_environments"], 3);
    assert_eq!(json(&server, &["namespaces", "policy", "team"]).await, api);

    // quota: a flag not given keeps its value; `default` clears one
    let stdout = ok(&server, &["namespaces", "quota", "team", "--disk", "2GiB"]).await;
    assert!(stdout.contains("2.0 GiB"), "{stdout}");
    ok(&server, &["namespaces", "quota", "team", "--builds", "4"]).await;
    let (_, api) = server.get_json("/api/v1/namespaces/team/quota").await;
    assert_eq!(api["quota"]["max_disk_bytes"], 2 * 1024 * 1024 * 1024_i64);
    assert_eq!(api["quota"]["max_concurrent_builds"], 4);
    let quota = json(
        &server,
        &["namespaces", "quota", "team", "--disk", "default"],
    )
    .await;
    assert_eq!(quota["quota"]["max_disk_bytes"], Value::Null);
    assert_eq!(quota["quota"]["max_concurrent_builds"], 4);

    // tokens: create (the value alone on stdout), use, list, revoke
    let token = ok(
        &server,
        &[
            "tokens",
            "create",
            "ci",
            "--subject",
            "user:alice@example.org",
            "--scope",
            "team=viewer",
            "--expires-in-days",
            "7",
        ],
    )
    .await
    .trim()
    .to_owned();
    assert!(!token.is_empty() && !token.contains(' '), "{token}");
    let stdout = ok_as(&server, &token, &["whoami"]).await;
    assert!(stdout.contains("user:alice@example.org"), "{stdout}");
    assert!(stdout.contains("team=viewer"), "{stdout}");
    let me: Value =
        serde_json::from_str(&ok_as(&server, &token, &["whoami", "--json"]).await).unwrap();
    let token_id = me["token_id"].as_str().unwrap().to_owned();
    // A viewer may not change members: 403 and whom to ask
    let stderr = fails(
        &server,
        Some(&token),
        &["namespaces", "members", "team", "--set", "eve=admin"],
    )
    .await;
    assert!(stderr.contains("403"), "{stderr}");
    assert!(
        stderr.contains("hint: your token lacks the role"),
        "{stderr}"
    );
    let stdout = ok_as(&server, &token, &["tokens", "list"]).await;
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with(&token_id) && line.contains("ci")),
        "{stdout}"
    );
    let tokens = json(&server, &["tokens", "list", "--all"]).await;
    assert!(
        tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|listed| listed["id"] == token_id.as_str()),
        "{tokens}"
    );
    let stdout = ok(&server, &["tokens", "revoke", &token_id]).await;
    assert!(
        stdout.contains(&format!("revoked token {token_id}")),
        "{stdout}"
    );
    let stderr = fails(&server, Some(&token), &["whoami"]).await;
    assert!(
        stderr.contains("401") && stderr.contains("hint: set ENVSTORE_TOKEN"),
        "{stderr}"
    );

    // namespaces delete
    let stdout = ok(&server, &["namespaces", "delete", "open"]).await;
    assert!(stdout.contains("deleted namespace open"), "{stdout}");
    let (status, _) = server.get_json("/api/v1/namespaces/open").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Ctrl-C during `submit --wait` stops the waiting, not the build: with no
/// worker running, the build waits in the queue, SIGINT says how to follow
/// and cancel it, and once a worker starts the build succeeds, while
/// `builds log --follow` shows it to the end. `builds cancel` stops
/// another queued build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_submit_wait_leaves_the_build_running() {
    let channel = DemoChannel::start().await;
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_with(data, backend, vec![channel.allowed_as("demo")], 0).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("environment.yml");
    fs_err::write(&spec, demo_spec_yaml("demo")).unwrap();

    let mut child = command(
        &server,
        Some(&server.token),
        &["submit", "team/analysis", spec.to_str().unwrap(), "--wait"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let build_id = stdout.next_line().await.unwrap().expect("the build id");
    // It is waiting: its progress says the build is queued.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Some(line) = stderr.next_line().await.unwrap() {
        let queued = line.contains("queued");
        seen.push(line);
        if queued {
            break;
        }
    }
    assert!(seen.iter().any(|line| line.contains("queued")), "{seen:?}");
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("it exits on Ctrl-C")
        .unwrap();
    while let Some(line) = stderr.next_line().await.unwrap() {
        seen.push(line);
    }
    let said = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(said.contains("goes on on the server"), "{said}");
    assert!(
        said.contains(&format!("envstore builds log {build_id} --follow")),
        "{said}"
    );
    assert!(
        said.contains(&format!("envstore builds cancel {build_id}")),
        "{said}"
    );
    let (_, build) = server.get_json(&format!("/api/v1/builds/{build_id}")).await;
    assert_eq!(build["status"], "queued", "not cancelled: {build}");

    // builds cancel stops another queued build.
    fs_err::write(
        dir.path().join("other.yml"),
        "channels: [demo]\ndependencies: [python 3.11.*]\nplatforms: [linux-64]\n",
    )
    .unwrap();
    let other = ok(
        &server,
        &[
            "submit",
            "team/other",
            dir.path().join("other.yml").to_str().unwrap(),
        ],
    )
    .await
    .trim()
    .to_owned();
    let stdout = ok(&server, &["builds", "cancel", &other]).await;
    assert!(
        stdout.contains(&format!("build {other} cancelled")),
        "{stdout}"
    );
    let (_, cancelled) = server.get_json(&format!("/api/v1/builds/{other}")).await;
    assert_eq!(cancelled["status"], "cancelled");

    // A follower of the log, then a worker: the build runs to its end.
    let follower = command(
        &server,
        Some(&server.token),
        &["builds", "log", &build_id, "--follow"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut node_config = server.config.clone();
    node_config.workers = 1;
    let node = envstore_server::server::start_workers(node_config)
        .await
        .unwrap();
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let followed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        follower.wait_with_output(),
    )
    .await
    .expect("the follower ends with the build")
    .unwrap();
    let stderr = String::from_utf8_lossy(&followed.stderr);
    assert!(followed.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&followed.stdout).contains("linking"),
        "{stderr}"
    );
    assert!(stderr.contains("succeeded"), "{stderr}");
    node.stop().await.unwrap();
    server.stop().await;
}

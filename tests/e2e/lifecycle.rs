//! An environment's life through the HTTP API: activation variables, a
//! lockfile installed as it is, and deletion of environments and namespaces.

use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn build(server: &TestServer, namespace: &str, name: &str, spec: &str) -> Value {
    let id = server.submit_yaml(namespace, name, spec).await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    build
}

async fn text(server: &TestServer, path: &str) -> String {
    let response = server.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.unwrap()
}

async fn put_lockfile(
    server: &TestServer,
    namespace: &str,
    name: &str,
    body: &str,
) -> reqwest::Response {
    server
        .client
        .put(server.url(&format!(
            "/api/v1/namespaces/{namespace}/environments/{name}/lockfile"
        )))
        .bearer_auth(&server.token)
        .header("content-type", "application/yaml")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn phases(build: &Value) -> Vec<String> {
    build["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["phase"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_are_set_on_activation_and_name_their_own_prefix() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let plain_spec = "channels: [demo]\ndependencies: [python 3.11.*]\nplatforms: [linux-64]\n";
    let plain = build(&server, "team", "plain", plain_spec).await;
    let with_variables = "channels: [demo]\ndependencies: [python 3.11.*, ipykernel]\nplatforms: [linux-64]\nvariables:\n  MODE: \"it's fast\"\n  THREADS: 4\n";
    let varied = build(&server, "team", "varied", with_variables).await;
    assert_ne!(
        varied["lock_hash"], plain["lock_hash"],
        "the variables are written into the prefix, so it is another prefix"
    );
    assert_eq!(
        varied["spec"]["variables"],
        json!({ "MODE": "it's fast", "THREADS": "4" }),
        "{varied:#}"
    );

    let prefix = server.environment_link("team", "varied");
    let activate = prefix.join("etc/conda/activate.d/envstore-variables.sh");
    let deactivate = prefix.join("etc/conda/deactivate.d/envstore-variables.sh");
    assert!(
        prefix
            .join("etc/conda/activate.d/envstore-variables.fish")
            .is_file()
    );
    let script = format!(
        ". '{}'; echo \"$MODE|$THREADS\"; . '{}'; echo \"${{MODE-unset}}|${{THREADS-unset}}\"",
        activate.display(),
        deactivate.display()
    );
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env_remove("MODE")
        .env("THREADS", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "it's fast|4\nunset|1\n"
    );
    assert!(
        !server
            .environment_link("team", "plain")
            .join("etc/conda/activate.d")
            .exists(),
        "no variables, no scripts"
    );
    // A Jupyter kernel starts without activation: its listing carries them.
    let (_, kernels) = server.get_json("/api/v1/kernels").await;
    assert_eq!(
        kernels["kernels"][0]["display_name"], "team/varied",
        "{kernels:#}"
    );
    assert_eq!(
        kernels["kernels"][0]["env"],
        json!({ "MODE": "it's fast", "THREADS": "4" }),
        "{kernels:#}"
    );

    // Variables a shell script cannot carry are refused with the reason.
    let response = server
        .submit(
            "team",
            "bad",
            "application/yaml",
            &format!("{plain_spec}variables:\n  \"A;B\": x\n"),
        )
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("variable 'A;B' is not a valid name"),
        "{problem}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockfile_is_installed_as_it_is_without_solving() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    for namespace in ["team", "ci"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let original = build(&server, "team", "analysis", &demo_spec_yaml("demo")).await;
    let lockfile = |format: &'static str| {
        format!("/api/v1/namespaces/team/environments/analysis/lockfile?format={format}")
    };
    for (name, format) in [("from-pixi", "pixi"), ("from-conda-lock", "conda-lock")] {
        let body = text(&server, &lockfile(format)).await;
        let response = put_lockfile(&server, "ci", name, &body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let submitted: Value = response.json().await.unwrap();
        let built = server
            .wait_for_build(submitted["build_id"].as_str().unwrap())
            .await;
        assert_eq!(built["status"], "succeeded", "{format}: {built:#}");
        assert_eq!(
            built["lock_hash"], original["lock_hash"],
            "{format}: the same lock, so the same prefix"
        );
        assert!(
            !phases(&built).contains(&"solving".to_owned()),
            "{format}: nothing is solved: {:?}",
            phases(&built)
        );
        assert_eq!(
            built["spec"]["from_lock"], original["lock_hash"],
            "{built:#}"
        );
        let log = text(
            &server,
            &format!("/api/v1/builds/{}/log", built["id"].as_str().unwrap()),
        )
        .await;
        assert!(log.contains("as it is: nothing to solve"), "{log}");
        assert!(
            server
                .environment_link("ci", name)
                .join("bin/python")
                .is_file()
        );
        let explicit = text(
            &server,
            &format!("/api/v1/namespaces/ci/environments/{name}/lockfile?format=explicit"),
        )
        .await;
        assert_eq!(
            explicit,
            text(&server, &lockfile("explicit")).await,
            "{format}"
        );
    }

    // Not a lockfile, a package from elsewhere, a platform the policy
    // forbids: each refused with the reason, and no environment is made.
    let not_lock = put_lockfile(&server, "ci", "bad", &demo_spec_yaml("demo")).await;
    let problem = expect_problem(not_lock, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "/problems/invalid-lockfile");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("neither a pixi.lock nor a conda-lock.yml"),
        "{problem}"
    );
    let conda_lock = text(&server, &lockfile("conda-lock")).await;
    let channel_url = channel.served.url.as_str().trim_end_matches('/').to_owned();
    let elsewhere = conda_lock.replacen(
        &format!("url: {channel_url}/linux-64/"),
        "url: https://elsewhere.example/linux-64/",
        1,
    );
    assert_ne!(elsewhere, conda_lock, "the test edits a package URL");
    let problem = expect_problem(
        put_lockfile(&server, "ci", "bad", &elsewhere).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["rule"], "allowed_channels", "{problem}");
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/ci/policy",
            Some(json!({ "allowed_platforms": ["osx-arm64"] })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let problem = expect_problem(
        put_lockfile(&server, "ci", "bad", &conda_lock).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["rule"], "allowed_platforms", "{problem}");
    assert_eq!(
        server
            .get("/api/v1/namespaces/ci/environments/bad")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_environments_and_namespaces_are_gone_at_once_and_can_start_afresh() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    for namespace in ["team", "shared"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let spec = demo_spec_yaml("demo");
    let first = build(&server, "team", "analysis", &spec).await;
    let shared = build(&server, "shared", "analysis", &spec).await;
    let lock_hash = first["lock_hash"].as_str().unwrap().to_owned();
    assert_eq!(shared["lock_hash"], lock_hash);
    let build_id = first["id"].as_str().unwrap();

    // A developer may not delete; the namespace admin may.
    let token = |subject: &'static str, role: &'static str| {
        let server = &server;
        async move {
            let response = server
                .admin_json(
                    Method::PUT,
                    &format!("/api/v1/namespaces/team/members/{subject}"),
                    Some(json!({ "role": role })),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            let response = server
                .admin_json(
                    Method::POST,
                    "/api/v1/tokens",
                    Some(json!({ "subject": subject, "name": "t" })),
                )
                .await;
            let created: Value = response.json().await.unwrap();
            created["token"].as_str().unwrap().to_owned()
        }
    };
    let developer = token("dev", "developer").await;
    let admin = token("lead", "admin").await;
    let delete = |path: &'static str, token: String| {
        let server = &server;
        async move {
            server
                .client
                .delete(server.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let refused = delete(
        "/api/v1/namespaces/team/environments/analysis",
        developer.clone(),
    )
    .await;
    expect_problem(refused, StatusCode::FORBIDDEN).await;
    let deleted = delete(
        "/api/v1/namespaces/team/environments/analysis",
        admin.clone(),
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::OK);
    let deleted: Value = deleted.json().await.unwrap();
    assert_eq!(deleted["builds"], 1, "{deleted}");

    for path in [
        "/api/v1/namespaces/team/environments/analysis".to_owned(),
        "/api/v1/namespaces/team/environments/analysis/lockfile".to_owned(),
        format!("/api/v1/builds/{build_id}"),
    ] {
        expect_problem(server.get(&path).await, StatusCode::NOT_FOUND).await;
    }
    let (_, listed) = server
        .get_json("/api/v1/namespaces/team/environments")
        .await;
    assert_eq!(listed["environments"], json!([]), "{listed}");
    let missing = delete(
        "/api/v1/namespaces/team/environments/analysis",
        admin.clone(),
    )
    .await;
    expect_problem(missing, StatusCode::NOT_FOUND).await;
    // The lock stays readable where another namespace still holds it.
    let by_hash = server
        .get(&format!("/api/v1/locks/{lock_hash}/conda-lock.yml"))
        .await;
    assert_eq!(by_hash.status(), StatusCode::OK);
    let (_, kernels) = server.get_json("/api/v1/kernels").await;
    let listed: Vec<&str> = kernels["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["shared/analysis"], "{kernels}");

    // Submitted again, the name starts a fresh history.
    let again = build(&server, "team", "analysis", &spec).await;
    let (_, environment) = server
        .get_json("/api/v1/namespaces/team/environments/analysis")
        .await;
    let history: Vec<&str> = environment["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(history, [again["id"].as_str().unwrap()], "{environment:#}");

    // A namespace: only a server admin deletes it; its members and quota go
    // with it.
    let quota = json!({ "max_disk_bytes": 1_000_000, "max_concurrent_builds": 2 });
    assert_eq!(
        server
            .admin_json(
                Method::PUT,
                "/api/v1/namespaces/team/quota",
                Some(quota.clone())
            )
            .await
            .status(),
        StatusCode::OK
    );
    let (_, set) = server.get_json("/api/v1/namespaces/team/quota").await;
    assert_eq!(set["quota"], quota, "{set:#}");
    expect_problem(
        delete("/api/v1/namespaces/team", admin.clone()).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let deleted = delete("/api/v1/namespaces/team", server.token.clone()).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    expect_problem(
        server.get("/api/v1/namespaces/team").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let (_, namespaces) = server.get_json("/api/v1/namespaces").await;
    assert!(!namespaces.to_string().contains("\"team\""), "{namespaces}");
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED,
        "the name can be used again"
    );
    let (_, environments) = server
        .get_json("/api/v1/namespaces/team/environments")
        .await;
    assert_eq!(environments["environments"], json!([]), "{environments}");
    let (_, fresh) = server.get_json("/api/v1/namespaces/team/quota").await;
    assert_eq!(
        fresh["quota"],
        json!({ "max_disk_bytes": null, "max_concurrent_builds": null }),
        "{fresh:#}"
    );
    let stranger = server
        .client
        .get(server.url("/api/v1/namespaces/team/environments"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(
        stranger.status() == StatusCode::FORBIDDEN || stranger.status() == StatusCode::NOT_FOUND,
        "the old admin's binding went with the namespace"
    );
    server.stop().await;
}

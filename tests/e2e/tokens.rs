//! Hostile callers with valid credentials (issue 14, part 2): tokens that
//! try to grow, HTTP/2 cleartext, weak admin tokens, activation variables
//! that would steer other people's processes, and files left readable.

use std::os::unix::fs::PermissionsExt;

use envstore_tests::{Backend, DemoChannel, TestServer, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const DAY_MILLIS: i64 = 24 * 3600 * 1000;

async fn call(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = server
        .client
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn mint(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    let response = call(server, token, Method::POST, "/api/v1/tokens", Some(body)).await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_day_viewer_token_cannot_mint_a_longer_or_broader_one_nor_outlive_revocation() {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_with(data, backend, Vec::new(), 0).await;
    for namespace in ["own", "other"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let admin = server.token.clone();
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/own/members/vera",
            Some(json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (status, vera_unscoped) = mint(
        &server,
        &admin,
        json!({ "name": "laptop", "subject": "vera" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, parent) = mint(
        &server,
        &admin,
        json!({ "name": "one-day", "subject": "vera", "expires_in_days": 1, "scopes": [{ "namespace": "own", "role": "viewer" }] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let parent_token = parent["token"].as_str().unwrap().to_owned();
    let parent_expiry = parent["record"]["expires_at"].as_i64().unwrap();

    // It cannot outlive itself…
    let (status, problem) = mint(
        &server,
        &parent_token,
        json!({ "name": "long", "expires_in_days": 366 }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("cannot outlive"),
        "{problem}"
    );
    // …nor hold more than it holds: unscoped, admin everywhere, server admin, someone else.
    let (status, child) = mint(
        &server,
        &parent_token,
        json!({ "name": "greedy", "scopes": [{ "namespace": "*", "role": "admin" }] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    assert!(
        child["record"]["expires_at"].as_i64().unwrap() <= parent_expiry,
        "{child}"
    );
    assert_eq!(
        child["record"]["scopes"],
        json!([{ "namespace": "own", "role": "viewer" }])
    );
    assert_eq!(child["record"]["parent_token_id"], parent["record"]["id"]);
    let (status, unscoped) = mint(&server, &parent_token, json!({ "name": "no-scopes" })).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        unscoped["record"]["scopes"],
        json!([{ "namespace": "own", "role": "viewer" }]),
        "no request: the parent's scopes"
    );
    for body in [
        json!({ "name": "x", "server_admin": true }),
        json!({ "name": "x", "subject": "someone-else" }),
    ] {
        assert_eq!(
            mint(&server, &parent_token, body).await.0,
            StatusCode::FORBIDDEN
        );
    }
    let child_token = child["token"].as_str().unwrap().to_owned();
    let status = |token: String, method: Method, path: &'static str, body: Option<Value>| {
        let server = &server;
        async move { call(server, &token, method, path, body).await.status() }
    };
    assert_eq!(
        status(
            child_token.clone(),
            Method::GET,
            "/api/v1/namespaces/own",
            None
        )
        .await,
        StatusCode::OK
    );
    let member = Some(json!({ "role": "viewer" }));
    assert_eq!(
        status(
            child_token.clone(),
            Method::PUT,
            "/api/v1/namespaces/own/members/x",
            member.clone()
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(
            child_token.clone(),
            Method::GET,
            "/api/v1/namespaces/other",
            None
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(
            vera_unscoped["token"].as_str().unwrap().to_owned(),
            Method::PUT,
            "/api/v1/namespaces/own/members/x",
            member
        )
        .await,
        StatusCode::OK,
        "the subject itself is a namespace admin"
    );

    // A scoped token sees and revokes only itself and what it minted.
    let listed: Value = call(&server, &parent_token, Method::GET, "/api/v1/tokens", None)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{listed}");
    assert!(
        !ids.contains(&vera_unscoped["record"]["id"].as_str().unwrap()),
        "{listed}"
    );
    let other_id = vera_unscoped["record"]["id"].as_str().unwrap();
    let response = call(
        &server,
        &parent_token,
        Method::DELETE,
        &format!("/api/v1/tokens/{other_id}"),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Revoking the parent revokes its children.
    let parent_id = parent["record"]["id"].as_str().unwrap();
    let response = call(
        &server,
        &admin,
        Method::DELETE,
        &format!("/api/v1/tokens/{parent_id}"),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for token in [
        &parent_token,
        &child_token,
        unscoped["token"].as_str().unwrap(),
    ] {
        let response = call(&server, token, Method::GET, "/api/v1/namespaces/own", None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    // A scoped server-admin token holds its scopes and nothing server-wide.
    let (status, ops) = mint(
        &server,
        &admin,
        json!({ "name": "ops", "subject": "ops", "server_admin": true, "scopes": [{ "namespace": "own", "role": "admin" }] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let ops = ops["token"].as_str().unwrap().to_owned();
    let response = call(
        &server,
        &ops,
        Method::POST,
        "/api/v1/namespaces",
        Some(json!({ "name": "made-by-ops" })),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    for path in ["/api/v1/role-bindings", "/api/v1/audit"] {
        assert_eq!(
            call(&server, &ops, Method::GET, path, None).await.status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert_eq!(
        call(&server, &ops, Method::GET, "/api/v1/namespaces/other", None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &server,
            &ops,
            Method::GET,
            "/api/v1/namespaces/own/policy",
            None
        )
        .await
        .status(),
        StatusCode::OK
    );
    for body in [
        json!({ "name": "x", "subject": "vera" }),
        json!({ "name": "x", "server_admin": true }),
    ] {
        assert_eq!(mint(&server, &ops, body).await.0, StatusCode::FORBIDDEN);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(parent_expiry <= now + DAY_MILLIS + 60_000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_gets_the_same_checks_as_http1() {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_with(data, backend, Vec::new(), 0).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let (_, created) = mint(
        &server,
        &server.token,
        json!({ "name": "soon-revoked", "subject": "vera" }),
    )
    .await;
    let revoked = created["token"].as_str().unwrap().to_owned();
    let id = created["record"]["id"].as_str().unwrap();
    assert_eq!(
        call(
            &server,
            &server.token,
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    let (_, created) = mint(
        &server,
        &server.token,
        json!({ "name": "outsider", "subject": "otto" }),
    )
    .await;
    let outsider = created["token"].as_str().unwrap().to_owned();

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let cases: [(Option<&str>, Method, &str, StatusCode); 6] = [
        (
            None,
            Method::GET,
            "/api/v1/namespaces/team",
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some(&revoked),
            Method::GET,
            "/api/v1/namespaces/team",
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some("envstore_guessed"),
            Method::GET,
            "/api/v1/tokens",
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some(&outsider),
            Method::GET,
            "/api/v1/namespaces/team",
            StatusCode::NOT_FOUND,
        ),
        (
            Some(&outsider),
            Method::GET,
            "/api/v1/audit",
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&server.token),
            Method::GET,
            "/api/v1/namespaces/team",
            StatusCode::OK,
        ),
    ];
    for (token, method, path, want) in cases {
        for (client, version) in [
            (&h2, reqwest::Version::HTTP_2),
            (&h1, reqwest::Version::HTTP_11),
        ] {
            let mut request = client.request(method.clone(), server.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.version(), version, "{path}");
            assert_eq!(response.status(), want, "{method} {path} over {version:?}");
        }
    }
    server.stop().await;
}

/// Starts a server configured by `configure` and returns why it refused
/// to start (the harness panics with the server's error).
async fn refusal(
    configure: impl FnOnce(&mut envstore_server::config::ServerConfig) + Send + 'static,
    token_file: Option<&str>,
) -> String {
    let data = tempfile::tempdir().unwrap();
    if let Some(text) = token_file {
        fs_err::write(data.path().join("admin-token"), text).unwrap();
    }
    let backend = Backend::from_env(data.path()).await;
    let started = tokio::spawn(async move {
        TestServer::start_configured(data, backend, Vec::new(), 0, configure).await;
    })
    .await;
    let panic = started
        .expect_err("the server refuses to start")
        .into_panic();
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_with_a_short_or_blank_admin_token() {
    for token in [
        "",
        "                                        ",
        "short",
        "0123456789abcdef0123456789abcde",
    ] {
        let why = refusal(
            move |config| config.admin_token = Some(token.to_owned()),
            None,
        )
        .await;
        assert!(why.contains("at least 32"), "{token:?}: {why}");
    }
    let why = refusal(
        |config| config.admin_token = None,
        Some("short-file-token\n"),
    )
    .await;
    assert!(why.contains("at least 32"), "the token file too: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_is_private_but_prefixes_and_environment_links_are_not() {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_with(data, backend, Vec::new(), 0).await;
    let mode = |path: &str| {
        let metadata = fs_err::metadata(server.data_dir.join(path))
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        metadata.permissions().mode() & 0o777
    };
    assert_eq!(mode(""), 0o711, "others may pass through, not list");
    assert_eq!(mode("prefixes"), 0o755);
    assert_eq!(mode("envs"), 0o755);
    assert_eq!(mode("cache"), 0o700);
    for entry in fs_err::read_dir(&server.data_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "prefixes" || name == "envs" || entry.file_type().unwrap().is_symlink() {
            continue;
        }
        assert_eq!(mode(&name) & 0o077, 0, "{name} is the service user's alone");
    }
    if server.data_dir.join("envstore.db").exists() {
        assert_eq!(mode("envstore.db"), 0o600);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steering_variables_need_the_server_policy_and_variables_never_reuse_across_namespaces() {
    let channel = DemoChannel::start().await;
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        |config| {
            config.policy.allowed_variables = Some(vec!["LD_LIBRARY_PATH".to_owned()]);
        },
    )
    .await;
    for namespace in ["team-a", "team-b"] {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
    }
    let spec = |variables: &str| {
        format!(
            "channels: [demo]\ndependencies: [python 3.11.*]\nplatforms: [linux-64]\nvariables: {variables}\n"
        )
    };
    for variables in [
        "{LD_PRELOAD: /tmp/evil.so}",
        "{PYTHONSTARTUP: /tmp/evil.py}",
        "{BASH_ENV: /tmp/evil.sh}",
    ] {
        let response = server
            .submit("team-a", "env", "application/yaml", &spec(variables))
            .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("allowed_variables"),
            "{problem}"
        );
    }
    // A namespace's policy cannot grant what the server's does not.
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team-a/policy",
            Some(json!({ "allowed_variables": ["LD_PRELOAD", "LD_LIBRARY_PATH"] })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = server
        .submit(
            "team-a",
            "env",
            "application/yaml",
            &spec("{LD_PRELOAD: /tmp/evil.so}"),
        )
        .await;
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Named by the server policy: allowed. The same variables in another
    // namespace give another lock, so a right guess shows nothing.
    let secret = spec("{LD_LIBRARY_PATH: /opt/secret-path}");
    let first = server
        .wait_for_build(&server.submit_yaml("team-a", "env", &secret).await)
        .await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let guess = server
        .wait_for_build(&server.submit_yaml("team-b", "env", &secret).await)
        .await;
    assert_eq!(guess["status"], "succeeded", "{guess}");
    assert_eq!(guess["reused"]["lock"], false, "{guess}");
    assert_ne!(guess["lock_hash"], first["lock_hash"]);
    let again = server
        .wait_for_build(&server.submit_yaml("team-a", "again", &secret).await)
        .await;
    assert_eq!(
        (again["reused"]["lock"].clone(), again["lock_hash"].clone()),
        (json!(true), first["lock_hash"].clone())
    );
    // Without variables, locks and prefixes stay shared by every namespace.
    let plain = spec("{}");
    let first = server
        .wait_for_build(&server.submit_yaml("team-a", "plain", &plain).await)
        .await;
    let other = server
        .wait_for_build(&server.submit_yaml("team-b", "plain", &plain).await)
        .await;
    assert_eq!(other["reused"]["lock"], true, "{other}");
    assert_eq!(other["lock_hash"], first["lock_hash"]);
    server.stop().await;
}

//! Hostile channels and URLs (issue 13, items 3–6), driven through the HTTP
//! API as a developer of one namespace: `url=` dependencies and lockfile
//! URLs keep to the namespace's channels after decoding, redirects and
//! error answers of channels are reported without echoing them, channel
//! credentials never leave the server, and every wait has a limit.

use std::time::{Duration, Instant};

use envstore_core::NamedChannel;
use envstore_tests::channels::{
    Behaviour, LoopbackChannel, developer_token, prefixes, send_as, ui_page, ui_session,
};
use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

fn channel(name: &str, url: &str) -> NamedChannel {
    NamedChannel {
        name: name.to_owned(),
        url: Url::parse(url).expect("a channel URL"),
    }
}

async fn server_with(
    channels: Vec<NamedChannel>,
    configure: impl FnOnce(&mut envstore_server::config::ServerConfig),
) -> TestServer {
    let data = tempfile::tempdir().expect("a temporary folder");
    let backend = envstore_tests::Backend::from_env(data.path()).await;
    TestServer::start_configured(data, backend, channels, 2, configure).await
}

/// A namespace `team` and a developer's token for it (and for nothing else).
async fn team(server: &TestServer, policy: Option<Value>) -> String {
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    if let Some(policy) = policy {
        let response = server
            .admin_json(Method::PUT, "/api/v1/namespaces/team/policy", Some(policy))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    developer_token(server, "team", "dev-team").await
}

/// Submits `spec` as the developer and waits for the build to end.
async fn build_as(server: &TestServer, token: &str, name: &str, spec: &str) -> (Value, Value) {
    let response = send_as(
        server,
        token,
        Method::PUT,
        &format!("/api/v1/namespaces/team/environments/{name}"),
        spec,
    )
    .await;
    let status = response.status();
    let submitted: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let build = server
        .wait_for_build(submitted["build_id"].as_str().expect("a build id"))
        .await;
    (submitted, build)
}

async fn build_log(server: &TestServer, build: &Value) -> String {
    let response = server
        .get(&format!(
            "/api/v1/builds/{}/log",
            build["id"].as_str().expect("an id")
        ))
        .await;
    response.text().await.expect("a log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_dependencies_and_lock_urls_keep_to_the_namespace_policy_after_decoding() {
    let demo = DemoChannel::start().await;
    let mounted = LoopbackChannel::start(Behaviour::Mount {
        dir: demo.served.dir.clone(),
        prefix: "demo".into(),
    })
    .await;
    let root = mounted.url.as_str().to_owned();
    let demo_url = format!("{root}demo/");
    let extra_url = format!("{root}extra/");
    let server = server_with(
        vec![channel("demo", &demo_url), channel("extra", &extra_url)],
        |_| {},
    )
    .await;
    let token = team(&server, Some(json!({ "allowed_channels": ["demo"] }))).await;

    // A real package of the channel, from a solve (which builds nothing).
    let spec = demo_spec_yaml("demo");
    let response = send_as(
        &server,
        &token,
        Method::POST,
        "/api/v1/namespaces/team/solve",
        &spec,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let conda_lock = response.text().await.expect("a lockfile");
    let document: serde_yaml::Value = serde_yaml::from_str(&conda_lock).expect("YAML");
    let package = document["package"]
        .as_sequence()
        .expect("packages")
        .iter()
        .find(|package| {
            package["url"]
                .as_str()
                .is_some_and(|url| url.contains("/linux-64/"))
        })
        .expect("a linux-64 package");
    let name = package["name"].as_str().expect("a name").to_owned();
    let url = package["url"].as_str().expect("a URL").to_owned();
    let file = url.rsplit('/').next().expect("a file").to_owned();
    assert_eq!(url, format!("{demo_url}linux-64/{file}"));

    let hostile = [
        format!("{demo_url}linux-64%2F..%2F..%2Fextra%2Flinux-64/{file}"),
        format!("{demo_url}%2e%2e/extra/linux-64/{file}"),
        format!("{demo_url}linux-64/..%2F{file}"),
        format!("{demo_url}../extra/linux-64/{file}"),
        format!("{demo_url}osx-arm64/{file}"),
        format!("{demo_url}linux-64/deeper/{file}"),
        format!("{root}demo-sibling/linux-64/{file}"),
        format!("{extra_url}linux-64/{file}"),
    ];
    for url in &hostile {
        let spec = format!(
            "channels: [demo]\ndependencies: ['{name}[url={url}]']\nplatforms: [linux-64]\n"
        );
        let response = send_as(
            &server,
            &token,
            Method::PUT,
            "/api/v1/namespaces/team/environments/direct",
            &spec,
        )
        .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(
            problem["type"], "/problems/channel-not-allowed",
            "{url}: {problem}"
        );
        assert!(
            problem["dependency"]
                .as_str()
                .is_some_and(|dependency| dependency.contains(&name)),
            "{url}: {problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(&name),
            "{url}: {problem}"
        );
        // The solve endpoint, which runs in the API process, keeps the same rules.
        let response = send_as(
            &server,
            &token,
            Method::POST,
            "/api/v1/namespaces/team/solve",
            &spec,
        )
        .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            problem["dependency"]
                .as_str()
                .is_some_and(|dependency| dependency.contains(&name)),
            "{url}: {problem}"
        );
    }
    // `channel::package` of a channel the server allows but the namespace does not.
    let spec =
        format!("channels: [demo]\ndependencies: ['{extra_url}::{name}']\nplatforms: [linux-64]\n");
    let response = send_as(
        &server,
        &token,
        Method::PUT,
        "/api/v1/namespaces/team/environments/direct",
        &spec,
    )
    .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        problem["type"], "/problems/channel-not-allowed",
        "{problem}"
    );

    // A lockfile whose package URL was bent the same ways is refused too.
    for url in hostile.iter().filter(|url| !url.contains("/deeper/")) {
        let tampered = conda_lock.replace(&format!("{demo_url}linux-64/{file}"), url);
        assert_ne!(tampered, conda_lock);
        let response = send_as(
            &server,
            &token,
            Method::PUT,
            "/api/v1/namespaces/team/environments/locked/lockfile",
            &tampered,
        )
        .await;
        let status = response.status();
        let problem: Value = response.json().await.expect("a problem");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {problem}");
        if problem["type"] == "/problems/policy-violation" {
            assert_eq!(problem["rule"], "allowed_channels", "{url}: {problem}");
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&format!("package '{name}'")),
                "{url}: {problem}"
            );
        } else {
            // Not even a lockfile once bent (e.g. no file name left).
            assert_eq!(
                problem["type"], "/problems/invalid-lockfile",
                "{url}: {problem}"
            );
        }
    }

    // Nothing was queued, built or linked.
    let (_, environments) = server
        .get_json("/api/v1/namespaces/team/environments")
        .await;
    assert_eq!(environments["environments"], json!([]), "{environments}");
    assert_eq!(prefixes(&server), Vec::<String>::new());
    assert!(
        !mounted
            .requests()
            .iter()
            .any(|request| request.contains("extra") || request.contains("%")),
        "{:?}",
        mounted.requests()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_error_answers_name_the_channel_and_path_and_echo_nothing() {
    let outside = LoopbackChannel::start(Behaviour::Error {
        telltale: "SECRET-ANSWER-4711".into(),
    })
    .await;
    let hopping = LoopbackChannel::start(Behaviour::Redirect {
        target: outside.url.to_string(),
    })
    .await;
    let failing = LoopbackChannel::start(Behaviour::Error {
        telltale: "SECRET-ANSWER-4712".into(),
    })
    .await;
    let server = server_with(
        vec![
            channel("hopping", hopping.url.as_str()),
            channel("failing", failing.url.as_str()),
        ],
        // No retries of the 500s: the first answer is the one checked.
        |config| config.limits.network.transient_retry = Duration::ZERO,
    )
    .await;
    let token = team(&server, None).await;
    let outside_address = outside.url.authority().to_owned();
    // What the internal server said (its body, a JSON value of it, where it
    // redirected to) appears nowhere; its status not in a message either.
    let echoes = |text: &str| {
        ["SECRET-ANSWER", "db-7.internal", outside_address.as_str()]
            .into_iter()
            .find(|echo| text.contains(echo))
    };
    let echoes_status = |text: &str| {
        ["302", "500", "Found", "Internal Server Error"]
            .into_iter()
            .find(|echo| text.contains(echo))
    };

    for (name, says) in [
        ("hopping", "was redirected outside the allowed channels"),
        ("failing", "answered with an error"),
    ] {
        let spec = format!("channels: [{name}]\ndependencies: [python]\nplatforms: [linux-64]\n");
        let (submitted, build) = build_as(&server, &token, name, &spec).await;
        assert_eq!(build["status"], "failed", "{build:#}");
        let error = build["error"].as_str().expect("an error");
        assert!(
            error.contains(&format!("channel '{name}': fetching '")),
            "{error}"
        );
        assert!(
            error.contains("repodata") && error.contains(says),
            "{error}"
        );
        assert_eq!(echoes_status(error), None, "{error}");
        let log = build_log(&server, &build).await;
        for text in [error, &log, &submitted.to_string(), &build.to_string()] {
            assert_eq!(echoes(text), None, "{text}");
        }

        let response = send_as(
            &server,
            &token,
            Method::POST,
            "/api/v1/namespaces/team/solve",
            &spec,
        )
        .await;
        let problem = expect_problem(response, StatusCode::BAD_GATEWAY).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("channel '{name}': fetching '")) && detail.contains(says),
            "{problem}"
        );
        assert_eq!(echoes(&problem.to_string()), None, "{problem}");
        assert_eq!(echoes_status(detail), None, "{problem}");
    }
    assert!(
        outside.requests().is_empty(),
        "the redirect was followed: {:?}",
        outside.requests()
    );
    assert!(!hopping.requests().is_empty());
    assert_eq!(prefixes(&server), Vec::<String>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_credentials_never_leave_the_server() {
    let demo = DemoChannel::start().await;
    let password = "pw-SECRET-basic-913";
    let token_secret = "tk-SECRET-token-577";
    let basic = LoopbackChannel::start(Behaviour::Basic {
        dir: demo.served.dir.clone(),
        username: "reader".into(),
        password: password.into(),
    })
    .await;
    let tokened = LoopbackChannel::start(Behaviour::Token {
        dir: demo.served.dir.clone(),
        token: token_secret.into(),
    })
    .await;
    let basic_url = format!("http://reader:{password}@{}/", basic.url.authority());
    let token_url = format!("{}t/{token_secret}/", tokened.url);
    let server = server_with(
        vec![
            channel("private", &basic_url),
            channel("tokened", &token_url),
        ],
        |_| {},
    )
    .await;
    let token = team(&server, None).await;
    let cookie = ui_session(&server, &token).await;
    let leaks = |text: &str| {
        text.contains(password)
            || text.contains(token_secret)
            || text.contains("pw-SECRET")
            || text.contains("tk-SECRET")
    };

    for name in ["private", "tokened"] {
        let spec = demo_spec_yaml(name);
        let (submitted, build) = build_as(&server, &token, name, &spec).await;
        assert_eq!(build["status"], "succeeded", "{build:#}");
        let id = build["id"].as_str().expect("an id");
        let mut seen = vec![
            submitted.to_string(),
            build.to_string(),
            build_log(&server, &build).await,
        ];
        for format in ["conda-lock", "pixi", "explicit&platform=linux-64"] {
            let response = server
                .get(&format!(
                    "/api/v1/namespaces/team/environments/{name}/lockfile?format={format}"
                ))
                .await;
            assert_eq!(response.status(), StatusCode::OK, "{format}");
            let text = response.text().await.expect("a lockfile");
            let public = if name == "private" {
                basic.url.to_string()
            } else {
                tokened.url.to_string()
            };
            assert!(
                text.contains(&public),
                "{format} names the credential-free channel: {text}"
            );
            seen.push(text);
        }
        seen.push(
            server
                .get_json(&format!("/api/v1/namespaces/team/environments/{name}"))
                .await
                .1
                .to_string(),
        );
        seen.push(ui_page(&server, &cookie, &format!("/ui/builds/{id}")).await);
        seen.push(ui_page(&server, &cookie, &format!("/ui/builds/{id}/log")).await);
        let response = send_as(
            &server,
            &token,
            Method::POST,
            "/api/v1/namespaces/team/solve?format=pixi",
            &spec,
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        seen.push(response.text().await.expect("a lock"));
        for text in &seen {
            assert!(!leaks(text), "a channel secret leaked: {text}");
        }
    }
    // Problem details list the allowed channels: without their secrets.
    let response = send_as(
        &server,
        &token,
        Method::PUT,
        "/api/v1/namespaces/team/environments/x",
        "channels: [nope]\ndependencies: [python]\n",
    )
    .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("private ("),
        "{problem}"
    );
    assert!(!leaks(&problem.to_string()), "{problem}");
    let openapi = server
        .get("/api/v1/openapi.json")
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(!leaks(&openapi));

    // The worker still authenticated every request, packages included.
    let basic_requests = basic.requests();
    assert!(
        basic_requests
            .iter()
            .any(|request| request.contains(".conda") || request.contains(".tar.bz2")),
        "{basic_requests:?}"
    );
    assert!(
        basic_requests
            .iter()
            .all(|request| request.ends_with("auth=true")),
        "{basic_requests:?}"
    );
    // The same archives were in the package cache by then: the token
    // channel served repodata only, each request under its token.
    let token_requests = tokened.requests();
    assert!(!token_requests.is_empty());
    assert!(
        token_requests
            .iter()
            .all(|request| request.contains(&format!(" /t/{token_secret}/"))),
        "{token_requests:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wait_on_a_channel_has_a_limit() {
    let demo = DemoChannel::start().await;
    let hanging = LoopbackChannel::start(Behaviour::Hang).await;
    let dripping = LoopbackChannel::start(Behaviour::Drip {
        dir: demo.served.dir.clone(),
    })
    .await;
    let server = server_with(
        vec![
            channel("hanging", hanging.url.as_str()),
            channel("dripping", dripping.url.as_str()),
        ],
        |config| {
            config.limits.build = Duration::from_secs(3);
            config.limits.solve_request = Duration::from_secs(2);
        },
    )
    .await;
    let token = team(&server, None).await;
    for name in ["hanging", "dripping"] {
        let started = Instant::now();
        let spec = format!("channels: [{name}]\ndependencies: [python]\nplatforms: [linux-64]\n");
        let (_, build) = build_as(&server, &token, name, &spec).await;
        assert_eq!(build["status"], "failed", "{build:#}");
        assert_eq!(
            build["error"], "the build exceeded its limit of 3 s while solving",
            "{build:#}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: {:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let response = send_as(
            &server,
            &token,
            Method::POST,
            "/api/v1/namespaces/team/solve",
            &spec,
        )
        .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["type"], "/problems/solve-timeout", "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("longer than 2 s"),
            "{problem}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    assert_eq!(prefixes(&server), Vec::<String>::new());
    let stopping = Instant::now();
    server.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(60),
        "{:?}",
        stopping.elapsed()
    );

    // Without a build limit in reach, the read limit names the channel and path.
    let server = server_with(vec![channel("hanging", hanging.url.as_str())], |config| {
        config.limits.network.read_timeout = Duration::from_secs(1);
        config.limits.network.transient_retry = Duration::ZERO;
    })
    .await;
    let token = team(&server, None).await;
    let spec = "channels: [hanging]\ndependencies: [python]\nplatforms: [linux-64]\n";
    let (_, build) = build_as(&server, &token, "hanging", spec).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("channel 'hanging': fetching '")
            && error.contains("got no answer within 1 s"),
        "{error}"
    );
    server.stop().await;
}

/// Item 7: repodata is bounded too. A channel whose repodata is over the
/// configured limit fails the build with a message naming the channel, the
/// file and the limit, and nothing is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repodata_over_its_limit_fails_the_build_naming_the_limit() {
    let demo = DemoChannel::start().await;
    let server = server_with(vec![demo.allowed_as("demo")], |config| {
        config.limits.network.max_repodata_bytes = 512;
    })
    .await;
    let token = team(&server, None).await;
    let (_, build) = build_as(
        &server,
        &token,
        "big",
        &envstore_tests::demo_spec_yaml("demo"),
    )
    .await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(error.contains("channel 'demo'"), "{error}");
    assert!(error.contains("repodata"), "{error}");
    assert!(
        error.contains("larger than the repodata limit of 512 bytes"),
        "{error}"
    );
    assert!(
        prefixes(&server).is_empty(),
        "nothing built: {:?}",
        prefixes(&server)
    );
    server.stop().await;
}

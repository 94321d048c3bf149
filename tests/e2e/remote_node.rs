//! A node with only the server's URL and a token (no database URL, no store
//! credentials, no shared folder): `envstore materialize` and `envstore
//! kernels sync`, the real binary, get the prefix over HTTP. And the route
//! they download it from: ranges, conditional requests, caching, access.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use envstore_tests::{Backend, DemoChannel, TestServer, demo_spec_yaml, envstore_binary};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

/// A server that publishes packed prefixes on either backend (on a local
/// folder it does not by default).
async fn publishing_server(channel: &DemoChannel) -> TestServer {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        |config| {
            config.publish_packed_prefixes = true;
        },
    )
    .await
}

/// Builds the demo environment (python and ipykernel) as `namespace/name`.
async fn build(server: &TestServer, namespace: &str, name: &str) -> Value {
    assert_eq!(
        server.create_namespace(namespace).await.status(),
        StatusCode::CREATED
    );
    let id = server
        .submit_yaml(namespace, name, &demo_spec_yaml("demo"))
        .await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    build
}

/// A token of `subject`, a viewer of `namespace`.
async fn viewer_token(server: &TestServer, subject: &str, namespace: &str) -> String {
    let response = server
        .admin_json(
            Method::PUT,
            &format!("/api/v1/namespaces/{namespace}/members/{subject}"),
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert!(response.status().is_success());
    let created: Value = server
        .admin_json(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "node", "subject": subject })),
        )
        .await
        .json()
        .await
        .unwrap();
    created["token"].as_str().unwrap().to_owned()
}

/// Runs the real binary in `cwd` with nothing in its environment but the
/// server's URL and `token`: no database, no store, no `AWS_*`.
async fn remote(server: &TestServer, token: &str, cwd: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(envstore_binary().unwrap())
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("ENVSTORE_URL", &server.base)
        .env("ENVSTORE_TOKEN", token)
        .output()
        .await
        .unwrap()
}

fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every entry of a prefix but its completion marker (each side writes its
/// own), by relative path: a file's size and bytes' hash, a link's target,
/// or a folder.
fn entries(prefix: &Path) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![prefix.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in fs_err::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(prefix).unwrap().to_owned();
            if relative.starts_with("conda-meta/envstore")
                || relative == Path::new("conda-meta/envstore-complete.json")
            {
                continue;
            }
            let meta = fs_err::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link to {}", fs_err::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                pending.push(path);
                "folder".to_owned()
            } else {
                format!(
                    "{} bytes {}",
                    meta.len(),
                    sha256_hex(&fs_err::read(&path).unwrap())
                )
            };
            found.insert(relative, what);
        }
    }
    found
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_only_url_and_token_materialises_prefixes_and_syncs_kernels() {
    let channel = DemoChannel::start().await;
    let server = publishing_server(&channel).await;
    let built = build(&server, "teach", "analysis").await;
    let lock_hash = built["lock_hash"].as_str().unwrap().to_owned();
    let token = viewer_token(&server, "tom", "teach").await;
    let on_server = fs_err::canonicalize(server.environment_link("teach", "analysis")).unwrap();

    // `envstore materialize` in a fresh folder: ./envstore-data by default.
    let node = tempfile::tempdir().unwrap();
    let node_dir = fs_err::canonicalize(node.path()).unwrap();
    let output = remote(
        &server,
        &token,
        &node_dir,
        &["materialize", "teach/analysis"],
    )
    .await;
    let stdout = succeeded(&output);
    let prefix = node_dir
        .join("envstore-data/prefixes")
        .join(&lock_hash[..16]);
    assert_eq!(stdout.trim(), prefix.display().to_string());
    assert!(prefix.join("conda-meta/envstore").is_file(), "complete");
    assert!(prefix.join("conda-meta/history").is_file());
    assert_eq!(
        entries(&prefix),
        entries(&on_server),
        "the prefix is the server's, whole"
    );
    let link = node_dir.join("envstore-data/envs/teach/analysis");
    assert_eq!(fs_err::canonicalize(&link).unwrap(), prefix);
    // Nothing half-done beside it.
    let names: Vec<_> = fs_err::read_dir(node_dir.join("envstore-data/prefixes"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [lock_hash[..16].to_owned()], "{names:?}");
    if envstore_fixtures::real_cpython_available() {
        let ran = std::process::Command::new(link.join("bin/python"))
            .args(["-c", "import sys, json; print(sys.prefix)"])
            .env_clear()
            .output()
            .unwrap();
        let printed = succeeded(&ran);
        assert!(
            Path::new(printed.trim()).starts_with(&node_dir),
            "python runs from the node's copy: {printed}"
        );
    }
    // Again: already there, nothing downloaded.
    let again = succeeded(
        &remote(
            &server,
            &token,
            &node_dir,
            &["materialize", "teach/analysis"],
        )
        .await,
    );
    assert_eq!(again.trim(), prefix.display().to_string());

    // `envstore kernels sync` on another node, into its own data folder.
    let other = tempfile::tempdir().unwrap();
    let other_dir = fs_err::canonicalize(other.path()).unwrap();
    let jupyter = other_dir.join("jupyter");
    let root = other_dir.join("data");
    let args = [
        "kernels",
        "sync",
        "--dir",
        jupyter.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ];
    let stdout = succeeded(&remote(&server, &token, &other_dir, &args).await);
    let id = envstore_api::kernel_id("teach", "analysis");
    assert!(
        stdout.contains("materialised teach/analysis at")
            && stdout.contains(&format!("added {id}")),
        "{stdout}"
    );
    let spec: Value = serde_json::from_slice(
        &fs_err::read(jupyter.join("kernels").join(&id).join("kernel.json")).unwrap(),
    )
    .unwrap();
    let python = root.join("envs/teach/analysis/bin/python");
    assert_eq!(spec["argv"][0], python.display().to_string());
    assert_eq!(
        spec["metadata"]["envstore"]["lock_hash"],
        lock_hash.as_str()
    );
    assert!(python.is_file(), "the kernel's python is on this node");
    assert_eq!(
        entries(&root.join("prefixes").join(&lock_hash[..16])),
        entries(&on_server)
    );

    // A second sync changes nothing.
    let stdout = succeeded(&remote(&server, &token, &other_dir, &args).await);
    assert!(stdout.is_empty(), "{stdout}");

    // A token that may not see the environment gets nothing, and leaves nothing.
    assert_eq!(
        server.create_namespace("other-team").await.status(),
        StatusCode::CREATED
    );
    let outsider = viewer_token(&server, "oscar", "other-team").await;
    let stranger = tempfile::tempdir().unwrap();
    let output = remote(
        &server,
        &outsider,
        stranger.path(),
        &["materialize", "teach/analysis"],
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("404"), "{stderr}");
    assert!(!stranger.path().join("envstore-data/prefixes").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packed_prefix_is_served_in_ranges_to_those_who_may_see_it() {
    let channel = DemoChannel::start().await;
    let server = publishing_server(&channel).await;
    let built = build(&server, "teach", "analysis").await;
    let lock_hash = built["lock_hash"].as_str().unwrap().to_owned();
    let vera = viewer_token(&server, "vera", "teach").await;
    assert_eq!(
        server.create_namespace("other-team").await.status(),
        StatusCode::CREATED
    );
    let oscar = viewer_token(&server, "oscar", "other-team").await;
    let path = format!("/api/v1/locks/{lock_hash}/prefix.tar.zst");
    let get = |token: Option<&str>, headers: &[(header::HeaderName, &str)]| {
        let mut request = server.client.get(server.url(&path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(name.clone(), *value);
        }
        async move { request.send().await.unwrap() }
    };
    let text = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };

    // The whole archive, and what a node needs to check and place it.
    let response = get(Some(&vera), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let sha256 = text(&response, "x-envstore-prefix-sha256");
    let etag = text(&response, "etag");
    assert_eq!(etag, format!("\"{sha256}\""));
    assert_eq!(text(&response, "accept-ranges"), "bytes");
    assert!(
        text(&response, "cache-control").starts_with("private"),
        "{}",
        text(&response, "cache-control")
    );
    assert_eq!(text(&response, "x-envstore-lock-hash"), lock_hash);
    assert_eq!(
        text(&response, "x-envstore-prefix-path"),
        fs_err::canonicalize(server.environment_link("teach", "analysis"))
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(text(&response, "content-type"), "application/zstd");
    let length: usize = text(&response, "content-length").parse().unwrap();
    let whole = response.bytes().await.unwrap();
    assert_eq!(whole.len(), length);
    assert!(whole.len() > 1000, "{} bytes", whole.len());
    assert_eq!(
        sha256_hex(&whole),
        sha256,
        "the body is the published archive"
    );

    // Single ranges: exactly the slice of the whole.
    let size = whole.len();
    for (range, slice, content_range) in [
        ("bytes=10-99", 10..100, format!("bytes 10-99/{size}")),
        (
            "bytes=-100",
            size - 100..size,
            format!("bytes {}-{}/{size}", size - 100, size - 1),
        ),
        (
            &*format!("bytes={}-", size - 7),
            size - 7..size,
            format!("bytes {}-{}/{size}", size - 7, size - 1),
        ),
        (
            &*format!("bytes=0-{}", size + 1000),
            0..size,
            format!("bytes 0-{}/{size}", size - 1),
        ),
    ] {
        let response = get(Some(&vera), &[(header::RANGE, range)]).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(text(&response, "content-range"), content_range, "{range}");
        assert_eq!(response.bytes().await.unwrap(), whole[slice], "{range}");
    }
    // A range of another archive (If-Range names an older tag): the whole.
    let response = get(
        Some(&vera),
        &[
            (header::RANGE, "bytes=0-9"),
            (header::IF_RANGE, "\"older\""),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), size);
    // Past the end: 416, with the size.
    let past = format!("bytes={size}-");
    let response = get(Some(&vera), &[(header::RANGE, &past)]).await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(text(&response, "content-range"), format!("bytes */{size}"));

    // The tag: 304 and no body.
    let response = get(Some(&vera), &[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(text(&response, "etag"), etag);
    assert!(response.bytes().await.unwrap().is_empty());

    // Who may not see it: 401 without a token, 404 for another namespace's
    // member (as for a lock that does not exist).
    assert_eq!(get(None, &[]).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some(&oscar), &[]).await.status(), StatusCode::NOT_FOUND);
    let nowhere = server
        .get(&format!("/api/v1/locks/{}/prefix.tar.zst", "0".repeat(64)))
        .await;
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);

    // A public namespace's prefix needs no token, and may be cached by anyone.
    let visibility = |public: bool| {
        server.admin_json(
            Method::PUT,
            "/api/v1/namespaces/teach/visibility",
            Some(json!({ "public_read": public })),
        )
    };
    assert_eq!(visibility(true).await.status(), StatusCode::OK);
    let response = get(None, &[(header::RANGE, "bytes=0-3")]).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert!(text(&response, "cache-control").starts_with("public"));
    assert_eq!(response.bytes().await.unwrap(), whole[..4]);
    assert_eq!(visibility(false).await.status(), StatusCode::OK);
    let response = get(Some(&vera), &[(header::RANGE, "bytes=0-3")]).await;
    assert!(text(&response, "cache-control").starts_with("private"));
    // Read, so no answer is left open when the server stops.
    assert_eq!(response.bytes().await.unwrap().len(), 4);
    assert_eq!(get(None, &[]).await.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

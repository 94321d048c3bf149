//! The hostile channel through the whole build path: every attack fails its
//! build with a message, and nothing is written outside the prefix.

use std::path::{Path, PathBuf};

use envstore_fixtures::{ABSOLUTE_ENTRY, HostileKind, SYMLINK_ABSOLUTE, SYMLINK_RELATIVE};
use envstore_tests::TestServer;
use reqwest::StatusCode;

/// Every file under `root`, except the folders a build may write to.
fn files_outside_builds(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if ["cache", "artifacts", "envstore.db"].iter().any(|allowed| relative.starts_with(allowed)) {
                continue;
            }
            if entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) && !relative.starts_with("prefixes/") {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_package_fails_its_build_and_touches_nothing_outside() {
    let channel_dir = tempfile::tempdir().unwrap();
    envstore_fixtures::write_hostile_channel(channel_dir.path()).unwrap();
    let served = envstore_fixtures::serve_channel(channel_dir.path().to_path_buf()).await.unwrap();
    let server = TestServer::start(vec![envstore_core::NamedChannel {
        name: "hostile".into(),
        url: served.url.clone(),
    }])
    .await;
    assert_eq!(server.create_namespace("team").await.status(), StatusCode::CREATED);
    let _ = std::fs::remove_file(ABSOLUTE_ENTRY);
    let before = files_outside_builds(&server.data_dir);

    let mut outcomes = Vec::new();
    for kind in HostileKind::ALL {
        let name = kind.package_name();
        let spec = format!("channels: [hostile]\ndependencies: [{name}]\nplatforms: [linux-64]\n");
        let build_id = server.submit_yaml("team", name, &spec).await;
        let build = server.wait_for_build(&build_id).await;
        let error = build["error"].as_str().unwrap_or_default().to_owned();
        outcomes.push(format!("{name}: {} — {}", build["status"], error.replace('\n', " | ")));
        assert_eq!(build["status"], "failed", "{name} ({}) must fail: {build:#}", kind.defect());
        let reason = match kind {
            HostileKind::DotDot | HostileKind::AbsolutePath => "which is not a plain relative path inside the prefix",
            HostileKind::SymlinkOutside => "outside the prefix",
            HostileKind::Sha256Mismatch => "does not have the sha256 paths.json gives it",
            HostileKind::Truncated => "failed to fetch package 'evil-truncated",
            HostileKind::IndexMismatch => "its index.json describes totally-legit 6.6.6",
            HostileKind::RepodataSha256Mismatch => "hash mismatch",
        };
        assert!(error.contains(reason), "{name}: {error}");
    }
    println!("{}", outcomes.join("\n"));

    assert!(!Path::new(ABSOLUTE_ENTRY).exists(), "nothing written to {ABSOLUTE_ENTRY}");
    let after = files_outside_builds(&server.data_dir);
    assert_eq!(before, after, "nothing appeared outside the cache, the artifacts and the database");
    let prefixes: Vec<_> = std::fs::read_dir(server.data_dir.join("prefixes"))
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(prefixes.is_empty(), "no prefix of a failed build is left: {prefixes:?}");
    for (link, _) in [SYMLINK_RELATIVE, SYMLINK_ABSOLUTE] {
        let leftovers: Vec<_> = walkdir(&server.data_dir).into_iter().filter(|path| path.ends_with(link)).collect();
        for path in leftovers {
            assert!(
                !path.starts_with(server.data_dir.join("prefixes")),
                "an escaping link was linked into a prefix: {}",
                path.display()
            );
        }
    }
    let stray = walkdir(server.data_dir.parent().unwrap())
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|name| name == "envstore-evil-dotdot.txt"))
        .collect::<Vec<_>>();
    assert!(stray.is_empty(), "the `..` member escaped: {stray:?}");
    server.stop().await;
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_before_anything_is_queued() {
    let channel = envstore_tests::DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(server.create_namespace("team").await.status(), StatusCode::CREATED);
    let spec = "channels: [demo]\ndependencies: [python]\n";

    // Names that would escape, confuse or overflow a path.
    let long = "x".repeat(65);
    for (name, status) in [
        ("..", StatusCode::NOT_FOUND),
        ("%2e%2e", StatusCode::NOT_FOUND),
        ("a%2fb", StatusCode::UNPROCESSABLE_ENTITY),
        ("bell%07", StatusCode::UNPROCESSABLE_ENTITY),
        (long.as_str(), StatusCode::UNPROCESSABLE_ENTITY),
        ("-dash", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let response = server.submit("team", name, "application/yaml", spec).await;
        assert_eq!(response.status(), status, "environment name {name}");
    }
    for name in ["../etc", "a/b", "ctl\u{7}", long.as_str(), "api"] {
        let response = server.create_namespace(name).await;
        envstore_tests::expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }

    // A YAML bomb: aliases that would expand far past the size limit.
    let mut bomb = String::from("a: &a [\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]\n");
    for level in 0..9 {
        let previous = if level == 0 { "a".to_owned() } else { format!("l{}", level - 1) };
        bomb.push_str(&format!("l{level}: &l{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"));
    }
    bomb.push_str("dependencies: *l8\n");
    let response = server.submit("team", "bomb", "application/yaml", &bomb).await;
    let status = response.status();
    assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY, "{status}");

    // Bodies over the size limit are refused without being read whole.
    let huge = format!("dependencies: [{}]\n", "python, ".repeat(60_000));
    let response = server.submit("team", "huge", "application/yaml", &huge).await;
    envstore_tests::expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Nothing of all this reached the queue.
    let (_, environments) = server.get_json("/api/v1/namespaces/team/environments").await;
    assert_eq!(environments["environments"].as_array().unwrap().len(), 0, "{environments}");
    let namespaces = server.get_json("/api/v1/namespaces").await.1;
    assert_eq!(namespaces["namespaces"].as_array().unwrap().len(), 1, "{namespaces}");
    server.stop().await;
}

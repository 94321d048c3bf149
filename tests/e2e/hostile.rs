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

//! The hostile channel through the whole build path, driven through the
//! HTTP API by a developer of one namespace: every attack fails its build
//! with a message naming the defect, and nothing changes outside that
//! build's own prefix: not another namespace's prefix, not the data folder,
//! not a canary folder outside it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use envstore_fixtures::{
    ABSOLUTE_ENTRY, HostileKind, HostileOptions, SYMLINK_ABSOLUTE, SYMLINK_RELATIVE,
};
use envstore_tests::{Backend, TestServer};
use reqwest::StatusCode;

/// Every entry under `root` with what it is: a file's mode and bytes, a
/// link's target, a folder's mode. Skips the relative paths `skip` starts.
fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in fs_err::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_owned();
            let shown = relative.to_string_lossy().into_owned();
            if skip.iter().any(|skipped| shown.starts_with(skipped)) {
                continue;
            }
            let meta = fs_err::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode();
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", fs_err::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                pending.push(path.clone());
                format!("dir {mode:o}")
            } else {
                format!("file {mode:o} {:?}", fs_err::read(&path).unwrap())
            };
            found.insert(relative, what);
        }
    }
    found
}

/// The folders a failed build may write to: the package cache, the logs in
/// the artifacts and the database.
const BUILD_SCRATCH: [&str; 3] = ["cache", "artifacts", "envstore.db"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_package_fails_its_build_and_touches_nothing_outside() {
    let outside = tempfile::tempdir().unwrap();
    let canary = fs_err::canonicalize(outside.path()).unwrap().join("canary");
    fs_err::create_dir_all(&canary).unwrap();
    let server_file = canary.join("admin-token");
    fs_err::write(&server_file, "test-admin-token-0123456789abcdef\n").unwrap();
    fs_err::write(canary.join("notes.txt"), "a file next to it\n").unwrap();
    let channel_dir = tempfile::tempdir().unwrap();
    let info = envstore_fixtures::write_hostile_channel_with(
        channel_dir.path(),
        &HostileOptions {
            server_file: server_file.clone(),
        },
    )
    .unwrap();
    let served = envstore_fixtures::serve_channel(channel_dir.path().to_path_buf())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let channels = vec![
        envstore_core::NamedChannel {
            name: "hostile".into(),
            url: served.url.clone(),
        },
        // The same channel over file://: the md5-only record must be checked there too.
        envstore_core::NamedChannel {
            name: "hostilefile".into(),
            url: info.url.clone(),
        },
    ];
    // Defaults, except a file limit the 3000-file inode bomb is over.
    let server = TestServer::start_configured(data, backend, channels, 2, |config| {
        config.package_limits.max_files = 1000;
    })
    .await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        server.create_namespace("other").await.status(),
        StatusCode::CREATED
    );
    let _ = fs_err::remove_file(ABSOLUTE_ENTRY);
    // The attacker: a developer of `team`, and of nothing else.
    let developer = envstore_tests::channels::developer_token(&server, "team", "mallory").await;

    // Another namespace's environment, built before the attacks.
    let spec = "channels: [hostile]\ndependencies: [evil-linkdir]\nplatforms: [linux-64]\n";
    let build = server
        .wait_for_build(&server.submit_yaml("other", "fine", spec).await)
        .await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let other_prefix = fs_err::canonicalize(server.environment_link("other", "fine")).unwrap();
    let before = (
        snapshot(&other_prefix, &[]),
        snapshot(&canary, &[]),
        snapshot(&server.data_dir, &BUILD_SCRATCH),
    );

    let mut outcomes = Vec::new();
    for kind in HostileKind::ALL
        .into_iter()
        .filter(|kind| *kind != HostileKind::Setuid)
    {
        let name = kind.package_name();
        let channel = if kind == HostileKind::Md5Only {
            "hostilefile"
        } else {
            "hostile"
        };
        let spec =
            format!("channels: [{channel}]\ndependencies: [{name}]\nplatforms: [linux-64]\n");
        let build_id = server.submit_yaml_as(&developer, "team", name, &spec).await;
        let build = server.wait_for_build(&build_id).await;
        let error = build["error"].as_str().unwrap_or_default().to_owned();
        outcomes.push(format!(
            "{name}: {} — {}",
            build["status"],
            error.replace('\n', " | ")
        ));
        assert_eq!(
            build["status"],
            "failed",
            "{name} ({}) must fail: {build:#}",
            kind.defect()
        );
        let reasons: &[&str] = match kind {
            HostileKind::DotDot | HostileKind::AbsolutePath => {
                &["which is not a plain relative path inside the prefix"]
            }
            HostileKind::SymlinkOutside => &["outside the prefix"],
            HostileKind::Sha256Mismatch => &["does not have the sha256 paths.json gives it"],
            HostileKind::Truncated => {
                &["refused package 'evil-truncated", "could not be extracted"]
            }
            HostileKind::IndexMismatch => &["its index.json describes totally-legit 6.6.6"],
            HostileKind::RepodataSha256Mismatch => &["its archive has sha256", "hash mismatch"],
            HostileKind::TypeMismatch => {
                &["'share/evil-type/data.txt' is a symlink, but paths.json declares it a file"]
            }
            HostileKind::UndeclaredLinkComponent => {
                &["passes through the symlink 'share/evil-undeclared/s'"]
            }
            HostileKind::ServerFile => &["outside the prefix", "etc/evil-server-file.conf"],
            HostileKind::DecompressionBomb => {
                &["decompression bomb", "limit of the compression ratio"]
            }
            HostileKind::InodeBomb => &["more than 1000 members, the limit of files per package"],
            HostileKind::Md5Only => &["its archive has md5", "hash mismatch"],
            HostileKind::CrossPackage => {
                &["passes through 'share/evil-shared/s', which package 'evil-linkdir"]
            }
            HostileKind::Setuid => unreachable!(),
        };
        for reason in reasons {
            assert!(error.contains(reason), "{name}: {error}");
        }
    }
    println!("{}", outcomes.join("\n"));

    assert!(
        !Path::new(ABSOLUTE_ENTRY).exists(),
        "nothing written to {ABSOLUTE_ENTRY}"
    );
    let after = (
        snapshot(&other_prefix, &[]),
        snapshot(&canary, &[]),
        snapshot(&server.data_dir, &BUILD_SCRATCH),
    );
    assert_eq!(
        before.0, after.0,
        "the other namespace's prefix is byte-identical"
    );
    assert_eq!(
        before.1, after.1,
        "the canary folder outside the data folder is byte-identical"
    );
    assert_eq!(
        before.2, after.2,
        "the data folder outside the cache, the artifacts and the database is byte-identical"
    );
    let prefixes: Vec<_> = fs_err::read_dir(server.data_dir.join("prefixes"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| fs_err::canonicalize(entry.path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        prefixes,
        vec![other_prefix.clone()],
        "no prefix of a failed build is left"
    );
    let canary_text = fs_err::read(&server_file).unwrap();
    for path in walkdir(&server.data_dir) {
        if fs_err::symlink_metadata(&path).is_ok_and(|meta| meta.is_file()) {
            assert_ne!(
                fs_err::read(&path).unwrap(),
                canary_text,
                "the server file was copied to {}",
                path.display()
            );
        }
    }
    for (link, _) in [SYMLINK_RELATIVE, SYMLINK_ABSOLUTE] {
        let leftovers: Vec<_> = walkdir(&server.data_dir)
            .into_iter()
            .filter(|path| path.ends_with(link))
            .collect();
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
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name == "envstore-evil-dotdot.txt")
        })
        .collect::<Vec<_>>();
    assert!(stray.is_empty(), "the `..` member escaped: {stray:?}");

    // Setuid and world-writable bits are dropped; the package installs.
    let spec = "channels: [hostile]\ndependencies: [evil-setuid]\nplatforms: [linux-64]\n";
    let build = server
        .wait_for_build(
            &server
                .submit_yaml_as(&developer, "team", "evil-setuid", spec)
                .await,
        )
        .await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let prefix = server.environment_link("team", "evil-setuid");
    let mode = |path: &str| {
        fs_err::metadata(prefix.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(envstore_fixtures::SETUID_FILE), 0o755);
    assert_eq!(mode(envstore_fixtures::WORLD_WRITABLE_FILE), 0o644);
    assert_eq!(snapshot(&other_prefix, &[]), before.0);
    assert_eq!(snapshot(&canary, &[]), before.1);
    server.stop().await;
}

/// Item 1: a package the repodata gateway put in the shared cache (a
/// `url=` match spec: the solve downloads and extracts it with rattler's
/// own code) is checked before anything of it is linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_the_gateway_put_in_the_cache_is_checked_before_it_is_linked() {
    let channel_dir = tempfile::tempdir().unwrap();
    envstore_fixtures::write_hostile_channel(channel_dir.path()).unwrap();
    let served = envstore_fixtures::serve_channel(channel_dir.path().to_path_buf())
        .await
        .unwrap();
    let server = TestServer::start(vec![envstore_core::NamedChannel {
        name: "hostile".into(),
        url: served.url.clone(),
    }])
    .await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let developer = envstore_tests::channels::developer_token(&server, "team", "mallory").await;
    // What the gateway or another process would leave: rattler's own
    // extraction of the archive, in the shared cache, before any build.
    let kind = HostileKind::TypeMismatch;
    let archive = channel_dir.path().join("noarch").join(kind.filename());
    let repodata =
        rattler_conda_types::RepoData::from_path(channel_dir.path().join("noarch/repodata.json"))
            .unwrap();
    let record = repodata
        .packages
        .iter()
        .find(|(file, _)| file.to_string() == kind.filename())
        .map(|(_, record)| record.clone())
        .unwrap();
    let cache = rattler_cache::package_cache::PackageCache::new(
        server
            .data_dir
            .join("cache")
            .join(rattler_cache::PACKAGE_CACHE_DIR),
    );
    let entry = cache
        .get_or_fetch_from_path(&archive, Some(&record), None)
        .await
        .unwrap()
        .path()
        .to_owned();
    assert!(
        fs_err::symlink_metadata(entry.join(envstore_fixtures::TYPE_MISMATCH_FILE))
            .unwrap()
            .is_symlink()
    );

    let spec = format!(
        "channels: [hostile]\ndependencies: [{}]\nplatforms: [linux-64]\n",
        kind.package_name()
    );
    let build = server
        .wait_for_build(
            &server
                .submit_yaml_as(&developer, "team", "cached", &spec)
                .await,
        )
        .await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("is a symlink, but paths.json declares it a file"),
        "{error}"
    );
    assert!(
        !entry.exists(),
        "the unchecked entry was removed from the cache"
    );
    server.stop().await;
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in fs_err::read_dir(&folder).into_iter().flatten().flatten() {
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
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
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
    let mut bomb = String::from(
        "a: &a [\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]\n",
    );
    for level in 0..9 {
        let previous = if level == 0 {
            "a".to_owned()
        } else {
            format!("l{}", level - 1)
        };
        bomb.push_str(&format!("l{level}: &l{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"));
    }
    bomb.push_str("dependencies: *l8\n");
    let response = server
        .submit("team", "bomb", "application/yaml", &bomb)
        .await;
    let status = response.status();
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{status}"
    );

    // Bodies over the size limit are refused without being read whole.
    let huge = format!("dependencies: [{}]\n", "python, ".repeat(60_000));
    let response = server
        .submit("team", "huge", "application/yaml", &huge)
        .await;
    envstore_tests::expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Nothing of all this reached the queue.
    let (_, environments) = server
        .get_json("/api/v1/namespaces/team/environments")
        .await;
    assert_eq!(
        environments["environments"].as_array().unwrap().len(),
        0,
        "{environments}"
    );
    let namespaces = server.get_json("/api/v1/namespaces").await.1;
    assert_eq!(
        namespaces["namespaces"].as_array().unwrap().len(),
        1,
        "{namespaces}"
    );
    server.stop().await;
}

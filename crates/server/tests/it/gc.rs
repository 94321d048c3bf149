//! `envstore gc` on a server's data: a dry run removes nothing, a real run
//! keeps the newest builds' prefixes and every lockfile and log, a collected
//! build made current again is rebuilt from its lock, and deleted
//! environments are cleaned.

use envstore_tests::{DemoChannel, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Runs `envstore gc` against the server's database, store and data folder.
async fn gc(server: &TestServer, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_envstore"))
        .arg("gc")
        .args(args)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .arg("--database")
        .arg(&server.backend.database)
        .arg("--store")
        .arg(server.backend.store.as_str())
        .output()
        .await
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Builds `team/name`; `extra` is appended to the spec (dependencies are
/// one python, and the demo channel has two, so variables tell the rest apart).
async fn build(server: &TestServer, name: &str, python: &str, extra: &str) -> Value {
    let spec = format!(
        "channels: [demo]\ndependencies: [python {python}]\nplatforms: [linux-64]\n{extra}"
    );
    let id = server.submit_yaml("team", name, &spec).await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    build
}

fn prefix_of(server: &TestServer, build: &Value) -> std::path::PathBuf {
    server
        .data_dir
        .join("prefixes")
        .join(&build["lock_hash"].as_str().unwrap()[..16])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_the_newest_prefixes_and_rebuilds_a_collected_one_on_demand() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let oldest = build(&server, "env", "3.10.*", "").await;
    let middle = build(&server, "env", "3.11.*", "").await;
    let newest = build(&server, "env", "3.11.*", "variables: {STAGE: newest}\n").await;
    let doomed = build(&server, "doomed", "3.10.*", "variables: {STAGE: doomed}\n").await;
    for build in [&oldest, &middle, &newest, &doomed] {
        assert!(
            prefix_of(&server, build).join("bin/python").exists(),
            "{build}"
        );
    }
    let response = server
        .client
        .delete(server.url("/api/v1/namespaces/team/environments/doomed"))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Keep the two newest builds: the oldest releases its prefix.
    let dry = gc(&server, &["--keep-builds", "2", "--dry-run"]).await;
    assert!(dry.starts_with("dry run: nothing is removed"), "{dry}");
    assert!(
        dry.contains("would release the prefixes of 1 builds"),
        "{dry}"
    );
    assert!(dry.contains(oldest["id"].as_str().unwrap()), "{dry}");
    assert!(
        dry.contains("would remove 2 prefixes"),
        "the oldest and the deleted environment's: {dry}"
    );
    assert!(
        dry.contains("would clean deleted environments: 1 links, the logs and records of 1 builds"),
        "{dry}"
    );
    assert!(dry.contains("would free: "), "{dry}");
    for build in [&oldest, &doomed] {
        assert!(
            prefix_of(&server, build).exists(),
            "a dry run removes nothing"
        );
    }
    assert!(fs_err::symlink_metadata(server.environment_link("team", "doomed")).is_ok());
    // The deleted environment's build log, in a local store.
    let doomed_log = (server.backend.store.scheme() == "file").then(|| {
        server
            .backend
            .store
            .to_file_path()
            .unwrap()
            .join(format!("logs/{}.log", doomed["id"].as_str().unwrap()))
    });
    if let Some(log) = &doomed_log {
        assert!(log.is_file(), "{}", log.display());
    }

    let done = gc(&server, &["--keep-builds", "2"]).await;
    assert!(
        done.contains("remove 2 prefixes") && !done.contains("would"),
        "{done}"
    );
    assert!(!prefix_of(&server, &oldest).exists(), "{done}");
    assert!(!prefix_of(&server, &doomed).exists(), "{done}");
    assert!(
        prefix_of(&server, &middle).join("bin/python").exists(),
        "kept: one of the two newest"
    );
    assert!(
        prefix_of(&server, &newest).join("bin/python").exists(),
        "kept: the current build"
    );
    assert!(
        fs_err::symlink_metadata(server.environment_link("team", "doomed")).is_err(),
        "the deleted environment's link is gone"
    );
    if let Some(log) = &doomed_log {
        assert!(
            !log.exists(),
            "the deleted build's log is gone: {}",
            log.display()
        );
    }
    // The collected build keeps its lockfiles and log.
    let oldest_id = oldest["id"].as_str().unwrap();
    let lock = oldest["lock_hash"].as_str().unwrap();
    assert_eq!(
        server
            .get(&format!("/api/v1/locks/{lock}/conda-lock.yml"))
            .await
            .status(),
        StatusCode::OK
    );
    let log = server.get(&format!("/api/v1/builds/{oldest_id}/log")).await;
    assert_eq!(log.status(), StatusCode::OK);
    let (_, collected) = server
        .get_json(&format!("/api/v1/builds/{oldest_id}"))
        .await;
    assert!(collected["prefix_collected_at"].is_i64(), "{collected:#}");

    // Nothing more to collect the second time.
    let again = gc(&server, &["--keep-builds", "2"]).await;
    assert!(
        again.contains("release the prefixes of 0 builds") && again.contains("remove 0 prefixes"),
        "{again}"
    );

    // Rolling back to the collected build rebuilds its prefix from its lock;
    // meanwhile the environment stays on its current build and prefix.
    let response = server
        .admin_json(
            Method::PUT,
            "/api/v1/namespaces/team/environments/env/current",
            Some(json!({ "build_id": oldest_id })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let rollback: Value = response.json().await.unwrap();
    assert_eq!(rollback["current_build_id"], newest["id"], "{rollback:#}");
    let rebuild_id = rollback["rebuild"]["build_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{rollback:#}"));
    let rebuilt = server.wait_for_build(rebuild_id).await;
    assert_eq!(rebuilt["status"], "succeeded", "{rebuilt:#}");
    assert_eq!(rebuilt["lock_hash"], oldest["lock_hash"]);
    let phases: Vec<&str> = rebuilt["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert!(
        !phases.contains(&"solving"),
        "rebuilt from the lock, not solved: {phases:?}"
    );
    assert!(prefix_of(&server, &oldest).join("bin/python").exists());
    let link = fs_err::read_link(server.environment_link("team", "env")).unwrap();
    assert_eq!(
        link,
        prefix_of(&server, &oldest),
        "the environment points at the rebuilt prefix"
    );
    let (_, environment) = server
        .get_json("/api/v1/namespaces/team/environments/env")
        .await;
    assert_eq!(
        environment["current_build"]["id"], rebuilt["id"],
        "the rebuild is current: {environment:#}"
    );

    // Leftovers of processes that died: a half-built prefix (no marker) of
    // a build still referred to, untouched for longer than a lease; a packed
    // prefix and a rattler extraction folder nobody holds, hours old.
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let age = |path: &std::path::Path| {
        fs_err::File::open(path)
            .unwrap()
            .file()
            .set_modified(two_hours_ago)
            .unwrap()
    };
    let half_built = prefix_of(&server, &newest);
    fs_err::remove_file(half_built.join(envstore_link::MARKER_FILE)).unwrap();
    age(&half_built);
    let pack = server
        .data_dir
        .join("prefixes/.envstore-pack-AbC123.tar.zst");
    fs_err::write(&pack, b"half a packed prefix").unwrap();
    age(&pack);
    let extraction = server.data_dir.join("cache/pkgs/.libzlib-9.9.9-h0_0XyZ789");
    fs_err::create_dir_all(&extraction).unwrap();
    fs_err::write(extraction.join("part"), b"half an archive").unwrap();
    age(&extraction);
    let fresh_pack = server
        .data_dir
        .join("prefixes/.envstore-pack-being-written.tar.zst");
    fs_err::write(&fresh_pack, b"being written").unwrap();

    let dry = gc(&server, &["--keep-builds", "10", "--dry-run"]).await;
    assert!(
        dry.contains("would remove 2 temporary files and folders that stopped processes left"),
        "{dry}"
    );
    assert!(
        dry.contains(&format!("  {} ", pack.display()))
            && dry.contains(&format!("  {} ", extraction.display())),
        "{dry}"
    );
    assert!(
        dry.contains(&format!("  {} ", half_built.display()))
            && dry.contains("(unfinished leftover)"),
        "{dry}"
    );
    assert!(dry.contains("would remove 0 package cache entries no complete prefix uses, oldest used first, to bring the cache under its 20.0 GiB budget"), "{dry}");
    assert!(
        pack.exists() && extraction.exists() && half_built.exists(),
        "a dry run removes nothing"
    );
    let done = gc(&server, &["--keep-builds", "10"]).await;
    assert!(
        done.contains("remove 2 temporary files and folders") && !done.contains("would"),
        "{done}"
    );
    assert!(
        !pack.exists() && !extraction.exists() && !half_built.exists(),
        "{done}"
    );
    assert!(fresh_pack.exists(), "a pack file of the last hour stays");
    assert!(
        prefix_of(&server, &oldest).join("bin/python").exists(),
        "the complete current prefix stays"
    );
    // Over a tiny budget, package cache entries no complete prefix uses go;
    // the current prefix's stay.
    let tiny = gc(&server, &["--keep-builds", "10", "--cache-budget", "1KiB"]).await;
    assert!(
        tiny.contains("to bring the cache under its 1.0 KiB budget"),
        "{tiny}"
    );
    assert!(prefix_of(&server, &oldest).join("bin/python").exists());
    server.stop().await;
}

//! A process killed while it downloads or links leaves nothing that stops
//! the next build: its cache entry locks vanish with it, and its half-built
//! prefix (no marker) is removed before the prefix is built again.
//!
//! Needs the `test-hooks` feature (`cargo test -p envstore-link --features
//! test-hooks --test it killed::`): the child stops at the hook and is killed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use envstore_core::ContentHash;
use envstore_link::{LockMode, PrefixBuilder, ProgressSink, try_lock_entry};
use rattler::package_cache::PackageCache;
use rattler_conda_types::{Channel, RepoData, RepoDataRecord, Subdir};
use tokio::io::AsyncBufReadExt;

/// Set in a child: `download` or `link`, where it stops.
const CHILD: &str = "ENVSTORE_KILLED_CHILD";
const CHANNEL_DIR: &str = "ENVSTORE_KILLED_CHANNEL_DIR";
const DATA: &str = "ENVSTORE_KILLED_DATA";

struct Stderr;

impl ProgressSink for Stderr {
    fn line(&self, line: String) {
        eprintln!("{line}");
    }
}

/// The demo channel's linux-64 solve (10 packages), over `file://`.
fn records(channel_dir: &Path) -> Vec<RepoDataRecord> {
    let url = url::Url::from_directory_path(channel_dir).unwrap();
    let channel = Channel::from_url(url);
    let wanted = envstore_fixtures::demo_expect::expected_linux64_filenames();
    let mut all = Vec::new();
    for subdir in ["linux-64", "noarch"] {
        let repodata = RepoData::from_path(channel_dir.join(subdir).join("repodata.json")).unwrap();
        all.extend(repodata.into_repo_data_records(&channel));
    }
    all.retain(|record| wanted.contains(&record.identifier.to_file_name()));
    assert_eq!(all.len(), wanted.len());
    all
}

fn builder(data: &Path) -> PrefixBuilder {
    PrefixBuilder::new(
        data.join("prefixes"),
        PackageCache::new(data.join("cache/pkgs")),
    )
}

fn lock_hash() -> ContentHash {
    ContentHash::of(b"a build that was killed")
}

#[tokio::test]
async fn child_stops_at_its_hook() {
    let Ok(hook) = std::env::var(CHILD) else {
        return;
    };
    let data = PathBuf::from(std::env::var(DATA).unwrap());
    let records = records(Path::new(&std::env::var(CHANNEL_DIR).unwrap()));
    let builder = builder(&data)
        .with_pause_after_first_download(hook == "download")
        .with_pause_after_first_link(hook == "link");
    let _ = builder
        .build(
            &lock_hash(),
            Subdir::Linux64,
            &records,
            &Default::default(),
            Arc::new(Stderr),
            || {},
        )
        .await;
    panic!("the hook should have stopped the build");
}

/// Runs a child that stops at `hook`, kills it there (SIGKILL), and
/// returns the data folder it left.
async fn kill_at(hook: &str, root: &Path, channel_dir: &Path) -> PathBuf {
    let data = root.join(hook);
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "killed::child_stops_at_its_hook",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, hook)
        .env(CHANNEL_DIR, channel_dir)
        .env(DATA, &data)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let paused = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let paused = line.starts_with("paused for a fault test");
            seen.push(line);
            if paused {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(paused, Ok(true)),
        "the child never paused at {hook}: {seen:#?}"
    );
    child.kill().await.unwrap();
    data
}

#[tokio::test]
async fn a_build_killed_after_its_first_download_leaves_the_cache_usable() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fs_err::canonicalize(dir.path()).unwrap();
    let channel = envstore_fixtures::write_demo_channel(&root.join("demo"))
        .await
        .unwrap();
    let data = kill_at("download", &root, &channel.dir).await;
    let cache = data.join("cache/pkgs");
    let entries: Vec<PathBuf> = fs_err::read_dir(&cache)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.is_dir() && !path.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    assert!(
        !entries.is_empty(),
        "the first archive was extracted into the cache"
    );
    for entry in &entries {
        assert!(
            try_lock_entry(entry, LockMode::Exclusive)
                .unwrap()
                .is_some(),
            "the killed process's lock on {} is gone",
            entry.display()
        );
    }
    let records = records(&channel.dir);
    let report = builder(&data)
        .build(
            &lock_hash(),
            Subdir::Linux64,
            &records,
            &Default::default(),
            Arc::new(Stderr),
            || {},
        )
        .await
        .unwrap();
    assert!(envstore_link::is_complete(&report.path));
    assert!(
        report.downloaded < records.len(),
        "what the killed build fetched is reused: {report:?}"
    );
}

#[tokio::test]
async fn a_half_built_prefix_of_a_killed_build_is_removed_before_building() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fs_err::canonicalize(dir.path()).unwrap();
    let channel = envstore_fixtures::write_demo_channel(&root.join("demo"))
        .await
        .unwrap();
    let data = kill_at("link", &root, &channel.dir).await;
    let builder = builder(&data);
    let prefix = builder.prefix_path(&lock_hash());
    assert!(
        prefix.join("conda-meta").is_dir(),
        "the killed build linked a package"
    );
    assert!(
        builder.complete_marker(&lock_hash()).is_none(),
        "no marker: half-built"
    );
    fs_err::write(prefix.join("left-by-the-killed-build"), b"x").unwrap();
    let records = records(&channel.dir);
    let report = builder
        .build(
            &lock_hash(),
            Subdir::Linux64,
            &records,
            &Default::default(),
            Arc::new(Stderr),
            || {},
        )
        .await
        .unwrap();
    assert!(!report.reused);
    assert_eq!(report.linked, records.len());
    assert!(
        !prefix.join("left-by-the-killed-build").exists(),
        "the leftover was removed first"
    );
    assert_eq!(
        envstore_link::installed_packages(&prefix).unwrap().len(),
        records.len()
    );
    assert!(builder.complete_marker(&lock_hash()).is_some());
}

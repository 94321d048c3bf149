//! Several processes building prefixes that share packages from one package
//! cache at once, as `envstore worker` processes on one data folder do: every
//! build succeeds and every prefix holds exactly its packages.
//!
//! The test spawns its own test binary several times; an environment
//! variable tells a child what to build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envstore_core::ContentHash;
use envstore_link::{PrefixBuilder, ProgressSink, installed_packages};
use rattler::package_cache::PackageCache;
use rattler_conda_types::{Channel, RepoData, RepoDataRecord, Subdir};

/// Set in a child: `<child index>` (the rest comes in the other variables).
const CHILD: &str = "ENVSTORE_SHARED_CACHE_CHILD";
const CHANNEL_DIR: &str = "ENVSTORE_SHARED_CACHE_CHANNEL_DIR";
const CHANNEL_URL: &str = "ENVSTORE_SHARED_CACHE_CHANNEL_URL";
const DATA: &str = "ENVSTORE_SHARED_CACHE_DATA";
/// Milliseconds since the epoch at which every child starts building.
const START_AT: &str = "ENVSTORE_SHARED_CACHE_START_AT";

const CHILDREN: usize = 4;
const PREFIXES_PER_CHILD: usize = 3;
const ROUNDS: usize = 3;

struct Stderr(String);

impl ProgressSink for Stderr {
    fn line(&self, line: String) {
        eprintln!("[{}] {line}", self.0);
    }
}

/// The demo channel's linux-64 solve (10 packages), served from `url`.
fn solved_records(channel_dir: &Path, url: &url::Url) -> Vec<RepoDataRecord> {
    let channel = Channel::from_url(url.clone());
    let mut all = Vec::new();
    for subdir in ["linux-64", "noarch"] {
        let repodata = RepoData::from_path(channel_dir.join(subdir).join("repodata.json")).unwrap();
        all.extend(repodata.into_repo_data_records(&channel));
    }
    let wanted = envstore_fixtures::demo_expect::expected_linux64_filenames();
    let records: Vec<RepoDataRecord> = all
        .into_iter()
        .filter(|record| wanted.contains(&record.identifier.to_file_name()))
        .collect();
    assert_eq!(records.len(), wanted.len(), "{wanted:?}");
    records
}

/// What prefix `index` of a child holds: the whole solve but one optional
/// package, so the prefixes differ and share most of their packages.
fn prefix_records(records: &[RepoDataRecord], child: usize, index: usize) -> Vec<RepoDataRecord> {
    let optional = ["ipykernel", "traitlets", "pandas", "pytz"];
    let left_out = optional[(child + index) % optional.len()];
    records
        .iter()
        .filter(|record| record.package_record.name.as_normalized() != left_out)
        .cloned()
        .collect()
}

fn lock_hash(round: usize, child: usize, index: usize) -> ContentHash {
    ContentHash::of(format!("round {round} child {child} prefix {index}").as_bytes())
}

/// Checks a prefix: its marker, exactly its packages, every file each
/// package's record lists.
fn assert_prefix_correct(prefix: &Path, records: &[RepoDataRecord]) {
    assert!(
        envstore_link::is_complete(prefix),
        "no marker in {}",
        prefix.display()
    );
    let expected: BTreeSet<String> = records
        .iter()
        .map(|record| {
            let package = &record.package_record;
            format!(
                "{}-{}-{}",
                package.name.as_normalized(),
                package.version,
                package.build
            )
        })
        .collect();
    assert_eq!(
        installed_packages(prefix).unwrap(),
        expected,
        "{}",
        prefix.display()
    );
    let mut listed = 0;
    for name in &expected {
        let meta = prefix.join("conda-meta").join(format!("{name}.json"));
        let record: serde_json::Value =
            serde_json::from_slice(&fs_err::read(&meta).unwrap()).unwrap();
        let files = record["files"].as_array().unwrap();
        listed += files.len();
        for file in files {
            let path = prefix.join(file.as_str().unwrap());
            assert!(
                fs_err::symlink_metadata(&path).is_ok(),
                "{} is missing from {}",
                path.display(),
                prefix.display()
            );
        }
    }
    assert!(
        listed > 10,
        "{} lists only {listed} files",
        prefix.display()
    );
}

/// The child's part (a no-op unless [`CHILD`] is set): build its prefixes
/// of the round from the shared cache, starting when told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn child_builds_its_prefixes() {
    let Ok(child) = std::env::var(CHILD) else {
        return;
    };
    let child: usize = child.parse().unwrap();
    let channel_dir = PathBuf::from(std::env::var(CHANNEL_DIR).unwrap());
    let url = url::Url::parse(&std::env::var(CHANNEL_URL).unwrap()).unwrap();
    let data = PathBuf::from(std::env::var(DATA).unwrap());
    let round: usize = data
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches("round-")
        .parse()
        .unwrap();
    let start_at: u128 = std::env::var(START_AT).unwrap().parse().unwrap();
    let records = solved_records(&channel_dir, &url);
    let builder = PrefixBuilder::new(
        data.join("prefixes"),
        PackageCache::new(data.join("cache/pkgs")),
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    if start_at > now {
        tokio::time::sleep(Duration::from_millis((start_at - now) as u64)).await;
    }
    let mut builds = Vec::new();
    for index in 0..PREFIXES_PER_CHILD {
        let builder = builder.clone();
        let records = prefix_records(&records, child, index);
        builds.push(tokio::spawn(async move {
            let hash = lock_hash(round, child, index);
            let sink = Arc::new(Stderr(format!("child {child} prefix {index}")));
            let result = builder
                .build(
                    &hash,
                    Subdir::Linux64,
                    &records,
                    &Default::default(),
                    sink,
                    || {},
                )
                .await;
            (
                index,
                result.map_err(|error| envstore_core::error_chain(&error)),
            )
        }));
    }
    let mut failures = Vec::new();
    for build in builds {
        let (index, result) = build.await.unwrap();
        if let Err(error) = result {
            failures.push(format!("child {child} prefix {index}: {error}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_one_cache_all_build_correct_prefixes() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fs_err::canonicalize(dir.path()).unwrap();
    let channel = envstore_fixtures::write_demo_channel(&root.join("demo"))
        .await
        .unwrap();
    let served = envstore_fixtures::serve_channel(channel.dir.clone())
        .await
        .unwrap();
    let records = solved_records(&channel.dir, &served.url);
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        // A fresh data folder each round: every child fetches into an
        // empty cache at the same moment.
        let data = root.join(format!("round-{round}"));
        fs_err::create_dir_all(&data).unwrap();
        let start_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 1500;
        let mut children = Vec::new();
        for child in 0..CHILDREN {
            let process = tokio::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "shared_cache::child_builds_its_prefixes",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, child.to_string())
                .env(CHANNEL_DIR, &channel.dir)
                .env(CHANNEL_URL, served.url.as_str())
                .env(DATA, &data)
                .env(START_AT, start_at.to_string())
                .env("RUST_BACKTRACE", "0")
                .stdout(
                    fs_err::File::create(data.join(format!("child-{child}.out")))
                        .unwrap()
                        .into_file(),
                )
                .stderr(
                    fs_err::File::create(data.join(format!("child-{child}.err")))
                        .unwrap()
                        .into_file(),
                )
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            children.push((child, process));
        }
        for (child, mut process) in children {
            let status = tokio::time::timeout(Duration::from_secs(300), process.wait()).await;
            let output = |suffix: &str| {
                fs_err::read_to_string(data.join(format!("child-{child}.{suffix}")))
                    .unwrap_or_default()
            };
            match status {
                Ok(status) if status.as_ref().is_ok_and(|status| status.success()) => {}
                Ok(_) => {
                    let (stdout, stderr) = (output("out"), output("err"));
                    let tail: Vec<&str> = stdout
                        .lines()
                        .chain(stderr.lines())
                        .filter(|line| !line.starts_with('['))
                        .collect();
                    failures.push(format!(
                        "round {round} child {child} failed:\n{}",
                        tail.join("\n")
                    ));
                }
                Err(_) => {
                    let _ = process.kill().await;
                    let stderr = output("err");
                    let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
                    failures.push(format!("round {round} child {child} did not finish in five minutes; its last lines, newest first:\n{}", tail.join("\n")));
                }
            }
        }
        for child in 0..CHILDREN {
            for index in 0..PREFIXES_PER_CHILD {
                let prefix = data
                    .join("prefixes")
                    .join(lock_hash(round, child, index).short());
                if failures.is_empty() {
                    assert_prefix_correct(&prefix, &prefix_records(&records, child, index));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed children:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

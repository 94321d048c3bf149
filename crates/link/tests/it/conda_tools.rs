//! A prefix envstore builds is one every conda tool can read: `conda-meta/`
//! holds only package records as `*.json` (rattler's
//! `PrefixRecord::collect_from_prefix`, `conda list -p` and conda-pack parse
//! each one), conda's `history`, and everything is readable by users other
//! than the service's, whatever its umask.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use envstore_core::ContentHash;
use envstore_link::{
    CompletionMarker, HISTORY_FILE, LEGACY_MARKER_FILE, MARKER_FILE, PrefixBuilder, ProgressSink,
};
use rattler::package_cache::PackageCache;
use rattler_conda_types::{Channel, PrefixRecord, RepoData, RepoDataRecord, Subdir};

/// Set in the child this test re-runs itself as, under a umask of 077.
const UMASK_CHILD: &str = "ENVSTORE_LINK_TEST_UMASK_CHILD";

struct Quiet;

impl ProgressSink for Quiet {
    fn line(&self, _line: String) {}
}

/// linux-64 `python` 3.10.14 (the stand-in: a runnable `bin/python` with the prefix in it)
/// and `libzlib` 1.3.1 (a softlink) from the demo channel.
async fn demo_records(dir: &Path) -> Vec<RepoDataRecord> {
    let channel = envstore_fixtures::write_demo_channel(&dir.join("demo"))
        .await
        .unwrap();
    let repodata = RepoData::from_path(channel.repodata_path("linux-64")).unwrap();
    let records: Vec<RepoDataRecord> = repodata
        .into_repo_data_records(&Channel::from_url(channel.url.clone()))
        .into_iter()
        .filter(|record| {
            let package = &record.package_record;
            matches!(
                (
                    package.name.as_normalized(),
                    package.version.to_string().as_str()
                ),
                ("python", "3.10.14") | ("libzlib", "1.3.1")
            )
        })
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    records
}

fn identity(name: &str, version: &str, build: &str) -> String {
    format!("{name}-{version}-{build}")
}

/// Builds the demo prefix under `dir` with `records`.
async fn build(dir: &Path, records: &[RepoDataRecord]) -> std::path::PathBuf {
    let root = fs_err::canonicalize(dir).unwrap().join("prefixes");
    let builder = PrefixBuilder::new(root, PackageCache::new(dir.join("pkgs")));
    let hash = ContentHash::of(b"conda tools lock");
    builder
        .build(
            &hash,
            Subdir::Linux64,
            records,
            &Default::default(),
            Arc::new(Quiet),
            || {},
        )
        .await
        .unwrap()
        .path
}

/// Builds the demo prefix under `dir` and checks everything this file is about.
async fn build_and_check(dir: &Path) {
    let records = demo_records(dir).await;
    let root = fs_err::canonicalize(dir).unwrap().join("prefixes");
    let builder = PrefixBuilder::new(root, PackageCache::new(dir.join("pkgs")));
    let hash = ContentHash::of(b"conda tools lock");
    let report = builder
        .build(
            &hash,
            Subdir::Linux64,
            &records,
            &Default::default(),
            Arc::new(Quiet),
            || {},
        )
        .await
        .unwrap();
    let prefix = report.path;
    assert!(envstore_link::is_complete(&prefix));
    assert!(!MARKER_FILE.ends_with(".json"));

    let expected: BTreeSet<String> = records
        .iter()
        .map(|record| {
            let package = &record.package_record;
            identity(
                package.name.as_normalized(),
                &package.version.to_string(),
                package.build.as_ref(),
            )
        })
        .collect();

    // Every `conda-meta/*.json` is a package record...
    let mut parsed = BTreeSet::new();
    for entry in fs_err::read_dir(prefix.join("conda-meta")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "json")
        {
            let record = PrefixRecord::from_path(&path)
                .unwrap_or_else(|error| panic!("{} is no record: {error}", path.display()));
            parsed.insert(identity(
                record.name().as_normalized(),
                &record.repodata_record.package_record.version.to_string(),
                record.repodata_record.package_record.build.as_ref(),
            ));
        }
    }
    assert_eq!(parsed, expected);
    // ...so rattler reads the prefix as a whole, exactly the installed packages.
    let collected: Vec<PrefixRecord> = PrefixRecord::collect_from_prefix(&prefix).unwrap();
    let collected: BTreeSet<String> = collected
        .iter()
        .map(|record| {
            let package = &record.repodata_record.package_record;
            identity(
                package.name.as_normalized(),
                &package.version.to_string(),
                package.build.as_ref(),
            )
        })
        .collect();
    assert_eq!(collected, expected);
    assert_eq!(
        envstore_link::installed_packages(&prefix).unwrap(),
        expected
    );

    // conda's history: one revision adding every package.
    let history = fs_err::read_to_string(prefix.join(HISTORY_FILE)).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    assert!(
        lines[0].starts_with("==> ") && lines[0].ends_with(" <=="),
        "{history}"
    );
    let stamp = &lines[0]["==> ".len()..lines[0].len() - " <==".len()];
    assert_eq!(stamp.len(), "2026-01-01 00:00:00".len(), "{history}");
    assert!(lines[1].starts_with("# cmd: "), "{history}");
    let added: BTreeSet<String> = lines[2..]
        .iter()
        .map(|line| {
            let (channel, dist) = line.strip_prefix('+').unwrap().split_once("::").unwrap();
            assert!(channel.ends_with("/linux-64"), "{line}");
            dist.to_owned()
        })
        .collect();
    assert_eq!(added, expected);

    // Readable by everyone: folders and files, and runnable executables.
    let mode = |relative: &str| {
        fs_err::metadata(prefix.join(relative))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(""), 0o755, "the prefix");
    assert_eq!(mode("conda-meta"), 0o755);
    for entry in fs_err::read_dir(prefix.join("conda-meta")).unwrap() {
        let entry = entry.unwrap();
        let relative = format!("conda-meta/{}", entry.file_name().to_string_lossy());
        assert_eq!(mode(&relative), 0o644, "{relative}");
    }
    assert_eq!(mode("bin") & 0o555, 0o555, "bin");
    assert_eq!(mode("bin/python") & 0o555, 0o555, "bin/python");
    let mut pending = vec![prefix.clone()];
    while let Some(folder) = pending.pop() {
        for entry in fs_err::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs_err::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                continue;
            }
            let mode = meta.permissions().mode();
            assert_eq!(mode & 0o044, 0o044, "{} is {mode:o}", path.display());
            assert_eq!(mode & 0o022, 0, "{} is {mode:o}", path.display());
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
}

#[tokio::test]
async fn a_prefix_built_under_umask_077_is_readable_by_conda_tools_and_other_users() {
    if std::env::var_os(UMASK_CHILD).is_some() {
        let dir = tempfile::tempdir().unwrap();
        build_and_check(dir.path()).await;
        return;
    }
    // The umask is the whole process's: the build runs in a child of its own.
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "conda_tools::a_prefix_built_under_umask_077_is_readable_by_conda_tools_and_other_users",
            "--nocapture",
        ])
        .env(UMASK_CHILD, "1")
        .status()
        .unwrap();
    assert!(status.success(), "the build under umask 077 failed");
}

#[tokio::test]
async fn a_prefix_of_an_earlier_release_with_the_old_marker_is_still_complete_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let records = demo_records(dir.path()).await;
    let root = fs_err::canonicalize(dir.path()).unwrap().join("prefixes");
    let builder = PrefixBuilder::new(root, PackageCache::new(dir.path().join("pkgs")));
    let hash = ContentHash::of(b"old lock");
    let built = |sink: Arc<dyn ProgressSink>| {
        let (builder, records) = (builder.clone(), records.clone());
        async move {
            builder
                .build(
                    &hash,
                    Subdir::Linux64,
                    &records,
                    &Default::default(),
                    sink,
                    || {},
                )
                .await
                .unwrap()
        }
    };
    let prefix = built(Arc::new(Quiet)).await.path;
    // What an earlier release left: the marker under its old name.
    let marker = envstore_link::read_marker(&prefix).unwrap();
    assert_eq!(
        marker,
        CompletionMarker {
            lock_hash: hash,
            platform: "linux-64".into(),
            packages: 2,
        }
    );
    fs_err::rename(prefix.join(MARKER_FILE), prefix.join(LEGACY_MARKER_FILE)).unwrap();
    assert!(envstore_link::is_complete(&prefix));
    assert_eq!(envstore_link::read_marker(&prefix), Some(marker));
    assert_eq!(
        builder.complete_marker(&hash).map(|m| m.lock_hash),
        Some(hash)
    );
    let again = built(Arc::new(Quiet)).await;
    assert!(again.reused, "an old complete prefix is not rebuilt");
    assert!(
        prefix.join(LEGACY_MARKER_FILE).is_file() && !prefix.join(MARKER_FILE).exists(),
        "an immutable prefix is not rewritten"
    );
    // Its legacy marker is no package record.
    assert_eq!(envstore_link::installed_packages(&prefix).unwrap().len(), 2);

    envstore_link::remove_prefix(&prefix).await.unwrap();
    assert!(!prefix.exists());
}

/// py-rattler's `install` reads the prefix's `conda-meta` itself (no
/// `installed_packages` given) and finds nothing to do. Skipped, saying
/// why, where `import rattler` fails: py-rattler is no build dependency.
/// `ENVSTORE_TEST_PYTHON` names the interpreter (default `python3`); one
/// named there must import it (scripts/test installs it in a venv).
#[tokio::test]
async fn py_rattler_installs_over_an_envstore_prefix() {
    const SCRIPT: &str = r#"
import asyncio, glob, os, sys
import rattler
prefix, cache = sys.argv[1], sys.argv[2]
paths = sorted(glob.glob(os.path.join(prefix, "conda-meta", "*.json")))
records = [rattler.PrefixRecord.from_path(path) for path in paths]
asyncio.run(rattler.install(records, target_prefix=prefix, cache_dir=cache, show_progress=False))
print(len(records))
"#;
    let named = std::env::var("ENVSTORE_TEST_PYTHON").ok();
    let python = named.clone().unwrap_or_else(|| "python3".into());
    let importable = std::process::Command::new(&python)
        .args(["-c", "import rattler"])
        .output()
        .is_ok_and(|output| output.status.success());
    // An interpreter named on purpose (scripts/test names one) must have it.
    assert!(
        importable || named.is_none(),
        "ENVSTORE_TEST_PYTHON={python} cannot import rattler (pip install py-rattler)"
    );
    if !importable {
        eprintln!(
            "skipped: `{python} -c 'import rattler'` fails; pip install py-rattler and set ENVSTORE_TEST_PYTHON to run it"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let records = demo_records(dir.path()).await;
    let prefix = build(dir.path(), &records).await;
    let listing = |prefix: &Path| -> BTreeSet<String> {
        fs_err::read_dir(prefix.join("conda-meta"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = listing(&prefix);
    let history = fs_err::read_to_string(prefix.join(HISTORY_FILE)).unwrap();
    let output = std::process::Command::new(&python)
        .args(["-c", SCRIPT])
        .arg(&prefix)
        .arg(dir.path().join("pkgs"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "py-rattler failed on the prefix: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "2");
    assert_eq!(
        listing(&prefix),
        before,
        "nothing to install, nothing changed"
    );
    assert_eq!(
        fs_err::read_to_string(prefix.join(HISTORY_FILE)).unwrap(),
        history
    );
    assert!(envstore_link::is_complete(&prefix));
}

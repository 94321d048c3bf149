//! The gate every package passes on its way into a prefix, against the
//! hostile channel read over `file://`: whoever put a package in the cache,
//! it is checked before it is linked, and a refused one links nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use envstore_core::ContentHash;
use envstore_fixtures::{HostileKind, HostileOptions};
use envstore_link::{PackageLimits, PrefixBuilder, PrefixError, ProgressSink, Rejection};
use rattler::package_cache::PackageCache;
use rattler_conda_types::{Channel, RepoData, RepoDataRecord, Subdir};

struct Quiet;

impl ProgressSink for Quiet {
    fn line(&self, _line: String) {}
}

struct Fixture {
    dir: tempfile::TempDir,
    records: Vec<RepoDataRecord>,
    cache_dir: PathBuf,
    canary: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let canary = fs_err::canonicalize(dir.path())
            .unwrap()
            .join("canary-token");
        fs_err::write(&canary, "the admin token\n").unwrap();
        let options = HostileOptions {
            server_file: canary.clone(),
        };
        let channel =
            envstore_fixtures::write_hostile_channel_with(&dir.path().join("hostile"), &options)
                .unwrap();
        let repodata = RepoData::from_path(channel.repodata_path("noarch")).unwrap();
        let records = repodata.into_repo_data_records(&Channel::from_url(channel.url.clone()));
        let cache_dir = dir.path().join("pkgs");
        Self {
            dir,
            records,
            cache_dir,
            canary,
        }
    }

    fn records(&self, names: &[&str]) -> Vec<RepoDataRecord> {
        let found: Vec<_> = self
            .records
            .iter()
            .filter(|record| names.contains(&record.package_record.name.as_normalized()))
            .cloned()
            .collect();
        assert_eq!(found.len(), names.len(), "{names:?}");
        found
    }

    fn builder(&self, limits: PackageLimits) -> PrefixBuilder {
        let root = fs_err::canonicalize(self.dir.path())
            .unwrap()
            .join("prefixes");
        PrefixBuilder::new(root, PackageCache::new(&self.cache_dir)).with_limits(limits)
    }

    async fn build(
        &self,
        names: &[&str],
        limits: PackageLimits,
    ) -> (
        PrefixBuilder,
        ContentHash,
        Result<envstore_link::PrefixReport, PrefixError>,
    ) {
        let builder = self.builder(limits);
        let hash = ContentHash::of(names.join(",").as_bytes());
        let records = self.records(names);
        let result = builder
            .build(
                &hash,
                Subdir::Linux64,
                &records,
                &Default::default(),
                Arc::new(Quiet),
                || {},
            )
            .await;
        (builder, hash, result)
    }
}

fn rejection(result: Result<envstore_link::PrefixReport, PrefixError>) -> Rejection {
    match result {
        Err(PrefixError::Rejected { reason, .. }) => reason,
        other => panic!("expected a refused package, got {other:?}"),
    }
}

fn assert_nothing_left(builder: &PrefixBuilder, hash: &ContentHash) {
    assert!(!builder.prefix_path(hash).exists(), "no half-built prefix");
}

#[tokio::test]
async fn a_package_another_route_put_in_the_cache_is_checked_before_it_is_linked() {
    let fixture = Fixture::new();
    let records = fixture.records(&["evil-type"]);
    // The repodata gateway, another process or an older envstore: rattler's
    // own fetch, which checks nothing about the members.
    let cache = PackageCache::new(&fixture.cache_dir);
    let path = records[0].url.to_file_path().unwrap();
    let entry = cache
        .get_or_fetch_from_path(&path, Some(&records[0].package_record), None)
        .await
        .unwrap()
        .path()
        .to_owned();
    assert!(
        fs_err::symlink_metadata(entry.join(envstore_fixtures::TYPE_MISMATCH_FILE))
            .unwrap()
            .is_symlink()
    );

    let (builder, hash, result) = fixture
        .build(&["evil-type"], PackageLimits::default())
        .await;
    let reason = rejection(result);
    assert!(
        matches!(
            reason,
            Rejection::WrongType {
                declared: "file",
                found: "symlink",
                ..
            }
        ),
        "{reason}"
    );
    assert!(
        reason
            .to_string()
            .contains("is a symlink, but paths.json declares it a file"),
        "{reason}"
    );
    assert_nothing_left(&builder, &hash);
    assert!(
        !entry.exists(),
        "the unchecked entry is gone from the cache"
    );
}

#[tokio::test]
async fn a_good_package_another_route_put_in_the_cache_is_checked_again_then_trusted() {
    let fixture = Fixture::new();
    let records = fixture.records(&["evil-linkdir"]);
    let cache = PackageCache::new(&fixture.cache_dir);
    let path = records[0].url.to_file_path().unwrap();
    cache
        .get_or_fetch_from_path(&path, Some(&records[0].package_record), None)
        .await
        .unwrap();

    let (_, _, first) = fixture
        .build(&["evil-linkdir"], PackageLimits::default())
        .await;
    assert_eq!(
        first.unwrap().downloaded,
        1,
        "fetched again through the gate"
    );
    let builder = fixture.builder(PackageLimits::default());
    let hash = ContentHash::of(b"another lock");
    let second = builder
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
    assert_eq!(
        second.downloaded, 0,
        "now trusted: it has a record of its validation"
    );
}

#[tokio::test]
async fn members_are_checked_for_what_they_really_are() {
    let fixture = Fixture::new();
    let (builder, hash, result) = fixture
        .build(&["evil-undeclared"], PackageLimits::default())
        .await;
    let reason = rejection(result).to_string();
    assert!(
        reason.contains("passes through the symlink 'share/evil-undeclared/s'"),
        "{reason}"
    );
    assert_nothing_left(&builder, &hash);

    let (builder, hash, result) = fixture
        .build(&["evil-server-file"], PackageLimits::default())
        .await;
    let reason = rejection(result);
    assert!(
        matches!(&reason, Rejection::EscapingLink { target, .. } if Path::new(target) == fixture.canary),
        "{reason}"
    );
    assert_nothing_left(&builder, &hash);
}

#[tokio::test]
async fn bombs_stop_at_the_limits() {
    let fixture = Fixture::new();
    let (builder, hash, result) = fixture
        .build(&["evil-bomb"], PackageLimits::default())
        .await;
    let reason = rejection(result);
    assert!(
        matches!(reason, Rejection::Bomb { limit: 1000, .. }),
        "{reason}"
    );
    assert!(reason.to_string().contains("decompression bomb"));
    assert_nothing_left(&builder, &hash);

    let (_, _, fine) = fixture
        .build(&["evil-inodes"], PackageLimits::default())
        .await;
    fine.expect("3000 files are within the default limit");
    let low = PackageLimits {
        max_files: 1000,
        ..PackageLimits::default()
    };
    // The entry from the last build must not let the lower limit be skipped:
    // a fresh cache for the low limit.
    let fixture = Fixture::new();
    let (builder, hash, result) = fixture.build(&["evil-inodes"], low).await;
    let reason = rejection(result);
    assert_eq!(reason, Rejection::TooManyFiles { limit: 1000 });
    assert_nothing_left(&builder, &hash);

    let small = PackageLimits {
        max_extracted_bytes: 1024 * 1024,
        ..PackageLimits::default()
    };
    let fixture = Fixture::new();
    let (_, _, result) = fixture.build(&["evil-bomb"], small).await;
    assert_eq!(
        rejection(result),
        Rejection::TooLarge { limit: 1024 * 1024 }
    );
}

#[tokio::test]
async fn an_md5_only_record_is_verified_for_file_channels() {
    let fixture = Fixture::new();
    assert!(fixture.records(&["evil-md5"])[0].url.scheme() == "file");
    let (builder, hash, result) = fixture.build(&["evil-md5"], PackageLimits::default()).await;
    let reason = rejection(result);
    assert!(
        matches!(
            reason,
            Rejection::ArchiveChecksum {
                algorithm: "md5",
                ..
            }
        ),
        "{reason}"
    );
    assert_nothing_left(&builder, &hash);
}

#[tokio::test]
async fn setuid_and_world_writable_bits_are_dropped() {
    let fixture = Fixture::new();
    let (builder, hash, result) = fixture
        .build(&["evil-setuid"], PackageLimits::default())
        .await;
    result.unwrap();
    let prefix = builder.prefix_path(&hash);
    let mode = |path: &str| {
        fs_err::metadata(prefix.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(envstore_fixtures::SETUID_FILE), 0o755);
    assert_eq!(mode(envstore_fixtures::WORLD_WRITABLE_FILE), 0o644);
}

#[tokio::test]
async fn no_package_writes_through_a_link_another_declares() {
    let fixture = Fixture::new();
    let (builder, hash, result) = fixture
        .build(&["evil-through", "evil-linkdir"], PackageLimits::default())
        .await;
    let reason = rejection(result).to_string();
    assert!(
        reason.contains(
            "passes through 'share/evil-shared/s', which package 'evil-linkdir-1.0-h0000000_0"
        ),
        "{reason}"
    );
    assert_nothing_left(&builder, &hash);
    let _ = HostileKind::ALL;
}

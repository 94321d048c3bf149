//! Building prefixes from the generated demo channel: complete or absent,
//! never half-built.

use std::sync::{Arc, Mutex};

use envstore_core::ContentHash;
use envstore_link::{PrefixBuilder, PrefixError, ProgressSink, Rejection};
use rattler::package_cache::PackageCache;
use rattler_conda_types::{Channel, RepoData, RepoDataRecord, Subdir};

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl ProgressSink for Lines {
    fn line(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    builder: PrefixBuilder,
    records: Vec<RepoDataRecord>,
}

/// `libzlib` for linux-64: no dependencies, and it ships a softlink.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let channel = envstore_fixtures::write_demo_channel(&dir.path().join("demo"))
        .await
        .unwrap();
    let repodata = RepoData::from_path(channel.repodata_path("linux-64")).unwrap();
    let records: Vec<RepoDataRecord> = repodata
        .into_repo_data_records(&Channel::from_url(channel.url.clone()))
        .into_iter()
        .filter(|record| record.package_record.name.as_normalized() == "libzlib")
        .take(1)
        .collect();
    assert_eq!(records.len(), 1);
    let root = fs_err::canonicalize(dir.path()).unwrap().join("prefixes");
    let builder = PrefixBuilder::new(root, PackageCache::new(dir.path().join("pkgs")));
    Fixture {
        dir,
        builder,
        records,
    }
}

#[tokio::test]
async fn a_leftover_prefix_is_replaced_and_a_complete_one_reused() {
    let fixture = fixture().await;
    let hash = ContentHash::of(b"libzlib lock");
    let prefix = fixture.builder.prefix_path(&hash);
    fs_err::create_dir_all(prefix.join("lib")).unwrap();
    fs_err::write(prefix.join("lib/left-by-a-crash"), b"partial").unwrap();
    assert!(
        fixture.builder.complete_marker(&hash).is_none(),
        "no marker: not complete"
    );

    let lines = Arc::new(Lines::default());
    let report = fixture
        .builder
        .build(
            &hash,
            Subdir::Linux64,
            &fixture.records,
            &Default::default(),
            lines.clone(),
            || {},
        )
        .await
        .unwrap();
    assert!(!report.reused);
    assert_eq!((report.downloaded, report.linked), (1, 1));
    assert!(
        !prefix.join("lib/left-by-a-crash").exists(),
        "the leftover is gone"
    );
    assert!(envstore_link::is_complete(&prefix));
    assert!(
        fs_err::symlink_metadata(prefix.join("lib/libz.so"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(fixture.builder.complete_marker(&hash).unwrap().packages, 1);

    let again = fixture
        .builder
        .build(
            &hash,
            Subdir::Linux64,
            &fixture.records,
            &Default::default(),
            lines.clone(),
            || panic!("nothing to link"),
        )
        .await
        .unwrap();
    assert!(again.reused);
    assert_eq!((again.downloaded, again.linked), (0, 0));
    let _ = &fixture.dir;
}

#[tokio::test]
async fn a_package_that_fails_its_checksum_leaves_no_prefix() {
    let mut fixture = fixture().await;
    let hash = ContentHash::of(b"tampered lock");
    fixture.records[0].package_record.sha256 = Some([7u8; 32].into());
    let error = fixture
        .builder
        .build(
            &hash,
            Subdir::Linux64,
            &fixture.records,
            &Default::default(),
            Arc::new(Lines::default()),
            || {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            PrefixError::Rejected {
                reason: Rejection::ArchiveChecksum {
                    algorithm: "sha256",
                    ..
                },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        !fixture.builder.prefix_path(&hash).exists(),
        "no half-built prefix"
    );
    assert!(fixture.builder.complete_marker(&hash).is_none());
}

//! Locks built from hand-made records: fixed inputs, so hashes and rendered
//! files can be pinned across changes to the lock code.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use envstore_core::ContentHash;
use rattler_conda_types::{PackageName, PackageRecord, RepoDataRecord, VersionWithSource};
use url::Url;

use envstore_core::pypi::LockedWheel;

use super::Lock;
use crate::solver::SolvedEnvironment;

const CHANNEL: &str = "https://conda.example/forge/";

/// A record as a channel would serve it; its checksums are derived from its
/// file name so every input is fixed.
fn record(
    subdir: &str,
    name: &str,
    version: &str,
    build: &str,
    depends: &[&str],
) -> RepoDataRecord {
    let file_name = format!("{name}-{version}-{build}.conda");
    let mut package = PackageRecord::new(
        PackageName::try_from(name).expect("a package name"),
        VersionWithSource::from_str(version).expect("a version"),
        build.parse().expect("a build string"),
    );
    package.subdir = subdir.to_owned();
    package.depends = depends.iter().map(|depend| (*depend).to_owned()).collect();
    package.sha256 = rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(
        &ContentHash::of(file_name.as_bytes()).to_hex(),
    );
    package.md5 = rattler_digest::parse_digest_from_hex::<rattler_digest::Md5>(
        &ContentHash::of(file_name.as_bytes()).to_hex()[..32],
    );
    package.size = Some(1000 + file_name.len() as u64);
    RepoDataRecord {
        url: Url::parse(&format!("{CHANNEL}{subdir}/{file_name}")).expect("a URL"),
        identifier: file_name.parse().expect("an archive name"),
        channel: Some(CHANNEL.to_owned()),
        package_record: package,
    }
}

/// Python 3.11 with one noarch package, for linux-64 and win-64.
pub(super) fn conda_only_lock() -> Lock {
    let platform = |subdir: &str, python_build: &str| {
        let mut records = vec![
            record(subdir, "python", "3.11.9", python_build, &["tzdata"]),
            record("noarch", "tzdata", "2024a", "h0c530f3_0", &[]),
            record("noarch", "pip", "24.0", "pyhd8ed1ab_0", &["python >=3.7"]),
        ];
        records.sort_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
        (subdir.to_owned(), Arc::new(records))
    };
    Lock::new(SolvedEnvironment {
        channels: vec![Url::parse(CHANNEL).expect("a URL")],
        platforms: BTreeMap::from([
            platform("linux-64", "hd12c33a_0_cpython"),
            platform("win-64", "h631f459_0_cpython"),
        ]),
        cached_platforms: 0,
    })
}

fn hex_of(text: &str) -> String {
    ContentHash::of(text.as_bytes()).to_hex()
}

/// Computed with the lock code before it knew PyPI packages: a conda-only
/// lock keeps its hash and every rendered file byte for byte.
#[test]
fn a_conda_only_lock_keeps_its_hash_and_files() {
    let lock = conda_only_lock();
    let expect = |lock: &Lock| {
        assert_eq!(
            lock.hash().to_hex(),
            "af2df7004b883c4840400757496d2e7dca68fbd079dc0039e71ba2d944dab611"
        );
        assert_eq!(
            hex_of(&lock.render_conda_lock().expect("conda-lock")),
            "25d48fe4d0d1ef22217500e0c45db2f857bcb8fe962ed28667c7ee44a28f1365"
        );
        assert_eq!(
            hex_of(&lock.render_pixi_lock().expect("pixi.lock")),
            "a40b4b095e583e224a93d89099b3e658fed4f0ae533e308db7173964a8b6fb11"
        );
        assert_eq!(
            hex_of(&lock.render_explicit("linux-64").expect("explicit")),
            "23ab70adf41ea306f015a2a333ec41f5b3ec3889150db62bc609b9236b045bf1"
        );
        assert_eq!(
            hex_of(&lock.render_explicit("win-64").expect("explicit")),
            "ae8c6fa2e4496813e90ccc233168fc08b1e7884f40fb9a226daa03b425f57caa"
        );
        assert!(!lock.has_pypi());
        assert!(lock.pypi_indexes().is_empty());
        assert!(lock.wheels("linux-64").is_empty());
    };
    expect(&lock);
    // No wheels, or platforms with empty wheel lists, are no PyPI part.
    expect(&lock.clone().with_pypi(BTreeMap::new()));
    expect(&lock.clone().with_pypi(BTreeMap::from([
        ("linux-64".to_owned(), Vec::new()),
        ("win-64".to_owned(), Vec::new()),
    ])));
    // A conda-only pixi.lock reads back as the same lock again; from
    // conda-lock (which keeps fewer record fields) the same hash.
    expect(
        &Lock::parse_lockfile(&lock.render_pixi_lock().expect("pixi.lock")).expect("reads back"),
    );
    let from_conda_lock =
        Lock::parse_lockfile(&lock.render_conda_lock().expect("conda-lock")).expect("reads back");
    assert_eq!(from_conda_lock.hash(), lock.hash());
    assert!(!from_conda_lock.has_pypi());
}

fn wheel(name: &str, url: &str, sha256: &str) -> LockedWheel {
    LockedWheel {
        name: name.to_owned(),
        version: "1.0".to_owned(),
        url: url.to_owned(),
        sha256: sha256.to_owned(),
        size: Some(10),
        requires_dist: Vec::new(),
        requires_python: None,
        index: "https://pypi.org/simple".to_owned(),
    }
}

#[test]
fn the_hash_covers_each_wheels_url_and_sha256_per_platform() {
    let conda = conda_only_lock();
    let a = wheel(
        "a",
        "https://files.example/a-1.0-py3-none-any.whl",
        &"a".repeat(64),
    );
    let b = wheel(
        "b",
        "https://files.example/b-1.0-py3-none-any.whl",
        &"b".repeat(64),
    );
    let with = |platforms: &[(&str, Vec<LockedWheel>)]| {
        conda.clone().with_pypi(
            platforms
                .iter()
                .map(|(platform, wheels)| ((*platform).to_owned(), wheels.clone()))
                .collect(),
        )
    };
    let both = with(&[("linux-64", vec![a.clone(), b.clone()])]);
    assert_ne!(both.hash(), conda.hash());
    assert_eq!(
        both.hash(),
        with(&[("linux-64", vec![b.clone(), a.clone()])]).hash(),
        "the order wheels come in does not matter"
    );
    assert_eq!(
        both.wheels("linux-64")
            .iter()
            .map(|wheel| wheel.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"],
        "kept by name"
    );
    assert_ne!(
        both.hash(),
        with(&[("win-64", vec![a.clone(), b.clone()])]).hash(),
        "the platform counts"
    );
    let other_sha = LockedWheel {
        sha256: "c".repeat(64),
        ..a.clone()
    };
    assert_ne!(
        both.hash(),
        with(&[("linux-64", vec![other_sha, b.clone()])]).hash()
    );
    let other_url = LockedWheel {
        url: "https://mirror.example/a-1.0-py3-none-any.whl".to_owned(),
        ..a.clone()
    };
    assert_ne!(
        both.hash(),
        with(&[("linux-64", vec![other_url, b.clone()])]).hash()
    );
    // What the hash does not cover: the metadata a format may not keep.
    let other_metadata = LockedWheel {
        requires_dist: vec!["c>=1".to_owned()],
        requires_python: Some(">=3.8".to_owned()),
        size: None,
        index: "https://mirror.example/simple".to_owned(),
        version: "1.0.0".to_owned(),
        ..a.clone()
    };
    assert_eq!(
        both.hash(),
        with(&[("linux-64", vec![other_metadata, b.clone()])]).hash()
    );
    // Variables and wheels are independent parts of the hash.
    let variables = BTreeMap::from([("MODE".to_owned(), "fast".to_owned())]);
    assert_eq!(
        both.clone().with_variables(variables.clone()).hash(),
        conda
            .clone()
            .with_variables(variables.clone())
            .with_pypi(both.pypi_packages())
            .hash()
    );
    assert_eq!(
        both.clone()
            .with_variables(variables.clone())
            .wheels("linux-64")
            .len(),
        2
    );
    // An upper-case sha256 is the same wheel.
    let upper = LockedWheel {
        sha256: "A".repeat(64),
        ..a.clone()
    };
    assert_eq!(both.hash(), with(&[("linux-64", vec![upper, b])]).hash());
    assert!(both.has_pypi());
    assert!(both.wheels("win-64").is_empty());
    assert_eq!(both.pypi_indexes(), ["https://pypi.org/simple"]);
}

#[test]
fn indexes_are_listed_once_in_first_seen_order() {
    let at = |name: &str, index: &str| LockedWheel {
        index: index.to_owned(),
        ..wheel(
            name,
            &format!("https://files.example/{name}-1.0-py3-none-any.whl"),
            &"a".repeat(64),
        )
    };
    let lock = conda_only_lock().with_pypi(BTreeMap::from([
        (
            "linux-64".to_owned(),
            vec![
                at("b", "https://second.example/simple"),
                at("a", "https://first.example/simple"),
            ],
        ),
        (
            "win-64".to_owned(),
            vec![
                at("c", "https://third.example/simple"),
                at("a", "https://first.example/simple"),
            ],
        ),
    ]));
    assert_eq!(
        lock.pypi_indexes(),
        [
            "https://first.example/simple",
            "https://second.example/simple",
            "https://third.example/simple"
        ]
    );
}

#[test]
fn wheels_for_a_platform_without_conda_packages_cannot_be_exported() {
    let lock = conda_only_lock().with_pypi(BTreeMap::from([(
        "osx-arm64".to_owned(),
        vec![wheel(
            "a",
            "https://files.example/a-1.0-py3-none-any.whl",
            &"a".repeat(64),
        )],
    )]));
    let error = lock
        .render_conda_lock()
        .expect_err("no python for osx-arm64");
    assert!(error.to_string().contains("osx-arm64"), "{error}");
    assert!(lock.render_pixi_lock().is_err());
}

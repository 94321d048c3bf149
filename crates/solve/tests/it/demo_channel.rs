//! Solving and locking against the generated demo channel (a `file://` channel).

use std::time::Duration;

use envstore_core::{CanonicalSpec, ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
use envstore_solve::{EnvironmentSolver, Lock, SolveError};
use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::{ExplicitEnvironmentSpec, Subdir};

struct Fixture {
    _dir: tempfile::TempDir,
    solver: EnvironmentSolver,
    allowlist: ChannelAllowlist,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let channel = envstore_fixtures::write_demo_channel(&dir.path().join("demo"))
        .await
        .unwrap();
    let cache = dir.path().join("cache");
    let solver = EnvironmentSolver::new(
        &cache,
        PackageCache::new(cache.join("pkgs")),
        Duration::from_secs(60),
    );
    let allowlist = ChannelAllowlist::new(vec![NamedChannel {
        name: "demo".into(),
        url: channel.url,
    }]);
    Fixture {
        _dir: dir,
        solver,
        allowlist,
    }
}

fn spec(fixture: &Fixture, yaml: &str) -> CanonicalSpec {
    EnvironmentSpec::parse(yaml.as_bytes(), SpecFormat::Yaml)
        .unwrap()
        .canonicalize(&fixture.allowlist, Subdir::Linux64)
        .unwrap()
}

#[tokio::test]
async fn solves_every_platform_and_renders_every_lockfile() {
    let fixture = fixture().await;
    let spec = spec(
        &fixture,
        "channels: [demo]\ndependencies: [python=3.11, numpy, pandas]\nplatforms: [linux-64, osx-arm64, win-64]\n",
    );
    let lock = Lock::new(fixture.solver.solve(&spec).await.unwrap());
    assert_eq!(
        lock.platforms().collect::<Vec<_>>(),
        ["linux-64", "osx-arm64", "win-64"]
    );
    for platform in ["linux-64", "osx-arm64", "win-64"] {
        let records = lock.records(platform).unwrap();
        let python = records
            .iter()
            .find(|r| r.package_record.name.as_normalized() == "python")
            .unwrap();
        assert_eq!(python.package_record.subdir, platform);
        assert!(
            python
                .package_record
                .version
                .to_string()
                .starts_with("3.11")
        );
        let explicit = ExplicitEnvironmentSpec::from_reader(
            lock.render_explicit(platform).unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(explicit.packages.len(), records.len());
    }
    let linux = lock.records("linux-64").unwrap();
    assert!(
        !linux
            .iter()
            .any(|r| r.package_record.subdir != "linux-64" && r.package_record.subdir != "noarch"),
        "only linux-64 and noarch records in the linux lock"
    );

    let conda_lock = lock.render_conda_lock().unwrap();
    rattler_conda_lock::Document::parse(&conda_lock).expect("valid conda-lock v1");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&conda_lock).unwrap();
    assert_eq!(parsed["version"], 1);
    for platform in ["linux-64", "osx-arm64", "win-64"] {
        assert_eq!(
            parsed["metadata"]["content_hash"][platform]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }
    let total: usize = ["linux-64", "osx-arm64", "win-64"]
        .iter()
        .map(|p| lock.records(p).unwrap().len())
        .sum();
    assert_eq!(parsed["package"].as_sequence().unwrap().len(), total);

    let pixi = rattler_lock::LockFile::from_str_with_base_directory(
        &lock.render_pixi_lock().unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(pixi.default_environment().unwrap().platforms().count(), 3);
}

#[tokio::test]
async fn the_same_package_set_gives_the_same_lock_hash_and_files() {
    let fixture = fixture().await;
    let first = spec(
        &fixture,
        "channels: [demo]\ndependencies: [pandas, python=3.11]\nplatforms: [linux-64]\n",
    );
    let second = spec(
        &fixture,
        "channels: [demo]\ndependencies: [python=3.11, pandas, numpy]\nplatforms: [linux-64]\n",
    );
    assert_ne!(first.hash(), second.hash(), "different specs");
    let a = Lock::new(fixture.solver.solve(&first).await.unwrap());
    let b = Lock::new(fixture.solver.solve(&second).await.unwrap());
    assert_eq!(
        a.hash(),
        b.hash(),
        "pandas pulls numpy in: the same packages"
    );
    assert_eq!(
        a.render_conda_lock().unwrap(),
        b.render_conda_lock().unwrap()
    );
    assert_eq!(a.render_pixi_lock().unwrap(), b.render_pixi_lock().unwrap());

    let older = spec(
        &fixture,
        "channels: [demo]\ndependencies: [pandas, python=3.10]\nplatforms: [linux-64]\n",
    );
    let c = Lock::new(fixture.solver.solve(&older).await.unwrap());
    assert_ne!(a.hash(), c.hash());
}

#[tokio::test]
async fn an_unsolvable_spec_explains_itself() {
    let fixture = fixture().await;
    let spec = spec(
        &fixture,
        "channels: [demo]\ndependencies: [conflict-a, conflict-b]\nplatforms: [linux-64]\n",
    );
    let error = fixture.solver.solve(&spec).await.unwrap_err();
    match &error {
        SolveError::Unsolvable {
            platform,
            explanation,
        } => {
            assert_eq!(platform, "linux-64");
            assert!(explanation.contains("libfoo"), "{explanation}");
        }
        other => panic!("expected unsolvable, got {other:?}"),
    }
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_repeated_spec_is_answered_from_the_cache_until_the_channel_changes() {
    let fixture = fixture().await;
    let spec = spec(
        &fixture,
        "channels: [demo]\ndependencies: [numpy]\nplatforms: [linux-64]\n",
    );
    let first = fixture.solver.solve(&spec).await.unwrap();
    assert_eq!(first.cached_platforms, 0);
    let again = fixture.solver.solve(&spec).await.unwrap();
    assert_eq!(again.cached_platforms, 1);
    assert_eq!(Lock::new(first).hash(), Lock::new(again).hash());

    // Drop every numpy record from the channel: the cached answer is stale.
    let repodata_path = fixture._dir.path().join("demo/linux-64/repodata.json");
    let mut repodata: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&repodata_path).unwrap()).unwrap();
    for key in ["packages", "packages.conda"] {
        if let Some(records) = repodata[key].as_object_mut() {
            records.retain(|_, record| record["name"] != "numpy");
        }
    }
    fs_err::write(&repodata_path, serde_json::to_vec(&repodata).unwrap()).unwrap();
    match fixture.solver.solve(&spec).await {
        Err(SolveError::Unsolvable { explanation, .. }) => {
            assert!(explanation.contains("numpy"), "{explanation}")
        }
        other => panic!("expected the rewritten channel to be read again, got {other:?}"),
    }
}

#[tokio::test]
async fn a_submitted_lockfile_reads_back_as_the_lock_it_was_written_from() {
    let fixture = fixture().await;
    let spec = spec(
        &fixture,
        "channels: [demo]\ndependencies: [python=3.11, numpy, ipykernel]\nplatforms: [linux-64, osx-arm64]\n",
    );
    let lock = Lock::new(fixture.solver.solve(&spec).await.unwrap());
    for (format, text) in [
        ("pixi", lock.render_pixi_lock().unwrap()),
        ("conda-lock", lock.render_conda_lock().unwrap()),
    ] {
        let read = Lock::parse_lockfile(&text).unwrap_or_else(|error| panic!("{format}: {error}"));
        assert_eq!(read.hash(), lock.hash(), "{format} keeps the lock hash");
        for platform in ["linux-64", "osx-arm64"] {
            let names = |lock: &Lock| -> Vec<String> {
                lock.records(platform)
                    .unwrap()
                    .iter()
                    .map(|r| r.package_record.name.as_normalized().to_owned())
                    .collect()
            };
            assert_eq!(names(&read), names(&lock), "{format} {platform}");
            let explicit = read.render_explicit(platform).unwrap();
            assert_eq!(
                explicit,
                lock.render_explicit(platform).unwrap(),
                "{format} {platform} explicit"
            );
        }
    }

    for (text, expected) in [
        (
            "name: env\ndependencies: [python]\n",
            "neither a pixi.lock nor a conda-lock.yml",
        ),
        ("[unclosed", "neither a pixi.lock nor a conda-lock.yml"),
        ("version: 1\nmetadata: {}\npackage: []\n", "not valid"),
    ] {
        let error = Lock::parse_lockfile(text)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
}

#[tokio::test]
async fn variables_are_part_of_the_lock_hash_only_when_there_are_some() {
    let fixture = fixture().await;
    let spec = spec(&fixture, "channels: [demo]\ndependencies: [python=3.11]\n");
    let lock = Lock::new(fixture.solver.solve(&spec).await.unwrap());
    let plain = lock.hash();
    let empty = lock.clone().with_variables(Default::default());
    assert_eq!(
        empty.hash(),
        plain,
        "no variables: the hash of the packages alone"
    );
    let with = lock
        .clone()
        .with_variables([("MODE".to_owned(), "fast".to_owned())].into());
    let other = lock.with_variables([("MODE".to_owned(), "slow".to_owned())].into());
    assert_ne!(with.hash(), plain);
    assert_ne!(with.hash(), other.hash());
    assert_eq!(with.variables()["MODE"], "fast");
}

#[tokio::test]
async fn a_gpu_package_solves_with_declared_cuda_and_never_with_the_machines() {
    let fixture = fixture().await;
    let body = "channels: [demo]\ndependencies: [cuda-demo]\nplatforms: [linux-64]\n";
    // This machine's GPU (if any) is never asked: without a declared CUDA
    // the spec is unsolvable, and the explanation names `__cuda`.
    let error = fixture
        .solver
        .solve(&spec(&fixture, body))
        .await
        .unwrap_err();
    assert!(matches!(&error, SolveError::Unsolvable { .. }), "{error:?}");
    assert!(error.to_string().contains("__cuda"), "{error}");
    // Too old a CUDA is as unsolvable as none.
    let old = spec(
        &fixture,
        &format!("{body}system_requirements: {{cuda: '11.8'}}\n"),
    );
    let error = fixture.solver.solve(&old).await.unwrap_err();
    assert!(error.to_string().contains("__cuda"), "{error}");
    // Declared, it solves; the cache keeps the two apart.
    let declared = spec(
        &fixture,
        &format!("{body}system_requirements: {{cuda: '12.4'}}\n"),
    );
    let solved = fixture.solver.solve(&declared).await.unwrap();
    let names: Vec<&str> = solved.platforms["linux-64"]
        .iter()
        .map(|record| record.package_record.name.as_normalized())
        .collect();
    assert_eq!(names, [envstore_fixtures::CUDA_DEMO_PACKAGE]);
    let error = fixture.solver.solve(&old).await.unwrap_err();
    assert!(error.to_string().contains("__cuda"), "{error}");
}

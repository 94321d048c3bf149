//! Resolving and installing against the loopback PyPI catalogue of
//! envstore-fixtures (see `envstore_fixtures::pypi_expect` for the cases).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use envstore_fixtures::{
    ServedIndex, pypi_expect as expect, serve_simple_index, write_pypi_fixture_index,
};
use envstore_pypi::{
    IndexSettings, LockedWheel, PypiError, PythonTarget, WheelCache, WheelLimits, install_wheels,
    resolve,
};
use rattler_conda_types::{
    PackageName, PackageRecord, PrefixRecord, RepoDataRecord, Subdir, VersionWithSource,
    prefix_record::{PathType, PathsEntry},
};
use sha2::Digest;
use tempfile::TempDir;
use url::Url;

/// A served catalogue and a scratch folder (uv cache, wheel cache, prefixes).
struct Catalogue {
    served: ServedIndex,
    scratch: TempDir,
}

async fn catalogue() -> Catalogue {
    let scratch = tempfile::tempdir().expect("a temp dir");
    let root = scratch.path().join("index");
    write_pypi_fixture_index(&root)
        .await
        .expect("the catalogue");
    let served = serve_simple_index(root).await.expect("a server");
    Catalogue { served, scratch }
}

impl Catalogue {
    fn settings(&self) -> IndexSettings {
        IndexSettings {
            index_url: self.served.url.clone(),
            extra_index_urls: Vec::new(),
            exclude_newer: None,
            tls: Default::default(),
            cache_dir: self.scratch.path().join("uv-cache"),
            timeout: Duration::from_secs(30),
        }
    }

    async fn resolve(
        &self,
        requirements: &[&str],
        platform: Subdir,
        conda: &[(&str, &str)],
    ) -> Result<Vec<LockedWheel>, PypiError> {
        let requirements: Vec<String> = requirements.iter().map(|text| text.to_string()).collect();
        let conda: BTreeMap<String, String> = conda
            .iter()
            .map(|(name, version)| (name.to_string(), version.to_string()))
            .collect();
        resolve(&requirements, &target(platform), &conda, &self.settings()).await
    }
}

fn record(name: &str, version: &str, build: &str, platform: Subdir) -> RepoDataRecord {
    let mut package_record = PackageRecord::new(
        PackageName::from_str(name).expect("a name"),
        VersionWithSource::from_str(version).expect("a version"),
        build.parse().expect("a build string"),
    );
    package_record.subdir = platform.as_str().to_string();
    RepoDataRecord {
        package_record,
        identifier: format!("{name}-{version}-{build}.conda")
            .parse()
            .expect("an identifier"),
        url: Url::parse(&format!(
            "https://example.invalid/{platform}/{name}-{version}-{build}.conda"
        ))
        .expect("a URL"),
        channel: Some("https://example.invalid/".to_string()),
    }
}

fn python_records(platform: Subdir) -> Vec<RepoDataRecord> {
    vec![
        record("python", "3.11.9", "h0_0_cpython", platform),
        record("python_abi", "3.11", "8_cp311", platform),
    ]
}

fn target(platform: Subdir) -> PythonTarget {
    PythonTarget::from_conda(platform, &python_records(platform), &[])
        .expect("a target")
        .expect("python is there")
}

fn versions(wheels: &[LockedWheel]) -> BTreeMap<&str, &str> {
    wheels
        .iter()
        .map(|wheel| (wheel.name.as_str(), wheel.version.as_str()))
        .collect()
}

/// `name @ <url of a wheel of the index>`: that very file is locked, with the
/// index's sha256; a wheel that does not fit the platform, or another file
/// than the index lists, is refused naming the URL.
#[tokio::test]
async fn a_wheel_named_by_url_is_that_file() {
    let catalogue = catalogue().await;
    let file_url = |file: &str| {
        catalogue
            .served
            .url
            .join(&format!("../files/{file}"))
            .expect("a file URL")
    };
    let linux_tag = expect::NATIVE_TAGS[0].1;
    let native_file = format!("envstore_native-{}-{linux_tag}.whl", expect::NATIVE_VERSION);
    let native = format!("{} @ {}", expect::NATIVE, file_url(&native_file));
    let wheels = catalogue
        .resolve(&[native.as_str()], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    assert_eq!(wheels[0].url, file_url(&native_file).as_str());
    assert_eq!(wheels[0].sha256.len(), 64);

    let error = catalogue
        .resolve(&[native.as_str()], Subdir::OsxArm64, &[])
        .await
        .expect_err("a linux wheel does not fit osx-arm64");
    assert!(matches!(error, PypiError::NamedWheel { .. }), "{error}");
    assert!(error.to_string().contains(&native_file), "{error}");

    let unknown = format!(
        "{} @ {}",
        expect::HELLO,
        file_url(&format!(
            "envstore_hello-{}-py2-none-any.whl",
            expect::HELLO_VERSION
        ))
    );
    let error = catalogue
        .resolve(&[unknown.as_str()], Subdir::Linux64, &[])
        .await
        .expect_err("a file the index does not list");
    assert!(matches!(error, PypiError::NamedWheel { .. }), "{error}");
}

#[tokio::test]
async fn a_pure_package_resolves_with_its_dependency() {
    let catalogue = catalogue().await;
    let wheels = catalogue
        .resolve(&[expect::HELLO], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    assert_eq!(
        versions(&wheels),
        BTreeMap::from([
            (expect::HELLO, expect::HELLO_VERSION),
            (expect::HELLO_DEPENDENCY, expect::DEP_VERSIONS[1]),
        ])
    );
    let hello = wheels
        .iter()
        .find(|wheel| wheel.name == expect::HELLO)
        .expect("hello");
    assert_eq!(
        hello.requires_dist,
        [format!("{}>=1.0", expect::HELLO_DEPENDENCY)]
    );
    assert_eq!(hello.requires_python.as_deref(), Some(">=3.8"));
    for wheel in &wheels {
        assert_eq!(wheel.sha256.len(), 64, "{wheel:?}");
        assert!(
            wheel
                .url
                .starts_with(&format!("http://{}/", catalogue.served.addr)),
            "{wheel:?}"
        );
        assert!(wheel.url.ends_with("-py3-none-any.whl"), "{wheel:?}");
        assert!(wheel.size.is_some(), "{wheel:?}");
    }
}

#[tokio::test]
async fn extras_and_markers_follow_the_platform() {
    let catalogue = catalogue().await;
    let requirement = format!("{}[{}]", expect::EXTRAS, expect::EXTRA);
    let linux = catalogue
        .resolve(&[&requirement], Subdir::Linux64, &[])
        .await
        .expect("a linux resolution");
    let linux = versions(&linux);
    assert!(linux.contains_key(expect::EXTRA_DEPENDENCY), "{linux:?}");
    assert!(!linux.contains_key(expect::WIN32_DEPENDENCY), "{linux:?}");
    assert!(
        !linux.contains_key(expect::OLD_PYTHON_DEPENDENCY),
        "{linux:?}"
    );

    let windows = catalogue
        .resolve(&[&requirement], Subdir::Win64, &[])
        .await
        .expect("a windows resolution");
    let windows = versions(&windows);
    assert!(
        windows.contains_key(expect::WIN32_DEPENDENCY),
        "{windows:?}"
    );
    assert!(
        !windows.contains_key(expect::OLD_PYTHON_DEPENDENCY),
        "{windows:?}"
    );

    let without_extra = catalogue
        .resolve(&[expect::EXTRAS], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    assert_eq!(versions(&without_extra).len(), 1, "{without_extra:?}");
}

#[tokio::test]
async fn each_platform_gets_its_own_wheel() {
    let catalogue = catalogue().await;
    for (subdir, tag) in expect::NATIVE_TAGS {
        let platform = Subdir::from_str(subdir).expect("a platform");
        let wheels = catalogue
            .resolve(&[expect::NATIVE], platform, &[])
            .await
            .unwrap_or_else(|error| panic!("{subdir}: {error}"));
        assert_eq!(wheels.len(), 1, "{subdir}: {wheels:?}");
        assert!(
            wheels[0].url.ends_with(&format!("-{tag}.whl")),
            "{subdir}: {wheels:?}"
        );
    }
}

#[tokio::test]
async fn conda_provided_packages_are_pinned_and_left_out() {
    let catalogue = catalogue().await;
    let wheels = catalogue
        .resolve(
            &[expect::NUMPY_USER],
            Subdir::Linux64,
            &[("numpy", "1.26.4")],
        )
        .await
        .expect("a resolution");
    assert_eq!(
        versions(&wheels),
        BTreeMap::from([(expect::NUMPY_USER, expect::NUMPY_USER_VERSION)])
    );
    // Asked for directly, the conda numpy answers and the index's wheel is never taken.
    let wheels = catalogue
        .resolve(&["numpy"], Subdir::Linux64, &[("numpy", "1.26.4")])
        .await
        .expect("a resolution");
    assert!(wheels.is_empty(), "{wheels:?}");
    // A requirement the conda version does not meet has no solution.
    let error = catalogue
        .resolve(
            &[&format!("numpy=={}", expect::NUMPY_WHEEL_VERSION)],
            Subdir::Linux64,
            &[("numpy", "1.26.4")],
        )
        .await
        .expect_err("no solution");
    assert!(matches!(error, PypiError::NoSolution { .. }), "{error}");
    // Without conda, the index's numpy is used.
    let wheels = catalogue
        .resolve(&[expect::NUMPY_USER], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    assert_eq!(
        versions(&wheels).get(expect::CONDA_PROVIDED),
        Some(&expect::NUMPY_WHEEL_VERSION)
    );
}

#[tokio::test]
async fn release_selection_rules() {
    let catalogue = catalogue().await;
    let picked = |wheels: Vec<LockedWheel>| {
        assert_eq!(wheels.len(), 1, "{wheels:?}");
        wheels[0].version.clone()
    };
    let dev = catalogue
        .resolve(&[expect::DEV_REQUIREMENT], Subdir::Linux64, &[])
        .await
        .expect("the dev release");
    assert_eq!(picked(dev), expect::DEV_VERSION);

    let yanked = catalogue
        .resolve(&[expect::YANKED], Subdir::Linux64, &[])
        .await
        .expect("the release before the yanked one");
    assert_eq!(picked(yanked), expect::YANKED_PICKED_VERSION);

    let python = catalogue
        .resolve(&[expect::REQUIRES_PYTHON], Subdir::Linux64, &[])
        .await
        .expect("the release for python 3.11");
    assert_eq!(picked(python), expect::REQUIRES_PYTHON_PICKED);

    let error = catalogue
        .resolve(
            &[&format!(
                "{}=={}",
                expect::REQUIRES_PYTHON,
                expect::REQUIRES_PYTHON_TOO_NEW
            )],
            Subdir::Linux64,
            &[],
        )
        .await
        .expect_err("python 3.11 is too old for it");
    let PypiError::NoSolution { report } = &error else {
        panic!("not a no-solution error: {error}");
    };
    assert!(report.contains("3.12"), "{report}");
}

#[tokio::test]
async fn exclude_newer_leaves_out_the_newest_release() {
    let catalogue = catalogue().await;
    let newest = catalogue
        .resolve(&[expect::DATED], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    assert_eq!(newest[0].version, expect::DATED_NEW.0);

    let mut settings = catalogue.settings();
    settings.exclude_newer = Some(expect::EXCLUDE_NEWER.parse().expect("a timestamp"));
    let older = resolve(
        &[expect::DATED.to_string()],
        &target(Subdir::Linux64),
        &BTreeMap::new(),
        &settings,
    )
    .await
    .expect("a resolution");
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].version, expect::DATED_OLD.0);
}

#[tokio::test]
async fn an_sdist_only_project_needs_a_source_build() {
    let catalogue = catalogue().await;
    let error = catalogue
        .resolve(&[expect::SDIST_ONLY], Subdir::Linux64, &[])
        .await
        .expect_err("no wheel");
    match &error {
        PypiError::SourceBuildRequired { package } => assert_eq!(package, expect::SDIST_ONLY),
        other => panic!("not SourceBuildRequired: {other}"),
    }
    assert!(
        error
            .to_string()
            .contains("source builds are not supported yet")
    );
}

#[tokio::test]
async fn unknown_projects_and_unreachable_indexes_are_reported() {
    let catalogue = catalogue().await;
    let error = catalogue
        .resolve(&["envstore-does-not-exist"], Subdir::Linux64, &[])
        .await
        .expect_err("no such project");
    assert!(matches!(error, PypiError::NoSolution { .. }), "{error}");

    let mut settings = catalogue.settings();
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);
    settings.index_url = Url::parse(&format!("http://127.0.0.1:{port}/simple/")).expect("a URL");
    settings.timeout = Duration::from_secs(5);
    let error = resolve(
        &[expect::HELLO.to_string()],
        &target(Subdir::Linux64),
        &BTreeMap::new(),
        &settings,
    )
    .await
    .expect_err("nothing listens");
    assert!(
        matches!(error, PypiError::IndexUnreachable { .. }),
        "{error}"
    );
}

/// A prefix "made by conda": a python record owning the interpreter and a
/// numpy record owning its package, plus an empty site-packages.
fn conda_prefix(dir: &Path) -> PathBuf {
    let prefix = dir.join("prefix");
    let site_packages = prefix.join("lib/python3.11/site-packages");
    fs_err::create_dir_all(&site_packages).expect("site-packages");
    fs_err::create_dir_all(prefix.join("bin")).expect("bin");
    fs_err::create_dir_all(prefix.join("conda-meta")).expect("conda-meta");
    let owned: [(&str, &str, &[&str]); 2] = [
        (
            "python",
            "3.11.9",
            &["bin/python3.11", "bin/python", "lib/python3.11/os.py"],
        ),
        (
            "numpy",
            "1.26.4",
            &["lib/python3.11/site-packages/numpy/__init__.py"],
        ),
    ];
    for (name, version, files) in owned {
        for file in files {
            let path = prefix.join(file);
            fs_err::create_dir_all(path.parent().expect("a parent")).expect("a folder");
            fs_err::write(&path, "conda\n").expect("a file");
        }
        let paths = files
            .iter()
            .map(|file| PathsEntry {
                relative_path: PathBuf::from(file),
                original_path: None,
                path_type: PathType::HardLink,
                no_link: false,
                sha256: None,
                sha256_in_prefix: None,
                size_in_bytes: None,
                file_mode: None,
                prefix_placeholder: None,
            })
            .collect();
        let record = PrefixRecord::from_repodata_record(
            record(name, version, "h0_0", Subdir::Linux64),
            paths,
        );
        record
            .write_to_path(
                prefix
                    .join("conda-meta")
                    .join(format!("{name}-{version}-h0_0.json")),
                true,
            )
            .expect("a conda-meta record");
    }
    prefix
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs_err::read_dir(&current).expect("a folder") {
            let path = entry.expect("an entry").path();
            paths.push(
                path.strip_prefix(dir)
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned(),
            );
            if path.is_dir() && !path.is_symlink() {
                pending.push(path);
            }
        }
    }
    paths.sort();
    paths
}

#[tokio::test]
async fn the_pure_package_installs_relocatably() {
    let catalogue = catalogue().await;
    let target = target(Subdir::Linux64);
    let wheels = catalogue
        .resolve(&[expect::HELLO], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    let cache = WheelCache::new(
        catalogue.scratch.path().join("wheels"),
        &catalogue.settings(),
    )
    .expect("a wheel cache");
    let mut fetched = Vec::new();
    for wheel in &wheels {
        let path = cache.fetch(wheel).await.expect("fetched");
        assert_eq!(cache.fetch(wheel).await.expect("cached"), path);
        fetched.push((wheel.clone(), path));
    }
    let prefix = conda_prefix(catalogue.scratch.path());
    let installed =
        install_wheels(&prefix, &target, &fetched, &WheelLimits::default()).expect("installed");
    assert_eq!(installed.len(), 2);

    let site_packages = prefix.join(target.site_packages());
    let module = site_packages.join("envstore_hello/__init__.py");
    assert!(
        fs_err::read_to_string(&module)
            .expect("the module")
            .contains(expect::HELLO_OUTPUT)
    );
    let dist_info = site_packages.join(format!(
        "envstore_hello-{}.dist-info",
        expect::HELLO_VERSION
    ));
    assert_eq!(
        fs_err::read_to_string(dist_info.join("INSTALLER"))
            .expect("INSTALLER")
            .trim(),
        "envstore"
    );
    assert!(dist_info.join("RECORD").is_file());

    let script = prefix.join("bin").join(expect::HELLO_SCRIPT);
    let text = fs_err::read_to_string(&script).expect("the console script");
    assert!(text.starts_with("#!/bin/sh\n"), "{text}");
    assert!(
        text.contains(r#""$(dirname -- "$(realpath -- "$0")")"/'python3.11'"#),
        "{text}"
    );
    assert!(
        !text.contains(&prefix.to_string_lossy().into_owned()),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs_err::metadata(&script)
            .expect("metadata")
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0, "executable");
    }

    let hello = installed
        .iter()
        .find(|wheel| wheel.name == expect::HELLO)
        .expect("hello installed");
    assert!(
        hello
            .files
            .contains(&format!("bin/{}", expect::HELLO_SCRIPT)),
        "{hello:?}"
    );
    assert!(
        hello
            .files
            .contains(&"lib/python3.11/site-packages/envstore_hello/__init__.py".to_string()),
        "{hello:?}"
    );
    // No temporary unpack folder is left behind.
    assert!(
        !tree(&prefix)
            .iter()
            .any(|path| path.starts_with(".envstore-wheel-")),
        "{:?}",
        tree(&prefix)
    );

    // Installing it again would overwrite its own files: refused, nothing changes.
    let before = tree(&prefix);
    let error = install_wheels(&prefix, &target, &fetched, &WheelLimits::default())
        .expect_err("already there");
    assert!(matches!(error, PypiError::HostileWheel { .. }), "{error}");
    assert_eq!(tree(&prefix), before);
}

#[tokio::test]
async fn a_wheel_with_the_wrong_hash_is_not_cached() {
    let catalogue = catalogue().await;
    let mut wheels = catalogue
        .resolve(&[expect::HELLO], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    let mut wheel = wheels.remove(0);
    wheel.sha256 = "0".repeat(64);
    let dir = catalogue.scratch.path().join("wheels");
    let cache = WheelCache::new(&dir, &catalogue.settings()).expect("a wheel cache");
    let error = cache.fetch(&wheel).await.expect_err("a hash mismatch");
    assert!(matches!(error, PypiError::HashMismatch { .. }), "{error}");
    assert!(!cache.path_of(&wheel).expect("a path").exists());

    let small = cache.clone().with_max_wheel_bytes(10);
    let error = small.fetch(&wheels[0]).await.expect_err("too large");
    assert!(matches!(error, PypiError::TooLarge { .. }), "{error}");
}

#[tokio::test]
async fn hostile_wheels_are_refused_with_nothing_written() {
    let scratch = tempfile::tempdir().expect("a temp dir");
    let info = write_pypi_fixture_index(&scratch.path().join("index"))
        .await
        .expect("the catalogue");
    let target = target(Subdir::Linux64);
    for project in expect::HOSTILE_PROJECTS {
        let files = info.projects.get(project).expect("a hostile project");
        assert_eq!(files.len(), 1, "{project}: {files:?}");
        let path = info.file_path(&files[0]);
        let bytes = fs_err::read(&path).expect("the wheel");
        let locked = LockedWheel {
            name: project.to_string(),
            version: expect::HOSTILE_VERSION.to_string(),
            url: format!("http://127.0.0.1:9/files/{}", files[0]),
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
            size: Some(bytes.len() as u64),
            requires_dist: Vec::new(),
            requires_python: None,
            index: "http://127.0.0.1:9/simple".to_string(),
        };
        let case = tempfile::tempdir().expect("a temp dir");
        let prefix = conda_prefix(case.path());
        let before = tree(&prefix);
        let error = install_wheels(&prefix, &target, &[(locked, path)], &WheelLimits::default())
            .expect_err(project);
        assert!(
            matches!(error, PypiError::HostileWheel { .. }),
            "{project}: {error}"
        );
        assert_eq!(tree(&prefix), before, "{project} wrote into the prefix");
        assert_eq!(
            fs_err::read_to_string(prefix.join("bin/python")).expect("python"),
            "conda\n"
        );
        assert!(!Path::new(expect::EVIL_ABSOLUTE_ENTRY).exists());
        assert!(!case.path().join("envstore-evil-dotdot.txt").exists());
        assert!(!case.path().join("envstore-evil-data.txt").exists());
    }
}

#[tokio::test]
async fn size_limits_refuse_big_wheels() {
    let catalogue = catalogue().await;
    let wheels = catalogue
        .resolve(&[expect::HELLO_DEPENDENCY], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    let cache = WheelCache::new(
        catalogue.scratch.path().join("wheels"),
        &catalogue.settings(),
    )
    .expect("a wheel cache");
    let path = cache.fetch(&wheels[0]).await.expect("fetched");
    let prefix = conda_prefix(catalogue.scratch.path());
    let target = target(Subdir::Linux64);
    for limits in [
        WheelLimits {
            max_unpacked_bytes: 10,
            max_entries: 1000,
        },
        WheelLimits {
            max_unpacked_bytes: 1 << 30,
            max_entries: 2,
        },
    ] {
        let error = install_wheels(
            &prefix,
            &target,
            &[(wheels[0].clone(), path.clone())],
            &limits,
        )
        .expect_err("over a limit");
        assert!(matches!(error, PypiError::HostileWheel { .. }), "{error}");
    }
}

/// Real PyPI, once: `requests` resolved for linux-64, osx-arm64 and
/// win-64 against <https://pypi.org/simple>, then downloaded (sha256
/// checked), installed into a real CPython 3.11 prefix and imported on
/// linux-64. `scripts/test` sets `ENVSTORE_TEST_REAL_PYPI=1` when it can
/// reach PyPI; otherwise this test says it skipped, unless `CI` is set and
/// the variable is too (then an unreachable PyPI fails it).
#[cfg(unix)]
#[tokio::test]
async fn real_pypi_requests_resolves_installs_and_imports() {
    if std::env::var_os("ENVSTORE_TEST_REAL_PYPI").is_none_or(|value| value != "1") {
        eprintln!(
            "skipped: ENVSTORE_TEST_REAL_PYPI is not 1 (scripts/test sets it when https://pypi.org answers)"
        );
        return;
    }
    let Some(scratch) = debian_python_scratch() else {
        panic!("the real-PyPI test needs Debian's python3.11 (apt-get install python3.11)");
    };
    let settings = IndexSettings::pypi(scratch.path().join("uv-cache"));
    let mut linux = Vec::new();
    for platform in [Subdir::Linux64, Subdir::OsxArm64, Subdir::Win64] {
        let wheels = resolve(
            &["requests".to_string()],
            &target(platform),
            &BTreeMap::new(),
            &settings,
        )
        .await
        .unwrap_or_else(|error| panic!("{platform}: {error}"));
        let names = versions(&wheels);
        for name in [
            "requests",
            "urllib3",
            "idna",
            "certifi",
            "charset-normalizer",
        ] {
            assert!(names.contains_key(name), "{platform}: {names:?}");
        }
        assert!(wheels.iter().all(|wheel| wheel.sha256.len() == 64));
        assert!(
            wheels
                .iter()
                .all(|wheel| wheel.url.starts_with("https://files.pythonhosted.org/")),
            "{wheels:?}"
        );
        if platform == Subdir::Linux64 {
            linux = wheels;
        }
    }

    let cache = WheelCache::new(scratch.path().join("wheels"), &settings).expect("a wheel cache");
    let mut fetched = Vec::new();
    for wheel in &linux {
        fetched.push((wheel.clone(), cache.fetch(wheel).await.expect("fetched")));
    }
    let prefix = debian_python_prefix(&scratch.path().join("prefix"));
    install_wheels(
        &prefix,
        &target(Subdir::Linux64),
        &fetched,
        &WheelLimits::default(),
    )
    .expect("installed");
    let output = std::process::Command::new(prefix.join("bin/python3.11"))
        .args([
            "-c",
            "import requests, sys; print(requests.__version__, requests.__file__.startswith(sys.prefix))",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = format!("{} True", versions(&linux)["requests"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected);
}

/// A scratch folder when Debian's `/usr/bin/python3.11` and its standard
/// library are there, for [`debian_python_prefix`]; None otherwise.
#[cfg(unix)]
fn debian_python_scratch() -> Option<TempDir> {
    let interpreter = Path::new("/usr/bin/python3.11");
    let stdlib = Path::new("/usr/lib/python3.11");
    (interpreter.is_file() && stdlib.join("os.py").is_file())
        .then(|| tempfile::tempdir().expect("a temp dir"))
}

/// Debian's python3.11 laid out at `prefix` as a conda python would be:
/// the binary copied, the standard library's entries linked, its own
/// `site-packages` (and Debian's `dist-packages` pointing at it).
#[cfg(unix)]
fn debian_python_prefix(prefix: &Path) -> PathBuf {
    let stdlib = Path::new("/usr/lib/python3.11");
    let lib = prefix.join("lib/python3.11");
    fs_err::create_dir_all(lib.join("site-packages")).expect("site-packages");
    fs_err::create_dir_all(prefix.join("bin")).expect("bin");
    fs_err::copy("/usr/bin/python3.11", prefix.join("bin/python3.11")).expect("the interpreter");
    for entry in fs_err::read_dir(stdlib).expect("the stdlib") {
        let entry = entry.expect("an entry");
        let name = entry.file_name();
        if name != "site-packages" && name != "dist-packages" {
            std::os::unix::fs::symlink(entry.path(), lib.join(&name)).expect("a link");
        }
    }
    // Debian's site.py looks in dist-packages.
    std::os::unix::fs::symlink("site-packages", lib.join("dist-packages")).expect("a link");
    prefix.to_path_buf()
}

/// The console script runs with a real CPython 3.11 after the prefix is
/// renamed (its shebang finds the interpreter beside it). Uses Debian's
/// `/usr/bin/python3.11` laid out as a conda python would be (binary copied,
/// stdlib entries linked, own site-packages); skipped when it is missing.
#[cfg(unix)]
#[tokio::test]
async fn the_console_script_runs_after_the_prefix_moves() {
    if debian_python_scratch().is_none() {
        eprintln!("skipped: no /usr/bin/python3.11");
        return;
    }
    let catalogue = catalogue().await;
    let target = target(Subdir::Linux64);
    let wheels = catalogue
        .resolve(&[expect::HELLO], Subdir::Linux64, &[])
        .await
        .expect("a resolution");
    let cache = WheelCache::new(
        catalogue.scratch.path().join("wheels"),
        &catalogue.settings(),
    )
    .expect("a wheel cache");
    let mut fetched = Vec::new();
    for wheel in &wheels {
        fetched.push((wheel.clone(), cache.fetch(wheel).await.expect("fetched")));
    }
    let prefix = debian_python_prefix(&catalogue.scratch.path().join("built-here"));
    install_wheels(&prefix, &target, &fetched, &WheelLimits::default()).expect("installed");

    let moved = catalogue.scratch.path().join("moved elsewhere");
    fs_err::rename(&prefix, &moved).expect("moved");
    let output = std::process::Command::new(moved.join("bin").join(expect::HELLO_SCRIPT))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("the script runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        expect::HELLO_OUTPUT
    );
}

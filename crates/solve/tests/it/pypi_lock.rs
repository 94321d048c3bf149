//! A lock with PyPI wheels, solved from the demo channel for linux-64 and
//! win-64: every format renders its wheels and reads back as the same lock.

use std::collections::BTreeMap;
use std::time::Duration;

use envstore_core::pypi::LockedWheel;
use envstore_core::{ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
use envstore_solve::{EnvironmentSolver, Lock};
use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::{ExplicitEnvironmentSpec, Subdir};

const PYPI: &str = "https://pypi.org/simple";

fn requests() -> LockedWheel {
    LockedWheel {
        name: "requests".to_owned(),
        version: "2.32.3".to_owned(),
        url: "https://files.pythonhosted.org/packages/f9/9b/335f9764261e915ed497fcdeb11df5dfd6f7bf257d4a6a2a686d80da4d54/requests-2.32.3-py3-none-any.whl".to_owned(),
        sha256: "70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6".to_owned(),
        size: Some(64928),
        requires_dist: vec![
            "colorama; sys_platform == \"win32\"".to_owned(),
            "urllib3<3,>=1.21.1".to_owned(),
            "PySocks!=1.5.7,>=1.5.6; extra == \"socks\"".to_owned(),
        ],
        requires_python: Some(">=3.8".to_owned()),
        index: PYPI.to_owned(),
    }
}

fn urllib3() -> LockedWheel {
    LockedWheel {
        name: "urllib3".to_owned(),
        version: "2.2.2".to_owned(),
        url: "https://files.pythonhosted.org/packages/ca/1c/89ffc63a9605b583d5df2be791a27bc1a42b7c32bab68d3c8f2f73a98cd4/urllib3-2.2.2-py3-none-any.whl".to_owned(),
        sha256: "a448b2f64d686155468037e1ace9f2d2199776e17f0a46610480d311f73e3472".to_owned(),
        size: None,
        requires_dist: vec![
            "brotli>=1.0.9; platform_python_implementation == \"CPython\" and extra == \"brotli\""
                .to_owned(),
            "h2<5,>=4; extra == \"h2\"".to_owned(),
        ],
        requires_python: Some(">=3.8".to_owned()),
        index: PYPI.to_owned(),
    }
}

fn colorama() -> LockedWheel {
    LockedWheel {
        name: "colorama".to_owned(),
        version: "0.4.6".to_owned(),
        url: "https://files.pythonhosted.org/packages/d1/d6/3965ed04c63042e047cb6a3e6ed1a63a35087b6a609aa3a15ed8ac56c221/colorama-0.4.6-py2.py3-none-any.whl".to_owned(),
        sha256: "4f1d9991f5acc0ca119f9d443620b77f9d6b33703e51011c16baf57afb285fc6".to_owned(),
        size: None,
        requires_dist: Vec::new(),
        requires_python: Some("!=3.0.*,!=3.1.*,!=3.2.*,!=3.3.*,!=3.4.*,!=3.5.*,!=3.6.*,>=2.7".to_owned()),
        index: PYPI.to_owned(),
    }
}

/// Python 3.11 from the demo channel for linux-64 and win-64, with
/// requests and urllib3 on both and colorama on win-64 alone.
async fn lock_with_wheels() -> (tempfile::TempDir, Lock) {
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
    let spec = EnvironmentSpec::parse(
        "channels: [demo]\ndependencies: [python=3.11]\nplatforms: [linux-64, win-64]\n".as_bytes(),
        SpecFormat::Yaml,
    )
    .unwrap()
    .canonicalize(&allowlist, Subdir::Linux64)
    .unwrap();
    let lock = Lock::new(solver.solve(&spec).await.unwrap()).with_pypi(BTreeMap::from([
        ("linux-64".to_owned(), vec![urllib3(), requests()]),
        ("win-64".to_owned(), vec![requests(), colorama(), urllib3()]),
    ]));
    (dir, lock)
}

fn names(wheels: &[LockedWheel]) -> Vec<&str> {
    wheels.iter().map(|wheel| wheel.name.as_str()).collect()
}

/// What every format keeps of a wheel: what the hash covers and its name.
fn identities(lock: &Lock) -> BTreeMap<String, Vec<(String, String, String)>> {
    lock.pypi_packages()
        .into_iter()
        .map(|(platform, wheels)| {
            let kept = wheels
                .into_iter()
                .map(|wheel| (wheel.name, wheel.url, wheel.sha256))
                .collect();
            (platform, kept)
        })
        .collect()
}

#[tokio::test]
async fn the_lock_lists_its_wheels() {
    let (_dir, lock) = lock_with_wheels().await;
    assert!(lock.has_pypi());
    assert_eq!(names(lock.wheels("linux-64")), ["requests", "urllib3"]);
    assert_eq!(
        names(lock.wheels("win-64")),
        ["colorama", "requests", "urllib3"]
    );
    assert!(lock.wheels("osx-arm64").is_empty());
    assert_eq!(lock.pypi_indexes(), [PYPI]);
    let listed = lock.pypi_packages();
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["linux-64", "win-64"]);
    assert_eq!(listed["win-64"][1], requests());
    let conda = lock.packages();
    assert!(
        conda["linux-64"]
            .iter()
            .any(|package| package.name == "python"),
        "conda packages are listed as before"
    );
    // Wheels are listed after the conda packages, marked as PyPI's.
    let requests = conda["linux-64"]
        .iter()
        .find(|package| package.name == "requests")
        .expect("the wheel is listed");
    assert_eq!(
        requests.manager.as_deref(),
        Some(envstore_solve::PYPI_MANAGER)
    );
    assert!(requests.build.is_empty());
}

#[tokio::test]
async fn pixi_lock_keeps_the_wheels_and_the_hash() {
    let (_dir, lock) = lock_with_wheels().await;
    let text = lock.render_pixi_lock().unwrap();
    let file = rattler_lock::LockFile::from_str_with_base_directory(&text, None).unwrap();
    let environment = file.default_environment().unwrap();
    assert_eq!(
        environment
            .pypi_indexes()
            .unwrap()
            .indexes
            .iter()
            .map(|url| url.as_str())
            .collect::<Vec<_>>(),
        [PYPI]
    );
    let pypi: BTreeMap<String, Vec<String>> = environment
        .pypi_packages_by_platform()
        .map(|(platform, packages)| {
            let mut names: Vec<String> = packages.map(|p| p.name().to_string()).collect();
            names.sort();
            (platform.subdir().to_string(), names)
        })
        .collect();
    assert_eq!(pypi["linux-64"], ["requests", "urllib3"]);
    assert_eq!(pypi["win-64"], ["colorama", "requests", "urllib3"]);
    assert!(text.contains("requires_dist"), "{text}");
    assert!(text.contains(&requests().sha256), "{text}");

    let read = Lock::parse_lockfile(&text).unwrap();
    assert_eq!(read.hash(), lock.hash(), "pixi.lock keeps the lock hash");
    assert_eq!(identities(&read), identities(&lock));
    assert_eq!(read.pypi_indexes(), [PYPI]);
    let requests_read = &read.wheels("win-64")[1];
    assert_eq!(requests_read.version, "2.32.3");
    assert_eq!(requests_read.requires_python.as_deref(), Some(">=3.8"));
    assert_eq!(requests_read.requires_dist.len(), 3);
    assert!(
        requests_read.requires_dist[0].starts_with("colorama")
            && requests_read.requires_dist[0].contains("sys_platform == 'win32'"),
        "{:?}",
        requests_read.requires_dist
    );
    assert_eq!(
        read.render_pixi_lock().unwrap(),
        text,
        "read back, it renders the same file"
    );
}

#[tokio::test]
async fn conda_lock_has_pip_entries_with_the_platforms_dependencies() {
    let (_dir, lock) = lock_with_wheels().await;
    let text = lock.render_conda_lock().unwrap();
    let document = rattler_conda_lock::Document::parse(&text).expect("valid conda-lock v1");
    let pip: Vec<&rattler_conda_lock::Package> = document
        .lock_file()
        .package
        .iter()
        .filter(|package| package.manager == rattler_conda_lock::Manager::Pip)
        .collect();
    assert_eq!(pip.len(), 5, "two wheels on linux-64, three on win-64");
    let entry = |platform: &str, name: &str| {
        *pip.iter()
            .find(|package| package.platform == platform && package.name == name)
            .unwrap_or_else(|| panic!("{name} for {platform}"))
    };
    let linux = entry("linux-64", "requests");
    let windows = entry("win-64", "requests");
    assert_eq!(
        windows.dependencies,
        BTreeMap::from([
            ("colorama".to_owned(), "*".to_owned()),
            ("urllib3".to_owned(), ">=1.21.1,<3".to_owned()),
        ]),
        "colorama on Windows; PySocks only with the socks extra"
    );
    assert_eq!(
        linux.dependencies,
        BTreeMap::from([("urllib3".to_owned(), ">=1.21.1,<3".to_owned())]),
        "no colorama off Windows"
    );
    for package in [linux, windows] {
        assert_eq!(package.version, "2.32.3");
        assert_eq!(package.url, requests().url);
        assert_eq!(
            package.hash.sha256.as_deref(),
            Some(requests().sha256.as_str())
        );
        assert_eq!(package.hash.md5, None);
        assert_eq!(package.category, "main");
        assert!(!package.optional);
        assert!(!package.dependencies.contains_key("pysocks"));
    }
    assert!(
        entry("linux-64", "urllib3").dependencies.is_empty(),
        "extras only"
    );
    // The per-platform content hash is the one rattler_conda_lock reads;
    // it changes with the wheels.
    let conda_only = Lock::parse_lockfile(&lock.render_pixi_lock().unwrap())
        .unwrap()
        .with_pypi(BTreeMap::new());
    let plain: serde_yaml::Value =
        serde_yaml::from_str(&conda_only.render_conda_lock().unwrap()).unwrap();
    let with: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for platform in ["linux-64", "win-64"] {
        assert_ne!(
            plain["metadata"]["content_hash"][platform],
            with["metadata"]["content_hash"][platform]
        );
    }

    let read = Lock::parse_lockfile(&text).unwrap();
    assert_eq!(read.hash(), lock.hash(), "conda-lock keeps the lock hash");
    assert_eq!(identities(&read), identities(&lock));
    let requests_read = &read.wheels("win-64")[1];
    assert_eq!(requests_read.version, "2.32.3");
    assert!(
        requests_read.requires_dist.is_empty(),
        "conda-lock keeps no requires_dist"
    );
    assert!(read.pypi_indexes().is_empty(), "nor an index");
    // Without indexes the lock still renders every format.
    let pixi = read.render_pixi_lock().unwrap();
    assert_eq!(Lock::parse_lockfile(&pixi).unwrap().hash(), lock.hash());
    assert_eq!(
        Lock::parse_lockfile(&read.render_conda_lock().unwrap())
            .unwrap()
            .hash(),
        lock.hash()
    );
}

#[tokio::test]
async fn explicit_lists_the_wheels_as_pip_comments_after_the_conda_urls() {
    let (_dir, lock) = lock_with_wheels().await;
    for platform in ["linux-64", "win-64"] {
        let text = lock.render_explicit(platform).unwrap();
        let spec = ExplicitEnvironmentSpec::from_reader(text.as_bytes()).unwrap();
        assert_eq!(
            spec.packages.len(),
            lock.records(platform).unwrap().len(),
            "conda reads the conda packages alone"
        );
        let pip_lines: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.starts_with("# pip "))
            .collect();
        let expected: Vec<String> = lock
            .wheels(platform)
            .iter()
            .map(|wheel| {
                format!(
                    "# pip {} @ {}#sha256={}",
                    wheel.name, wheel.url, wheel.sha256
                )
            })
            .collect();
        assert_eq!(pip_lines, expected, "{platform}: after every conda URL");
    }
    let windows = lock.render_explicit("win-64").unwrap();
    assert!(windows.contains(&format!(
        "# pip requests @ {}#sha256={}\n",
        requests().url,
        requests().sha256
    )));
    assert!(
        !lock
            .render_explicit("linux-64")
            .unwrap()
            .contains("colorama")
    );
}

#[tokio::test]
async fn only_wheels_with_a_url_and_sha256_are_accepted() {
    let (_dir, lock) = lock_with_wheels().await;
    let colorama_url = colorama().url;
    let sdist = "https://files.pythonhosted.org/packages/colorama-0.4.6.tar.gz";

    let pixi = lock.render_pixi_lock().unwrap();
    let refused = |text: String, why: &str| {
        let error = Lock::parse_lockfile(&text)
            .map(|_| ())
            .expect_err(why)
            .to_string();
        assert!(
            error.contains("not valid") && error.contains("colorama") && error.contains(why),
            "{why}: {error}"
        );
    };
    refused(pixi.replace(&colorama_url, sdist), "source distribution");
    refused(
        pixi.replace(
            &colorama_url,
            "git+https://github.com/tartley/colorama.git@0123456789abcdef0123456789abcdef01234567",
        ),
        "git source",
    );
    refused(
        pixi.replace(
            &colorama_url,
            "./wheels/colorama-0.4.6-py2.py3-none-any.whl",
        ),
        "local path",
    );
    let without_sha: String = pixi
        .lines()
        .filter(|line| !line.contains(&colorama().sha256))
        .map(|line| format!("{line}\n"))
        .collect();
    refused(without_sha, "no sha256");

    let conda_lock = lock.render_conda_lock().unwrap();
    refused(
        conda_lock.replace(&colorama_url, sdist),
        "source distribution",
    );
    // conda-lock allows an md5 alone; a wheel needs its sha256.
    let sha256 = colorama().sha256;
    refused(
        conda_lock.replace(
            &format!("sha256: {sha256}"),
            &format!("md5: {}", &sha256[..32]),
        ),
        "no sha256",
    );
}

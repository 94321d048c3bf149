//! Specs with a `pip:` section, end to end: the server resolves their PyPI
//! part from a loopback index after the conda solve, locks the wheels with
//! the conda packages, installs them into the prefix, and refuses what it
//! must (a hostile wheel, a source-only package, an index not allowed).

use std::path::Path;

use envstore_fixtures::{ServedIndex, pypi_expect as expect, serve_simple_index};
use envstore_tests::{DemoChannel, TestServer, expect_problem};
use reqwest::StatusCode;
use serde_json::Value;

/// The fixtures' PyPI catalogue served on loopback, and a server on the
/// suite's backend whose policy allows that index (and only it).
struct Setup {
    server: TestServer,
    index: ServedIndex,
    _channel: DemoChannel,
    _index_dir: tempfile::TempDir,
}

impl Setup {
    /// Stops the server (checking its prefixes), then the index and channel.
    async fn stop(self) {
        self.server.stop().await;
    }
}

async fn setup() -> Setup {
    let channel = DemoChannel::start().await;
    let index_dir = tempfile::tempdir().unwrap();
    envstore_fixtures::write_pypi_fixture_index(index_dir.path())
        .await
        .unwrap();
    let index = serve_simple_index(index_dir.path().to_path_buf())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let backend = envstore_tests::Backend::from_env(data.path()).await;
    let allowed = index.url.to_string();
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        move |config| config.policy.allowed_pypi_indexes = Some(vec![allowed]),
    )
    .await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    Setup {
        server,
        index,
        _channel: channel,
        _index_dir: index_dir,
    }
}

/// A spec of the demo channel's python and numpy, with `pip` lines.
fn spec(pip: &[&str], platforms: &str) -> String {
    let pip: Vec<String> = pip.iter().map(|line| format!("      - {line}\n")).collect();
    format!(
        "channels: [demo]\ndependencies:\n  - python 3.11.*\n  - numpy\n  - pip:\n{}platforms: [{platforms}]\n",
        pip.concat()
    )
}

/// The PyPI packages of a build's platform, as `name==version`, sorted.
fn pypi_packages(build: &Value, platform: &str) -> Vec<String> {
    let mut listed: Vec<String> = build["packages"][platform]
        .as_array()
        .unwrap_or_else(|| panic!("packages for {platform}: {build:#}"))
        .iter()
        .filter(|package| package["manager"] == "pypi")
        .map(|package| {
            assert!(
                package["sha256"]
                    .as_str()
                    .is_some_and(|hash| hash.len() == 64),
                "every wheel is locked with its sha256: {package}"
            );
            format!(
                "{}=={}",
                package["name"].as_str().unwrap(),
                package["version"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    listed
}

async fn solve(server: &TestServer, query: &str, body: &str) -> reqwest::Response {
    server
        .client
        .post(server.url(&format!("/api/v1/namespaces/team/solve{query}")))
        .bearer_auth(&server.token)
        .header("content-type", "application/yaml")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn lockfile(server: &TestServer, query: &str) -> String {
    let response = server
        .get(&format!(
            "/api/v1/namespaces/team/environments/mixed/lockfile{query}"
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// Runs the installed console script of the hello wheel and checks what it prints.
fn assert_hello_runs(script: &Path) {
    let output = std::process::Command::new(script).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        expect::HELLO_OUTPUT
    );
}

fn site_packages(prefix: &Path) -> std::path::PathBuf {
    let lib = prefix.join("lib");
    let python = fs_err::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("python3."))
        .unwrap_or_else(|| panic!("no lib/python3.* in {}", prefix.display()));
    lib.join(python).join("site-packages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_with_pip_is_resolved_locked_and_installed() {
    let setup = setup().await;
    let (server, index) = (&setup.server, &setup.index);
    let requirements = [
        expect::HELLO,
        &format!("{}[{}]", expect::EXTRAS, expect::EXTRA),
        expect::NUMPY_USER,
        expect::DEV_REQUIREMENT,
    ];
    let yaml = spec(&requirements, "linux-64, osx-arm64");
    let id = server.submit_yaml("team", "mixed", &yaml).await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");

    // numpy comes from conda: PyPI's numpy is neither locked nor installed;
    // the win32-only and old-python dependencies of the extras package are
    // left out by their markers.
    let expected_linux = {
        let mut expected = vec![
            format!("{}=={}", expect::HELLO, expect::HELLO_VERSION),
            format!("{}=={}", expect::HELLO_DEPENDENCY, expect::DEP_VERSIONS[1]),
            format!("{}=={}", expect::EXTRAS, expect::EXTRAS_VERSION),
            format!("{}==1.0.0", expect::EXTRA_DEPENDENCY),
            format!("{}=={}", expect::NUMPY_USER, expect::NUMPY_USER_VERSION),
            format!("{}=={}", expect::DEV_ONLY, expect::DEV_VERSION),
        ];
        expected.sort();
        expected
    };
    assert_eq!(pypi_packages(&build, "linux-64"), expected_linux);
    assert_eq!(pypi_packages(&build, "osx-arm64"), expected_linux);
    let conda_numpy = build["packages"]["linux-64"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| package["name"] == expect::CONDA_PROVIDED)
        .count();
    assert_eq!(conda_numpy, 1, "numpy once, from conda: {build:#}");

    // Installed into the prefix: the package, its entry point, INSTALLER.
    let prefix = server.environment_link("team", "mixed");
    let site = site_packages(&prefix);
    assert!(site.join("envstore_hello/__init__.py").is_file());
    let dist_info = site.join(format!(
        "envstore_hello-{}.dist-info",
        expect::HELLO_VERSION
    ));
    assert_eq!(
        fs_err::read_to_string(dist_info.join("INSTALLER"))
            .unwrap()
            .trim(),
        "envstore"
    );
    assert!(dist_info.join("RECORD").is_file());
    let script = prefix.join("bin").join(expect::HELLO_SCRIPT);
    assert!(script.is_file(), "the entry point {}", script.display());
    assert!(
        !site.join("numpy").exists() || site.join("numpy").join("__init__.py").is_file(),
        "PyPI's numpy wheel was not installed over conda's"
    );
    if envstore_fixtures::demo_expect::linux64_python_is_real() {
        // Real code runs: the entry point through the prefix's python.
        assert_hello_runs(&script);
        let output = std::process::Command::new(prefix.join("bin/python"))
            .args([
                "-c",
                "import envstore_hello, importlib.metadata as m; print(envstore_hello.__version__, m.version('envstore-fastlib'))",
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("{} 1.0.0", expect::HELLO_VERSION)
        );
    } else {
        eprintln!("the demo python is a stand-in here: the installed code is not run");
    }

    // Every lockfile format carries the wheels.
    let conda_lock = lockfile(server, "?format=conda-lock").await;
    rattler_conda_lock::Document::parse(&conda_lock).expect("conda-lock v1");
    let parsed: Value = serde_yaml::from_str(&conda_lock).unwrap();
    let pip_entries = parsed["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| package["manager"] == "pip" && package["platform"] == "linux-64")
        .count();
    assert_eq!(pip_entries, expected_linux.len(), "{conda_lock}");
    let pixi = lockfile(server, "?format=pixi").await;
    assert!(
        pixi.contains(index.url.as_str()),
        "pixi.lock names the index: {pixi}"
    );
    let pixi_lock = rattler_lock::LockFile::from_str_with_base_directory(&pixi, None)
        .expect("pixi.lock parses");
    let environment = pixi_lock.default_environment().expect("one environment");
    let pypi_counts: Vec<usize> = environment
        .pypi_packages_by_platform()
        .map(|(_, packages)| packages.count())
        .collect();
    assert_eq!(pypi_counts, [expected_linux.len(); 2], "{pixi}");
    let explicit = lockfile(server, "?format=explicit&platform=linux-64").await;
    assert!(
        explicit.contains(&format!("# pip {} @ ", expect::HELLO)),
        "{explicit}"
    );

    // /solve locks the same: same hash, without a build.
    let response = solve(server, "", &yaml).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[envstore_api::LOCK_HASH_HEADER],
        build["lock_hash"].as_str().unwrap()
    );

    // The exported lockfiles, uploaded as they are, install the same lock:
    // same hash (the wheels included), the same prefix.
    for (name, text) in [("from-pixi", &pixi), ("from-conda-lock", &conda_lock)] {
        let response = server
            .client
            .put(server.url(&format!(
                "/api/v1/namespaces/team/environments/{name}/lockfile"
            )))
            .bearer_auth(&server.token)
            .header("content-type", "application/yaml")
            .body(text.clone())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let queued: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{name}: {queued:#}");
        let uploaded = server
            .wait_for_build(queued["build_id"].as_str().unwrap())
            .await;
        assert_eq!(uploaded["status"], "succeeded", "{name}: {uploaded:#}");
        assert_eq!(uploaded["lock_hash"], build["lock_hash"], "{name}");
        assert_eq!(pypi_packages(&uploaded, "linux-64"), expected_linux);
        assert_eq!(
            fs_err::canonicalize(server.environment_link("team", name)).unwrap(),
            fs_err::canonicalize(&prefix).unwrap(),
            "{name}: the same lock names the same prefix"
        );
    }
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_sections_are_refused_with_reasons() {
    let setup = setup().await;
    let server = &setup.server;

    // An index the policy does not allow: refused before anything runs.
    let other_index = spec(
        &[
            "--index-url https://pypi.example.invalid/simple",
            expect::HELLO,
        ],
        "linux-64",
    );
    let response = server
        .submit("team", "refused", "application/yaml", &other_index)
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "/problems/policy-violation", "{problem:#}");
    assert_eq!(problem["rule"], "allowed_pypi_indexes", "{problem:#}");

    // A package with no wheel, only a source distribution.
    let response = solve(server, "", &spec(&[expect::SDIST_ONLY], "linux-64")).await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        problem["type"], "/problems/source-build-unsupported",
        "{problem:#}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(expect::SDIST_ONLY),
        "{problem:#}"
    );
    assert_eq!(problem["platform"], "linux-64");

    // No solution: the explanation names the package.
    let response = solve(
        server,
        "",
        &spec(&[&format!("{}>=9", expect::HELLO)], "linux-64"),
    )
    .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["type"], "/problems/unsolvable", "{problem:#}");
    assert!(
        problem["detail"].as_str().unwrap().contains(expect::HELLO),
        "{problem:#}"
    );

    // A hostile wheel fails its build at the gate, and leaves no
    // environment behind.
    let id = server
        .submit_yaml("team", "evil", &spec(&[expect::EVIL_DOTDOT], "linux-64"))
        .await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(expect::EVIL_DOTDOT) || error.contains("envstore_evil_dotdot"),
        "the error names the wheel: {error}"
    );
    assert!(!server.environment_link("team", "evil").exists());
    let escaped = server.data_dir.join("envstore-evil-dotdot.txt").exists();
    assert!(!escaped, "nothing was written outside the prefix");
    setup.stop().await;
}

/// A node that does not hold the prefix materialises it with the real
/// `envstore materialize`: from the packed prefix when the store has it
/// (an S3 store), or built from the lock, wheels included (a local folder,
/// where nothing is packed). Either way the PyPI packages are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_wheels_is_materialised_elsewhere() {
    let setup = setup().await;
    let server = &setup.server;
    let binary = match envstore_tests::envstore_binary() {
        Ok(binary) => binary,
        Err(why) => {
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipped: {why}");
            return;
        }
    };
    let id = server
        .submit_yaml("team", "moved", &spec(&[expect::HELLO], "linux-64"))
        .await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    let link = server.environment_link("team", "moved");
    let prefix = fs_err::canonicalize(&link).unwrap();
    // This node loses the prefix (the path is kept: prefixes embed it).
    fs_err::remove_file(&link).unwrap();
    fs_err::remove_dir_all(&prefix).unwrap();
    // Nor are the wheels in its cache any more: they are fetched again.
    let _ = fs_err::remove_dir_all(server.data_dir.join("cache/pypi/wheels"));

    let output = tokio::process::Command::new(&binary)
        .arg("materialize")
        .arg("team/moved")
        .arg("--root")
        .arg(&server.data_dir)
        .arg("--database")
        .arg(&server.config.database)
        .arg("--store")
        .arg(server.config.store.as_str())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        prefix.display().to_string()
    );
    let site = site_packages(&prefix);
    assert!(site.join("envstore_hello/__init__.py").is_file());
    assert!(
        site.join(format!(
            "envstore_dep-{}.dist-info",
            expect::DEP_VERSIONS[1]
        ))
        .is_dir()
    );
    if envstore_fixtures::demo_expect::linux64_python_is_real() {
        assert_hello_runs(&link.join("bin").join(expect::HELLO_SCRIPT));
    }
    setup.stop().await;
}

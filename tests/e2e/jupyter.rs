//! A real Jupyter kernel from an envstore build: real CPython 3.11 plus
//! `pip: [ipykernel]` resolved and installed from a loopback index of the
//! real wheels `pip download` fetched, synced as a kernelspec by the real
//! `envstore kernels sync`, started by jupyter_client, and asked `6*7`.
//!
//! What it needs from outside (scripts/test provides all of it): the
//! wheels (`ENVSTORE_TEST_IPYKERNEL_WHEELS`), a python with jupyter_client
//! (`ENVSTORE_TEST_JUPYTER_PYTHON`), Debian's python3.11 (the demo
//! channel's real python) and the built `envstore` binary. Without one it
//! says what is missing and how to get it, and skips; under `CI` it fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envstore_tests::{Backend, DemoChannel, TestServer};
use reqwest::StatusCode;
use serde_json::Value;

/// The driver jupyter_client's python runs (see its docstring).
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/support/run_kernel.py");

/// Liveness only: the kernel's start, two cells and its shutdown take
/// seconds; this is there so a hung kernel fails the test instead of CI.
const KERNEL_WAIT: Duration = Duration::from_secs(300);

/// Where the wheels come from, for messages.
const WHEELS_HOW: &str = "scripts/test downloads them: python3 -m pip download --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 (and the older manylinux tags) -d target/test-wheels/ipykernel ipykernel";

/// Fails under `CI`, where scripts/test provides everything; elsewhere
/// says why the test does not run.
fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why} (CI runs every test: scripts/test sets this up)"
    );
    eprintln!("skipped: {why}");
}

/// The folder of ipykernel's wheels, when named and holding ipykernel.
fn wheels() -> Result<PathBuf, String> {
    let Some(dir) = std::env::var_os("ENVSTORE_TEST_IPYKERNEL_WHEELS") else {
        return Err(format!(
            "ENVSTORE_TEST_IPYKERNEL_WHEELS is not set; it names a folder of ipykernel's wheels for CPython 3.11 on manylinux x86_64 ({WHEELS_HOW})"
        ));
    };
    let dir = PathBuf::from(dir);
    if ipykernel_wheel(&dir).is_none() {
        return Err(format!(
            "ENVSTORE_TEST_IPYKERNEL_WHEELS={} holds no ipykernel wheel ({WHEELS_HOW})",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The file name of the ipykernel wheel in `dir`.
fn ipykernel_wheel(dir: &Path) -> Option<String> {
    fs_err::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("ipykernel-") && name.ends_with(".whl"))
}

/// The file names of the wheels in `dir`.
fn wheel_files(dir: &Path) -> BTreeSet<String> {
    fs_err::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".whl"))
        .collect()
}

/// The python that imports jupyter_client, when named and able to.
fn jupyter_python() -> Result<PathBuf, String> {
    let how = "scripts/test installs jupyter_client into the venv target/test-python";
    let Some(python) = std::env::var_os("ENVSTORE_TEST_JUPYTER_PYTHON") else {
        return Err(format!(
            "ENVSTORE_TEST_JUPYTER_PYTHON is not set; it names a python that imports jupyter_client ({how})"
        ));
    };
    let python = PathBuf::from(python);
    let imports = std::process::Command::new(&python)
        .args(["-c", "import jupyter_client"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !imports {
        return Err(format!(
            "ENVSTORE_TEST_JUPYTER_PYTHON={} cannot import jupyter_client ({how})",
            python.display()
        ));
    }
    Ok(python)
}

/// Everything the test needs from outside, or why it cannot run.
fn requirements() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return Err("the wheels and the real python are for linux-64 only".to_owned());
    }
    if !envstore_fixtures::demo_expect::linux64_python_is_real() {
        return Err(format!(
            "the demo channel's python 3.11 is a stand-in: Debian's python3.11 is not here (apt-get install python3.11, or point {} at an extracted root)",
            envstore_fixtures::PYTHON311_ROOT_ENV
        ));
    }
    Ok((
        wheels()?,
        jupyter_python()?,
        envstore_tests::envstore_binary()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_environment_runs_as_a_jupyter_kernel() {
    let (wheels, jupyter_python, envstore) = match requirements() {
        Ok(found) => found,
        Err(why) => return skip(&why),
    };
    let ipykernel_file = ipykernel_wheel(&wheels).unwrap();
    let (_, ipykernel_version) = envstore_fixtures::project_and_version(&ipykernel_file).unwrap();

    // The demo channel (with the real python), a loopback index of the
    // downloaded wheels, and a server that allows that index alone.
    let channel = DemoChannel::start().await;
    let index_root = tempfile::tempdir().unwrap();
    envstore_fixtures::write_simple_index_of_dir(index_root.path(), &wheels).unwrap();
    let index = envstore_fixtures::serve_simple_index(index_root.path().to_path_buf())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let index_url = index.url.to_string();
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        |config| config.policy.allowed_pypi_indexes = Some(vec![index_url]),
    )
    .await;
    assert_eq!(
        server.create_namespace("teach").await.status(),
        StatusCode::CREATED
    );

    // glibc 2.28: what the wheels were downloaded for.
    let spec = "channels: [demo]\n\
                dependencies:\n  - python 3.11.*\n  - pip:\n    - ipykernel\n\
                platforms: [linux-64]\n\
                system_requirements:\n  libc: '2.28'\n";
    let id = server.submit_yaml("teach", "lab", spec).await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");

    // The lock: ipykernel as a PyPI wheel of the loopback index, python
    // as a conda package.
    let packages = build["packages"]["linux-64"].as_array().unwrap();
    let package = |name: &str| {
        packages
            .iter()
            .find(|package| package["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in the lock: {packages:#?}"))
    };
    let ipykernel = package("ipykernel");
    assert_eq!(ipykernel["manager"], "pypi", "{ipykernel}");
    assert_eq!(ipykernel["version"], ipykernel_version.as_str());
    assert!(
        ipykernel["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{ipykernel_file}")),
        "{ipykernel}"
    );
    assert_eq!(package("python")["manager"], Value::Null);

    // Exactly the wheels pip picked, every one from the loopback index
    // (their tags include manylinux2014 ones that glibc 2.28 runs).
    let origin = format!("http://{}/", index.addr);
    let mut locked_files = BTreeSet::new();
    for package in packages
        .iter()
        .filter(|package| package["manager"] == "pypi")
    {
        let url = package["url"].as_str().unwrap();
        assert!(
            url.starts_with(&origin),
            "not from the loopback index: {package}"
        );
        locked_files.insert(url.rsplit('/').next().unwrap().to_owned());
    }
    assert_eq!(locked_files, wheel_files(&wheels));

    // The kernels listing has it.
    let kernel_id = envstore_api::kernel_id("teach", "lab");
    let (status, page) = server.get_json("/api/v1/kernels").await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&Value> = page["kernels"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1, "{page:#}");
    assert_eq!(listed[0]["id"], kernel_id.as_str());
    assert_eq!(listed[0]["lock_hash"], build["lock_hash"]);

    // The wheels' data files are installed too: ipykernel's own kernelspec.
    let link = server.environment_link("teach", "lab");
    assert!(
        link.join("share/jupyter/kernels/python3/kernel.json")
            .is_file()
    );

    // `envstore kernels sync`, the real binary, into a Jupyter data folder.
    let jupyter = tempfile::tempdir().unwrap();
    let jupyter_dir = jupyter.path().join("data");
    let output = tokio::process::Command::new(&envstore)
        .args(["kernels", "sync", "--dir"])
        .arg(&jupyter_dir)
        .env("ENVSTORE_URL", &server.base)
        .env("ENVSTORE_TOKEN", &server.token)
        .env_remove("ENVSTORE_DATABASE")
        .env_remove("ENVSTORE_STORE")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("added {kernel_id}")), "{stdout}");

    // jupyter_client starts it by name, runs two cells, shuts it down.
    let mut command = tokio::process::Command::new(&jupyter_python);
    command
        .arg(DRIVER)
        .arg(&kernel_id)
        .arg("6*7")
        .arg("import sys, ipykernel; print(sys.prefix); print(ipykernel.__file__)")
        .env("JUPYTER_PATH", &jupyter_dir)
        .env("JUPYTER_DATA_DIR", jupyter.path().join("user-data"))
        .env("JUPYTER_RUNTIME_DIR", jupyter.path().join("runtime"))
        .env("JUPYTER_CONFIG_DIR", jupyter.path().join("config"))
        .env("IPYTHONDIR", jupyter.path().join("ipython"))
        .env("JUPYTER_PLATFORM_DIRS", "1")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .kill_on_drop(true);
    let output = tokio::time::timeout(KERNEL_WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("the kernel did not finish within {KERNEL_WAIT:?}"))
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the driver failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    });

    let python = link.join("bin/python");
    assert_eq!(
        report["argv"][0],
        python.display().to_string(),
        "{report:#}"
    );
    let answer = &report["cells"][0];
    assert_eq!(answer["status"], "ok", "{report:#}\n{stderr}");
    assert_eq!(answer["result"], "42", "{report:#}");
    let where_from = &report["cells"][1];
    assert_eq!(where_from["status"], "ok", "{report:#}\n{stderr}");
    let lines: Vec<&str> = where_from["stdout"].as_str().unwrap().lines().collect();
    assert_eq!(lines.len(), 2, "{report:#}");
    let prefix = fs_err::canonicalize(&link).unwrap();
    assert_eq!(fs_err::canonicalize(lines[0]).unwrap(), prefix);
    assert!(
        fs_err::canonicalize(lines[1]).unwrap().starts_with(&prefix),
        "ipykernel is imported from the environment: {}",
        lines[1]
    );
    assert_eq!(report["alive_after_shutdown"], false, "{report:#}");

    server.stop().await;
    index.shutdown().await.unwrap();
}

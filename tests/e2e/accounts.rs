//! Users on other accounts than the service's run and list the
//! environments built for them: every folder of a prefix can be entered and
//! read, every file read and every program run by others, and conda's
//! `conda-meta` is readable, so `conda list -p` works for them. Checked by
//! switching to the unprivileged `nobody` account with `setpriv`, which
//! needs root; elsewhere the test says it was skipped.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use envstore_tests::{DemoChannel, TestServer};
use reqwest::StatusCode;

/// `nobody` on Debian.
const OTHER_ACCOUNT: &str = "65534";

fn as_other_account(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            OTHER_ACCOUNT,
            "--regid",
            OTHER_ACCOUNT,
            "--clear-groups",
            "--",
            program,
        ])
        .args(args)
        .output()
        .expect("setpriv runs")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_account_runs_and_lists_an_environment() {
    if !running_as_root() {
        eprintln!("skipped: switching to another account needs root");
        return;
    }
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let build_id = server
        .submit_yaml(
            "team",
            "shared",
            "channels: [demo]\ndependencies: [python 3.11.*, numpy]\nplatforms: [linux-64]\n",
        )
        .await;
    let build = server.wait_for_build(&build_id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");

    // The test's temporary folders are the service's own (0700); a data
    // folder is deployed readable by the users it serves.
    let temp = fs_err::canonicalize(std::env::temp_dir()).unwrap();
    for folder in server.data_dir.ancestors() {
        if folder == temp || !folder.starts_with(&temp) {
            break;
        }
        let mut permissions = fs_err::metadata(folder).unwrap().permissions();
        permissions.set_mode(permissions.mode() | 0o755);
        fs_err::set_permissions(folder, permissions).unwrap();
    }

    let environment = server.environment_link("team", "shared");
    let meta = environment.join("conda-meta");
    let listed = as_other_account("ls", &[meta.to_str().unwrap()]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let records: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|name| name.ends_with(".json"))
        .map(str::to_owned)
        .collect();
    assert!(
        records.iter().any(|name| name.starts_with("numpy-")),
        "{records:?}"
    );
    for record in &records {
        let read = as_other_account("cat", &[meta.join(record).to_str().unwrap()]);
        assert!(read.status.success(), "{record} is not readable by others");
        serde_json::from_slice::<serde_json::Value>(&read.stdout).unwrap();
    }
    let history = as_other_account("cat", &[meta.join("history").to_str().unwrap()]);
    assert!(history.status.success(), "conda-meta/history");

    let python = environment.join("bin/python");
    let ran = as_other_account(python.to_str().unwrap(), &["--version"]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let version =
        String::from_utf8_lossy(&ran.stdout).to_string() + &String::from_utf8_lossy(&ran.stderr);
    assert!(version.starts_with("Python 3.11"), "{version}");
    assert!(!Path::new(&python).as_os_str().is_empty());
    server.stop().await;
}

//! `envstore kernels sync` as a student's Jupyter runs it: kernelspecs for
//! the environments the server lists, runnable, and removed once unlisted.

use std::path::{Path, PathBuf};

use envstore_tests::{Backend, DemoChannel, TestServer, demo_spec_yaml};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn envstore(server: &TestServer, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_envstore"));
    command
        .args(args)
        .env("ENVSTORE_URL", &server.base)
        .env_remove("ENVSTORE_TOKEN")
        .env_remove("ENVSTORE_DATABASE")
        .env_remove("ENVSTORE_STORE");
    if let Some(token) = token {
        command.env("ENVSTORE_TOKEN", token);
    }
    command.output().await.expect("the binary runs")
}

/// Runs `envstore kernels sync` and returns its standard output.
async fn sync(server: &TestServer, token: Option<&str>, args: &[&str]) -> String {
    let mut all = vec!["kernels", "sync"];
    all.extend_from_slice(args);
    let output = envstore(server, token, &all).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn build_demo(server: &TestServer, namespace: &str, name: &str) -> Value {
    assert_eq!(
        server.create_namespace(namespace).await.status(),
        StatusCode::CREATED
    );
    let id = server
        // python 3.10 is always the stand-in, which prints its arguments.
        .submit_yaml(
            namespace,
            name,
            &demo_spec_yaml("demo").replace("python 3.11.*", "python 3.10.*"),
        )
        .await;
    let build = server.wait_for_build(&id).await;
    assert_eq!(build["status"], "succeeded", "{build:#}");
    build
}

async fn set_public(server: &TestServer, namespace: &str, public: bool) {
    let response = server
        .admin_json(
            Method::PUT,
            &format!("/api/v1/namespaces/{namespace}/visibility"),
            Some(json!({ "public_read": public })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &fs_err::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())),
    )
    .unwrap()
}

/// Runs a kernelspec's argv as Jupyter would, with a connection file.
fn run_kernel(spec: &Value, connection_file: &Path) -> String {
    let argv: Vec<String> = spec["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| {
            arg.as_str()
                .unwrap()
                .replace("{connection_file}", connection_file.to_str().unwrap())
        })
        .collect();
    let output = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .expect("the kernel's program runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_sync_kernels_that_run_and_lose_them_when_unlisted() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    let build = build_demo(&server, "teach", "analysis").await;
    set_public(&server, "teach", true).await;

    let jupyter = tempfile::tempdir().unwrap();
    let foreign = jupyter.path().join("kernels/python3/kernel.json");
    fs_err::create_dir_all(foreign.parent().unwrap()).unwrap();
    fs_err::write(
        &foreign,
        "{\"argv\": [\"python3\"], \"display_name\": \"Python 3\", \"language\": \"python\"}\n",
    )
    .unwrap();
    let dir = jupyter.path().to_str().unwrap();

    // An anonymous student: the public environment becomes a kernelspec.
    let id = envstore_api::kernel_id("teach", "analysis");
    let stdout = sync(&server, None, &["--dir", dir]).await;
    assert!(
        stdout.contains(&format!("added {id} (teach/analysis)")),
        "{stdout}"
    );
    let kernel_json = jupyter.path().join("kernels").join(&id).join("kernel.json");
    let spec = read_json(&kernel_json);
    let link = server.environment_link("teach", "analysis");
    assert_eq!(
        spec,
        json!({
            "argv": [link.join("bin/python").display().to_string(), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "teach/analysis",
            "language": "python",
            "metadata": { "envstore": {
                "namespace": "teach",
                "environment": "analysis",
                "lock_hash": build["lock_hash"],
            } },
        })
    );

    // Its argv runs the environment's python (the demo one prints where it
    // was installed and its arguments).
    let connection = jupyter.path().join("kernel-1234.json");
    let printed = run_kernel(&spec, &connection);
    let prefix = fs_err::canonicalize(&link).unwrap();
    assert!(
        prefix.starts_with(server.data_dir.join("prefixes")),
        "{}",
        prefix.display()
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines,
        [
            format!("envstore demo python 3.10.14 prefix={}", prefix.display()).as_str(),
            "arg=-m",
            "arg=ipykernel_launcher",
            "arg=-f",
            format!("arg={}", connection.display()).as_str(),
        ]
    );

    // Nothing changed: nothing to say, nothing rewritten.
    let stdout = sync(&server, None, &["--dir", dir]).await;
    assert!(stdout.is_empty(), "{stdout}");

    // No longer listed for this caller: the kernelspec goes, others stay.
    set_public(&server, "teach", false).await;
    let stdout = sync(&server, None, &["--dir", dir]).await;
    assert_eq!(stdout.trim(), format!("removed {id}"));
    assert!(!kernel_json.parent().unwrap().exists());
    assert!(
        foreign.is_file(),
        "a kernelspec envstore did not write is never touched"
    );
    let kernels: Vec<String> = fs_err::read_dir(jupyter.path().join("kernels"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kernels, ["python3"], "nothing left behind");

    // The server admin still sees it.
    let stdout = sync(&server, Some(&server.token.clone()), &["--dir", dir]).await;
    assert!(stdout.contains(&format!("added {id}")), "{stdout}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_missing_here_is_materialised_from_the_store() {
    let channel = DemoChannel::start().await;
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        |config| {
            config.publish_packed_prefixes = true;
        },
    )
    .await;
    build_demo(&server, "teach", "analysis").await;
    let jupyter = tempfile::tempdir().unwrap();
    let dir = jupyter.path().to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let root: PathBuf = fs_err::canonicalize(elsewhere.path()).unwrap();
    let root_arg = root.to_str().unwrap();
    let token = server.token.clone();

    // Without the database and store, a prefix that is not here comes from
    // the server (tests/e2e/remote_node.rs checks it whole); here it goes to
    // another folder, so the store's path below has its own to do.
    let over_http = tempfile::tempdir().unwrap();
    let http_jupyter = tempfile::tempdir().unwrap();
    let stdout = sync(
        &server,
        Some(&token),
        &[
            "--dir",
            http_jupyter.path().to_str().unwrap(),
            "--root",
            over_http.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        stdout.contains("materialised teach/analysis at"),
        "{stdout}"
    );

    let (database, store) = (
        server.backend.database.clone(),
        server.backend.store.to_string(),
    );
    let args = [
        "--dir",
        dir,
        "--root",
        root_arg,
        "--database",
        &database,
        "--store",
        &store,
    ];
    let stdout = sync(&server, Some(&token), &args).await;
    assert!(
        stdout.contains("materialised teach/analysis at"),
        "{stdout}"
    );
    let id = envstore_api::kernel_id("teach", "analysis");
    let spec = read_json(&jupyter.path().join("kernels").join(&id).join("kernel.json"));
    let python = root.join("envs/teach/analysis/bin/python");
    assert_eq!(spec["argv"][0], python.display().to_string());
    let printed = run_kernel(&spec, &jupyter.path().join("c.json"));
    assert!(
        printed.starts_with("envstore demo python 3.10.14 prefix="),
        "{printed}"
    );

    // Present now: a second sync neither materialises nor rewrites.
    let stdout = sync(&server, Some(&token), &args).await;
    assert!(stdout.is_empty(), "{stdout}");
    server.stop().await;
}

//! The backup and restore of `docs/operations.md`, performed with the
//! commands it gives, against the real binary and its HTTP API: build
//! environments (one with two builds), back up the database and then the
//! object store while the server runs, stop it, wipe everything (the data
//! folder, the database, the bucket prefix), restore, and check that every
//! environment's lockfiles, builds, logs and history come back byte for byte
//! and that `envstore materialize` brings back a complete prefix whose
//! python runs.
//!
//! The same checks run first on two incomplete restores (the database
//! without the store, the store without the database), where they must
//! find problems: a restore that misses either half fails this test.
//!
//! On the embedded defaults (SQLite in the data folder, a `file://` store)
//! and on PostgreSQL + S3 (the servers of `scripts/test-services.sh`, as
//! the distributed tests use them).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use envstore_tests::{DemoChannel, Services, demo_spec_yaml};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The server admin token (given on the command line: no `admin-token`
/// file to back up).
const TOKEN: &str = "backup-test-admin-token-0123456789abcdef";
/// How long anything may take: a build, a start, a stop.
const WAIT: Duration = Duration::from_secs(180);
/// The lockfile formats checked for every environment.
const FORMATS: [&str; 3] = ["conda-lock", "pixi", "explicit"];
/// The artifacts of every lock in the store, checked for every build.
const LOCK_FILES: [&str; 3] = ["conda-lock.yml", "pixi.lock", "explicit-linux-64.txt"];
/// The environments `docs/operations.md` restores prefixes for: the
/// current ones, in namespaces that are not deleted. The same text on
/// SQLite and PostgreSQL.
const ENVIRONMENTS_SQL: &str = "SELECT namespace || '/' || name FROM environments \
     WHERE current_build_id IS NOT NULL AND deleted_at IS NULL \
     AND namespace IN (SELECT name FROM namespaces WHERE deleted_at IS NULL) ORDER BY 1";

/// What the documented S3 commands (`aws s3 sync`, `rclone sync`) do, in
/// boto3 (which moto brings): `copy SRC DST` copies every object under the
/// `s3://bucket/prefix` SRC to the same key under DST; `empty URL` removes
/// every object under it; `count URL` counts them. Each prints how many
/// objects it found.
const S3_SCRIPT: &str = r#"
import os, sys
from urllib.parse import urlparse
import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT"])

def split(url):
    parsed = urlparse(url)
    return parsed.netloc, parsed.path.strip("/") + "/"

def keys(bucket, prefix):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]

if sys.argv[1] == "copy":
    (source, source_prefix), (target, target_prefix) = split(sys.argv[2]), split(sys.argv[3])
    found = keys(source, source_prefix)
    for key in found:
        s3.copy_object(
            Bucket=target,
            Key=target_prefix + key[len(source_prefix):],
            CopySource={"Bucket": source, "Key": key},
        )
elif sys.argv[1] == "empty":
    bucket, prefix = split(sys.argv[2])
    found = keys(bucket, prefix)
    for key in found:
        s3.delete_object(Bucket=bucket, Key=key)
elif sys.argv[1] == "count":
    found = keys(*split(sys.argv[2]))
print(len(found))
"#;

/// Runs a tool to completion; its standard output, asserting success.
async fn run(command: &mut Command) -> String {
    let output = output(command).await;
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn output(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap_or_else(|error| panic!("{command:?} does not run: {error}"))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Runs one SQL statement on a SQLite file as `docs/operations.md` says:
/// with the `sqlite3` command, or with Python's standard library where that
/// is not installed. Prints the rows, one a line.
async fn sqlite(file: &Path, sql: &str) -> String {
    if on_path("sqlite3") {
        run(Command::new("sqlite3").arg(file).arg(sql)).await
    } else {
        println!("no sqlite3 command here: the Python form of docs/operations.md");
        run(Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):\n    \
                 print(*row, sep='|')",
            )
            .arg(file)
            .arg(sql))
        .await
    }
}

/// Where one installation keeps its state, and the backup and restore
/// commands of `docs/operations.md` for it.
enum Installation {
    /// `envstore serve --data-dir DATA`: SQLite at `DATA/envstore.db`, the
    /// store at `DATA/artifacts`.
    Embedded,
    /// A PostgreSQL database and an S3 bucket prefix.
    Distributed(Box<Remote>),
}

/// Where a distributed installation keeps its state.
struct Remote {
    database: String,
    /// A URL of the server's maintenance database (for `createdb`).
    maintenance: String,
    store: url::Url,
    /// Where the bucket prefix is copied to.
    backup_store: url::Url,
    aws_env: Vec<(String, String)>,
}

/// A running `envstore serve`.
struct Server {
    child: Child,
    base: String,
    /// Kept open so the server can go on writing to its stdout.
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

/// One installation under test: its data folder, its backup folder, the
/// server process and the demo channel it builds from.
struct Setup {
    installation: Installation,
    data_dir: PathBuf,
    backup_dir: PathBuf,
    logs_dir: PathBuf,
    channel: DemoChannel,
    client: reqwest::Client,
    server: Option<Server>,
    _root: tempfile::TempDir,
}

impl Setup {
    async fn new(distributed: bool) -> Self {
        let root = tempfile::tempdir().unwrap();
        let base = fs_err::canonicalize(root.path()).unwrap();
        let installation = if distributed {
            let services = Services::get();
            let backend = services.fresh_backend().await;
            let mut backup_store = backend.store.clone();
            backup_store.set_path(&format!("{}-backup", backend.store.path()));
            Installation::Distributed(Box::new(Remote {
                database: backend.database,
                maintenance: services.postgres.clone(),
                store: backend.store,
                backup_store,
                aws_env: services.aws_env.clone(),
            }))
        } else {
            Installation::Embedded
        };
        for folder in ["data", "backup", "logs"] {
            fs_err::create_dir(base.join(folder)).unwrap();
        }
        Self {
            installation,
            data_dir: base.join("data"),
            backup_dir: base.join("backup"),
            logs_dir: base.join("logs"),
            channel: DemoChannel::start().await,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            server: None,
            _root: root,
        }
    }

    fn database(&self) -> String {
        match &self.installation {
            Installation::Embedded => format!("sqlite://{}", self.sqlite_file().display()),
            Installation::Distributed(remote) => remote.database.clone(),
        }
    }

    fn store(&self) -> String {
        match &self.installation {
            Installation::Embedded => {
                url::Url::from_directory_path(self.data_dir.join("artifacts"))
                    .unwrap()
                    .to_string()
            }
            Installation::Distributed(remote) => remote.store.to_string(),
        }
    }

    fn sqlite_file(&self) -> PathBuf {
        self.data_dir.join("envstore.db")
    }

    /// An `envstore` command: the embedded one is given no database or
    /// store (its defaults are the point); the distributed one reaches S3.
    fn envstore(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_envstore"));
        command
            .env_remove("ENVSTORE_DATABASE")
            .env_remove("ENVSTORE_STORE")
            .env_remove("ENVSTORE_DATA_DIR")
            .env("ENVSTORE_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        if let Installation::Distributed(remote) = &self.installation {
            command.envs(remote.aws_env.iter().cloned());
        }
        command
    }

    /// A tool of the distributed backup (`pg_dump`, `python3` for S3…),
    /// with the S3 server's variables.
    fn tool(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        if let Installation::Distributed(remote) = &self.installation {
            command.envs(remote.aws_env.iter().cloned());
        }
        command
    }

    async fn s3(&self, args: &[&str]) -> usize {
        run(self.tool("python3").arg("-c").arg(S3_SCRIPT).args(args))
            .await
            .trim()
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        let log = fs_err::read_to_string(self.logs_dir.join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// `envstore serve` with one in-process worker, until it listens.
    async fn start(&mut self) {
        assert!(self.server.is_none(), "the server already runs");
        let log = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs_dir.join("serve.log"))
            .unwrap()
            .into_file();
        let mut command = self.envstore();
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--workers", "1"])
            .args(["--admin-token", TOKEN, "--channel"])
            .arg(format!("demo={}", self.channel.served.url))
            .arg("--data-dir")
            .arg(&self.data_dir);
        if matches!(self.installation, Installation::Distributed(_)) {
            command.args(["--database", &self.database(), "--store", &self.store()]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("envstore serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line()).await;
        let Ok(Ok(Some(line))) = line else {
            panic!("envstore serve did not start:\n{}", self.log());
        };
        let address = line
            .strip_prefix("envstore listening on ")
            .unwrap_or_else(|| panic!("the listening line, not {line:?}"));
        self.server = Some(Server {
            child,
            base: address.to_owned(),
            _stdout: lines,
        });
        let (status, ready) = self.get("/ready").await;
        assert_eq!(status, 200, "{ready}\n{}", self.log());
    }

    /// Stops the server as `systemctl stop` does: SIGTERM, then waits.
    async fn stop(&mut self) {
        let Some(Server { mut child, .. }) = self.server.take() else {
            return;
        };
        let pid = child.id().unwrap().to_string();
        run(Command::new("kill").args(["-TERM", &pid])).await;
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("envstore serve stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "envstore serve: {status}\n{}", self.log());
    }

    fn url(&self, path: &str) -> String {
        let server = self.server.as_ref().expect("the server runs");
        format!("{}{path}", server.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    /// GET with the admin token: status and body bytes.
    async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        self.send(self.client.get(self.url(path))).await
    }

    /// GET with the admin token: status and JSON (or the text as a string).
    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get_bytes(path).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create_namespace(&self, name: &str) {
        let (status, body) = self
            .send(
                self.client
                    .post(self.url("/api/v1/namespaces"))
                    .json(&json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }

    /// Submits a spec and waits until its build succeeds; the build id.
    async fn build(&self, environment: &str, spec: String) -> String {
        let (status, body) = self
            .send(
                self.client
                    .put(self.url(&format!(
                        "/api/v1/namespaces/{}",
                        environment.replacen('/', "/environments/", 1)
                    )))
                    .header("content-type", "application/yaml")
                    .body(spec),
            )
            .await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 202, "{body}");
        let id = body["build_id"].as_str().unwrap().to_owned();
        let started = Instant::now();
        loop {
            let (_, build) = self.get(&format!("/api/v1/builds/{id}")).await;
            match build["status"].as_str() {
                Some("succeeded") => return id,
                Some("failed" | "cancelled") => panic!("{build:#}\n{}", self.log()),
                _ => {}
            }
            assert!(started.elapsed() < WAIT, "{build:#}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `envstore migrate --status`, which must say the restored database
    /// can be served by this binary.
    async fn migrate_status(&self) -> String {
        run(self
            .envstore()
            .args(["migrate", "--status", "--database", &self.database()]))
        .await
    }

    /// The environments to materialise, listed from the database as
    /// `docs/operations.md` lists them.
    async fn listed_environments(&self) -> Vec<String> {
        let rows = match &self.installation {
            Installation::Embedded => sqlite(&self.sqlite_file(), ENVIRONMENTS_SQL).await,
            Installation::Distributed(remote) => {
                run(self
                    .tool("psql")
                    .args([remote.database.as_str(), "-Atc", ENVIRONMENTS_SQL]))
                .await
            }
        };
        rows.lines().map(str::to_owned).collect()
    }

    /// `envstore materialize NS/NAME --root DATA --database … --store …`.
    async fn materialize(&self, environment: &str) -> Output {
        output(
            self.envstore()
                .args(["materialize", environment, "--root"])
                .arg(&self.data_dir)
                .args(["--database", &self.database(), "--store", &self.store()]),
        )
        .await
    }

    /// Backup, as `docs/operations.md` says, while the server runs: the
    /// database first, then the store. `between` runs in between (a build
    /// that finishes after the database copy: its objects are in the store
    /// copy and nothing in the database copy names them).
    async fn back_up(&self, between: impl AsyncFnOnce()) {
        match &self.installation {
            Installation::Embedded => {
                let target = self.backup_dir.join("envstore.db");
                sqlite(
                    &self.sqlite_file(),
                    &format!("VACUUM INTO '{}'", target.display()),
                )
                .await;
                between().await;
                run(Command::new("cp")
                    .arg("-a")
                    .arg(self.data_dir.join("artifacts"))
                    .arg(self.backup_dir.join("artifacts")))
                .await;
            }
            Installation::Distributed(remote) => {
                let Remote {
                    database,
                    store,
                    backup_store,
                    ..
                } = remote.as_ref();
                run(self
                    .tool("pg_dump")
                    .arg("--format=custom")
                    .arg(format!(
                        "--file={}",
                        self.backup_dir.join("envstore.dump").display()
                    ))
                    .arg(database))
                .await;
                between().await;
                let copied = self
                    .s3(&["copy", store.as_str(), backup_store.as_str()])
                    .await;
                assert!(copied > 0, "the bucket prefix held nothing");
            }
        }
    }

    /// Loses everything: the whole data folder (database file, store,
    /// prefixes, links, caches) and, when distributed, the database and
    /// the bucket prefix.
    async fn wipe(&self) {
        fs_err::remove_dir_all(&self.data_dir).unwrap();
        fs_err::create_dir(&self.data_dir).unwrap();
        if let Installation::Distributed(remote) = &self.installation {
            let Remote {
                database,
                maintenance,
                store,
                ..
            } = remote.as_ref();
            run(self
                .tool("dropdb")
                .arg("--force")
                .arg(format!("--maintenance-db={maintenance}"))
                .arg(database_name(database)))
            .await;
            self.s3(&["empty", store.as_str()]).await;
            assert_eq!(self.s3(&["count", store.as_str()]).await, 0);
        }
    }

    /// Restore, as `docs/operations.md` says, with the server stopped: the
    /// database (from the backup, or an empty one when `database` is
    /// false) and the store (when `store` is true).
    async fn restore(&self, database: bool, store: bool) {
        match &self.installation {
            Installation::Embedded => {
                if database {
                    run(Command::new("cp")
                        .arg(self.backup_dir.join("envstore.db"))
                        .arg(self.sqlite_file()))
                    .await;
                    run(Command::new("rm")
                        .arg("-f")
                        .arg(self.data_dir.join("envstore.db-wal"))
                        .arg(self.data_dir.join("envstore.db-shm")))
                    .await;
                }
                if store {
                    run(Command::new("cp")
                        .arg("-a")
                        .arg(self.backup_dir.join("artifacts"))
                        .arg(self.data_dir.join("artifacts")))
                    .await;
                }
            }
            Installation::Distributed(remote) => {
                let Remote {
                    database: url,
                    maintenance,
                    store: live,
                    backup_store,
                    ..
                } = remote.as_ref();
                run(self
                    .tool("createdb")
                    .arg(format!("--maintenance-db={maintenance}"))
                    .arg(database_name(url)))
                .await;
                if database {
                    run(self
                        .tool("pg_restore")
                        .args(["--no-owner", "--exit-on-error", "--single-transaction"])
                        .arg(format!("--dbname={url}"))
                        .arg(self.backup_dir.join("envstore.dump")))
                    .await;
                }
                if store {
                    let copied = self
                        .s3(&["copy", backup_store.as_str(), live.as_str()])
                        .await;
                    assert!(copied > 0);
                }
            }
        }
    }

    /// What a user and an operator see of `environments`, to compare after
    /// a restore: lockfiles, builds, logs and specs (bytes), and each
    /// current prefix's files (before anything ran in it).
    async fn record(&self, environments: &[&str]) -> Recorded {
        let mut recorded = Recorded::default();
        for environment in environments {
            for (key, value) in self.observe(environment).await {
                let value =
                    value.unwrap_or_else(|problem| panic!("{environment}: {key}: {problem}"));
                recorded.observed.insert(key, value);
            }
            let prefix = self.environment_link(environment);
            assert!(envstore_link::is_complete(&prefix), "{environment}");
            recorded
                .prefixes
                .insert(environment.to_string(), manifest(&prefix));
        }
        recorded
    }

    fn environment_link(&self, environment: &str) -> PathBuf {
        self.data_dir.join("envs").join(environment)
    }

    /// Everything the API serves about one environment, by a name saying
    /// what it is; `Err` says why it could not be read.
    async fn observe(&self, environment: &str) -> Vec<(String, Result<Vec<u8>, String>)> {
        let mut observed = Vec::new();
        let base = format!(
            "/api/v1/namespaces/{}",
            environment.replacen('/', "/environments/", 1)
        );
        let read = |path: String| async move {
            match self.get_bytes(&path).await {
                (200, body) => Ok(body),
                (status, body) => Err(format!(
                    "GET {path}: {status} {}",
                    String::from_utf8_lossy(&body)
                )),
            }
        };
        let view = read(base.clone()).await;
        let builds: Vec<(String, Option<String>)> = view
            .as_ref()
            .ok()
            .and_then(|body| serde_json::from_slice::<Value>(body).ok())
            .map(|view| {
                view["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|build| {
                        (
                            build["id"].as_str().unwrap().to_owned(),
                            build["lock_hash"].as_str().map(str::to_owned),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        observed.push((format!("{environment} view"), view));
        observed.push((
            format!("{environment} builds"),
            read(format!("{base}/builds")).await,
        ));
        for format in FORMATS {
            observed.push((
                format!("{environment} lockfile {format}"),
                read(format!("{base}/lockfile?format={format}")).await,
            ));
        }
        for (id, lock) in builds {
            observed.push((
                format!("build {id}"),
                read(format!("/api/v1/builds/{id}")).await,
            ));
            observed.push((
                format!("build {id} spec"),
                read(format!("/api/v1/builds/{id}/spec")).await,
            ));
            observed.push((
                format!("build {id} log"),
                read(format!("/api/v1/builds/{id}/log")).await,
            ));
            for file in LOCK_FILES {
                let lock = lock.as_deref().unwrap();
                observed.push((
                    format!("lock {lock} {file}"),
                    read(format!("/api/v1/locks/{lock}/{file}")).await,
                ));
            }
        }
        observed
    }

    /// What differs from `recorded` after a restore (the server runs):
    /// everything the API serves, then each environment listed in the
    /// database materialised, complete, with the same files, its python
    /// running. Empty when the restore is whole.
    async fn problems(&self, recorded: &Recorded) -> Vec<String> {
        let mut problems = Vec::new();
        let environments: Vec<&String> = recorded.prefixes.keys().collect();
        for environment in &environments {
            for (key, value) in self.observe(environment).await {
                match (value, recorded.observed.get(&key)) {
                    (Err(problem), _) => problems.push(problem),
                    (Ok(_), None) => problems.push(format!("{key}: not there before")),
                    (Ok(now), Some(before)) if &now != before => problems.push(format!(
                        "{key} differs:\nbefore: {}\nafter:  {}",
                        String::from_utf8_lossy(before),
                        String::from_utf8_lossy(&now)
                    )),
                    (Ok(_), Some(_)) => {}
                }
            }
        }
        let listed = self.listed_environments().await;
        if listed.iter().collect::<Vec<_>>() != environments {
            problems.push(format!(
                "the database lists {listed:?}, not {environments:?}"
            ));
        }
        for environment in listed {
            let output = self.materialize(&environment).await;
            if !output.status.success() {
                problems.push(format!(
                    "envstore materialize {environment}: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
                continue;
            }
            let link = self.environment_link(&environment);
            if !envstore_link::is_complete(&link) {
                problems.push(format!("{environment}: the prefix is not complete"));
                continue;
            }
            let now = manifest(&link);
            match recorded.prefixes.get(&environment) {
                Some(before) if before == &now => {}
                Some(before) => problems.push(format!(
                    "{environment}: the prefix differs: {}",
                    differences(before, &now).join(", ")
                )),
                None => problems.push(format!("{environment}: not there before")),
            }
            if let Some(problem) = python_problem(&link) {
                problems.push(format!("{environment}: {problem}"));
            }
        }
        problems
    }
}

/// What [`Setup::record`] saw before the backup.
#[derive(Default)]
struct Recorded {
    /// By what it is (`team/analysis lockfile pixi`, `build ID log`…).
    observed: BTreeMap<String, Vec<u8>>,
    /// Each environment's prefix files, by `namespace/name`.
    prefixes: BTreeMap<String, BTreeMap<String, String>>,
}

fn database_name(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned()
}

/// Every entry of a prefix (through its environment link), by relative
/// path: a file's size and hash, a link's target, a folder. Python's
/// `__pycache__` folders are left out (running python writes them), and so
/// is the text of `conda-meta/history`, whose lines carry the time of the
/// install (a prefix built again from its lock has a later one).
fn manifest(link: &Path) -> BTreeMap<String, String> {
    let root = fs_err::canonicalize(link).unwrap();
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(folder) = pending.pop() {
        for entry in fs_err::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            let metadata = fs_err::symlink_metadata(&path).unwrap();
            let description = if metadata.file_type().is_symlink() {
                format!("link to {}", fs_err::read_link(&path).unwrap().display())
            } else if metadata.is_dir() {
                if path.file_name().is_some_and(|name| name == "__pycache__") {
                    continue;
                }
                pending.push(path.clone());
                "folder".to_owned()
            } else if name == "conda-meta/history" {
                "the install history".to_owned()
            } else {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                fs_err::read(&path).unwrap().hash(&mut hasher);
                format!("{} bytes, hash {:016x}", metadata.len(), hasher.finish())
            };
            entries.insert(name, description);
        }
    }
    entries
}

/// The first few entries that differ between two manifests.
fn differences(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    for name in before.keys().chain(after.keys()) {
        let (was, is) = (before.get(name), after.get(name));
        if was != is && !found.iter().any(|line: &String| line.starts_with(name)) {
            found.push(format!("{name}: {was:?} -> {is:?}"));
        }
    }
    found.truncate(10);
    found
}

/// Why the environment's python does not run the demo program (it prints
/// its prefix: the stand-in the one it was installed into, the real
/// python `sys.prefix`, which follows the environment's link).
fn python_problem(link: &Path) -> Option<String> {
    let prefix = fs_err::canonicalize(link).unwrap();
    let output = std::process::Command::new(link.join("bin/python"))
        .args(envstore_fixtures::DEMO_PROGRAM_ARGS)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => return Some(format!("python does not run: {error}")),
    };
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let expected = envstore_fixtures::demo_expect::demo_program_first_line(&prefix);
    let through_link = expected.replace(&prefix.display().to_string(), &link.display().to_string());
    let first = printed.lines().next().unwrap_or_default();
    (!output.status.success() || (first != expected && first != through_link)).then(|| {
        format!(
            "python printed {printed:?} ({}), not {expected:?}; {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The whole story on one installation.
async fn back_up_wipe_restore(distributed: bool) {
    let mut setup = Setup::new(distributed).await;
    setup.start().await;
    setup.create_namespace("team").await;
    setup.create_namespace("lab").await;

    // Two environments; one with two builds, so it has history.
    let first = setup
        .build(
            "team/analysis",
            "channels: [demo]\ndependencies: [python 3.11.*]\nplatforms: [linux-64]\n".to_owned(),
        )
        .await;
    let second = setup.build("team/analysis", demo_spec_yaml("demo")).await;
    setup
        .build(
            "lab/tools",
            "channels: [demo]\ndependencies: [python 3.11.*, numpy]\nplatforms: [linux-64]\n"
                .to_owned(),
        )
        .await;
    let environments = ["lab/tools", "team/analysis"];
    let recorded = setup.record(&environments).await;
    let (_, analysis) = setup
        .get("/api/v1/namespaces/team/environments/analysis")
        .await;
    let history: Vec<&str> = analysis["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|build| build["id"].as_str().unwrap())
        .collect();
    assert_eq!(history.len(), 2, "{analysis:#}");
    assert!(history.contains(&first.as_str()) && history.contains(&second.as_str()));
    assert_eq!(analysis["current_build"]["id"], second.as_str());
    for environment in environments {
        assert_eq!(
            python_problem(&setup.environment_link(environment)),
            None,
            "before the backup"
        );
    }

    // The backup, while the server runs. A build finishing between the
    // database copy and the store copy leaves objects that the restored
    // database does not name: harmless.
    let started = Instant::now();
    setup
        .back_up(async || {
            setup
                .build(
                    "lab/late",
                    "channels: [demo]\ndependencies: [libzlib]\nplatforms: [linux-64]\n".to_owned(),
                )
                .await;
        })
        .await;
    println!("backup taken in {:?}", started.elapsed());
    setup.stop().await;

    // A restore that misses the store: the checks must say so.
    setup.wipe().await;
    setup.restore(true, false).await;
    setup.start().await;
    let problems = setup.problems(&recorded).await;
    assert!(
        problems.iter().any(|problem| problem.contains("lockfile"))
            && problems
                .iter()
                .any(|problem| problem.contains("envstore materialize")),
        "a restore without the store went unnoticed: {problems:#?}"
    );
    setup.stop().await;

    // A restore that misses the database: the same.
    setup.wipe().await;
    setup.restore(false, true).await;
    setup.start().await;
    let problems = setup.problems(&recorded).await;
    assert!(
        problems
            .iter()
            .any(|problem| problem
                .starts_with("GET /api/v1/namespaces/team/environments/analysis: 404"))
            && problems
                .iter()
                .any(|problem| problem.contains("the database lists []")),
        "a restore without the database went unnoticed: {problems:#?}"
    );
    setup.stop().await;

    // The whole restore, as documented: database, store, `migrate
    // --status`, start, then a prefix for every environment the database
    // lists.
    setup.wipe().await;
    let started = Instant::now();
    setup.restore(true, true).await;
    let status = setup.migrate_status().await;
    assert!(status.contains("up to date"), "{status}");
    setup.start().await;
    let problems = setup.problems(&recorded).await;
    println!(
        "restored and materialised in {:?} ({} artifacts compared, {} prefixes)",
        started.elapsed(),
        recorded.observed.len(),
        recorded.prefixes.len()
    );
    assert!(
        problems.is_empty(),
        "the restore lost something:\n{}\n{}",
        problems.join("\n"),
        setup.log()
    );
    let (status, late) = setup.get("/api/v1/namespaces/lab/environments/late").await;
    assert_eq!(status, 404, "built after the database copy: {late}");

    // Rolling back to the older build after the restore: current in the
    // database at once, its prefix made by `envstore materialize`.
    let (status, body) = setup
        .send(
            setup
                .client
                .put(setup.url("/api/v1/namespaces/team/environments/analysis/current"))
                .json(&json!({ "build_id": first })),
        )
        .await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prefix"], Value::Null, "{body}");
    let output = setup.materialize("team/analysis").await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let link = setup.environment_link("team/analysis");
    assert!(envstore_link::is_complete(&link));
    assert_eq!(python_problem(&link), None);
    let (_, build) = setup.get(&format!("/api/v1/builds/{first}")).await;
    let lock = build["lock_hash"].as_str().unwrap();
    let (_, lockfile) = setup
        .get_bytes("/api/v1/namespaces/team/environments/analysis/lockfile?format=pixi")
        .await;
    assert_eq!(
        Some(&lockfile),
        recorded.observed.get(&format!("lock {lock} pixi.lock")),
        "the rolled-back lockfile"
    );

    // The restored installation goes on building.
    setup
        .build(
            "lab/tools",
            "channels: [demo]\ndependencies: [python 3.11.*]\nplatforms: [linux-64]\n".to_owned(),
        )
        .await;
    let (_, tools) = setup.get("/api/v1/namespaces/lab/environments/tools").await;
    assert_eq!(tools["history"].as_array().unwrap().len(), 2, "{tools:#}");
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_back_up_wipe_restore_and_every_environment_comes_back() {
    back_up_wipe_restore(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_s3_back_up_wipe_restore_and_every_environment_comes_back() {
    back_up_wipe_restore(true).await;
}

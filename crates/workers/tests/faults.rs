//! The worker pipeline under faults, with a local store, SQLite and the
//! demo channel: what a build promises is published before it succeeds,
//! a lock whose packed prefix is missing is still materialised, and the
//! attempt limit holds when workers die, their logs kept with the build.

#![allow(clippy::unwrap_used)] // helpers outside #[test] unwrap too

use std::path::{Path, PathBuf};
use std::time::Duration;

use envstore_core::{BuildStatus, ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
use envstore_db::Database;
use envstore_link::PrefixBuilder;
use envstore_solve::EnvironmentSolver;
use envstore_store::{ArtifactStore, keys};
use envstore_workers::{BuildContext, BuildLogs, Layout, materialize_environment};
use rattler::package_cache::PackageCache;
use rattler_conda_types::Subdir;

const SPEC: &str = "channels: [demo]\ndependencies: [python 3.11.*]\n";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    db: Database,
    store: ArtifactStore,
    allowlist: ChannelAllowlist,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let demo = root.join("channels").join("demo");
        envstore_fixtures::write_demo_channel(&demo).await.unwrap();
        let allowlist = ChannelAllowlist::new(vec![NamedChannel {
            name: "demo".to_owned(),
            url: url::Url::from_directory_path(&demo).unwrap(),
        }]);
        let db = Database::connect(&format!("sqlite://{}", root.join("envstore.db").display()))
            .await
            .unwrap();
        let artifacts = root.join("artifacts");
        fs_err::create_dir_all(&artifacts).unwrap();
        let store =
            ArtifactStore::open(&url::Url::from_directory_path(&artifacts).unwrap()).unwrap();
        Self {
            _dir: dir,
            root,
            db,
            store,
            allowlist,
        }
    }

    /// A worker node whose data folder is `<root>/<node>`.
    fn node(&self, node: &str, publish_packed_prefixes: bool) -> BuildContext {
        let data = self.root.join(node);
        let layout = Layout::under(&data);
        fs_err::create_dir_all(&layout.prefixes).unwrap();
        let cache_dir = data.join("cache");
        let package_cache = PackageCache::new(layout.package_cache.clone());
        BuildContext {
            db: self.db.clone(),
            store: self.store.clone(),
            solver: EnvironmentSolver::new(
                &cache_dir,
                package_cache.clone(),
                Duration::from_secs(120),
            ),
            prefixes: PrefixBuilder::new(layout.prefixes.clone(), package_cache),
            layout,
            native_platform: Subdir::Linux64,
            allowlist: self.allowlist.clone(),
            logs: BuildLogs::default(),
            lease: Duration::from_secs(30),
            publish_packed_prefixes,
            test_pause: None,
            build_timeout: Duration::from_secs(600),
            pypi: envstore_workers::PypiContext::new(
                cache_dir.join("pypi"),
                envstore_pypi::WheelLimits::default(),
                Duration::from_secs(30),
            )
            .unwrap(),
        }
    }

    async fn submit(&self, environment: &str) -> String {
        let namespace = "team".parse().unwrap();
        let _ = self.db.create_namespace(&namespace).await;
        let spec = EnvironmentSpec::parse(SPEC.as_bytes(), SpecFormat::Yaml)
            .unwrap()
            .canonicalize(&self.allowlist, Subdir::Linux64)
            .unwrap();
        self.db
            .submit_build(&namespace, &environment.parse().unwrap(), &spec, None)
            .await
            .unwrap()
            .build
            .id
    }

    /// Claims the next job and runs it on `node` to its end.
    async fn run_next(&self, node: &BuildContext) -> envstore_db::BuildRecord {
        let job = self
            .db
            .claim_job("worker", node.lease, 3)
            .await
            .unwrap()
            .expect("a job is queued");
        envstore_workers::run_job(node, &job, "worker", 3)
            .await
            .unwrap();
        let build = self.db.build(&job.build_id).await.unwrap().unwrap();
        assert_eq!(
            build.status,
            BuildStatus::Succeeded,
            "{:?}: {}",
            build.error,
            self.log(&build.id).await
        );
        build
    }

    async fn log(&self, build_id: &str) -> String {
        match self.store.get(&keys::build_log(build_id)).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => format!("(no log: {error})"),
        }
    }
}

fn lock_hash(build: &envstore_db::BuildRecord) -> envstore_core::ContentHash {
    build.lock_hash.as_deref().unwrap().parse().unwrap()
}

fn complete(prefixes: &Path, lock: &envstore_core::ContentHash) -> bool {
    envstore_link::is_complete(&prefixes.join(lock.short()))
}

#[tokio::test]
async fn a_build_that_reuses_a_complete_prefix_publishes_its_missing_packed_prefix_before_succeeding()
 {
    let fixture = Fixture::new().await;
    // The first build's node packed nothing (as if it died before packing).
    let unpacked = fixture.node("node", false);
    fixture.submit("first").await;
    let first = fixture.run_next(&unpacked).await;
    let lock = lock_hash(&first);
    assert_eq!(fixture.db.packed_prefix(&lock).await.unwrap(), None);

    // A build of the same lock where packing is on finds the prefix complete
    // and still publishes what is missing before it succeeds.
    let packing = fixture.node("node", true);
    let second_id = fixture.submit("second").await;
    let second = fixture.run_next(&packing).await;
    assert_eq!(second.id, second_id);
    assert!(second.prefix_reused);
    let sha256 = fixture
        .db
        .packed_prefix(&lock)
        .await
        .unwrap()
        .expect("the packed prefix is recorded");
    let archive = fixture
        .store
        .get(&keys::packed_prefix(&lock))
        .await
        .unwrap();
    assert_eq!(envstore_core::ContentHash::of(&archive), sha256);
    let log = fixture.log(&second.id).await;
    assert!(
        log.contains("its packed form was never published: publishing it now"),
        "{log}"
    );

    // Another node materialises it from the store.
    let other = fixture.node("other", false);
    let prefix = materialize_environment(
        &fixture.db,
        &fixture.store,
        &other.layout,
        &other.prefixes,
        &other.pypi,
        "linux-64",
        &"team".parse().unwrap(),
        &"second".parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(prefix, other.layout.prefixes.join(lock.short()));
    assert!(complete(&other.layout.prefixes, &lock));
}

#[tokio::test]
async fn materialize_builds_from_the_lock_when_no_packed_prefix_was_published() {
    let fixture = Fixture::new().await;
    let builder = fixture.node("builder", false);
    fixture.submit("env").await;
    let build = fixture.run_next(&builder).await;
    let lock = lock_hash(&build);
    assert_eq!(fixture.db.packed_prefix(&lock).await.unwrap(), None);

    let other = fixture.node("other", false);
    let prefix = materialize_environment(
        &fixture.db,
        &fixture.store,
        &other.layout,
        &other.prefixes,
        &other.pypi,
        "linux-64",
        &"team".parse().unwrap(),
        &"env".parse().unwrap(),
    )
    .await
    .expect("the prefix is built from the stored lock");
    assert!(complete(&other.layout.prefixes, &lock));
    assert!(prefix.join("bin").join("python").exists() || prefix.join("conda-meta").is_dir());
    let link = other.layout.environment_link("team", "env");
    assert_eq!(fs_err::read_link(&link).unwrap(), prefix);
}

#[tokio::test]
async fn a_build_whose_workers_died_three_times_fails_with_their_logs() {
    let fixture = Fixture::new().await;
    let node = std::sync::Arc::new(fixture.node("node", false));
    let build_id = fixture.submit("env").await;
    // Three attempts whose workers die: each claims, keeps some log, and
    // stops renewing its lease.
    for attempt in 1..=3 {
        let job = fixture
            .db
            .claim_job(&format!("dead-{attempt}"), Duration::from_millis(20), 3)
            .await
            .unwrap()
            .unwrap();
        assert!(job.failed_at_limit.is_none());
        fixture
            .db
            .save_attempt_log(
                &build_id,
                attempt,
                &format!("attempt {attempt} was linking when it died\n"),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = fixture
        .db
        .claim_job("worker", node.lease, 3)
        .await
        .unwrap()
        .unwrap();
    let message = job.failed_at_limit.clone().expect("no fourth attempt");
    assert!(
        message.starts_with("the build's worker stopped 3 times while building it"),
        "{message}"
    );
    envstore_workers::close_at_limit(&node, &job, &message)
        .await
        .unwrap();

    let build = fixture.db.build(&build_id).await.unwrap().unwrap();
    assert_eq!(build.status, BuildStatus::Failed);
    assert_eq!(build.error.as_deref(), Some(message.as_str()));
    let log = fixture.log(&build_id).await;
    assert!(log.contains("attempt 3 was linking when it died"), "{log}");
    assert!(log.contains(&message), "{log}");
    let attempt_log = fixture
        .store
        .get(&keys::attempt_log(&build_id, 3))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&attempt_log).contains("attempt 3 ends here: its worker stopped")
    );
    assert_eq!(
        fixture.db.attempt_log(&build_id).await.unwrap(),
        None,
        "published, then forgotten"
    );
}

#[tokio::test]
async fn an_attempt_that_takes_over_publishes_the_stopped_attempts_log_before_its_own() {
    let fixture = Fixture::new().await;
    let node = std::sync::Arc::new(fixture.node("node", false));
    let build_id = fixture.submit("env").await;
    let dead = fixture
        .db
        .claim_job("dead", Duration::from_millis(20), 3)
        .await
        .unwrap()
        .unwrap();
    fixture
        .db
        .save_attempt_log(
            &build_id,
            dead.attempts,
            "the first attempt got to linking\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let build = fixture.run_next(&node).await;
    let log = fixture.log(&build.id).await;
    let earlier = log
        .find("the first attempt got to linking")
        .expect("the stopped attempt's log is kept");
    let ends = log.find("attempt 1 ends here: its worker stopped").unwrap();
    let own = log.find("(attempt 2)").unwrap();
    assert!(earlier < ends && ends < own, "{log}");
    assert!(
        fixture
            .store
            .exists(&keys::attempt_log(&build.id, 1))
            .await
            .unwrap()
    );
    assert_eq!(fixture.db.attempt_log(&build.id).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoever_sees_a_build_succeed_finds_its_environment_link_in_place() {
    let fixture = Fixture::new().await;
    let node = std::sync::Arc::new(fixture.node("node", false));
    let build_id = fixture.submit("env").await;
    let job = fixture
        .db
        .claim_job("worker", node.lease, 3)
        .await
        .unwrap()
        .expect("a job is queued");
    let link = node.layout.environment_link("team", "env");
    let worker = {
        let node = std::sync::Arc::clone(&node);
        tokio::spawn(async move { envstore_workers::run_job(&node, &job, "worker", 3).await })
    };
    // Polls the record as a client polling the API would, as fast as it
    // can: the moment it says `succeeded`, the link must already be there.
    let build = loop {
        let worker_ended = worker.is_finished();
        let build = fixture.db.build(&build_id).await.unwrap().unwrap();
        if build.status.is_final() {
            break build;
        }
        assert!(!worker_ended, "the worker ended without ending the build");
        tokio::task::yield_now().await;
    };
    let link_at_success = fs_err::canonicalize(&link).ok();
    worker.await.unwrap().unwrap();
    assert_eq!(build.status, BuildStatus::Succeeded, "{:?}", build.error);
    let prefix = node.layout.prefixes.join(lock_hash(&build).short());
    assert_eq!(
        link_at_success,
        Some(prefix.canonicalize().unwrap()),
        "envs/team/env pointed at the prefix when the success was recorded"
    );
}

/// A spec a newer API accepted, with a field this release does not know:
/// the worker does not build it without the field, but leaves it queued,
/// its claim not counted as an attempt; once the spec holds nothing
/// unknown, it builds.
#[tokio::test]
async fn a_spec_with_fields_this_worker_does_not_know_stays_queued_for_a_newer_worker() {
    let fixture = Fixture::new().await;
    let node = fixture.node("node", false);
    let build_id = fixture.submit("env").await;
    let build = fixture.db.build(&build_id).await.unwrap().unwrap();
    let sqlite = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        fixture.root.join("envstore.db").display()
    ))
    .await
    .unwrap();
    let canonical: String = sqlx::query_scalar("SELECT canonical FROM specs WHERE spec_hash = $1")
        .bind(&build.spec_hash)
        .fetch_one(&sqlite)
        .await
        .unwrap();
    let mut newer: serde_json::Value = serde_json::from_str(&canonical).unwrap();
    newer["gpu"] = serde_json::json!({"cuda": "12.4"});
    let set_canonical = |text: String| {
        let (sqlite, hash) = (sqlite.clone(), build.spec_hash.clone());
        async move {
            sqlx::query("UPDATE specs SET canonical = $1 WHERE spec_hash = $2")
                .bind(text)
                .bind(hash)
                .execute(&sqlite)
                .await
                .unwrap();
        }
    };
    set_canonical(newer.to_string()).await;

    let job = fixture
        .db
        .claim_job("old", node.lease, 3)
        .await
        .unwrap()
        .unwrap();
    envstore_workers::run_job(&node, &job, "old", 3)
        .await
        .unwrap();
    let waiting = fixture.db.build(&build_id).await.unwrap().unwrap();
    assert_eq!(waiting.status, BuildStatus::Queued);
    assert_eq!(waiting.lock_hash, None, "nothing was solved");
    assert_eq!(fixture.db.queued_jobs().await.unwrap(), 1);
    let (attempts, last_error): (i64, String) =
        sqlx::query_as("SELECT attempts, last_error FROM jobs WHERE build_id = $1")
            .bind(&build_id)
            .fetch_one(&sqlite)
            .await
            .unwrap();
    assert_eq!(attempts, 0, "the claim is not an attempt");
    assert!(
        last_error.contains("fields this worker does not know (gpu)"),
        "{last_error}"
    );

    // A worker that knows every field of the spec builds it.
    set_canonical(canonical).await;
    sqlx::query("UPDATE jobs SET run_after = 0 WHERE build_id = $1")
        .bind(&build_id)
        .execute(&sqlite)
        .await
        .unwrap();
    let built = fixture.run_next(&node).await;
    assert_eq!(built.id, build_id);
}

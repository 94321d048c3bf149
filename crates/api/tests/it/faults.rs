//! Faults as the API answers them: a database that does not answer is a
//! 503 with `Retry-After` (never a 500 or a hang), and `/ready` reports a
//! data folder that cannot be written, then recovers by itself once it can.
//! The real outages (PostgreSQL stopped, a full disk) are in the fault suite.

use std::sync::Arc;

use envstore_api::{AdminToken, App, BuildEvents};
use envstore_core::{ChannelAllowlist, Policy};
use envstore_db::Database;
use envstore_store::ArtifactStore;
use rattler_conda_types::Subdir;
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN: &str = "test-admin-token";

struct NoWorkers;

impl BuildEvents for NoWorkers {
    fn submitted(&self) {}

    fn live_log(&self, _build_id: &str) -> Option<String> {
        None
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    db: Database,
    data_dir: std::path::PathBuf,
    _folder: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let folder = tempfile::tempdir().unwrap();
        let root = folder.path().to_path_buf();
        let db = Database::connect(&format!("sqlite://{}", root.join("envstore.db").display()))
            .await
            .unwrap();
        let store =
            ArtifactStore::open(&url::Url::from_directory_path(root.join("artifacts")).unwrap())
                .unwrap();
        let data_dir = root.join("data");
        fs_err::create_dir(&data_dir).unwrap();
        let app = Arc::new(App {
            db: db.clone(),
            store,
            allowlist: ChannelAllowlist::new(Vec::new()),
            default_platform: Subdir::Linux64,
            admin_token: AdminToken::new(ADMIN),
            default_policy: Policy::default(),
            events: Arc::new(NoWorkers),
            oidc: None,
            prefixes_root: data_dir.join("prefixes"),
            data_dir: data_dir.clone(),
            environments_root: data_dir.join("envs"),
            solver: envstore_solve::EnvironmentSolver::new(
                &root.join("cache"),
                rattler_cache::package_cache::PackageCache::new(root.join("cache/pkgs")),
                std::time::Duration::from_secs(60),
            ),
            pypi_index: envstore_pypi::IndexSettings::pypi(root.join("cache/pypi")),
            solve_permits: Arc::new(tokio::sync::Semaphore::new(1)),
            usage: Default::default(),
            event_streams: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, envstore_api::router(app)).await });
        Self {
            base,
            client: reqwest::Client::new(),
            db,
            data_dir,
            _folder: folder,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
    }
}

/// The problem body of a 503, after checking its headers.
async fn unavailable(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_database_that_does_not_answer_is_a_503_with_retry_after() {
    let server = Server::start().await;
    assert_eq!(server.get("/api/v1/health").await.status(), StatusCode::OK);
    server.db.close().await;

    let started = std::time::Instant::now();
    for response in [
        server.get("/api/v1/health").await,
        server.get("/api/v1/namespaces").await,
        server
            .client
            .put(format!(
                "{}/api/v1/namespaces/team/environments/env",
                server.base
            ))
            .bearer_auth(ADMIN)
            .header("content-type", "application/yaml")
            .header("idempotency-key", "0193a3c4-0000-7000-8000-000000000001")
            .body("dependencies: [python]\n")
            .send()
            .await
            .unwrap(),
    ] {
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(retry_after.as_deref(), Some("5"));
        let problem = unavailable(response).await;
        assert_eq!(
            problem["type"], "/problems/database-unavailable",
            "{problem}"
        );
        assert_eq!(problem["status"], 503);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("the database does not answer"),
            "{detail}"
        );
        assert!(detail.ends_with("try again in 5 s"), "{detail}");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "failed fast: {:?}",
        started.elapsed()
    );

    let problem = unavailable(server.get("/ready").await).await;
    assert_eq!(
        problem["failed"],
        serde_json::json!(["database"]),
        "{problem}"
    );
}

#[tokio::test]
async fn ready_reports_a_data_folder_that_cannot_be_written_until_it_can() {
    let server = Server::start().await;
    let ready = server.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let checks: Value = ready.json().await.unwrap();
    assert_eq!(checks["checks"]["data_folder"], "ok", "{checks}");
    assert_eq!(checks["checks"]["database"], "ok", "{checks}");

    // The folder is gone and a file stands in its place (root ignores
    // permission bits, so a mode cannot stand in for a full disk).
    fs_err::remove_dir_all(&server.data_dir).unwrap();
    fs_err::write(&server.data_dir, b"not a folder").unwrap();
    let problem = unavailable(server.get("/ready").await).await;
    assert_eq!(
        problem["failed"],
        serde_json::json!(["data_folder"]),
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap();
    let expected = format!(
        "the data folder '{}' cannot be written: ",
        server.data_dir.display()
    );
    assert!(detail.contains(&expected), "{detail}");
    assert!(
        detail.contains("os error 20"),
        "the system's reason: {detail}"
    );

    // Repaired: ready again on the next probe, no restart.
    fs_err::remove_file(&server.data_dir).unwrap();
    fs_err::create_dir(&server.data_dir).unwrap();
    assert_eq!(server.get("/ready").await.status(), StatusCode::OK);
    assert_eq!(
        fs_err::read_dir(&server.data_dir).unwrap().count(),
        0,
        "no probe file is left behind"
    );
}

#[tokio::test]
async fn a_worker_only_node_answers_ready_with_the_same_checks() {
    let folder = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!(
        "sqlite://{}",
        folder.path().join("envstore.db").display()
    ))
    .await
    .unwrap();
    let store = ArtifactStore::open(
        &url::Url::from_directory_path(folder.path().join("artifacts")).unwrap(),
    )
    .unwrap();
    let data_dir = folder.path().join("data");
    fs_err::write(&data_dir, b"not a folder").unwrap();
    let readiness = envstore_api::readiness::Readiness {
        db,
        store,
        data_dir: data_dir.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = envstore_api::prometheus::worker_router_with_readiness(readiness);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();

    let problem = unavailable(client.get(format!("{base}/ready")).send().await.unwrap()).await;
    assert_eq!(
        problem["failed"],
        serde_json::json!(["data_folder"]),
        "{problem}"
    );
    fs_err::remove_file(&data_dir).unwrap();
    fs_err::create_dir(&data_dir).unwrap();
    assert_eq!(
        client
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

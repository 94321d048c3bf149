//! The lockfile GET path over HTTP: conditional requests, the in-memory
//! copies of lock artifacts, and access checks that stay exact although the
//! access data is cached (a revoked token, a removed role or a namespace
//! made private is refused on the very next request).

use std::path::PathBuf;
use std::sync::Arc;

use envstore_api::{AdminToken, App, BuildEvents};
use envstore_core::{
    BuildStatus, ChannelAllowlist, ContentHash, EnvironmentSpec, NamedChannel, NamespaceName,
    Policy, Role, SpecFormat,
};
use envstore_db::{BuildOutcome, Database, NewToken};
use envstore_store::{ArtifactStore, artifact, keys};
use rattler_conda_types::Subdir;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use serde_json::json;

const ADMIN: &str = "test-admin-token";
const LOCK_YAML: &str = "version: 1\npackage: []\n";

struct NoWorkers;

impl BuildEvents for NoWorkers {
    fn submitted(&self) {}

    fn live_log(&self, _build_id: &str) -> Option<String> {
        None
    }
}

/// A folder under the system's temporary folder, removed on drop.
struct TempFolder(PathBuf);

impl TempFolder {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("envstore-api-test-{}", uuid_like()));
        fs_err::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

struct Server {
    base: String,
    client: reqwest::Client,
    db: Database,
    store: ArtifactStore,
    folder: TempFolder,
}

impl Server {
    async fn start() -> Self {
        let folder = TempFolder::new();
        let db = Database::connect(&format!(
            "sqlite://{}",
            folder.0.join("envstore.db").display()
        ))
        .await
        .unwrap();
        let store_url = url::Url::from_directory_path(folder.0.join("artifacts")).unwrap();
        let store = ArtifactStore::open(&store_url).unwrap();
        let app = Arc::new(App {
            db: db.clone(),
            store: store.clone(),
            allowlist: ChannelAllowlist::new(Vec::new()),
            default_platform: Subdir::Linux64,
            admin_token: AdminToken::new(ADMIN),
            default_policy: Policy::default(),
            events: Arc::new(NoWorkers),
            oidc: None,
            prefixes_root: folder.0.join("prefixes"),
            data_dir: folder.0.clone(),
            environments_root: folder.0.join("envs"),
            solver: envstore_solve::EnvironmentSolver::new(
                &folder.0.join("cache"),
                rattler_cache::package_cache::PackageCache::new(folder.0.join("cache/pkgs")),
                std::time::Duration::from_secs(60),
            ),
            pypi_index: envstore_pypi::IndexSettings::pypi(folder.0.join("cache/pypi")),
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
            store,
            folder,
        }
    }

    /// Records a succeeded build of `namespace/env` to `lock` and publishes
    /// its conda-lock.yml.
    async fn build(&self, namespace: &str, lock: &ContentHash) {
        let namespace: NamespaceName = namespace.parse().unwrap();
        if !self.db.namespace_exists(&namespace).await.unwrap() {
            self.db.create_namespace(&namespace).await.unwrap();
        }
        let allow = ChannelAllowlist::new(vec![NamedChannel::parse("demo=file:///demo").unwrap()]);
        let spec = EnvironmentSpec::parse(b"dependencies: [python]", SpecFormat::Yaml)
            .unwrap()
            .canonicalize(&allow, Subdir::Linux64)
            .unwrap();
        let build = self
            .db
            .submit_build(&namespace, &"env".parse().unwrap(), &spec, None)
            .await
            .unwrap()
            .build;
        self.db
            .insert_lock(
                lock,
                &["linux-64".to_owned()],
                &json!([]),
                &Default::default(),
            )
            .await
            .unwrap();
        let outcome = BuildOutcome {
            status: BuildStatus::Succeeded,
            lock_hash: Some(*lock),
            lock_reused: false,
            prefix_reused: false,
            phases: Vec::new(),
            error: None,
        };
        self.db.finish_build(&build.id, &outcome).await.unwrap();
        let key = keys::lock_artifact(lock, artifact::CONDA_LOCK);
        self.store
            .put_immutable(&key, LOCK_YAML.into())
            .await
            .unwrap();
    }

    /// A token of `subject`, who is made `role` in `namespace`.
    async fn member_token(&self, subject: &str, namespace: &str, role: Role) -> (String, String) {
        self.db
            .bind_role(subject, &namespace.parse().unwrap(), role)
            .await
            .unwrap();
        let (record, value) = self
            .db
            .create_token(&NewToken {
                subject: subject.to_owned(),
                name: "ci".to_owned(),
                created_by: "admin".to_owned(),
                server_admin: false,
                scopes: None,
                expires_at: None,
                parent_token_id: None,
            })
            .await
            .unwrap();
        (record.id, value)
    }

    async fn get(&self, path: &str, token: Option<&str>, etag: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        request.send().await.unwrap()
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> StatusCode {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        request.send().await.unwrap().status()
    }
}

#[tokio::test]
async fn lock_artifacts_answer_304_and_are_served_from_memory() {
    let server = Server::start().await;
    let lock = ContentHash::of(b"lock");
    server.build("team", &lock).await;
    let (_, vera) = server.member_token("vera", "team", Role::Viewer).await;
    let path = format!("/api/v1/locks/{lock}/conda-lock.yml");

    let response = server.get(&path, Some(&vera), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()[ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{lock}\""));
    assert_eq!(response.text().await.unwrap(), LOCK_YAML);

    for condition in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let response = server.get(&path, Some(&vera), Some(&condition)).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{condition}");
        assert_eq!(response.headers()[ETAG], etag.as_str());
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let response = server.get(&path, Some(&vera), Some("\"other\"")).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "another tag gets the body"
    );

    // A name the lock does not have stays a 404, tag or not.
    let missing = format!("/api/v1/locks/{lock}/pixi.lock");
    assert_eq!(
        server
            .get(&missing, Some(&vera), Some(&etag))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Only the memory copy can answer now; the access check still runs.
    fs_err::remove_dir_all(server.folder.0.join("artifacts")).unwrap();
    let response = server.get(&path, Some(&vera), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), LOCK_YAML);
    assert_eq!(
        server.get(&path, Some(&vera), Some(&etag)).await.status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        server.get(&path, None, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let response = server
        .get(
            "/api/v1/namespaces/team/environments/env/lockfile",
            Some(&vera),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), LOCK_YAML);
    let response = server
        .get(
            "/api/v1/namespaces/team/environments/env/lockfile",
            Some(&vera),
            Some(&format!("W/{etag}")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn access_changes_apply_on_the_next_request_though_access_is_cached() {
    let server = Server::start().await;
    let lock = ContentHash::of(b"lock");
    server.build("team", &lock).await;
    let path = format!("/api/v1/locks/{lock}/conda-lock.yml");
    let lockfile = "/api/v1/namespaces/team/environments/env/lockfile";

    // A revoked token: 401 at once, on both lockfile routes.
    let (id, vera) = server.member_token("vera", "team", Role::Viewer).await;
    assert_eq!(
        server.get(&path, Some(&vera), None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        server.get(lockfile, Some(&vera), None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        server
            .admin(
                reqwest::Method::DELETE,
                &format!("/api/v1/tokens/{id}"),
                None
            )
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.get(&path, Some(&vera), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.get(lockfile, Some(&vera), None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A removed member: 404, as for any namespace one may not see.
    let (_, vera) = server.member_token("vera", "team", Role::Viewer).await;
    assert_eq!(
        server.get(&path, Some(&vera), None).await.status(),
        StatusCode::OK
    );
    let status = server
        .admin(
            reqwest::Method::DELETE,
            "/api/v1/namespaces/team/members/vera",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get(&path, Some(&vera), None).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get(lockfile, Some(&vera), None).await.status(),
        StatusCode::NOT_FOUND
    );

    // A namespace made public, then private again.
    assert_eq!(
        server.get(&path, None, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let visibility = "/api/v1/namespaces/team/visibility";
    let status = server
        .admin(
            reqwest::Method::PUT,
            visibility,
            Some(json!({ "public_read": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.get(&path, None, None).await.status(), StatusCode::OK);
    assert_eq!(
        server.get(lockfile, None, None).await.status(),
        StatusCode::OK
    );
    let status = server
        .admin(
            reqwest::Method::PUT,
            visibility,
            Some(json!({ "public_read": false })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.get(&path, None, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.get(lockfile, None, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_lock_built_later_by_another_namespace_opens_to_its_viewers() {
    let server = Server::start().await;
    let lock = ContentHash::of(b"shared lock");
    server.build("team", &lock).await;
    let path = format!("/api/v1/locks/{lock}/conda-lock.yml");
    let (_, vera) = server.member_token("vera", "team", Role::Viewer).await;
    let (_, oscar) = server.member_token("oscar", "other", Role::Viewer).await;
    assert_eq!(
        server.get(&path, Some(&vera), None).await.status(),
        StatusCode::OK
    );
    let not_yet = server.get(&path, Some(&oscar), None).await.status();
    assert_eq!(
        not_yet,
        StatusCode::NOT_FOUND,
        "the lock is only in 'team' so far"
    );

    server.build("other", &lock).await;
    assert_eq!(
        server.get(&path, Some(&oscar), None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        server.get(&path, Some(&vera), None).await.status(),
        StatusCode::OK
    );
}

//! Web sessions started by a sign-in through the identity provider, over
//! HTTP against the API's router on SQLite: what the groups gave applies
//! (added to the subject's bindings, not narrowing them), an expired or
//! ended session is refused, a personal namespace is made once and never
//! taken over, and a token row cannot pass for a session by its name.

use std::path::PathBuf;
use std::sync::Arc;

use envstore_api::oidc::session::{self, SESSION_CREATOR, SESSION_NAME};
use envstore_api::oidc::{Identity, OidcConfig, OidcVerifier};
use envstore_api::{AdminToken, App, BuildEvents};
use envstore_core::{ChannelAllowlist, Grant, NamespaceName, Policy, Role};
use envstore_db::{Database, NewToken};
use envstore_store::ArtifactStore;
use rattler_conda_types::Subdir;
use reqwest::StatusCode;
use serde_json::json;

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
    app: Arc<App>,
    _folder: tempfile::TempDir,
}

impl Server {
    async fn start(personal_namespaces: bool) -> Self {
        let folder = tempfile::tempdir().unwrap();
        let root: PathBuf = folder.path().to_path_buf();
        let db = Database::connect(&format!("sqlite://{}", root.join("envstore.db").display()))
            .await
            .unwrap();
        let store =
            ArtifactStore::open(&url::Url::from_directory_path(root.join("artifacts")).unwrap())
                .unwrap();
        let mut config: OidcConfig = serde_json::from_value(json!({
            "issuer": "https://id.example.org", "audience": "envstore",
            "jwks_url": "https://id.example.org/jwks",
        }))
        .unwrap();
        config.sign_in.personal_namespaces = personal_namespaces;
        let app = Arc::new(App {
            db,
            store,
            allowlist: ChannelAllowlist::new(Vec::new()),
            default_platform: Subdir::Linux64,
            admin_token: AdminToken::new("test-admin-token"),
            default_policy: Policy::default(),
            events: Arc::new(NoWorkers),
            oidc: Some(OidcVerifier::new(config).unwrap()),
            prefixes_root: root.join("prefixes"),
            data_dir: root.clone(),
            environments_root: root.join("envs"),
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
        let router = envstore_api::router(app.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        for name in ["team-data", "team-ml"] {
            app.db
                .create_namespace(&name.parse::<NamespaceName>().unwrap())
                .await
                .unwrap();
        }
        Self {
            base,
            client: reqwest::Client::new(),
            app,
            _folder: folder,
        }
    }

    async fn status(&self, token: &str, path: &str) -> StatusCode {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn alice(grants: Vec<Grant>) -> Identity {
    Identity {
        subject: "oidc:alice".to_owned(),
        server_admin: false,
        grants,
        username: Some("Alice".to_owned()),
    }
}

fn developer_of(namespace: &str) -> Grant {
    Grant {
        namespace: namespace.parse().unwrap(),
        role: Role::Developer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_what_its_groups_gave_until_it_ends() {
    let server = Server::start(false).await;
    let token = session::start(&server.app, &alice(vec![developer_of("team-data")]))
        .await
        .unwrap();
    assert_eq!(
        server.status(&token, "/api/v1/namespaces/team-data").await,
        StatusCode::OK,
        "the group's role applies"
    );
    assert_eq!(
        server.status(&token, "/api/v1/namespaces/team-ml").await,
        StatusCode::NOT_FOUND,
        "and nothing else"
    );
    // A role bound to the subject adds to the groups': scopes do not narrow a session.
    server
        .app
        .db
        .bind_role("oidc:alice", &"team-ml".parse().unwrap(), Role::Viewer)
        .await
        .unwrap();
    assert_eq!(
        server.status(&token, "/api/v1/namespaces/team-ml").await,
        StatusCode::OK
    );
    // The session shows among the person's tokens.
    let tokens: serde_json::Value = server
        .client
        .get(format!("{}/api/v1/tokens", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens.to_string().contains(SESSION_NAME), "{tokens}");

    assert!(session::end(&server.app, &token).await.unwrap());
    assert_eq!(
        server.status(&token, "/api/v1/namespaces/team-data").await,
        StatusCode::UNAUTHORIZED,
        "signing out revokes the session at once"
    );
    assert!(!session::end(&server.app, &token).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused_and_a_token_is_no_session_by_its_name() {
    let server = Server::start(false).await;
    let now = envstore_db::now_millis();
    let row = |created_by: &str, expires_at: i64| NewToken {
        subject: "oidc:alice".to_owned(),
        name: SESSION_NAME.to_owned(),
        created_by: created_by.to_owned(),
        server_admin: false,
        scopes: Some(vec![developer_of("team-data")]),
        expires_at: Some(expires_at),
        parent_token_id: None,
    };
    let (_, expired) = server
        .app
        .db
        .create_token(&row(SESSION_CREATOR, now - 1))
        .await
        .unwrap();
    assert_eq!(
        server
            .status(&expired, "/api/v1/namespaces/team-data")
            .await,
        StatusCode::UNAUTHORIZED
    );
    let (_, live) = server
        .app
        .db
        .create_token(&row(SESSION_CREATOR, now + 60_000))
        .await
        .unwrap();
    assert_eq!(
        server.status(&live, "/api/v1/namespaces/team-data").await,
        StatusCode::OK
    );
    // Made by anyone else, the same row is an API token: its scopes narrow
    // (and the subject holds nothing), so they grant nothing.
    let (_, scoped) = server
        .app
        .db
        .create_token(&row("oidc:alice", now + 60_000))
        .await
        .unwrap();
    assert_eq!(
        server.status(&scoped, "/api/v1/namespaces/team-data").await,
        StatusCode::NOT_FOUND
    );
    // An API token pasted into the sign-in form is not revoked by signing out.
    assert!(!session::end(&server.app, &scoped).await.unwrap());
    assert_eq!(
        server.status(&scoped, "/api/v1/tokens").await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_namespace_is_made_once_and_never_taken_over() {
    let server = Server::start(true).await;
    let token = session::start(&server.app, &alice(Vec::new()))
        .await
        .unwrap();
    assert_eq!(
        server.status(&token, "/api/v1/namespaces/alice").await,
        StatusCode::OK
    );
    let members: serde_json::Value = server
        .client
        .get(format!("{}/api/v1/namespaces/alice/members", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        members.to_string().contains("oidc:alice") && members.to_string().contains("admin"),
        "the person administers it: {members}"
    );
    // A second sign-in keeps it; someone named like an existing team gets nothing there.
    session::start(&server.app, &alice(Vec::new()))
        .await
        .unwrap();
    let intruder = Identity {
        subject: "oidc:mallory".to_owned(),
        username: Some("team-ml".to_owned()),
        ..alice(Vec::new())
    };
    let token = session::start(&server.app, &intruder).await.unwrap();
    assert_eq!(
        server.status(&token, "/api/v1/namespaces/team-ml").await,
        StatusCode::NOT_FOUND
    );
}

//! Who may do what, for every route of the API: each route × caller (none,
//! viewer, developer, namespace admin, server admin, a namespace admin's
//! token scoped down to developer in their namespace, a server admin's token
//! scoped to admin of one namespace) × namespace (their own, another). The routes come from the router's own list, so a new route
//! without a row here fails the test.

use std::collections::BTreeSet;

use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Anyone,
    SignedIn,
    Viewer,
    Developer,
    NamespaceAdmin,
    ServerAdmin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    Anonymous,
    Viewer,
    Developer,
    NamespaceAdmin,
    ServerAdmin,
    /// A token of the namespace admin, scoped to `developer` in `own`.
    ScopedDeveloper,
    /// A server admin's token scoped to `admin` in `own`: no server-wide power.
    ScopedServerAdmin,
}

impl Caller {
    /// Whom the caller acts as: a scoped token holds its scope's role in its
    /// namespace and nothing elsewhere, server admin or not.
    fn acting_as(self) -> Self {
        match self {
            Self::ScopedDeveloper => Self::Developer,
            Self::ScopedServerAdmin => Self::NamespaceAdmin,
            other => other,
        }
    }

    fn is_scoped(self) -> bool {
        matches!(self, Self::ScopedDeveloper | Self::ScopedServerAdmin)
    }
}

/// One row per route: what it needs, and its status on success.
const ROWS: &[(&str, &str, Needs, u16)] = &[
    ("GET", "/api/v1/health", Needs::Anyone, 200),
    ("GET", "/api/v1/openapi.json", Needs::Anyone, 200),
    // For probes and scrapers, which hold no token; /metrics names no
    // namespace or environment (tests/e2e/operator.rs checks it).
    ("GET", "/health", Needs::Anyone, 200),
    ("GET", "/ready", Needs::Anyone, 200),
    ("GET", "/metrics", Needs::Anyone, 200),
    ("GET", "/api/v1/namespaces", Needs::Anyone, 200),
    ("POST", "/api/v1/namespaces", Needs::ServerAdmin, 201),
    ("GET", "/api/v1/namespaces/{namespace}", Needs::Viewer, 200),
    (
        "DELETE",
        "/api/v1/namespaces/{namespace}",
        Needs::ServerAdmin,
        200,
    ),
    (
        "PUT",
        "/api/v1/namespaces/{namespace}/visibility",
        Needs::NamespaceAdmin,
        200,
    ),
    (
        "GET",
        "/api/v1/namespaces/{namespace}/policy",
        Needs::Viewer,
        200,
    ),
    (
        "PUT",
        "/api/v1/namespaces/{namespace}/policy",
        Needs::NamespaceAdmin,
        200,
    ),
    (
        "GET",
        "/api/v1/namespaces/{namespace}/usage",
        Needs::Viewer,
        200,
    ),
    (
        "GET",
        "/api/v1/namespaces/{namespace}/quota",
        Needs::Viewer,
        200,
    ),
    (
        "PUT",
        "/api/v1/namespaces/{namespace}/quota",
        Needs::ServerAdmin,
        200,
    ),
    ("GET", "/api/v1/usage", Needs::Anyone, 200),
    (
        "GET",
        "/api/v1/namespaces/{namespace}/members",
        Needs::Viewer,
        200,
    ),
    (
        "PUT",
        "/api/v1/namespaces/{namespace}/members/{subject}",
        Needs::NamespaceAdmin,
        200,
    ),
    (
        "DELETE",
        "/api/v1/namespaces/{namespace}/members/{subject}",
        Needs::NamespaceAdmin,
        204,
    ),
    (
        "GET",
        "/api/v1/namespaces/{namespace}/environments",
        Needs::Viewer,
        200,
    ),
    (
        "GET",
        "/api/v1/namespaces/{namespace}/environments/{name}",
        Needs::Viewer,
        200,
    ),
    (
        "PUT",
        "/api/v1/namespaces/{namespace}/environments/{name}",
        Needs::Developer,
        202,
    ),
    (
        "DELETE",
        "/api/v1/namespaces/{namespace}/environments/{name}",
        Needs::NamespaceAdmin,
        200,
    ),
    (
        "GET",
        "/api/v1/namespaces/{namespace}/environments/{name}/builds",
        Needs::Viewer,
        200,
    ),
    (
        "PUT",
        "/api/v1/namespaces/{namespace}/environments/{name}/current",
        Needs::Developer,
        200,
    ),
    (
        "GET",
        "/api/v1/namespaces/{namespace}/environments/{name}/lockfile",
        Needs::Viewer,
        200,
    ),
    (
        "PUT",
        "/api/v1/namespaces/{namespace}/environments/{name}/lockfile",
        Needs::Developer,
        202,
    ),
    (
        "POST",
        "/api/v1/namespaces/{namespace}/solve",
        Needs::Developer,
        200,
    ),
    ("GET", "/api/v1/builds/{id}", Needs::Viewer, 200),
    ("GET", "/api/v1/builds/{id}/log", Needs::Viewer, 200),
    ("GET", "/api/v1/builds/{id}/spec", Needs::Viewer, 200),
    // The fixture's builds have ended: an allowed cancel is a 409.
    ("POST", "/api/v1/builds/{id}/cancel", Needs::Developer, 409),
    (
        "GET",
        "/api/v1/locks/{lock_hash}/{file}",
        Needs::Viewer,
        200,
    ),
    (
        "GET",
        "/api/v1/locks/{lock_hash}/prefix.tar.zst",
        Needs::Viewer,
        200,
    ),
    ("GET", "/api/v1/whoami", Needs::Anyone, 200),
    // Without `?name=` every caller who reaches it is asked for one.
    ("GET", "/api/v1/packages", Needs::Anyone, 400),
    ("GET", "/api/v1/tokens", Needs::SignedIn, 200),
    ("POST", "/api/v1/tokens", Needs::SignedIn, 201),
    ("DELETE", "/api/v1/tokens/{id}", Needs::SignedIn, 204),
    ("GET", "/api/v1/role-bindings", Needs::ServerAdmin, 200),
    ("PUT", "/api/v1/role-bindings", Needs::ServerAdmin, 200),
    ("GET", "/api/v1/audit", Needs::ServerAdmin, 200),
    ("GET", "/api/v1/kernels", Needs::Anyone, 200),
];

/// The status a caller gets, given what the route needs and the caller's
/// role in the namespace the request touches.
fn expected(needs: Needs, caller: Caller, own_namespace: bool, success: u16) -> u16 {
    let caller = caller.acting_as();
    if caller == Caller::ServerAdmin {
        return success;
    }
    let role = if own_namespace { Some(caller) } else { None }.filter(|c| *c != Caller::Anonymous);
    match needs {
        Needs::Anyone => success,
        Needs::SignedIn if caller == Caller::Anonymous => 401,
        Needs::SignedIn => success,
        Needs::ServerAdmin if caller == Caller::Anonymous => 401,
        Needs::ServerAdmin => 403,
        _ if caller == Caller::Anonymous => 401,
        Needs::Viewer | Needs::Developer | Needs::NamespaceAdmin => {
            let needed = match needs {
                Needs::Viewer => Caller::Viewer,
                Needs::Developer => Caller::Developer,
                _ => Caller::NamespaceAdmin,
            };
            match role {
                None => 404,
                Some(role) if role >= needed => success,
                Some(_) => 403,
            }
        }
    }
}

struct Fixture {
    server: TestServer,
    tokens: Vec<(Caller, Option<String>)>,
    /// (build id, lock hash) of each namespace's environment `env`.
    builds: [(String, String); 2],
    counter: std::sync::atomic::AtomicUsize,
}

const NAMESPACES: [&str; 2] = ["own", "other"];

impl Fixture {
    async fn request(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> reqwest::Response {
        let mut request = self.server.client.request(method, self.server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await.unwrap()
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let response = self
            .request(
                Some(&self.server.token),
                method,
                path,
                Some(body.to_string()),
            )
            .await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    fn unique(&self) -> usize {
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Fills a route's path and body for one caller and namespace.
    async fn prepare(
        &self,
        method: &str,
        template: &str,
        caller: Caller,
        index: usize,
    ) -> (String, Option<String>) {
        let namespace = NAMESPACES[index];
        let (build_id, lock_hash) = &self.builds[index];
        let mut path = template
            .replace("{namespace}", namespace)
            .replace("{name}", "env")
            .replace("{subject}", "temp-member")
            .replace("{lock_hash}", lock_hash)
            .replace("{file}", "conda-lock.yml");
        if template.starts_with("/api/v1/builds/") {
            path = path.replace("{id}", build_id);
        }
        if template == "/api/v1/tokens/{id}" {
            // A token of the caller's own subject (or the admin's) to revoke;
            // a scoped token may only revoke what it minted itself.
            let subject = subject_of(caller).unwrap_or("temp-robot");
            let created = if caller.is_scoped() {
                let token = self
                    .tokens
                    .iter()
                    .find(|(c, _)| *c == caller)
                    .and_then(|(_, t)| t.clone())
                    .unwrap();
                let body = json!({ "name": "to-revoke" }).to_string();
                let response = self
                    .request(Some(&token), Method::POST, "/api/v1/tokens", Some(body))
                    .await;
                assert_eq!(response.status(), StatusCode::CREATED);
                response.json().await.unwrap()
            } else {
                self.admin(
                    Method::POST,
                    "/api/v1/tokens",
                    json!({ "name": "to-revoke", "subject": subject }),
                )
                .await
            };
            path = path.replace("{id}", created["record"]["id"].as_str().unwrap());
        }
        // Deletions get a target of their own, so the table's namespaces
        // and environments live on: a namespace only a server admin can
        // delete, or an environment made where the caller may delete it.
        if (method, template) == ("DELETE", "/api/v1/namespaces/{namespace}") {
            let doomed = format!("doomed-{}", self.unique());
            assert_eq!(
                self.server.create_namespace(&doomed).await.status(),
                StatusCode::CREATED
            );
            path = format!("/api/v1/namespaces/{doomed}");
        }
        if (method, template)
            == (
                "DELETE",
                "/api/v1/namespaces/{namespace}/environments/{name}",
            )
        {
            let doomed = format!("doomed-{}", self.unique());
            if caller == Caller::ServerAdmin
                || (caller.acting_as() == Caller::NamespaceAdmin && index == 0)
            {
                let spec =
                    "channels: [demo]\ndependencies: [python 3.11.*]\nplatforms: [linux-64]\n";
                self.server.submit_yaml(namespace, &doomed, spec).await;
            }
            path = format!("/api/v1/namespaces/{namespace}/environments/{doomed}");
        }
        if method == "DELETE" && template.contains("/members/") {
            self.admin(
                Method::PUT,
                &format!("/api/v1/namespaces/{namespace}/members/temp-member"),
                json!({ "role": "viewer" }),
            )
            .await;
        }
        let body = match (method, template) {
            ("POST", "/api/v1/namespaces") => {
                Some(json!({ "name": format!("made-{}", self.unique()) }).to_string())
            }
            ("PUT", t) if t.ends_with("/visibility") => {
                Some(json!({ "public_read": false }).to_string())
            }
            ("PUT", t) if t.ends_with("/policy") => Some(json!({}).to_string()),
            // No limits: the table's later submissions stay unaffected.
            ("PUT", t) if t.ends_with("/quota") => Some(json!({}).to_string()),
            ("PUT", t) if t.contains("/members/") => Some(json!({ "role": "viewer" }).to_string()),
            ("PUT", t) if t.ends_with("/environments/{name}") => Some(demo_spec_yaml("demo")),
            ("POST", t) if t.ends_with("/solve") => Some(demo_spec_yaml("demo")),
            ("PUT", t) if t.ends_with("/current") => {
                Some(json!({ "build_id": build_id }).to_string())
            }
            ("PUT", t) if t.ends_with("/lockfile") => {
                let lockfile = self
                    .server
                    .get(&format!("/api/v1/locks/{lock_hash}/conda-lock.yml"))
                    .await;
                Some(lockfile.text().await.unwrap())
            }
            ("POST", "/api/v1/tokens") => Some(json!({ "name": "ci" }).to_string()),
            ("PUT", "/api/v1/role-bindings") => Some(
                json!({ "subject": "temp-member", "namespace": "team-*", "role": "viewer" })
                    .to_string(),
            ),
            _ => None,
        };
        (path, body)
    }
}

fn subject_of(caller: Caller) -> Option<&'static str> {
    match caller {
        Caller::Anonymous => None,
        Caller::Viewer => Some("vera"),
        Caller::Developer => Some("dev"),
        Caller::NamespaceAdmin => Some("nadia"),
        Caller::ServerAdmin => Some("admin"),
        Caller::ScopedDeveloper => Some("nadia"),
        Caller::ScopedServerAdmin => Some("ops"),
    }
}

async fn fixture() -> (DemoChannel, Fixture) {
    let channel = DemoChannel::start().await;
    // Packed prefixes on either backend, for `…/prefix.tar.zst`.
    let data = tempfile::tempdir().unwrap();
    let backend = envstore_tests::Backend::from_env(data.path()).await;
    let server = TestServer::start_configured(
        data,
        backend,
        vec![channel.allowed_as("demo")],
        2,
        |config| config.publish_packed_prefixes = true,
    )
    .await;
    let mut builds = Vec::new();
    for (namespace, python) in NAMESPACES.iter().zip(["3.11.*", "3.10.*"]) {
        assert_eq!(
            server.create_namespace(namespace).await.status(),
            StatusCode::CREATED
        );
        let spec =
            format!("channels: [demo]\ndependencies: [python {python}]\nplatforms: [linux-64]\n");
        let id = server.submit_yaml(namespace, "env", &spec).await;
        let build = server.wait_for_build(&id).await;
        assert_eq!(build["status"], "succeeded");
        builds.push((id, build["lock_hash"].as_str().unwrap().to_owned()));
    }
    let fixture = Fixture {
        tokens: Vec::new(),
        builds: [builds[0].clone(), builds[1].clone()],
        counter: Default::default(),
        server,
    };
    let mut tokens = vec![
        (Caller::Anonymous, None),
        (Caller::ServerAdmin, Some(fixture.server.token.clone())),
    ];
    for (caller, role) in [
        (Caller::Viewer, "viewer"),
        (Caller::Developer, "developer"),
        (Caller::NamespaceAdmin, "admin"),
    ] {
        let subject = subject_of(caller).unwrap();
        fixture
            .admin(
                Method::PUT,
                &format!("/api/v1/namespaces/own/members/{subject}"),
                json!({ "role": role }),
            )
            .await;
        let created = fixture
            .admin(
                Method::POST,
                "/api/v1/tokens",
                json!({ "name": "table", "subject": subject }),
            )
            .await;
        tokens.push((caller, Some(created["token"].as_str().unwrap().to_owned())));
    }
    for (caller, body) in [
        (
            Caller::ScopedDeveloper,
            json!({ "name": "scoped", "subject": "nadia", "scopes": [{ "namespace": "own", "role": "developer" }] }),
        ),
        (
            Caller::ScopedServerAdmin,
            json!({ "name": "scoped-admin", "subject": "ops", "server_admin": true, "scopes": [{ "namespace": "own", "role": "admin" }] }),
        ),
    ] {
        let created = fixture.admin(Method::POST, "/api/v1/tokens", body).await;
        tokens.push((caller, Some(created["token"].as_str().unwrap().to_owned())));
    }
    (channel, Fixture { tokens, ..fixture })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_its_role_allows() {
    let (_channel, fixture) = fixture().await;
    let routes: BTreeSet<(String, String)> = envstore_api::routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    let rows: BTreeSet<(String, String)> = ROWS
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes, rows, "every route has exactly one row");

    let mut failures = Vec::new();
    let mut checked = 0;
    for &(method, template, needs, success) in ROWS {
        for (caller, token) in &fixture.tokens {
            for (index, own) in [(0, true), (1, false)] {
                let (path, body) = fixture.prepare(method, template, *caller, index).await;
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                let response = fixture
                    .request(token.as_deref(), method.clone(), &path, body)
                    .await;
                let want = expected(needs, *caller, own, success);
                checked += 1;
                if response.status().as_u16() != want {
                    failures.push(format!(
                        "{method} {path} as {caller:?} ({}): got {}, want {want}",
                        if own { "own" } else { "other" },
                        response.status().as_u16()
                    ));
                } else if !response.status().is_success() {
                    let content_type = response.headers()["content-type"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    assert_eq!(content_type, "application/problem+json", "{method} {path}");
                }
            }
        }
    }
    println!("checked {checked} route × caller × namespace combinations");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    fixture.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_shown_once_stored_hashed_scoped_down_and_revocable() {
    let (_channel, fixture) = fixture().await;
    let developer = fixture
        .tokens
        .iter()
        .find(|(c, _)| *c == Caller::Developer)
        .unwrap()
        .1
        .clone()
        .unwrap();

    // A developer narrows a token of theirs to viewing: it cannot submit.
    let response = fixture
        .request(
            Some(&developer),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "read-only", "scopes": [{ "namespace": "own", "role": "viewer" }] }).to_string()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let narrow = created["token"].as_str().unwrap().to_owned();
    let submit = |token: String| {
        let fixture = &fixture;
        async move {
            fixture
                .request(
                    Some(&token),
                    Method::PUT,
                    "/api/v1/namespaces/own/environments/env",
                    Some(demo_spec_yaml("demo")),
                )
                .await
                .status()
        }
    };
    assert_eq!(submit(narrow.clone()).await, StatusCode::FORBIDDEN);
    assert_eq!(submit(developer.clone()).await, StatusCode::ACCEPTED);

    // A scope never grants more than the subject holds.
    let response = fixture
        .request(
            Some(&developer),
            Method::POST,
            "/api/v1/tokens",
            Some(
                json!({ "name": "greedy", "scopes": [{ "namespace": "*", "role": "admin" }] })
                    .to_string(),
            ),
        )
        .await;
    let greedy: Value = response.json().await.unwrap();
    let greedy = greedy["token"].as_str().unwrap().to_owned();
    let response = fixture
        .request(
            Some(&greedy),
            Method::PUT,
            "/api/v1/namespaces/own/members/x",
            Some(json!({ "role": "viewer" }).to_string()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = fixture
        .request(Some(&greedy), Method::GET, "/api/v1/namespaces/other", None)
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Only others' tokens are refused: a developer cannot mint for others or as server admin.
    for body in [
        json!({ "name": "x", "subject": "someone-else" }),
        json!({ "name": "x", "server_admin": true }),
    ] {
        let response = fixture
            .request(
                Some(&developer),
                Method::POST,
                "/api/v1/tokens",
                Some(body.to_string()),
            )
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    // Listings never show values; revoked tokens stop working at once.
    let listed = fixture
        .request(Some(&developer), Method::GET, "/api/v1/tokens", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !listed.contains(&narrow) && !listed.contains(&developer),
        "{listed}"
    );
    let id = created["record"]["id"].as_str().unwrap();
    let response = fixture
        .request(
            Some(&developer),
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = fixture
        .request(Some(&narrow), Method::GET, "/api/v1/namespaces/own", None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A glob binding reaches every matching namespace.
    fixture
        .admin(
            Method::POST,
            "/api/v1/namespaces",
            json!({ "name": "team-ml" }),
        )
        .await;
    fixture
        .admin(
            Method::PUT,
            "/api/v1/role-bindings",
            json!({ "subject": "dev", "namespace": "team-*", "role": "viewer" }),
        )
        .await;
    let response = fixture
        .request(
            Some(&developer),
            Method::GET,
            "/api/v1/namespaces/team-ml",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // A public namespace is readable by anyone, lockfiles included.
    fixture
        .admin(
            Method::PUT,
            "/api/v1/namespaces/other/visibility",
            json!({ "public_read": true }),
        )
        .await;
    let response = fixture
        .request(
            None,
            Method::GET,
            "/api/v1/namespaces/other/environments/env/lockfile",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = fixture
        .request(
            None,
            Method::PUT,
            "/api/v1/namespaces/other/environments/env",
            Some(demo_spec_yaml("demo")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Every change above is in the audit log, newest first, with who did it.
    let (status, audit) = fixture.server.get_json("/api/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let entries: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let field = |key: &str| entry[key].as_str().unwrap().to_owned();
            (field("subject"), field("action"), field("target"))
        })
        .collect();
    let has = |subject: &str, action: &str, target: &str| {
        entries
            .iter()
            .any(|entry| entry == &(subject.to_owned(), action.to_owned(), target.to_owned()))
    };
    assert!(has("admin", "namespace.create", "own"), "{entries:?}");
    assert!(has("admin", "role.set", "own"));
    assert!(has("admin", "role.set", "team-*"));
    assert!(has("admin", "namespace.visibility", "other"));
    assert!(has("dev", "environment.submit", "own/env"));
    assert!(has(
        "dev",
        "token.create",
        created["record"]["id"].as_str().unwrap()
    ));
    assert!(has(
        "dev",
        "token.revoke",
        created["record"]["id"].as_str().unwrap()
    ));
    // The anonymous attempt just before is the newest entry: a denied
    // change is audited too, under its namespace.
    assert_eq!(
        entries[0],
        (
            "anonymous".to_owned(),
            "request.denied".to_owned(),
            "other".to_owned()
        ),
        "newest first"
    );
    assert_eq!(entries[1].1, "namespace.visibility", "newest first");
    let page = fixture.server.get_json("/api/v1/audit?limit=2").await.1;
    let before = page["next_before"].as_str().unwrap();
    let next = fixture
        .server
        .get_json(&format!("/api/v1/audit?limit=2&before={before}"))
        .await
        .1;
    assert_eq!(
        next["entries"][0]["id"], audit["entries"][2]["id"],
        "pages follow on"
    );
    let response = fixture
        .request(Some(&developer), Method::GET, "/api/v1/audit", None)
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    fixture.server.stop().await;
}

mod oidc {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine;
    use envstore_tests::{Backend, TestServer};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use reqwest::{Method, StatusCode};
    use serde_json::json;

    const ISSUER: &str = "https://id.example.org";
    const AUDIENCE: &str = "envstore";

    /// A signing key the test's identity provider owns.
    struct Key {
        kid: String,
        encoding: EncodingKey,
        public: Vec<u8>,
    }

    fn key(kid: &str) -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Key {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn jwt(key: &Key, kid: &str, subject: &str, audience: &str, expires_in: i64) -> String {
        let now = now();
        signed(
            key,
            kid,
            json!({ "sub": subject, "iss": ISSUER, "aud": audience, "iat": now, "exp": now + expires_in }),
        )
    }

    fn signed(key: &Key, kid: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
    }

    /// An identity provider publishing `key`, and a server trusting it with
    /// `subject_claim` and `server_admins`.
    async fn provider_and_server(
        key: &Key,
        subject_claim: &str,
        server_admins: Vec<String>,
    ) -> (
        envstore_fixtures::ServedChannel,
        tempfile::TempDir,
        TestServer,
    ) {
        let provider_dir = tempfile::tempdir().unwrap();
        let jwks = json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": key.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key.public),
        }]});
        fs_err::write(provider_dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        let provider = envstore_fixtures::serve_channel(provider_dir.path().to_path_buf())
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let backend = Backend::from_env(data.path()).await;
        let jwks_url = provider.url.join("jwks.json").unwrap();
        let subject_claim = subject_claim.to_owned();
        let server = TestServer::start_configured(data, backend, Vec::new(), 0, move |config| {
            config.oidc = Some(envstore_api::oidc::OidcConfig {
                issuer: ISSUER.to_owned(),
                audience: AUDIENCE.to_owned(),
                jwks_url,
                subject_claim,
                server_admins,
                sign_in: Default::default(),
            });
        })
        .await;
        (provider, provider_dir, server)
    }

    async fn create_namespace_as(server: &TestServer, token: &str, name: &str) -> StatusCode {
        server
            .client
            .post(server.url("/api/v1/namespaces"))
            .bearer_auth(token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap()
            .status()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oidc_subjects_never_collide_with_local_ones_and_time_claims_hold() {
        let signing = key("key-1");
        let (_provider, _dir, server) =
            provider_and_server(&signing, "sub", vec!["root".to_owned()]).await;
        assert_eq!(
            server.create_namespace("team").await.status(),
            StatusCode::CREATED
        );
        let get = |token: String| {
            let server = &server;
            async move {
                server
                    .client
                    .get(server.url("/api/v1/namespaces/team"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        };
        // A local robot holds a role; the provider's subject of the same name does not.
        let response = server
            .admin_json(
                Method::PUT,
                "/api/v1/namespaces/team/members/robot",
                Some(json!({ "role": "viewer" })),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            get(jwt(&signing, "key-1", "robot", AUDIENCE, 600)).await,
            StatusCode::NOT_FOUND
        );
        // Nor is the provider's `admin` the bootstrap admin.
        assert_eq!(
            create_namespace_as(
                &server,
                &jwt(&signing, "key-1", "admin", AUDIENCE, 600),
                "by-admin"
            )
            .await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get(jwt(&signing, "key-1", "a b", AUDIENCE, 600)).await,
            StatusCode::UNAUTHORIZED,
            "subjects are checked"
        );
        let now = now();
        let early = signed(
            &signing,
            "key-1",
            json!({ "sub": "robot", "iss": ISSUER, "aud": AUDIENCE, "nbf": now + 600, "exp": now + 1200 }),
        );
        assert_eq!(
            get(early).await,
            StatusCode::UNAUTHORIZED,
            "not valid before nbf"
        );
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_admins_matched_by_email_need_a_verified_email() {
        let signing = key("key-1");
        let (_provider, _dir, server) =
            provider_and_server(&signing, "email", vec!["root@example.org".to_owned()]).await;
        let token = |verified: serde_json::Value| {
            let now = now();
            signed(
                &signing,
                "key-1",
                json!({ "sub": "x", "email": "root@example.org", "email_verified": verified, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600 }),
            )
        };
        assert_eq!(
            create_namespace_as(&server, &token(json!(false)), "unverified").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            create_namespace_as(&server, &token(json!("true")), "stringly").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            create_namespace_as(&server, &token(json!(true)), "verified").await,
            StatusCode::CREATED
        );
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oidc_tokens_are_checked_against_the_providers_keys() {
        let signing = key("key-1");
        let impostor = key("key-1");
        let provider_dir = tempfile::tempdir().unwrap();
        let jwks = json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": signing.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&signing.public),
        }]});
        fs_err::write(provider_dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        let provider = envstore_fixtures::serve_channel(provider_dir.path().to_path_buf())
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let backend = Backend::from_env(data.path()).await;
        let jwks_url = provider.url.join("jwks.json").unwrap();
        let server = TestServer::start_configured(data, backend, Vec::new(), 0, move |config| {
            config.oidc = Some(envstore_api::oidc::OidcConfig {
                issuer: ISSUER.to_owned(),
                audience: AUDIENCE.to_owned(),
                jwks_url,
                subject_claim: "sub".to_owned(),
                server_admins: vec!["root".to_owned()],
                sign_in: Default::default(),
            });
        })
        .await;
        assert_eq!(
            server.create_namespace("team").await.status(),
            StatusCode::CREATED
        );
        let get = |token: String| {
            let server = &server;
            async move {
                server
                    .client
                    .get(server.url("/api/v1/namespaces/team"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        };

        // The provider's subjects carry the `oidc:` prefix.
        let olivia = jwt(&signing, "key-1", "olivia", AUDIENCE, 600);
        assert_eq!(
            get(olivia.clone()).await,
            StatusCode::NOT_FOUND,
            "signed in, but no role yet"
        );
        let response = server
            .admin_json(
                Method::PUT,
                "/api/v1/namespaces/team/members/oidc:olivia",
                Some(json!({ "role": "viewer" })),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(get(olivia).await, StatusCode::OK);

        for (why, token) in [
            (
                "another audience",
                jwt(&signing, "key-1", "olivia", "someone-else", 600),
            ),
            ("expired", jwt(&signing, "key-1", "olivia", AUDIENCE, -600)),
            (
                "signed by another key",
                jwt(&impostor, "key-1", "olivia", AUDIENCE, 600),
            ),
            (
                "an unknown key id",
                jwt(&signing, "key-9", "olivia", AUDIENCE, 600),
            ),
        ] {
            assert_eq!(get(token).await, StatusCode::UNAUTHORIZED, "{why}");
        }

        let root = jwt(&signing, "key-1", "root", AUDIENCE, 600);
        let response = server
            .client
            .post(server.url("/api/v1/namespaces"))
            .bearer_auth(&root)
            .json(&json!({ "name": "made-by-root" }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "configured server admins are server admins"
        );
        server.stop().await;
    }
}

//! Signing in to the web UI through a real OpenID provider: panva's
//! oidc-provider (OpenID-certified, from npm, pinned in
//! `tests/support/oidc/package-lock.json`) on loopback, started by this
//! test with `tests/support/oidc/provider.js`, and headless Chromium doing
//! what a person does: a private page sends them to sign in, the provider's
//! login and consent pages, back on the page they asked for; they see the
//! namespaces their groups grant and not the others, build an environment
//! in their personal namespace through the form, and sign out (of envstore
//! and of the provider), after which the private page asks for a sign-in
//! again and the old session cookie opens nothing. Screenshots go to
//! `target/ui-screenshots/sign-in-*.png`.
//!
//! The provider comes from `ENVSTORE_TEST_OIDC_PROVIDER_MODULES` (the
//! `node_modules` folder scripts/test installs into
//! target/test-oidc-provider), else from target/test-oidc-provider, where
//! this test runs `npm ci` itself when it is missing. Like the UI's test, a
//! missing browser (or node) fails in CI and, outside CI, skips with
//! `ENVSTORE_SKIP_BROWSER=1`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use envstore_tests::{Backend, DemoChannel, TestServer, demo_spec_yaml};
use fantoccini::Locator;

use crate::browser::{
    BUILD_WAIT, Browser, ELEMENT_WAIT, Pages, Stopped, free_port, may_skip, on_path,
    screenshot_dir, target_dir,
};
use reqwest::header::{COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const CLIENT_ID: &str = "envstore";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// The exact oidc-provider version `package.json` pins.
fn pinned_version(package: &Path) -> String {
    let text = fs_err::read_to_string(package).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    manifest["dependencies"]["oidc-provider"]
        .as_str()
        .or_else(|| manifest["version"].as_str())
        .expect("a version")
        .to_owned()
}

/// The `node_modules` holding the pinned oidc-provider: scripts/test's, or
/// target/test-oidc-provider's, installed with `npm ci` when missing.
fn provider_modules() -> Option<PathBuf> {
    if let Some(modules) = std::env::var_os("ENVSTORE_TEST_OIDC_PROVIDER_MODULES") {
        return Some(PathBuf::from(modules));
    }
    let support = repository().join("tests/support/oidc");
    let wanted = pinned_version(&support.join("package.json"));
    let folder = target_dir().join("test-oidc-provider");
    let modules = folder.join("node_modules");
    let installed = modules.join("oidc-provider/package.json");
    if installed.is_file() && pinned_version(&installed) == wanted {
        return Some(modules);
    }
    if on_path("npm").is_none() {
        may_skip("npm is not on PATH to install the OpenID provider (apt-get install npm)");
        return None;
    }
    fs_err::create_dir_all(&folder).unwrap();
    for file in ["package.json", "package-lock.json"] {
        fs_err::copy(support.join(file), folder.join(file)).unwrap();
    }
    let status = Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--silent",
        ])
        .current_dir(&folder)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci of the OpenID provider failed");
    Some(modules)
}

/// The OpenID provider, on loopback.
struct Provider {
    issuer: String,
    _process: Stopped,
    /// Closing it stops the provider too (see provider.js).
    _stdin: ChildStdin,
}

impl Provider {
    fn start(modules: &Path, port: u16, envstore: &str, secret: &str) -> Self {
        let script = repository().join("tests/support/oidc/provider.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg("--modules")
            .arg(modules)
            .args(["--port", &port.to_string()])
            .args(["--redirect-uri", &format!("{envstore}/ui/oidc/callback")])
            .args([
                "--post-logout-redirect-uri",
                &format!("{envstore}/ui/sign-in?notice=signed-out"),
            ])
            .env("OIDC_CLIENT_SECRET", secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts the OpenID provider");
        let stdin = child.stdin.take().expect("its stdin");
        let stdout = child.stdout.take().expect("its stdout");
        let process = Stopped(child);
        let mut lines = BufReader::new(stdout).lines();
        let issuer = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("issuer ").map(str::to_owned))
            .expect("the provider prints its issuer");
        // What it says later is passed on: a closed pipe would stop it.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                println!("provider: {line}");
            }
        });
        Self {
            issuer,
            _process: process,
            _stdin: stdin,
        }
    }
}

/// A client secret nobody else knows: 32 random bytes, hexadecimal.
fn random_secret() -> String {
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

struct Story<'a> {
    pages: Pages<'a>,
    screenshots: PathBuf,
}

impl<'a> std::ops::Deref for Story<'a> {
    type Target = Pages<'a>;
    fn deref(&self) -> &Pages<'a> {
        &self.pages
    }
}

impl Story<'_> {
    /// Waits until the browser is at a URL whose origin is `origin` and
    /// whose path (and query) starts with `prefix`; returns path and query.
    async fn arrive_at(&self, origin: &str, prefix: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.browser.current_url().await.expect("a current URL");
            let here = self.location().await;
            if url.as_str().starts_with(origin) && here.starts_with(prefix) {
                return here;
            }
            if started.elapsed() > ELEMENT_WAIT {
                let source = self.browser.source().await.unwrap_or_default();
                panic!("the browser stayed on {url}, not {origin}{prefix}…:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn arrive(&self, prefix: &str) -> String {
        self.arrive_at(&self.server.base, prefix).await
    }

    async fn screenshot(&self, page: &str) {
        let png = self.browser.screenshot().await.expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot of {page}");
        let path = self.screenshots.join(format!("sign-in-{page}.png"));
        fs_err::write(&path, png).expect("the screenshot is saved");
        println!("screenshot of {page}: {}", path.display());
    }

    /// The namespaces the listing page shows.
    async fn listed_namespaces(&self) -> Vec<String> {
        self.goto("/ui/namespaces").await;
        self.find("main").await;
        let mut names = Vec::new();
        for row in self
            .browser
            .find_all(Locator::Css("main table tbody th a"))
            .await
            .expect("the rows")
        {
            names.push(row.text().await.expect("a name"));
        }
        names
    }

    /// Waits on a build's page until the build succeeded; returns its id.
    async fn build_succeeds(&self) -> String {
        let path = self.arrive("/ui/builds/").await;
        let id = path.trim_start_matches("/ui/builds/").to_owned();
        let started = Instant::now();
        loop {
            let (status, build) = self.server.get_json(&format!("/api/v1/builds/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{build}");
            match build["status"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => panic!("build {id} ended: {build}"),
                _ => {}
            }
            assert!(started.elapsed() < BUILD_WAIT, "build {id} did not end");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_through_a_real_openid_provider_in_chromium() {
    if on_path("node").is_none() {
        may_skip("node is not on PATH to run the OpenID provider (apt-get install nodejs)");
        return;
    }
    let Some(browser) = Browser::start().await else {
        return;
    };
    let Some(modules) = provider_modules() else {
        return;
    };
    let screenshots = screenshot_dir();
    fs_err::create_dir_all(&screenshots).unwrap();
    let client = browser.client.clone();
    let outcome = tokio::spawn(async move {
        let secret = random_secret();
        let secret_dir = tempfile::tempdir().unwrap();
        let secret_file = secret_dir.path().join("client-secret");
        fs_err::write(&secret_file, format!("{secret}\n")).unwrap();
        // The provider's address is chosen first: envstore's [oidc] names it,
        // and the provider's client names envstore's callback.
        let provider_port = free_port();
        let issuer = format!("http://127.0.0.1:{provider_port}");
        let channel = DemoChannel::start().await;
        let data = tempfile::tempdir().unwrap();
        let backend = Backend::from_env(data.path()).await;
        let oidc: envstore_api::oidc::OidcConfig = serde_json::from_value(json!({
            "issuer": issuer,
            "audience": CLIENT_ID,
            "jwks_url": format!("{issuer}/jwks"),
            "client_secret_file": secret_file,
            "scopes": ["openid", "profile", "email", "groups"],
            "groups_claim": "groups",
            "group_roles": [{ "group": "team-*", "namespace": "{group}", "role": "developer" }],
            "personal_namespaces": true,
        }))
        .unwrap();
        let server = TestServer::start_configured(
            data,
            backend,
            vec![channel.allowed_as("demo")],
            2,
            move |config| config.oidc = Some(oidc),
        )
        .await;
        let provider = Provider::start(&modules, provider_port, &server.base, &secret);
        assert_eq!(provider.issuer, issuer);
        for (name, public) in [
            ("team-data", false),
            ("team-ml", false),
            ("public-demo", true),
        ] {
            let response = server
                .admin_json(
                    Method::POST,
                    "/api/v1/namespaces",
                    Some(json!({ "name": name, "public_read": public })),
                )
                .await;
            assert_eq!(response.status(), StatusCode::CREATED, "{name}");
        }
        let story = Story {
            pages: Pages {
                browser: &client,
                server: &server,
            },
            screenshots,
        };
        steps(&story).await;
        drop(provider);
        server.stop().await;
    })
    .await;
    if let Err(error) = browser.client.close().await {
        println!("the browser session did not close cleanly: {error}");
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn steps(story: &Story<'_>) {
    let server = story.server;

    // Public namespaces are there for anyone, with a way to sign in: the
    // list, an environment, its build and its lockfile.
    let shared = server
        .submit_yaml("public-demo", "shared", &demo_spec_yaml("demo"))
        .await;
    assert_eq!(server.wait_for_build(&shared).await["status"], "succeeded");
    assert_eq!(story.listed_namespaces().await, ["public-demo"]);
    assert_eq!(story.location().await, "/ui/namespaces");
    assert_eq!(story.text("header .sign-in").await, "Sign in");
    story.screenshot("public").await;
    story
        .goto("/ui/namespaces/public-demo/environments/shared")
        .await;
    let current = story.text("section[aria-labelledby=current-heading]").await;
    assert!(current.contains(&shared), "{current}");
    assert!(
        story
            .browser
            .find(Locator::LinkText("Edit the spec and submit"))
            .await
            .is_err(),
        "submitting needs a session"
    );
    story.screenshot("public-environment").await;
    let lockfile = story
        .find("a[data-format='conda-lock']")
        .await
        .attr("href")
        .await
        .unwrap()
        .expect("a lockfile link");
    let response = reqwest::get(server.url(&lockfile)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{lockfile}");
    assert_eq!(response.url().path(), lockfile.split('?').next().unwrap());
    let text = response.text().await.unwrap();
    rattler_conda_lock::Document::parse(&text).expect("a conda-lock document, without signing in");
    story.goto(&format!("/ui/builds/{shared}")).await;
    story
        .find("#build-status .status[data-status=succeeded]")
        .await;

    // A private page sends the person to sign in, keeping the page.
    story.goto("/ui/namespaces/team-data").await;
    story
        .arrive("/ui/sign-in?next=%2Fui%2Fnamespaces%2Fteam-data")
        .await;
    story.screenshot("page").await;
    story.click("#sign-in-provider").await;

    // The provider's own login and consent pages.
    let provider_origin = server.config.oidc.as_ref().unwrap().issuer.clone();
    story.arrive_at(&provider_origin, "/interaction/").await;
    story.fill("input[name=login]", "alice").await;
    story.fill("input[name=password]", "any password").await;
    story.screenshot("provider-login").await;
    story.click("button[type=submit]").await;
    story.arrive_at(&provider_origin, "/interaction/").await;
    story.find("button[type=submit]").await;
    story.screenshot("provider-consent").await;
    story.click("button[type=submit]").await;

    // Back on the page first asked for, signed in.
    story.arrive("/ui/namespaces/team-data").await;
    assert_eq!(story.text("main h1").await, "team-data");
    story.find(".sign-out button").await;
    let cookie = story
        .browser
        .get_named_cookie(envstore_web::SESSION_COOKIE)
        .await
        .expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie
            .same_site()
            .map(|same_site| same_site.to_string())
            .as_deref(),
        Some("Lax")
    );
    let session = format!("{}={}", cookie.name(), cookie.value());
    assert!(
        story
            .browser
            .get_named_cookie(envstore_web::LOGIN_COOKIE)
            .await
            .is_err(),
        "the sign-in's state is gone once used"
    );

    // The groups' namespaces and the personal one, not the others.
    let mut seen = story.listed_namespaces().await;
    seen.sort();
    assert_eq!(seen, ["alice", "public-demo", "team-data"]);
    story.screenshot("namespaces").await;
    story.goto("/ui/namespaces/team-ml").await;
    let refused = story.text("[role=alert]").await;
    assert!(refused.contains("was not found"), "{refused}");

    // An environment in the personal namespace, through the form.
    story.goto("/ui/namespaces/alice").await;
    story.click("p.actions a.button").await;
    story.arrive("/ui/namespaces/alice/submit").await;
    story.fill("#name", "mine").await;
    story.fill("#spec", &demo_spec_yaml("demo")).await;
    story.screenshot("submit").await;
    story.click("form.stacked button[type=submit]").await;
    let build = story.build_succeeds().await;
    story.goto(&format!("/ui/builds/{build}")).await;
    story
        .find("#build-status .status[data-status=succeeded]")
        .await;
    story.screenshot("build").await;
    let (_, view) = server.get_json(&format!("/api/v1/builds/{build}")).await;
    assert_eq!(view["namespace"], "alice");
    let members = server.get_json("/api/v1/namespaces/alice/members").await.1;
    assert!(
        members.to_string().contains("oidc:alice") && members.to_string().contains("admin"),
        "alice administers her namespace: {members}"
    );

    // Signing out ends envstore's session and the provider's.
    story.goto("/ui/namespaces").await;
    story.click(".sign-out button").await;
    story.arrive_at(&provider_origin, "/session/end").await;
    story.screenshot("provider-sign-out").await;
    story.click("button[name=logout][value=yes]").await;
    story.arrive("/ui/sign-in?notice=signed-out").await;
    assert!(story.text(".notice").await.contains("signed out"));
    story.screenshot("signed-out").await;
    story.goto("/ui/namespaces/team-data").await;
    story.arrive("/ui/sign-in?next=").await;

    // The old cookie opens nothing: the session was revoked on the server.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = http
        .get(server.url("/ui/namespaces/team-data"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("/ui/sign-in?"), "{location}");
}

/// The provider's JWTs on the API: the groups claim gives roles at every
/// token, worked out from that token alone and never stored, so a token
/// without the group no longer has them. No browser needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_jwts_hold_the_roles_their_groups_give_and_no_more() {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine;

    const ISSUER: &str = "https://id.example.org";
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let signing = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
    let provider_dir = tempfile::tempdir().unwrap();
    let jwks = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "k1",
        "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    }]});
    fs_err::write(provider_dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let provider = envstore_fixtures::serve_channel(provider_dir.path().to_path_buf())
        .await
        .unwrap();
    let oidc: envstore_api::oidc::OidcConfig = serde_json::from_value(json!({
        "issuer": ISSUER,
        "audience": CLIENT_ID,
        "jwks_url": provider.url.join("jwks.json").unwrap(),
        "web_sign_in": false,
        "groups_claim": "groups",
        "group_roles": [
            { "group": "team-*", "namespace": "{group}", "role": "developer" },
            { "group": "auditors", "namespace": "*", "role": "viewer" },
        ],
    }))
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::from_env(data.path()).await;
    let server = TestServer::start_configured(data, backend, Vec::new(), 0, move |config| {
        config.oidc = Some(oidc)
    })
    .await;
    for name in ["team-data", "team-ml"] {
        assert_eq!(
            server.create_namespace(name).await.status(),
            StatusCode::CREATED
        );
    }
    let token = |groups: Value| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("k1".to_owned());
        let claims = json!({
            "sub": "alice", "iss": ISSUER, "aud": CLIENT_ID, "exp": now + 600, "groups": groups,
        });
        jsonwebtoken::encode(&header, &claims, &signing).unwrap()
    };
    let status = |token: String, path: &'static str| {
        let server = &server;
        async move {
            server
                .client
                .get(server.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let member = token(json!(["team-data", "other"]));
    assert_eq!(
        status(member.clone(), "/api/v1/namespaces/team-data").await,
        StatusCode::OK
    );
    assert_eq!(
        status(member.clone(), "/api/v1/namespaces/team-ml").await,
        StatusCode::NOT_FOUND
    );
    // A developer there, not an admin: visibility is an admin's to change.
    let visibility = server
        .client
        .put(server.url("/api/v1/namespaces/team-data/visibility"))
        .bearer_auth(&member)
        .json(&json!({ "public_read": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(visibility.status(), StatusCode::FORBIDDEN);
    // Out of the group, the next token holds nothing; nothing was stored.
    assert_eq!(
        status(token(json!([])), "/api/v1/namespaces/team-data").await,
        StatusCode::NOT_FOUND
    );
    let bindings = server.get_json("/api/v1/role-bindings").await.1;
    assert!(!bindings.to_string().contains("oidc:alice"), "{bindings}");
    // A glob rule: auditors see every namespace.
    assert_eq!(
        status(token(json!("auditors")), "/api/v1/namespaces/team-ml").await,
        StatusCode::OK
    );
    server.stop().await;
}

//! Headless Chromium under its own chromedriver, for the tests that drive
//! the web UI as a person would (`ui`, `sign_in`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

/// How long a page element may take to appear, and a build to end.
pub(crate) const ELEMENT_WAIT: Duration = Duration::from_secs(20);
pub(crate) const BUILD_WAIT: Duration = Duration::from_secs(180);

/// The flags every headless run uses: no sandbox (CI runs as root), no GPU,
/// and nothing that reaches the network or the profile of a person.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--window-size=1366,768",
];

pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Whether a missing tool may skip the test: outside CI, when asked
/// (`ENVSTORE_SKIP_BROWSER=1`); otherwise the test fails saying what is
/// missing.
pub(crate) fn may_skip(reason: &str) -> bool {
    let may = std::env::var("ENVSTORE_SKIP_BROWSER").is_ok_and(|value| value == "1")
        && std::env::var_os("CI").is_none();
    assert!(
        may,
        "{reason}; outside CI, ENVSTORE_SKIP_BROWSER=1 skips this test"
    );
    println!("skipped: {reason}");
    true
}

/// A child process stopped when dropped (a chromedriver takes its browsers
/// with it), however the test ends.
pub(crate) struct Stopped(pub(crate) Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The build's target folder (`CARGO_TARGET_DIR`, or `target/` beside the
/// workspace).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target")
        })
}

/// Where screenshots go: `<target dir>/ui-screenshots`.
pub(crate) fn screenshot_dir() -> PathBuf {
    target_dir().join("ui-screenshots")
}

/// A headless Chromium under its own chromedriver, with an empty profile.
pub(crate) struct Browser {
    pub(crate) client: Client,
    _driver: Stopped,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// The browser, or None when it is missing and skipping was asked for
    /// outside CI.
    pub(crate) async fn start() -> Option<Self> {
        let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
        else {
            may_skip(
                "chromium and chromedriver are not on PATH (apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let port = free_port();
        let driver = Stopped(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{webdriver}/status")).await.is_err() {
            assert!(
                started.elapsed() < ELEMENT_WAIT,
                "chromedriver did not answer on {webdriver}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("a profile folder");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| flag.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": chromium, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .expect("chromium starts under chromedriver");
        Some(Self {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Ends the browser session, then the driver.
    pub(crate) async fn close(self) {
        if let Err(error) = self.client.close().await {
            println!("the browser session did not close cleanly: {error}");
        }
    }
}

/// One browser on one server's pages: the steps every UI test takes. A
/// test's own story derefs to it.
pub(crate) struct Pages<'a> {
    pub(crate) browser: &'a Client,
    pub(crate) server: &'a envstore_tests::TestServer,
}

impl Pages<'_> {
    pub(crate) async fn goto(&self, path: &str) {
        self.browser
            .goto(&self.server.url(path))
            .await
            .expect("the page loads");
    }

    /// The current page's path.
    pub(crate) async fn path(&self) -> String {
        self.browser
            .current_url()
            .await
            .expect("a current URL")
            .path()
            .to_owned()
    }

    /// The current page's path and query.
    pub(crate) async fn location(&self) -> String {
        let url = self.browser.current_url().await.expect("a current URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The element `css` selects, waited for; a test fails naming the page
    /// and showing its source when it does not come.
    pub(crate) async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .browser
            .wait()
            .at_most(ELEMENT_WAIT)
            .for_element(fantoccini::Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => {
                let source = self.browser.source().await.unwrap_or_default();
                panic!("no '{css}' on {}: {error}\n{source}", self.location().await)
            }
        }
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .expect("an element's text")
    }

    pub(crate) async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|error| panic!("'{css}' cannot be clicked: {error}"));
    }

    /// How many elements `css` selects now (no waiting).
    pub(crate) async fn count(&self, css: &str) -> usize {
        self.browser
            .find_all(fantoccini::Locator::Css(css))
            .await
            .map(|elements| elements.len())
            .unwrap_or(0)
    }

    /// An attribute of the element `css` selects, waited for.
    pub(crate) async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css)
            .await
            .attr(name)
            .await
            .unwrap_or_else(|error| panic!("'{css}' has no readable {name}: {error}"))
    }

    pub(crate) async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("the field clears");
        field
            .send_keys(value)
            .await
            .expect("the field takes the text");
    }
}

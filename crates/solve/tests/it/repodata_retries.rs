//! Transient repodata errors (refused connections, 503s) are retried within
//! the budget; other answers and an exhausted budget fail the solve.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envstore_core::{CanonicalSpec, ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
use envstore_solve::{ChannelClient, EnvironmentSolver, NetworkLimits, SolveError};
use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::Subdir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

/// Far above the budgets the tests set: only a hang fails it.
const LIVENESS: Duration = Duration::from_secs(90);

/// How the channel's server answers requests for files it has.
#[derive(Clone, Copy)]
enum Mode {
    /// 503 (with `Retry-After: 1` on the first) for the first requests.
    FailFirst(usize),
    /// This status for every request.
    Always(u16),
}

/// A loopback HTTP server for the demo channel's folder.
struct ChannelServer {
    url: Url,
    requests: Arc<Mutex<Vec<String>>>,
    failed: Arc<AtomicUsize>,
}

impl ChannelServer {
    async fn start(listener: TcpListener, root: PathBuf, mode: Mode) -> Self {
        let url = Url::parse(&format!(
            "http://{}/",
            listener.local_addr().expect("an address")
        ))
        .expect("a URL");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (requests.clone(), failed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    root.clone(),
                    mode,
                    seen.clone(),
                    count.clone(),
                ));
            }
        });
        Self {
            url,
            requests,
            failed,
        }
    }

    fn requests_for(&self, suffix: &str) -> usize {
        self.requests
            .lock()
            .expect("the log")
            .iter()
            .filter(|path| path.ends_with(suffix))
            .count()
    }

    /// How often the path asked for most often was asked for.
    fn most_requests_for_one_path(&self) -> usize {
        let requests = self.requests.lock().expect("the log");
        requests
            .iter()
            .map(|path| requests.iter().filter(|other| *other == path).count())
            .max()
            .unwrap_or(0)
    }
}

async fn serve(
    mut stream: TcpStream,
    root: PathBuf,
    mode: Mode,
    seen: Arc<Mutex<Vec<String>>>,
    failed: Arc<AtomicUsize>,
) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => head.push(byte[0]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let path = words
            .next()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        seen.lock().expect("the log").push(path.clone());
        let (status, extra, body) = match mode {
            Mode::Always(status) => (status, String::new(), Vec::new()),
            Mode::FailFirst(count) if failed.fetch_add(1, Ordering::SeqCst) < count => {
                let extra = if failed.load(Ordering::SeqCst) == 1 {
                    "Retry-After: 1\r\n"
                } else {
                    ""
                };
                (503, extra.to_owned(), Vec::new())
            }
            Mode::FailFirst(_) => match fs_err::read(root.join(path.trim_start_matches('/'))) {
                Ok(bytes) => (200, String::new(), bytes),
                Err(_) => (404, String::new(), Vec::new()),
            },
        };
        let mut response = format!(
            "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if method != "HEAD" {
            response.extend_from_slice(&body);
        }
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    channel_dir: PathBuf,
}

async fn channel() -> Fixture {
    let dir = tempfile::tempdir().expect("a folder");
    let channel_dir = dir.path().join("www").join("demo");
    envstore_fixtures::write_demo_channel(&channel_dir)
        .await
        .expect("the demo channel");
    Fixture { dir, channel_dir }
}

fn solver(
    fixture: &Fixture,
    channel_url: &Url,
    budget: Duration,
) -> (EnvironmentSolver, CanonicalSpec) {
    let allowlist = ChannelAllowlist::new(vec![NamedChannel {
        name: "demo".into(),
        url: channel_url.clone(),
    }]);
    let limits = NetworkLimits {
        transient_retry: budget,
        ..NetworkLimits::default()
    };
    let client = ChannelClient::new(&allowlist, limits).expect("a client");
    let cache = fixture.dir.path().join("cache");
    let solver = EnvironmentSolver::new(
        &cache,
        PackageCache::new(cache.join("pkgs")),
        Duration::from_secs(60),
    )
    .with_channel_client(&client);
    let spec = EnvironmentSpec::parse(
        b"channels: [demo]\ndependencies: [numpy]\nplatforms: [linux-64]\n".as_slice(),
        SpecFormat::Yaml,
    )
    .expect("a spec")
    .canonicalize(&allowlist, Subdir::Linux64)
    .expect("a canonical spec");
    (solver, spec)
}

#[tokio::test]
async fn refused_connections_and_503s_are_retried_until_the_channel_answers() {
    let fixture = channel().await;
    // Nothing listens on the port at first: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port")
        .local_addr()
        .expect("an address")
        .port();
    let channel_url = Url::parse(&format!("http://127.0.0.1:{port}/demo/")).expect("a URL");
    let (solver, spec) = solver(&fixture, &channel_url, Duration::from_secs(60));
    let root = fixture
        .channel_dir
        .parent()
        .expect("the served folder")
        .to_owned();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the port again");
        // Then the first answers are 503s.
        ChannelServer::start(listener, root, Mode::FailFirst(3)).await
    });
    let solved = tokio::time::timeout(LIVENESS, solver.solve(&spec))
        .await
        .expect("no hang")
        .expect("solved once the channel answers");
    assert!(
        solved.platforms["linux-64"].iter().any(|record| record
            .package_record
            .name
            .as_normalized()
            == "numpy")
    );
    let server = server.await.expect("the server");
    assert_eq!(
        server.failed.load(Ordering::SeqCst).min(3),
        3,
        "the 503s were answered"
    );
    assert!(
        server.requests_for("repodata.json") >= 1,
        "the repodata was read"
    );
    assert_eq!(server.url.port(), Some(port));
}

#[tokio::test]
async fn a_channel_answering_503_for_ever_fails_after_the_budget() {
    let fixture = channel().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let server =
        ChannelServer::start(listener, fixture.channel_dir.clone(), Mode::Always(503)).await;
    let channel_url = server.url.join("demo/").expect("a URL");
    let (solver, spec) = solver(&fixture, &channel_url, Duration::from_secs(2));
    let started = Instant::now();
    let error = tokio::time::timeout(LIVENESS, solver.solve(&spec))
        .await
        .expect("no hang")
        .expect_err("the channel never answers");
    assert!(started.elapsed() < LIVENESS);
    let message = error.to_string();
    assert!(
        matches!(error, SolveError::Repodata { retried: true, .. }),
        "{error:?}"
    );
    assert!(message.contains("gave up after"), "{message}");
    assert!(message.contains(channel_url.as_str()), "{message}");
    assert!(
        !error.is_transient(),
        "the budget was spent: the build fails"
    );
    assert!(
        server.most_requests_for_one_path() >= 2,
        "retried: {:?}",
        server.requests.lock().expect("the log")
    );
}

#[tokio::test]
async fn other_client_errors_are_not_retried() {
    let fixture = channel().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let server =
        ChannelServer::start(listener, fixture.channel_dir.clone(), Mode::Always(403)).await;
    let channel_url = server.url.join("demo/").expect("a URL");
    let (solver, spec) = solver(&fixture, &channel_url, Duration::from_secs(60));
    let started = Instant::now();
    let error = tokio::time::timeout(LIVENESS, solver.solve(&spec))
        .await
        .expect("no hang")
        .expect_err("forbidden");
    assert!(started.elapsed() < LIVENESS);
    assert!(
        matches!(error, SolveError::Repodata { retried: false, .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("gave up after"), "{error}");
    assert_eq!(
        server.most_requests_for_one_path(),
        1,
        "asked once: {:?}",
        server.requests.lock().expect("the log")
    );
}

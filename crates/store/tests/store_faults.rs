//! An object store that hangs, refuses connections or fails with 503s: every
//! call ends within its deadline with an error an operator can act on, and
//! transient failures are retried through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envstore_store::{ArtifactStore, StoreError, StoreSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

/// Far above the 2 s deadline the tests set: only a hang fails it.
const LIVENESS: Duration = Duration::from_secs(60);

const SETTINGS: StoreSettings = StoreSettings {
    timeout: Duration::from_secs(2),
};

/// A store on S3 at `endpoint`, with static credentials (so nothing asks
/// an instance metadata service).
fn s3_store(endpoint: &str) -> ArtifactStore {
    ArtifactStore::open_with_s3_options(
        &Url::parse("s3://bucket/").expect("a URL"),
        SETTINGS,
        &[
            ("aws_endpoint", endpoint),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
            ("aws_virtual_hosted_style_request", "false"),
            ("aws_skip_signature", "false"),
        ],
    )
    .expect("an S3 store")
}

/// Every call of the store, by name, on small objects.
async fn every_call(
    store: &ArtifactStore,
    file: &std::path::Path,
) -> Vec<(&'static str, Result<(), StoreError>)> {
    vec![
        (
            "put_immutable",
            store
                .put_immutable("locks/a/conda-lock.yml", Bytes::from_static(b"lock"))
                .await,
        ),
        (
            "put_file_immutable",
            store.put_file_immutable("prefixes/a.tar.zst", file).await,
        ),
        ("get", store.get("locks/a/conda-lock.yml").await.map(drop)),
        (
            "exists",
            store.exists("locks/a/conda-lock.yml").await.map(drop),
        ),
        ("size", store.size("locks/a/conda-lock.yml").await.map(drop)),
        ("delete", store.delete("logs/a.log").await),
        ("check", store.check().await),
    ]
}

fn small_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("a file");
    fs_err::write(file.path(), b"packed prefix").expect("written");
    file
}

#[tokio::test]
async fn a_hanging_store_fails_every_call_within_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
    // Accepts every connection and never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let store = s3_store(&endpoint);
    let file = small_file();
    for (call, result) in timed(every_call(&store, file.path())).await {
        match result {
            Err(error @ StoreError::TimedOut { .. }) => {
                let message = error.to_string();
                assert!(message.contains(&endpoint), "{call}: {message}");
                assert!(
                    message.contains("did not answer within"),
                    "{call}: {message}"
                );
            }
            other => panic!("{call}: expected a timeout, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_refusing_store_fails_every_call_within_the_deadline() {
    // A port that was just free: nothing listens there.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
    drop(listener);
    let store = s3_store(&endpoint);
    let file = small_file();
    for (call, result) in timed(every_call(&store, file.path())).await {
        match result {
            Err(error @ StoreError::Unreachable { .. }) => {
                let message = error.to_string();
                assert!(message.contains(&endpoint), "{call}: {message}");
                assert!(message.contains("could not connect"), "{call}: {message}");
            }
            other => panic!("{call}: expected an unreachable store, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_store_answering_503_is_retried_through() {
    let fake = FakeS3::start(2).await;
    let store = s3_store(&fake.endpoint);
    let started = Instant::now();
    store
        .put_immutable("locks/a/conda-lock.yml", Bytes::from_static(b"lock: 1"))
        .await
        .expect("written after two 503s");
    assert_eq!(fake.failed(), 2);
    assert_eq!(
        store
            .get("locks/a/conda-lock.yml")
            .await
            .expect("read back"),
        "lock: 1"
    );
    assert_eq!(
        store.size("locks/a/conda-lock.yml").await.expect("a size"),
        Some(7)
    );
    assert!(started.elapsed() < LIVENESS);
}

#[tokio::test]
async fn a_store_answering_503_for_ever_fails_within_the_deadline() {
    let fake = FakeS3::start(usize::MAX).await;
    let store = s3_store(&fake.endpoint);
    let started = Instant::now();
    let error = store
        .put_immutable("locks/a/conda-lock.yml", Bytes::from_static(b"lock"))
        .await
        .expect_err("never written");
    assert!(
        matches!(
            error,
            StoreError::Write { .. } | StoreError::TimedOut { .. }
        ),
        "{error:?}"
    );
    assert!(started.elapsed() < LIVENESS);
    // The first request and at most 3 retries.
    assert!(
        (2..=4).contains(&fake.failed()),
        "{} requests",
        fake.failed()
    );
}

#[tokio::test]
async fn an_upload_part_that_hangs_fails_the_upload_in_time() {
    let fake = FakeS3::start(0).await;
    fake.hang_parts();
    let store = s3_store(&fake.endpoint);
    let file = small_file();
    let started = Instant::now();
    let error = store
        .put_file_immutable("prefixes/a.tar.zst", file.path())
        .await
        .expect_err("the part never arrives");
    assert!(started.elapsed() < LIVENESS);
    match &error {
        StoreError::TimedOut { key, .. } => assert_eq!(key, "prefixes/a.tar.zst"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(fake.started_uploads() >= 1, "the upload was started");
}

#[tokio::test]
async fn a_large_file_is_uploaded_in_parts_through_503s() {
    let fake = FakeS3::start(1).await;
    let store = s3_store(&fake.endpoint);
    let file = tempfile::NamedTempFile::new().expect("a file");
    // Two full 8 MiB parts and a short last one.
    let content: Vec<u8> = (0..(17 * 1024 * 1024 + 123))
        .map(|index: usize| (index % 251) as u8)
        .collect();
    fs_err::write(file.path(), &content).expect("written");
    timed(store.put_file_immutable("prefixes/b.tar.zst", file.path()))
        .await
        .expect("uploaded after a 503");
    assert_eq!(fake.failed(), 1);
    assert_eq!(fake.started_uploads(), 1);
    let read = timed(store.get("prefixes/b.tar.zst"))
        .await
        .expect("read back");
    assert!(read == content, "the same bytes, in order");
}

/// Runs `calls`, failing the test if they outlive [`LIVENESS`].
async fn timed<T>(calls: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let results = tokio::time::timeout(LIVENESS, calls)
        .await
        .expect("no call hangs");
    assert!(started.elapsed() < LIVENESS);
    results
}

/// A tiny S3 on loopback: PUT, GET and HEAD of objects, the start of a
/// multipart upload; the first `fail_first` requests get a 503.
struct FakeS3 {
    endpoint: String,
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    objects: HashMap<String, Vec<u8>>,
    fail_first: usize,
    failed: usize,
    hang_parts: bool,
    started_uploads: usize,
    /// Parts of the multipart upload under way, by number.
    parts: Vec<(usize, Vec<u8>)>,
}

impl FakeS3 {
    async fn start(fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        let state = Arc::new(Mutex::new(FakeState {
            fail_first,
            ..FakeState::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self { endpoint, state }
    }

    fn failed(&self) -> usize {
        self.state.lock().expect("the state").failed
    }

    fn hang_parts(&self) {
        self.state.lock().expect("the state").hang_parts = true;
    }

    fn started_uploads(&self) -> usize {
        self.state.lock().expect("the state").started_uploads
    }
}

enum Answer {
    Reply(String, Vec<u8>),
    Hang,
}

/// One connection: requests in turn until it closes.
async fn serve(mut stream: TcpStream, state: Arc<Mutex<FakeState>>) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        let body = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().unwrap_or_default().to_owned();
        let answer = answer(&state, &method, &target, body);
        match answer {
            Answer::Hang => std::future::pending::<()>().await,
            Answer::Reply(status_and_headers, body) => {
                let mut response = format!(
                    "HTTP/1.1 {status_and_headers}Content-Length: {}\r\n\r\n",
                    body.len()
                );
                if method == "HEAD" {
                    // The length of the object, without its bytes.
                    response = format!("HTTP/1.1 {status_and_headers}\r\n");
                }
                let mut bytes = response.into_bytes();
                if method != "HEAD" {
                    bytes.extend_from_slice(&body);
                }
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

const OBJECT_HEADERS: &str = "ETag: \"e\"\r\nLast-Modified: Mon, 30 Nov 2026 12:00:00 GMT\r\n";

fn answer(state: &Mutex<FakeState>, method: &str, target: &str, body: Vec<u8>) -> Answer {
    let mut state = state.lock().expect("the state");
    if state.failed < state.fail_first {
        state.failed += 1;
        return Answer::Reply(
            "503 Service Unavailable\r\n".to_owned(),
            b"<Error><Code>SlowDown</Code></Error>".to_vec(),
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let key = path.trim_start_matches("/bucket/").to_owned();
    match method {
        "POST" if query.contains("uploads") => {
            state.started_uploads += 1;
            let xml = format!(
                "<InitiateMultipartUploadResult><Bucket>bucket</Bucket><Key>{key}</Key><UploadId>u1</UploadId></InitiateMultipartUploadResult>"
            );
            Answer::Reply("200 OK\r\n".to_owned(), xml.into_bytes())
        }
        "PUT" if query.contains("partNumber") && state.hang_parts => Answer::Hang,
        "PUT" if query.contains("partNumber") => {
            let number = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("partNumber="))
                .and_then(|number| number.parse::<usize>().ok())
                .unwrap_or(0);
            state.parts.push((number, body));
            Answer::Reply(format!("200 OK\r\nETag: \"p{number}\"\r\n"), Vec::new())
        }
        "POST" if query.contains("uploadId") => {
            let mut parts = std::mem::take(&mut state.parts);
            parts.sort_by_key(|(number, _)| *number);
            state.objects.insert(
                key,
                parts.into_iter().flat_map(|(_, bytes)| bytes).collect(),
            );
            let xml =
                "<CompleteMultipartUploadResult><ETag>\"e\"</ETag></CompleteMultipartUploadResult>";
            Answer::Reply("200 OK\r\n".to_owned(), xml.as_bytes().to_vec())
        }
        "PUT" => {
            state.objects.insert(key, body);
            Answer::Reply(format!("200 OK\r\n{OBJECT_HEADERS}"), Vec::new())
        }
        "GET" if path == "/bucket" || path == "/bucket/" => Answer::Reply(
            "200 OK\r\n".to_owned(),
            b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>".to_vec(),
        ),
        "GET" | "HEAD" => match state.objects.get(&key) {
            Some(object) if method == "HEAD" => Answer::Reply(
                format!(
                    "200 OK\r\n{OBJECT_HEADERS}Content-Length: {}\r\n",
                    object.len()
                ),
                Vec::new(),
            ),
            Some(object) => Answer::Reply(format!("200 OK\r\n{OBJECT_HEADERS}"), object.clone()),
            None if method == "HEAD" => Answer::Reply(
                "404 Not Found\r\nContent-Length: 0\r\n".to_owned(),
                Vec::new(),
            ),
            None => Answer::Reply(
                "404 Not Found\r\n".to_owned(),
                b"<Error><Code>NoSuchKey</Code></Error>".to_vec(),
            ),
        },
        _ => Answer::Reply("400 Bad Request\r\n".to_owned(), Vec::new()),
    }
}

//! Transient download errors of packages are retried with backoff for a
//! time budget; a channel that keeps failing fails the build with a message
//! naming the URL, the last error and how long it was retried.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use envstore_core::ContentHash;
use envstore_link::{PrefixBuilder, PrefixError, ProgressSink};
use rattler::package_cache::PackageCache;
use rattler_conda_types::{Channel, RepoData, RepoDataRecord, Subdir};

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl ProgressSink for Lines {
    fn line(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

/// Serves `dir` on loopback, answering 503 to the first `failures` requests.
async fn flaky_channel(dir: PathBuf, failures: usize) -> (url::Url, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let router = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (dir, counter) = (dir.clone(), counter.clone());
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) < failures {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            match fs_err::read(dir.join(uri.path().trim_start_matches('/'))) {
                Ok(bytes) => bytes.into_response(),
                Err(_) => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, requests)
}

/// The record of `libzlib` for linux-64 in the demo channel, served at `url`.
fn libzlib(channel: &envstore_fixtures::ChannelInfo, url: url::Url) -> Vec<RepoDataRecord> {
    RepoData::from_path(channel.repodata_path("linux-64"))
        .unwrap()
        .into_repo_data_records(&Channel::from_url(url))
        .into_iter()
        .filter(|record| record.package_record.name.as_normalized() == "libzlib")
        .take(1)
        .collect()
}

/// `libzlib` for linux-64 from the demo channel served with `failures`
/// answers of 503 first, and a builder in a fresh data folder.
async fn fixture(
    failures: usize,
) -> (
    tempfile::TempDir,
    PrefixBuilder,
    Vec<RepoDataRecord>,
    Arc<AtomicUsize>,
) {
    fixture_served(async |dir| flaky_channel(dir, failures).await).await
}

/// `libzlib` for linux-64 from the demo channel as `serve` serves its
/// folder, what `serve` keeps of its answers, and a builder in a fresh
/// data folder.
async fn fixture_served<T>(
    serve: impl AsyncFnOnce(PathBuf) -> (url::Url, T),
) -> (tempfile::TempDir, PrefixBuilder, Vec<RepoDataRecord>, T) {
    let dir = tempfile::tempdir().unwrap();
    let channel = envstore_fixtures::write_demo_channel(&dir.path().join("demo"))
        .await
        .unwrap();
    let (url, served) = serve(channel.dir.clone()).await;
    let records = libzlib(&channel, url);
    let root = fs_err::canonicalize(dir.path()).unwrap().join("prefixes");
    let builder = PrefixBuilder::new(root, PackageCache::new(dir.path().join("pkgs")));
    (dir, builder, records, served)
}

/// Builds `records` with `builder`: the outcome and the lines of its log.
async fn build_logged(
    builder: &PrefixBuilder,
    records: &[RepoDataRecord],
    name: &str,
) -> (
    Result<envstore_link::PrefixReport, PrefixError>,
    Vec<String>,
) {
    let lines = Arc::new(Lines::default());
    let outcome = builder
        .build(
            &ContentHash::of(name.as_bytes()),
            Subdir::Linux64,
            records,
            &Default::default(),
            lines.clone(),
            || {},
        )
        .await;
    let lines = lines.0.lock().unwrap().clone();
    (outcome, lines)
}

#[tokio::test]
async fn a_package_download_that_fails_transiently_is_retried_until_it_succeeds() {
    let (_dir, builder, records, requests) = fixture(2).await;
    let builder = builder.with_transient_retry(Duration::from_secs(60));
    let (report, lines) = build_logged(&builder, &records, "flaky channel").await;
    let report = report.unwrap();
    assert_eq!(report.downloaded, 1);
    assert!(envstore_link::is_complete(&report.path));
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "two 503s, then the archive"
    );
    let retries: Vec<&String> = lines
        .iter()
        .filter(|line| line.starts_with("retrying http://"))
        .collect();
    assert_eq!(retries.len(), 2, "{lines:#?}");
    assert!(
        retries[0].contains(" in ")
            && retries[0].ends_with(": the server answered 503 Service Unavailable"),
        "{}",
        retries[0]
    );
    assert!(
        retries[0].contains(&records[0].url.to_string()),
        "{}",
        retries[0]
    );
}

#[tokio::test]
async fn a_channel_that_keeps_failing_fails_the_build_once_the_budget_is_spent() {
    let (_dir, builder, records, requests) = fixture(usize::MAX).await;
    let builder = builder.with_transient_retry(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let (outcome, _) = build_logged(&builder, &records, "dead channel").await;
    let error = outcome.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up in time: {:?}",
        started.elapsed()
    );
    let message = envstore_core::error_chain(&error);
    assert!(matches!(error, PrefixError::Gate { .. }), "{message}");
    assert!(
        message.contains(&format!("failed to download '{}'", records[0].url)),
        "{message}"
    );
    assert!(
        message
            .contains("the server answered 503 Service Unavailable (gave up after retrying for "),
        "{message}"
    );
    assert!(requests.load(Ordering::SeqCst) >= 2, "it was retried");
    assert!(
        !builder
            .prefix_path(&ContentHash::of(b"dead channel"))
            .exists(),
        "no half-built prefix"
    );
}

#[tokio::test]
async fn a_zero_budget_retries_nothing_and_a_404_is_never_retried() {
    let (_dir, builder, records, requests) = fixture(usize::MAX).await;
    let builder = builder.with_transient_retry(Duration::ZERO);
    let error = build_logged(&builder, &records, "no retries")
        .await
        .0
        .unwrap_err();
    let message = envstore_core::error_chain(&error);
    assert!(
        message.contains("(transient errors are not retried)"),
        "{message}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);

    let (_dir, builder, mut records, requests) = fixture(0).await;
    let builder = builder.with_transient_retry(Duration::from_secs(60));
    records[0].url = records[0].url.join("missing.conda").unwrap();
    let error = build_logged(&builder, &records, "no retries")
        .await
        .0
        .unwrap_err();
    let message = envstore_core::error_chain(&error);
    assert!(
        message.contains("the server answered 404 Not Found"),
        "{message}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1, "a 404 is not retried");
}

/// What [`breaking_channel`] was asked for an archive and sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArchiveAnswer {
    range: Option<String>,
    status: u16,
    sent: usize,
}

/// How [`breaking_channel`] answers after it broke the first transfer.
#[derive(Debug, Clone, Copy)]
struct Resumable {
    /// The ETag every answer carries (none: no validator at all).
    etag: Option<&'static str>,
    /// Whether `Range` (with a matching `If-Range`) gets a 206.
    honours_range: bool,
}

/// Serves `dir`. The first answer for an archive sends its first half,
/// then breaks the connection; later ones follow `how`.
async fn breaking_channel(
    dir: PathBuf,
    how: Resumable,
) -> (url::Url, Arc<Mutex<Vec<ArchiveAnswer>>>) {
    use axum::http::header;

    let answers = Arc::new(Mutex::new(Vec::<ArchiveAnswer>::new()));
    let seen = answers.clone();
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (dir, seen) = (dir.clone(), seen.clone());
        async move {
            let path = request.uri().path().trim_start_matches('/').to_owned();
            let Ok(bytes) = fs_err::read(dir.join(&path)) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            if !(path.ends_with(".conda") || path.ends_with(".tar.bz2")) {
                return bytes.into_response();
            }
            let header_of = |name: header::HeaderName| {
                request
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            };
            let (range, if_range) = (header_of(header::RANGE), header_of(header::IF_RANGE));
            let first = seen.lock().unwrap().is_empty();
            let mut response = if first {
                let half = bytes[..bytes.len() / 2].to_vec();
                seen.lock().unwrap().push(ArchiveAnswer {
                    range,
                    status: 200,
                    sent: half.len(),
                });
                // Half the body, a pause so it reaches the client, then a
                // broken connection.
                let body = futures::stream::unfold(Some(half), |half| async move {
                    match half {
                        Some(half) => Some((Ok::<_, std::io::Error>(half), None)),
                        None => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Some((Err(std::io::Error::other("connection broken")), None))
                        }
                    }
                });
                let mut response = axum::body::Body::from_stream(body).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, bytes.len().into());
                response
            } else {
                let start = range
                    .as_deref()
                    .and_then(|range| range.strip_prefix("bytes="))
                    .and_then(|range| range.strip_suffix('-'))
                    .and_then(|start| start.parse::<usize>().ok())
                    .filter(|_| how.honours_range && if_range.as_deref() == how.etag);
                let (status, body) = match start {
                    Some(start) => (StatusCode::PARTIAL_CONTENT, bytes[start..].to_vec()),
                    None => (StatusCode::OK, bytes.clone()),
                };
                seen.lock().unwrap().push(ArchiveAnswer {
                    range,
                    status: status.as_u16(),
                    sent: body.len(),
                });
                let mut response = (status, body).into_response();
                if let Some(start) = start {
                    let value = format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len());
                    response
                        .headers_mut()
                        .insert(header::CONTENT_RANGE, value.parse().unwrap());
                }
                response
            };
            if let Some(etag) = how.etag {
                response
                    .headers_mut()
                    .insert(header::ETAG, etag.parse().unwrap());
            }
            response
                .headers_mut()
                .insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, answers)
}

/// Builds `libzlib` from a [`breaking_channel`]: the answers the server
/// gave for its archive, the archive's size and the build's log.
async fn build_through_a_break(how: Resumable) -> (Vec<ArchiveAnswer>, usize, Vec<String>) {
    let (dir, builder, records, answers) =
        fixture_served(async |channel| breaking_channel(channel, how).await).await;
    let archive = fs_err::metadata(
        dir.path()
            .join("demo")
            .join("linux-64")
            .join(records[0].identifier.to_file_name()),
    )
    .unwrap()
    .len() as usize;
    let builder = builder.with_transient_retry(Duration::from_secs(60));
    let (report, lines) = build_logged(&builder, &records, &format!("{how:?}")).await;
    assert!(envstore_link::is_complete(&report.unwrap().path));
    let answers = answers.lock().unwrap().clone();
    (answers, archive, lines)
}

#[tokio::test]
async fn a_broken_download_is_resumed_where_it_broke() {
    let (answers, archive, lines) = build_through_a_break(Resumable {
        etag: Some("\"v1\""),
        honours_range: true,
    })
    .await;
    let half = archive / 2;
    assert_eq!(
        answers,
        [
            ArchiveAnswer {
                range: None,
                status: 200,
                sent: half
            },
            ArchiveAnswer {
                range: Some(format!("bytes={half}-")),
                status: 206,
                sent: archive - half
            },
        ],
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.ends_with(&format!("from byte {half} of {archive}"))),
        "the log says it resumed: {lines:#?}"
    );
}

#[tokio::test]
async fn a_server_without_ranges_or_validators_sends_the_whole_file_again() {
    // No validator: nothing is asked for by range, since the rest could be
    // another version's.
    let (answers, archive, _) = build_through_a_break(Resumable {
        etag: None,
        honours_range: true,
    })
    .await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(
        (
            answers[1].range.as_deref(),
            answers[1].status,
            answers[1].sent
        ),
        (None, 200, archive)
    );
    // Asked for the rest, answered with the whole: the half is dropped,
    // not spliced (the build's checksum check would refuse a splice).
    let (answers, archive, _) = build_through_a_break(Resumable {
        etag: Some("\"v1\""),
        honours_range: false,
    })
    .await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(
        (answers[1].range.clone(), answers[1].status, answers[1].sent),
        (Some(format!("bytes={}-", archive / 2)), 200, archive)
    );
}

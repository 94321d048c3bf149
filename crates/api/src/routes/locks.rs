use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envstore_api_types::prefixes::{
    PREFIX_CONTENT_TYPE, PREFIX_LOCK_HASH_HEADER, PREFIX_PATH_HEADER, PREFIX_SHA256_HEADER,
};
use envstore_core::ContentHash;
use envstore_store::{artifact, keys};

use crate::auth::Caller;
use crate::http_cache::{cache_control, if_none_match};
use crate::{ApiError, AppState};

/// A lock's artifact by its content address: it never changes, so it may be
/// cached forever; by shared caches only when a public namespace holds it
/// (otherwise the answer needed a token, and is `private`). This is the hot path of CI fetching pinned lockfiles: the
/// access data and the artifact come from in-process caches, so a repeated
/// request makes no database or store round trip.
#[utoipa::path(
    get,
    path = "/api/v1/locks/{lock_hash}/{file}",
    tag = "lockfiles",
    params(("lock_hash" = String, Path, description = "The lock's hash."), ("file" = String, Path, description = "conda-lock.yml, pixi.lock or explicit-<platform>.txt.")),
    responses(
        (status = 200, description = "The artifact; immutable.", body = String, content_type = "application/yaml"),
        (status = 304, description = "`If-None-Match` names it."),
        crate::openapi::SignedIn,
        (status = 404, description = "No such artifact, or the caller may not see it.", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn get_lock_artifact(
    State(app): State<AppState>,
    caller: Caller,
    Path((lock_hash, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::NotFound(format!(
            "lock artifact '{}/{}' was not found",
            lock_hash.escape_debug(),
            file.escape_debug()
        ))
    };
    let hash: ContentHash = lock_hash.parse().map_err(|_| not_found())?;
    if !artifact::is_lock_artifact(&file) {
        return Err(not_found());
    }
    // Hashes parse from lowercase hex only: the path is the hex already.
    if !may_read_lock(&app, &caller, &lock_hash).await? {
        return Err(if caller.subject.is_none() {
            ApiError::Unauthorized
        } else {
            not_found()
        });
    }
    // Read (from memory once warm) before answering 304, so a name the lock
    // does not have is still a 404.
    let bytes = app.store.get_lock_artifact(&hash, &file).await?;
    let etag = format!("\"{lock_hash}\"");
    let cache_control = cache_control(
        lock_is_public(&app, &lock_hash).await?,
        "max-age=31536000, immutable",
    );
    if if_none_match(&headers, &etag) {
        tracing::debug!(lock = %lock_hash, file, "lock artifact not modified");
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
        )
            .into_response());
    }
    tracing::debug!(lock = %lock_hash, file, bytes = bytes.len(), "lock artifact served");
    // The path names a lock, not a namespace: counted per lock (in memory,
    // flushed in batches), and shown in every namespace holding the lock.
    app.db.count_artifact_download(&hash);
    let content_type = if file.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else {
        "application/yaml"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache_control),
        ],
        bytes,
    )
        .into_response())
}

/// A lock's packed prefix (`prefixes/<lock_hash>.tar.zst` in the store),
/// streamed from the store as it is read, so a node with only the server's
/// URL and a token can place the prefix where the server built it. Single
/// byte ranges let a broken download resume. The `ETag` is the archive's
/// sha256, recorded when it was published: the same URL may hold another
/// archive of the same lock after garbage collection and a rebuild, so
/// caches revalidate (`no-cache`) rather than keep it as immutable.
#[utoipa::path(
    get,
    path = "/api/v1/locks/{lock_hash}/prefix.tar.zst",
    tag = "lockfiles",
    params(
        ("lock_hash" = String, Path, description = "The lock's hash."),
        ("Range" = Option<String>, Header, description = "One byte range: `bytes=a-b`, `bytes=a-` or `bytes=-n`; several ranges, or another unit, get the whole archive."),
        ("If-None-Match" = Option<String>, Header, description = "A tag from an earlier answer: 304 while the archive is the same."),
        ("If-Range" = Option<String>, Header, description = "The tag a partial download was started with: the range is served only while the archive is the same, the whole archive otherwise.")
    ),
    responses(
        (status = 200, description = "The whole archive (zstd-compressed tar, as envstore packs it).", body = crate::openapi::Binary, content_type = "application/zstd",
            headers(
                ("ETag" = String, description = "The archive's sha256, quoted."),
                ("Accept-Ranges" = String, description = "`bytes`."),
                ("X-Envstore-Prefix-Sha256" = String, description = "The archive's sha256 (hex): check the download against it."),
                ("X-Envstore-Lock-Hash" = String, description = "The lock the prefix holds."),
                ("X-Envstore-Prefix-Path" = String, description = "The prefix's path on the server, which the prefix embeds: unpack it at the same path.")
            )),
        (status = 206, description = "The byte range asked for, with `Content-Range`.", body = crate::openapi::Binary, content_type = "application/zstd"),
        (status = 304, description = "`If-None-Match` names the archive."),
        (status = 416, description = "The range starts past the end; `Content-Range: bytes */<size>` gives the size."),
        crate::openapi::SignedIn,
        (status = 404, description = "No such lock, the caller may not see it, or the server published no packed prefix of it (`--pack-prefixes`).", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn get_packed_prefix(
    State(app): State<AppState>,
    caller: Caller,
    Path(lock_hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found =
        || ApiError::NotFound(format!("lock '{}' was not found", lock_hash.escape_debug()));
    let hash: ContentHash = lock_hash.parse().map_err(|_| not_found())?;
    if !may_read_lock(&app, &caller, &lock_hash).await? {
        return Err(if caller.subject.is_none() {
            ApiError::Unauthorized
        } else {
            not_found()
        });
    }
    let Some(sha256) = app.db.packed_prefix(&hash).await? else {
        return Err(ApiError::NotFound(format!(
            "the server has no packed prefix of lock {lock_hash}: it publishes them only when started with --pack-prefixes true (ENVSTORE_PACK_PREFIXES=true; the default for an s3:// store), and a lock built before that has none until it is built again"
        )));
    };
    let etag = format!("\"{sha256}\"");
    let mut answer = HeaderMap::new();
    set_header(&mut answer, header::ETAG, &etag);
    set_header(
        &mut answer,
        header::CACHE_CONTROL,
        &cache_control(lock_is_public(&app, &lock_hash).await?, "no-cache"),
    );
    set_header(&mut answer, header::ACCEPT_RANGES, "bytes");
    set_header(
        &mut answer,
        HeaderName::from_static(PREFIX_SHA256_HEADER),
        &sha256.to_hex(),
    );
    set_header(
        &mut answer,
        HeaderName::from_static(PREFIX_LOCK_HASH_HEADER),
        &lock_hash,
    );
    set_header(
        &mut answer,
        HeaderName::from_static(PREFIX_PATH_HEADER),
        &app.prefixes_root.join(hash.short()).display().to_string(),
    );
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, answer).into_response());
    }
    let key = keys::packed_prefix(&hash);
    let Some(size) = app.store.size(&key).await? else {
        return Err(ApiError::NotFound(format!(
            "the packed prefix of lock {lock_hash} is recorded but gone from the store; it is published again when the lock is built again"
        )));
    };
    let (status, object) = match byte_range(&headers, &etag, size) {
        ByteRange::Whole => (StatusCode::OK, app.store.get_stream(&key).await?),
        ByteRange::Part(range) => (
            StatusCode::PARTIAL_CONTENT,
            app.store.get_range_stream(&key, range).await?,
        ),
        ByteRange::Unsatisfiable => {
            set_header(
                &mut answer,
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, answer).into_response());
        }
    };
    if status == StatusCode::PARTIAL_CONTENT {
        set_header(
            &mut answer,
            header::CONTENT_RANGE,
            &format!(
                "bytes {}-{}/{}",
                object.range.start,
                object.range.end.saturating_sub(1),
                object.size
            ),
        );
    }
    set_header(
        &mut answer,
        header::CONTENT_LENGTH,
        &(object.range.end - object.range.start).to_string(),
    );
    set_header(&mut answer, header::CONTENT_TYPE, PREFIX_CONTENT_TYPE);
    tracing::debug!(lock = %lock_hash, range = ?object.range, size = object.size, "packed prefix served");
    Ok((status, answer, Body::from_stream(object.chunks)).into_response())
}

/// Sets a header; a value that cannot be one (a path that is not visible
/// ASCII) is left out.
fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    Whole,
    /// The bytes `start..end` (end exclusive, within the object).
    Part(std::ops::Range<u64>),
    /// A range that starts at or past the end: 416.
    Unsatisfiable,
}

/// One range of RFC 9110 (`bytes=a-b`, `bytes=a-`, `bytes=-n`), honoured
/// only while `If-Range` (when sent) names `etag`. Anything this does not
/// serve (several ranges, another unit, a malformed header) gets the whole
/// object, as RFC 9110 allows.
fn byte_range(headers: &HeaderMap, etag: &str, size: u64) -> ByteRange {
    let Some(value) = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    else {
        return ByteRange::Whole;
    };
    if let Some(condition) = headers.get(header::IF_RANGE)
        && condition.to_str().ok().map(str::trim) != Some(etag)
    {
        return ByteRange::Whole;
    }
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return ByteRange::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let number = |text: &str| {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(size.saturating_sub(suffix)..size)
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if end.is_some_and(|end| end < start) {
                return ByteRange::Whole;
            }
            if start >= size {
                return ByteRange::Unsatisfiable;
            }
            let end = end.map_or(size, |end| end.saturating_add(1).min(size));
            ByteRange::Part(start..end)
        }
        _ => ByteRange::Whole,
    }
}

/// A lock is shared by every namespace that built it: a viewer of any of
/// them may read it. The namespaces this process already knows are tried
/// first; only when none lets the caller in is the database asked, since
/// another namespace may have built the lock since.
async fn may_read_lock(app: &AppState, caller: &Caller, lock_hash: &str) -> Result<bool, ApiError> {
    let known = app.db.known_namespaces_with_lock(lock_hash);
    for namespace in &known {
        if caller.can_view(app, namespace).await? {
            return Ok(true);
        }
    }
    for namespace in app.db.namespaces_with_lock(lock_hash).await? {
        if !known.contains(&namespace) && caller.can_view(app, &namespace).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether anyone, without a token, may read the lock: a public namespace
/// this process knows holds it. Only the namespaces known in memory are
/// asked (this is the hot path); not knowing makes the answer `private`,
/// which is always safe.
async fn lock_is_public(app: &AppState, lock_hash: &str) -> Result<bool, ApiError> {
    for namespace in app.db.known_namespaces_with_lock(lock_hash) {
        if app.db.namespace_public_read(&namespace).await? == Some(true) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, if_range: Option<&'static str>, size: u64) -> ByteRange {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        if let Some(tag) = if_range {
            headers.insert(header::IF_RANGE, HeaderValue::from_static(tag));
        }
        byte_range(&headers, "\"abc\"", size)
    }

    #[test]
    fn single_byte_ranges_are_served_and_the_rest_gets_the_whole() {
        assert_eq!(range("bytes=0-9", None, 100), ByteRange::Part(0..10));
        assert_eq!(range("bytes=90-200", None, 100), ByteRange::Part(90..100));
        assert_eq!(range("bytes=95-", None, 100), ByteRange::Part(95..100));
        assert_eq!(range("bytes=-10", None, 100), ByteRange::Part(90..100));
        assert_eq!(range("bytes=-500", None, 100), ByteRange::Part(0..100));
        assert_eq!(range("bytes=99-99", None, 100), ByteRange::Part(99..100));
        for unsatisfiable in ["bytes=100-", "bytes=100-200", "bytes=-0"] {
            assert_eq!(
                range(unsatisfiable, None, 100),
                ByteRange::Unsatisfiable,
                "{unsatisfiable}"
            );
        }
        for ignored in [
            "bytes=9-0",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(range(ignored, None, 100), ByteRange::Whole, "{ignored}");
        }
        assert_eq!(
            range("bytes=0-9", Some("\"abc\""), 100),
            ByteRange::Part(0..10)
        );
        assert_eq!(
            range("bytes=0-9", Some("\"old\""), 100),
            ByteRange::Whole,
            "another archive since: the whole new one"
        );
        assert_eq!(
            byte_range(&HeaderMap::new(), "\"abc\"", 100),
            ByteRange::Whole
        );
    }
}

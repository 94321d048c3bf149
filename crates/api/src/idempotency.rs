//! `Idempotency-Key` on requests that queue a build: a client that lost the
//! answer (a dropped connection, a 502 from a proxy, a node that died after
//! committing) sends the same request again with the same key and gets the
//! first answer back instead of a second build. The key is claimed and the
//! answer kept in the transaction that queues the build (see
//! [`envstore_db::Database::submit_build_once`]), for
//! [`envstore_db::IDEMPOTENCY_TTL`].

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envstore_db::{IdempotencyKey, StoredAnswer};
use sha2::{Digest, Sha256};

use crate::ApiError;
use crate::auth::Caller;

/// The request header a client names its attempt with.
pub const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// Set on an answer repeated from a key's first request.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Longest key accepted: a UUID is 36 bytes; room for any client's scheme.
pub const MAX_KEY_BYTES: usize = 255;

/// The request's key, checked, with whose it is and a digest of the request
/// (method, path, content type, body); None without the header.
pub(crate) fn request_key(
    caller: &Caller,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "send one Idempotency-Key header, not several".to_owned(),
        ));
    }
    let key = check_key(value.as_bytes())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let mut digest = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        path.as_bytes(),
        content_type,
        body,
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    Ok(Some(IdempotencyKey {
        caller: caller.subject.clone().unwrap_or_default(),
        key,
        request_hash: hex(&digest.finalize()),
    }))
}

/// A key is 1 to [`MAX_KEY_BYTES`] visible ASCII characters (no spaces).
fn check_key(bytes: &[u8]) -> Result<String, ApiError> {
    if bytes.is_empty() || bytes.len() > MAX_KEY_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the Idempotency-Key must be 1 to {MAX_KEY_BYTES} bytes long; it has {}",
            bytes.len()
        )));
    }
    if !bytes.iter().all(|byte| byte.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(
            "the Idempotency-Key may hold visible ASCII characters only (a UUID, say)".to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The answer kept under `key`, sent again, or 422 when the key was first
/// used for another request.
pub(crate) fn replay(stored: StoredAnswer, key: &IdempotencyKey) -> Result<Response, ApiError> {
    if stored.request_hash != key.request_hash {
        return Err(ApiError::IdempotencyKeyReused(key.key.clone()));
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::ACCEPTED);
    let location = serde_json::from_str::<serde_json::Value>(&stored.body)
        .ok()
        .and_then(|body| {
            body["url"]
                .as_str()
                .and_then(|url| HeaderValue::from_str(url).ok())
        });
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            subject: Some("alice".to_owned()),
            grants: Default::default(),
            token_id: None,
            expires_at: None,
        }
    }

    fn headers(key: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            IDEMPOTENCY_KEY_HEADER,
            HeaderValue::from_bytes(key).unwrap(),
        );
        headers
    }

    #[test]
    fn keys_are_visible_ascii_of_at_most_255_bytes() {
        let put = Method::PUT;
        let ok = request_key(&caller(), &headers(&[b'k'; 255]), &put, "/p", b"")
            .unwrap()
            .unwrap();
        assert_eq!(ok.key.len(), 255);
        assert_eq!(ok.caller, "alice");
        for bad in [
            &[b'k'; 256][..],
            b"with space",
            b"tab\there",
            "é".as_bytes(),
        ] {
            let error = request_key(&caller(), &headers(bad), &put, "/p", b"").unwrap_err();
            assert!(matches!(error, ApiError::BadRequest(_)), "{bad:?}");
        }
        assert!(
            request_key(&caller(), &HeaderMap::new(), &put, "/p", b"")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_digest_covers_method_path_and_body() {
        let digest = |method: Method, path: &str, body: &[u8]| {
            request_key(&caller(), &headers(b"k"), &method, path, body)
                .unwrap()
                .unwrap()
                .request_hash
        };
        let first = digest(Method::PUT, "/a", b"x");
        assert_eq!(first, digest(Method::PUT, "/a", b"x"));
        assert_ne!(first, digest(Method::POST, "/a", b"x"));
        assert_ne!(first, digest(Method::PUT, "/b", b"x"));
        assert_ne!(first, digest(Method::PUT, "/a", b"y"));
        // Parts cannot shift into each other.
        assert_ne!(
            digest(Method::PUT, "/a", b"bc"),
            digest(Method::PUT, "/ab", b"c")
        );
    }
}

//! HTTP caching of what the API serves: `Cache-Control` that keeps private
//! answers out of shared caches, and `If-None-Match` against an `ETag`.

use axum::http::{HeaderMap, header};

/// A `Cache-Control` value: `public` only for what anyone may read without
/// a token, `private` (no shared cache may keep it) for everything else.
pub(crate) fn cache_control(public: bool, directives: &str) -> String {
    let scope = if public { "public" } else { "private" };
    format!("{scope}, {directives}")
}

/// Whether `If-None-Match` names `etag` (or is `*`), so the client's copy is
/// current and a 304 will do. Weak comparison, as RFC 9110 asks for this
/// header: `W/"x"` matches `"x"`.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn if_none_match_names_the_etag_in_any_of_its_forms() {
        let etag = "\"abc\"";
        for matching in [
            &["\"abc\""][..],
            &["\"x\", \"abc\""],
            &["W/\"abc\""],
            &["*"],
            &["\"x\"", "\"abc\""],
        ] {
            assert!(if_none_match(&headers(matching), etag), "{matching:?}");
        }
        for other in [&[][..], &["\"abcd\""], &["abc"], &["\"x\", W/\"y\""]] {
            assert!(!if_none_match(&headers(other), etag), "{other:?}");
        }
    }
}

//! The UI's and the API's paths, with every name percent-encoded, in one
//! place.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What stays as it is in a path segment (RFC 3986's unreserved set).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(crate) fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// `path?key=value&…`, leaving out absent and empty values.
pub(crate) fn with_query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in pairs {
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            query.append_pair(key, value);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_owned()
    }
}

/// The sign-in page; `next` (a UI path) is where to go afterwards.
pub(crate) fn sign_in(next: Option<&str>, notice: Option<&str>) -> String {
    with_query("/ui/sign-in", &[("next", next), ("notice", notice)])
}

/// `next` when it is a path of this UI, so signing in never sends anyone
/// to another site (no open redirect): it starts with `/ui/`, and holds
/// only visible ASCII without backslashes, so no browser reads it as
/// another host and it fits in a `Location` header as it is.
pub(crate) fn local_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with("/ui/")
                && !next.contains('\\')
                && next.bytes().all(|byte| byte.is_ascii_graphic()) =>
        {
            next.to_owned()
        }
        _ => namespaces(),
    }
}

pub(crate) fn namespaces() -> String {
    "/ui/namespaces".to_owned()
}

pub(crate) fn namespace(namespace: &str) -> String {
    format!("/ui/namespaces/{}", segment(namespace))
}

pub(crate) fn submit(namespace: &str) -> String {
    format!("/ui/namespaces/{}/submit", segment(namespace))
}

pub(crate) fn environment(namespace: &str, name: &str) -> String {
    format!(
        "/ui/namespaces/{}/environments/{}",
        segment(namespace),
        segment(name)
    )
}

pub(crate) fn build(id: &str) -> String {
    format!("/ui/builds/{}", segment(id))
}

pub(crate) fn packages(id: &str) -> String {
    format!("/ui/builds/{}/packages", segment(id))
}

pub(crate) fn diff(from: &str, to: &str) -> String {
    with_query("/ui/diff", &[("from", Some(from)), ("to", Some(to))])
}

pub(crate) fn usage() -> String {
    "/ui/usage".to_owned()
}

/// A namespace's members, visibility, policy and quota.
pub(crate) fn settings(namespace: &str) -> String {
    format!("/ui/namespaces/{}/settings", segment(namespace))
}

/// The package search: which environments hold a package.
pub(crate) fn package_search(name: Option<&str>, prefix: bool) -> String {
    with_query(
        "/ui/packages",
        &[("name", name), ("prefix", prefix.then_some("true"))],
    )
}

/// The server admins' pages: `tokens`, `role-bindings`, `namespaces`, `audit`.
pub(crate) fn admin(page: &str) -> String {
    format!("/ui/admin/{page}")
}

pub(crate) fn lock_artifact(lock_hash: &str, file: &str) -> String {
    format!("/ui/locks/{}/{}", segment(lock_hash), segment(file))
}

/// The API's paths the pages call.
pub(crate) mod api {
    use super::segment;

    pub(crate) fn namespace(namespace: &str) -> String {
        format!("/api/v1/namespaces/{}", segment(namespace))
    }

    pub(crate) fn environment(namespace: &str, name: &str) -> String {
        format!(
            "{}/environments/{}",
            self::namespace(namespace),
            segment(name)
        )
    }

    pub(crate) fn build(id: &str) -> String {
        format!("/api/v1/builds/{}", segment(id))
    }

    /// Its members, visibility, policy or quota: `part` is the path's last
    /// segment.
    pub(crate) fn namespace_part(namespace: &str, part: &str) -> String {
        format!("{}/{part}", self::namespace(namespace))
    }

    /// The spec text a build was submitted with.
    pub(crate) fn build_spec(id: &str) -> String {
        format!("/api/v1/builds/{}/spec", segment(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_and_empty_values_left_out() {
        assert_eq!(
            environment("team ml", "a/b"),
            "/ui/namespaces/team%20ml/environments/a%2Fb"
        );
        assert_eq!(
            with_query(
                "/ui/x",
                &[("q", Some("a&b")), ("after", None), ("n", Some(""))]
            ),
            "/ui/x?q=a%26b"
        );
        assert_eq!(with_query("/ui/x", &[]), "/ui/x");
    }

    #[test]
    fn only_local_pages_follow_a_sign_in() {
        assert_eq!(local_next(Some("/ui/builds/1?x=2")), "/ui/builds/1?x=2");
        for elsewhere in [
            "https://evil.example/ui/",
            "//evil.example/ui/",
            "/api/v1/tokens",
            "/ui\\..",
            "",
            "/ui/\\evil.example",
            "/ui/x\r\nSet-Cookie: a=b",
            "/ui/ x",
            "/\t/evil.example/ui/",
            "/ui/é",
        ] {
            assert_eq!(local_next(Some(elsewhere)), "/ui/namespaces", "{elsewhere}");
        }
        assert_eq!(local_next(None), "/ui/namespaces");
    }
}

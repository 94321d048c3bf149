//! Sessions: the token a person signed in with, kept in an HttpOnly cookie
//! (Secure over https), and the CSRF check of every form that changes
//! something.
//!
//! The cookie holds a random session nonce and the token: an API token
//! pasted into the sign-in form (SameSite=Strict), or the token of a web
//! session the identity provider's sign-in started (SameSite=Lax, so the
//! provider's redirect back carries it; the session's row is in the
//! database, see `envstore_api::oidc::session`). Any API process of a
//! distributed deployment serves any session, and revoking the token ends
//! it. The CSRF token is a hash of the nonce and the token: only pages
//! served to this session carry it, a new sign-in changes it, and it
//! reveals neither.
//!
//! This module depends on nothing else in the crate: the extractor works
//! with any router state, and its errors become pages in `error`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use envstore_api_types::WhoAmI;
use sha2::{Digest, Sha256};

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "envstore_session";

/// The cookie a sign-in through the identity provider waits in, sealed
/// (see `envstore_api::oidc::LoginState`), only sent back to the callback.
pub const LOGIN_COOKIE: &str = "envstore_sign_in";

/// The path of the identity provider's callback, where [`LOGIN_COOKIE`] goes.
pub(crate) const CALLBACK_PATH: &str = "/ui/oidc/callback";

/// Why a request cannot go on as a session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// No session: sign in, then come back to `next`.
    #[error("sign in to see this page")]
    SignIn { next: Option<String> },
    /// The token cannot be sent: the session is as good as ended.
    #[error("the session has ended: its token is unknown, expired or revoked")]
    Ended { next: Option<String> },
    /// A form from another origin, or without this session's CSRF token.
    #[error("{0}")]
    Refused(String),
}

/// Who the API took a request's session for (`GET /api/v1/whoami`), as
/// the UI's middleware found out before the page ran; pages read it from
/// the [`Session`] to say who is signed in and to offer only the actions
/// the roles allow.
#[derive(Clone, Debug)]
pub(crate) struct Identified(pub(crate) Arc<WhoAmI>);

/// A signed-in person: the token every API call of theirs carries.
#[derive(Clone)]
pub(crate) struct Session {
    nonce: String,
    token: String,
    /// The page asked for (GET only), to come back to after signing in again.
    next: Option<String>,
    /// Who the API takes the token for, when it was asked.
    who: Option<Arc<WhoAmI>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(<redacted>)")
    }
}

impl Session {
    /// A new session for `token`, with a fresh nonce.
    pub(crate) fn new(token: &str) -> Self {
        Self {
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            token: token.to_owned(),
            next: None,
            who: None,
        }
    }

    /// Who the API takes the session's token for (None: not asked, or the
    /// token no longer works).
    pub(crate) fn who(&self) -> Option<&WhoAmI> {
        self.who.as_deref()
    }

    /// The session, taken by the API for `who`.
    #[cfg(test)]
    pub(crate) fn identified(self, who: WhoAmI) -> Self {
        Self {
            who: Some(Arc::new(who)),
            ..self
        }
    }

    /// The token the session's API calls carry.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The page to come back to when the session has ended.
    pub(crate) fn next(&self) -> Option<String> {
        self.next.clone()
    }

    /// The session a cookie value holds: `<nonce>.<token>`.
    fn from_cookie(value: &str) -> Option<Self> {
        let (nonce, token) = value.split_once('.')?;
        let well_formed = nonce.len() == 32
            && nonce.bytes().all(|byte| byte.is_ascii_hexdigit())
            && !token.is_empty();
        well_formed.then(|| Self {
            nonce: nonce.to_owned(),
            token: token.to_owned(),
            next: None,
            who: None,
        })
    }

    /// The session of a request, if its cookie holds one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        CookieJar::from_headers(headers)
            .get(SESSION_COOKIE)
            .and_then(|cookie| Self::from_cookie(cookie.value()))
    }

    /// The cookie that keeps this session in the browser: SameSite=Strict
    /// for a pasted token; Lax for a sign-in through the identity provider,
    /// whose redirect back (a navigation from another site) must carry it.
    pub(crate) fn cookie(&self, secure: bool, same_site: SameSite) -> Cookie<'static> {
        Cookie::build((SESSION_COOKIE, format!("{}.{}", self.nonce, self.token)))
            .http_only(true)
            .same_site(same_site)
            .path("/")
            .secure(secure)
            .build()
    }

    /// The cookie that ends a session: the same name and path, empty and
    /// already expired.
    pub(crate) fn removal() -> Cookie<'static> {
        let mut cookie = Cookie::build(SESSION_COOKIE)
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .build();
        cookie.make_removal();
        cookie
    }

    pub(crate) fn authorization(&self) -> Result<HeaderValue, SessionError> {
        HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|_| SessionError::Ended { next: self.next() })
    }

    /// The token forms carry to prove they were served to this session.
    pub(crate) fn csrf_token(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(b"envstore-web csrf\0");
        digest.update(self.nonce.as_bytes());
        digest.update(b"\0");
        digest.update(self.token.as_bytes());
        hex::encode(digest.finalize())
    }

    /// Refuses a form that did not come from one of this session's pages:
    /// another origin, or a missing or wrong CSRF token.
    pub(crate) fn check_form(
        &self,
        headers: &HeaderMap,
        offered: &str,
    ) -> Result<(), SessionError> {
        check_origin(headers)?;
        let expected = self.csrf_token();
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), offered.as_bytes()).into();
        if same {
            Ok(())
        } else {
            Err(SessionError::Refused(
                "the form was not sent from a page of this session (its security token is missing or stale): \
                 reload the page and send it again"
                    .to_owned(),
            ))
        }
    }
}

/// Refuses a request a browser sent on behalf of another site: `Origin`,
/// when present, must name this server; without it, `Sec-Fetch-Site` must
/// not say cross-site. Behind a proxy, `X-Forwarded-Host` names this server
/// too.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), SessionError> {
    let refused = || SessionError::Refused("the form was sent from another site".to_owned());
    let text = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(origin) = text(header::ORIGIN) {
        let authority = origin
            .split_once("://")
            .map(|(_, authority)| authority)
            .ok_or_else(refused)?;
        let ours = [
            text(header::HOST),
            headers
                .get("x-forwarded-host")
                .and_then(|value| value.to_str().ok()),
        ];
        return if ours
            .into_iter()
            .flatten()
            .any(|host| host.eq_ignore_ascii_case(authority))
        {
            Ok(())
        } else {
            Err(refused())
        };
    }
    match headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
    {
        Some("cross-site" | "same-site") => Err(refused()),
        _ => Ok(()),
    }
}

/// Whether the browser reached us over https (directly or through a proxy
/// that says so), so the cookie must be Secure.
pub(crate) fn served_over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|forwarded| forwarded.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// The identity the middleware put on the request, if any.
fn identified(parts: &Parts) -> Option<Arc<WhoAmI>> {
    parts
        .extensions
        .get::<Identified>()
        .map(|identified| identified.0.clone())
}

/// The page a GET asked for, to come back to after signing in (a form's
/// page only for a POST, since what it sent is lost).
fn asked_for(parts: &Parts) -> Option<String> {
    (parts.method == axum::http::Method::GET)
        .then(|| {
            parts
                .uri
                .path_and_query()
                .map(|path| path.as_str().to_owned())
        })
        .flatten()
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    /// Pages that change things need a session: without one, the browser
    /// is sent to sign in and brought back to the page afterwards.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let next = asked_for(parts);
        match Self::from_headers(&parts.headers) {
            Some(session) => Ok(Self {
                next,
                who: identified(parts),
                ..session
            }),
            None => Err(SessionError::SignIn { next }),
        }
    }
}

/// Whoever looks at a page that may be public: a session, or nobody signed
/// in. The API decides what they may see; when it asks for a signature,
/// the visitor is sent to sign in and brought back.
#[derive(Clone, Debug)]
pub(crate) struct Visitor {
    session: Option<Session>,
    next: Option<String>,
}

impl Visitor {
    pub(crate) fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The page asked for, to come back to after signing in.
    pub(crate) fn next(&self) -> Option<String> {
        self.next.clone()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let next = asked_for(parts);
        Ok(Self {
            session: Session::from_headers(&parts.headers).map(|session| Session {
                next: next.clone(),
                who: identified(parts),
                ..session
            }),
            next,
        })
    }
}

/// The cookie a sign-in waits in between the redirect to the provider and
/// its callback: only the callback's path gets it; what it holds expires
/// by itself (`envstore_api::oidc::LOGIN_STATE_TTL`).
pub(crate) fn login_cookie(sealed: String, secure: bool) -> Cookie<'static> {
    Cookie::build((LOGIN_COOKIE, sealed))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path(CALLBACK_PATH)
        .secure(secure)
        .build()
}

/// The cookie that ends a waiting sign-in: one callback per sign-in.
pub(crate) fn login_cookie_removal() -> Cookie<'static> {
    let mut cookie = Cookie::build(LOGIN_COOKIE)
        .path(CALLBACK_PATH)
        .http_only(true)
        .same_site(SameSite::Lax)
        .build();
    cookie.make_removal();
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_cookie_round_trips_and_csrf_tokens_differ_per_session() {
        let session = Session::new("tok.en.with.dots");
        let cookie = session.cookie(false, SameSite::Strict);
        assert!(cookie.http_only().unwrap_or(false));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        let again = Session::from_cookie(cookie.value()).expect("the cookie parses");
        assert_eq!(again.token, "tok.en.with.dots");
        assert_eq!(again.csrf_token(), session.csrf_token());
        assert_ne!(
            Session::new("tok.en.with.dots").csrf_token(),
            session.csrf_token()
        );
        assert!(!session.csrf_token().contains("tok"));
        for malformed in ["", "no-dot", "short.token", &format!("{}.", "a".repeat(32))] {
            assert!(Session::from_cookie(malformed).is_none(), "{malformed}");
        }
    }

    #[test]
    fn forms_need_this_session_s_token_and_this_origin() {
        let session = Session::new("secret");
        let token = session.csrf_token();
        let same = headers(&[
            ("host", "envstore.example.org:8080"),
            ("origin", "https://envstore.example.org:8080"),
        ]);
        assert!(session.check_form(&same, &token).is_ok());
        assert!(session.check_form(&same, "").is_err());
        assert!(
            session
                .check_form(&same, &Session::new("secret").csrf_token())
                .is_err()
        );
        let cross = headers(&[
            ("host", "envstore.example.org:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(session.check_form(&cross, &token).is_err());
        assert!(
            session
                .check_form(&headers(&[("host", "a"), ("origin", "null")]), &token)
                .is_err()
        );
        assert!(
            session
                .check_form(&headers(&[("sec-fetch-site", "cross-site")]), &token)
                .is_err()
        );
        assert!(
            session
                .check_form(&headers(&[("sec-fetch-site", "same-origin")]), &token)
                .is_ok()
        );
        let proxied = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "envstore.example.org"),
            ("origin", "https://envstore.example.org"),
        ]);
        assert!(check_origin(&proxied).is_ok());
    }

    #[test]
    fn cookies_are_secure_behind_https() {
        assert!(!served_over_https(&headers(&[])));
        assert!(served_over_https(&headers(&[(
            "x-forwarded-proto",
            "https"
        )])));
        assert!(served_over_https(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https"
        )])));
        assert!(
            Session::new("t")
                .cookie(true, SameSite::Strict)
                .secure()
                .unwrap_or(false)
        );
        let lax = Session::new("t").cookie(false, SameSite::Lax);
        assert_eq!(lax.same_site(), Some(SameSite::Lax));
        assert!(lax.http_only().unwrap_or(false));
        let login = login_cookie("sealed".to_owned(), true);
        assert_eq!(login.path(), Some(CALLBACK_PATH));
        assert!(login.http_only().unwrap_or(false) && login.secure().unwrap_or(false));
    }

    #[test]
    fn signing_out_expires_the_cookie() {
        let removal = Session::removal().to_string();
        assert!(
            removal.starts_with(&format!("{SESSION_COOKIE}=;")),
            "{removal}"
        );
        assert!(
            removal.contains("Max-Age=0") && removal.contains("Path=/"),
            "{removal}"
        );
    }
}

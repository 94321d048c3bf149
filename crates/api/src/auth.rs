//! Who is calling, and what they may do. Tokens arrive as
//! `Authorization: Bearer`; they are compared and looked up by sha256 and
//! never logged. The default is deny: every route states the role it needs.
//!
//! Token records, role bindings and namespace visibility come from the
//! database's access cache (see [`envstore_db::ACCESS_CACHE_TTL`], 2 s): a
//! revocation, role change or visibility change made through this process
//! applies to the next request; one made through another API process on the
//! same database applies within the TTL.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use envstore_core::{Grants, NamespaceName, Role};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// The subject of the bootstrap admin token.
pub const BOOTSTRAP_SUBJECT: &str = "admin";

/// The fewest characters an admin token may have: a shorter one could be
/// guessed, and the server refuses to start with it.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    #[error(
        "the admin token has {0} characters; it needs at least {MIN_ADMIN_TOKEN_CHARS} \
         (leave it unset and the server makes one in <data-dir>/admin-token)"
    )]
    TooShort(usize),
    #[error(
        "the admin token holds spaces or control characters, which no Authorization header can carry \
         exactly: use {MIN_ADMIN_TOKEN_CHARS} or more visible characters"
    )]
    NotPrintable,
}

/// The server's bootstrap admin token, kept only as its sha256 so it never
/// sits in memory dumps or logs in clear.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// The token the server starts with: at least [`MIN_ADMIN_TOKEN_CHARS`]
    /// visible ASCII characters, so neither an empty or blank value nor a
    /// short guessable one can make anyone a server admin.
    pub fn checked(token: &str) -> Result<Self, AdminTokenError> {
        if token.chars().any(|character| !character.is_ascii_graphic()) {
            return Err(if token.trim().is_empty() {
                AdminTokenError::TooShort(token.trim().chars().count())
            } else {
                AdminTokenError::NotPrintable
            });
        }
        let length = token.chars().count();
        if length < MIN_ADMIN_TOKEN_CHARS {
            return Err(AdminTokenError::TooShort(length));
        }
        Ok(Self::new(token))
    }

    /// Any token, unchecked: for tests that build an [`crate::App`] by hand.
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// A key for `purpose` (sealing web sign-in states), derived from the
    /// admin token: every API process of a deployment shares it, and it
    /// changes with the token. HMAC-SHA256 keyed by the token's digest.
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        const BLOCK: usize = 64;
        let mut inner = Sha256::new();
        let mut outer = Sha256::new();
        let mut ipad = [0x36_u8; BLOCK];
        let mut opad = [0x5c_u8; BLOCK];
        for (index, byte) in self.digest.iter().enumerate() {
            ipad[index] ^= byte;
            opad[index] ^= byte;
        }
        inner.update(ipad);
        inner.update(purpose.as_bytes());
        outer.update(opad);
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// Compares digests in constant time (`subtle`), so how long a refusal
    /// takes says nothing about how much of the digest was right.
    fn matches(&self, token: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        offered.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The caller of a request: anonymous, or a subject with its grants.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: Option<String>,
    pub grants: Grants,
    /// The API token the caller presented, if it was one: tokens it mints
    /// are its children.
    pub token_id: Option<String>,
    /// When the caller's credential stops working (milliseconds since the
    /// epoch); None for the admin token. Nothing it mints outlives it.
    pub expires_at: Option<i64>,
}

impl Caller {
    fn anonymous() -> Self {
        Self {
            subject: None,
            grants: Grants::default(),
            token_id: None,
            expires_at: None,
        }
    }

    /// Server-wide admin power: never through a scoped token.
    pub fn is_server_admin(&self) -> bool {
        self.grants.is_server_admin()
    }

    /// The subject, or 401 for anonymous callers.
    pub fn subject(&self) -> Result<&str, ApiError> {
        self.subject.as_deref().ok_or(ApiError::Unauthorized)
    }

    pub fn require_server_admin(&self) -> Result<(), ApiError> {
        match &self.subject {
            None => Err(ApiError::Unauthorized),
            Some(_) if self.grants.is_server_admin() => Ok(()),
            Some(_) => Err(ApiError::Forbidden),
        }
    }

    /// Checks that the caller holds at least `needed` in `namespace`.
    /// Namespaces the caller may not see answer 404, as if they did not
    /// exist, so their names do not leak; anonymous callers get 401.
    pub async fn require(
        &self,
        app: &AppState,
        namespace: &str,
        needed: Role,
    ) -> Result<(), ApiError> {
        let public_read = app.db.namespace_public_read(namespace).await?;
        let role = public_read.and_then(|public| self.grants.role_in(namespace, public));
        match (role, &self.subject) {
            (Some(role), _) if role >= needed => Ok(()),
            (Some(_), None) => Err(ApiError::Unauthorized),
            (Some(_), Some(_)) => Err(ApiError::Forbidden),
            (None, None) => Err(ApiError::Unauthorized),
            (None, Some(_)) => Err(ApiError::NotFound(format!(
                "namespace '{}' was not found",
                namespace.escape_debug()
            ))),
        }
    }

    /// Whether the caller may view `namespace` (for filtering listings).
    pub async fn can_view(&self, app: &AppState, namespace: &str) -> Result<bool, ApiError> {
        let public_read = app.db.namespace_public_read(namespace).await?;
        Ok(public_read
            .and_then(|public| self.grants.role_in(namespace, public))
            .is_some())
    }
}

/// Parses a namespace from the path and checks the caller's role in it.
pub(crate) async fn authorized_namespace(
    app: &AppState,
    caller: &Caller,
    name: &str,
    needed: Role,
) -> Result<NamespaceName, ApiError> {
    let not_found =
        || ApiError::NotFound(format!("namespace '{}' was not found", name.escape_debug()));
    let namespace: NamespaceName = name.parse().map_err(|_| not_found())?;
    caller.require(app, namespace.as_str(), needed).await?;
    Ok(namespace)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(Self::anonymous());
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::InvalidToken)?;
        if state.admin_token.matches(token) {
            return Ok(Self {
                subject: Some(BOOTSTRAP_SUBJECT.to_owned()),
                grants: Grants {
                    server_admin: true,
                    ..Grants::default()
                },
                ..Self::anonymous()
            });
        }
        if let Some(oidc) = &state.oidc
            && crate::oidc::OidcVerifier::looks_like_jwt(token)
        {
            let identity = oidc.verify(token).await.map_err(|error| {
                tracing::info!(error = %envstore_core::error_chain(&error), "an OIDC token was refused");
                ApiError::InvalidToken
            })?;
            // The groups' roles come from this token, never from storage.
            let mut bindings = state.db.bindings_of(&identity.subject).await?;
            bindings.extend(identity.grants);
            return Ok(Self {
                subject: Some(identity.subject),
                grants: Grants {
                    server_admin: identity.server_admin,
                    bindings,
                    scopes: None,
                },
                // A login proves the subject itself, like a password: what
                // it mints is bounded by the subject, not by the JWT's `exp`.
                token_id: None,
                expires_at: None,
            });
        }
        let record = state
            .db
            .active_token(token)
            .await?
            .ok_or(ApiError::InvalidToken)?;
        let mut bindings = state.db.bindings_of(&record.subject).await?;
        // A web session's row holds what the person's groups gave at sign-in:
        // added to the subject's bindings, not narrowing them.
        let scopes = if crate::oidc::session::is_session(&record) {
            bindings.extend(crate::oidc::session::session_grants(&record));
            None
        } else {
            record.scopes
        };
        Ok(Self {
            subject: Some(record.subject),
            grants: Grants {
                server_admin: record.server_admin,
                bindings,
                scopes,
            },
            token_id: Some(record.id),
            expires_at: record.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_token() {
        let token = AdminToken::new("s3cret");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cret "));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn derived_keys_differ_per_purpose_and_token_and_are_hmac_sha256() {
        let token = AdminToken::new("s3cret");
        assert_eq!(
            token.derived_key("a"),
            AdminToken::new("s3cret").derived_key("a")
        );
        assert_ne!(token.derived_key("a"), token.derived_key("b"));
        assert_ne!(
            token.derived_key("a"),
            AdminToken::new("other").derived_key("a")
        );
        // RFC 4231 test case 2 (key "Jefe"), with the key given as our digest.
        let mut jefe = [0_u8; 32];
        jefe[..4].copy_from_slice(b"Jefe");
        let key = AdminToken { digest: jefe }.derived_key("what do ya want for nothing?");
        assert_eq!(
            hex_of(&key),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn refuses_a_token_differing_in_its_last_byte_or_its_length() {
        let value = "0123456789abcdef0123456789abcdef";
        let token = AdminToken::checked(value).unwrap();
        assert!(token.matches(value));
        assert!(!token.matches("0123456789abcdef0123456789abcdeg"));
        assert!(!token.matches("0123456789abcdef0123456789abcde"));
        assert!(!token.matches("0123456789abcdef0123456789abcdef0"));
    }

    #[test]
    fn the_server_refuses_short_blank_or_unprintable_admin_tokens() {
        for (token, why) in [
            ("", "empty"),
            ("                                        ", "blank"),
            (
                "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t",
                "tabs",
            ),
            ("s3cret", "short"),
            ("test-admin-token", "short"),
            ("0123456789abcdef0123456789abcde", "one short"),
            ("0123456789abcdef 0123456789abcdef", "a space inside"),
            (" 0123456789abcdef0123456789abcdef", "a leading space"),
        ] {
            let error = AdminToken::checked(token).unwrap_err();
            assert!(error.to_string().contains("32"), "{why}: {error}");
        }
        assert!(AdminToken::checked("0123456789abcdef0123456789abcdef").is_ok());
    }
}

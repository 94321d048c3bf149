//! The organisation's identity provider (OpenID Connect): its JWTs accepted
//! as bearer tokens, checked against its published keys (JWKS), its issuer
//! and our audience; people signed in to the web UI through its
//! authorization-code flow with PKCE ([`flow`]), into sessions kept in the
//! database ([`session`]); its groups claim mapped to namespace roles at each
//! verification and sign-in ([`groups`]).

mod flow;
pub mod groups;
pub mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envstore_core::Grant;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

pub use flow::{Discovery, LOGIN_STATE_TTL, LoginState, pkce_challenge};
pub use groups::GroupRole;

/// What every subject from the identity provider starts with, so none can
/// be mistaken for a local one (the bootstrap `admin`, a robot's token):
/// bind `oidc:alice`, not `alice`, to give the provider's `alice` a role.
pub const SUBJECT_PREFIX: &str = "oidc:";

/// How long connecting to the identity provider for its key set may take.
pub const JWKS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long fetching the key set may take in all.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the client secret comes from when no `client_secret_file` is set.
pub const CLIENT_SECRET_ENV: &str = "ENVSTORE_OIDC_CLIENT_SECRET";

/// How long a web session lasts unless `session_minutes` says otherwise.
pub const DEFAULT_SESSION_MINUTES: u64 = 8 * 60;

/// How often unknown key ids may trigger a new fetch of the key set.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// The `[oidc]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "OidcFile")]
pub struct OidcConfig {
    /// The `iss` the tokens must carry.
    pub issuer: String,
    /// The `aud` bearer tokens must carry: this service's client id, or the
    /// API's audience at the provider.
    pub audience: String,
    /// Where the provider publishes its signing keys.
    pub jwks_url: url::Url,
    /// The claim that names the subject (`sub`, `email`, `preferred_username`);
    /// the subject is this claim's value after [`SUBJECT_PREFIX`].
    pub subject_claim: String,
    /// The provider's subjects (the claim's value, without [`SUBJECT_PREFIX`])
    /// that are server admins. With `subject_claim = "email"`, only while
    /// the token says `email_verified: true`.
    pub server_admins: Vec<String>,
    /// Signing people in to the web UI, groups and personal namespaces.
    pub sign_in: SignInConfig,
}

/// The web sign-in's settings, and what a signed-in person (or a bearer
/// JWT) gets from their claims. They sit in `[oidc]` beside the others.
#[derive(Debug, Clone)]
pub struct SignInConfig {
    /// Whether the web UI offers signing in through the provider.
    pub web_sign_in: bool,
    /// The client id registered at the provider (default: `audience`).
    pub client_id: Option<String>,
    /// A file holding the client secret; without it the secret is read from
    /// [`CLIENT_SECRET_ENV`], and without that the client is public (PKCE
    /// alone). Never the secret itself: the TOML file is not a secret.
    pub client_secret_file: Option<PathBuf>,
    /// The URL people reach envstore at (`https://envstore.example.org`):
    /// the redirect URI is `<public_url>/ui/oidc/callback`. Without it, the
    /// request's host (and `X-Forwarded-Proto`) make it.
    pub public_url: Option<url::Url>,
    /// The scopes asked for (`openid` is always among them).
    pub scopes: Vec<String>,
    /// The claim holding the person's groups (`groups`), if groups map to roles.
    pub groups_claim: Option<String>,
    /// Which groups give which role in which namespaces.
    pub group_roles: Vec<GroupRole>,
    /// Whether each person signing in gets a namespace of their own, named
    /// after `username_claim`, which they administer.
    pub personal_namespaces: bool,
    /// The claim a personal namespace is named after.
    pub username_claim: String,
    /// How long a web session lasts.
    pub session: Duration,
}

impl Default for SignInConfig {
    fn default() -> Self {
        Self {
            web_sign_in: true,
            client_id: None,
            client_secret_file: None,
            public_url: None,
            scopes: default_scopes(),
            groups_claim: None,
            group_roles: Vec::new(),
            personal_namespaces: false,
            username_claim: default_username_claim(),
            session: Duration::from_secs(DEFAULT_SESSION_MINUTES * 60),
        }
    }
}

/// `[oidc]` as written: one flat table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcFile {
    issuer: String,
    audience: String,
    jwks_url: url::Url,
    #[serde(default = "default_subject_claim")]
    subject_claim: String,
    #[serde(default)]
    server_admins: Vec<String>,
    #[serde(default = "default_true")]
    web_sign_in: bool,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    public_url: Option<url::Url>,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    groups_claim: Option<String>,
    #[serde(default)]
    group_roles: Vec<GroupRole>,
    #[serde(default)]
    personal_namespaces: bool,
    #[serde(default = "default_username_claim")]
    username_claim: String,
    #[serde(default = "default_session_minutes")]
    session_minutes: u64,
}

impl From<OidcFile> for OidcConfig {
    fn from(file: OidcFile) -> Self {
        Self {
            issuer: file.issuer,
            audience: file.audience,
            jwks_url: file.jwks_url,
            subject_claim: file.subject_claim,
            server_admins: file.server_admins,
            sign_in: SignInConfig {
                web_sign_in: file.web_sign_in,
                client_id: file.client_id,
                client_secret_file: file.client_secret_file,
                public_url: file.public_url,
                scopes: file.scopes,
                groups_claim: file.groups_claim,
                group_roles: file.group_roles,
                personal_namespaces: file.personal_namespaces,
                username_claim: file.username_claim,
                session: Duration::from_secs(file.session_minutes.max(1) * 60),
            },
        }
    }
}

impl OidcConfig {
    /// The client id the web sign-in uses, and ID tokens are issued for.
    pub fn client_id(&self) -> &str {
        self.sign_in.client_id.as_deref().unwrap_or(&self.audience)
    }
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"]
        .map(str::to_owned)
        .into_iter()
        .collect()
}

fn default_username_claim() -> String {
    "preferred_username".to_owned()
}

fn default_session_minutes() -> u64 {
    DEFAULT_SESSION_MINUTES
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the token is not a valid JWT: {0}")]
    Malformed(String),
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("the identity provider's keys could not be fetched")]
    Keys(#[source] reqwest::Error),
    #[error("the token was refused: {0}")]
    Refused(String),
    #[error("the token has no '{0}' claim")]
    NoSubject(String),
    #[error("the token's subject is not valid")]
    InvalidSubject(#[source] envstore_core::AccessError),
    #[error("the client secret file '{}' could not be read", .0.display())]
    SecretFile(PathBuf, #[source] std::io::Error),
    #[error("[oidc] group_roles: {0}")]
    GroupRole(String),
    #[error("the identity provider could not be reached at {0}")]
    Provider(String, #[source] reqwest::Error),
    #[error("the identity provider's configuration at {0} is not usable: {1}")]
    Discovery(String, String),
    #[error("the identity provider refused the sign-in: {0}")]
    SignInRefused(String),
    #[error("the sign-in could not be checked: {0}")]
    LoginState(String),
}

/// A verified identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// [`SUBJECT_PREFIX`] and the subject claim.
    pub subject: String,
    pub server_admin: bool,
    /// The roles the person's groups give, as the token or sign-in says now.
    pub grants: Vec<Grant>,
    /// The `username_claim`'s value, for a personal namespace.
    pub username: Option<String>,
}

pub struct OidcVerifier {
    config: OidcConfig,
    client: reqwest::Client,
    keys: RwLock<Option<(Instant, Arc<JwkSet>)>>,
    discovery: RwLock<Option<(Instant, Arc<Discovery>)>>,
    client_secret: Option<String>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.config.issuer)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// The verifier of `config`; reads the client secret (from its file, or
    /// [`CLIENT_SECRET_ENV`]) and checks the group rules, so a server
    /// configured wrongly refuses to start.
    pub fn new(config: OidcConfig) -> Result<Self, OidcError> {
        let client_secret = match &config.sign_in.client_secret_file {
            Some(path) => Some(
                fs_err::read_to_string(path)
                    .map_err(|error| OidcError::SecretFile(path.clone(), error))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var(CLIENT_SECRET_ENV)
                .ok()
                .map(|secret| secret.trim().to_owned()),
        }
        .filter(|secret| !secret.is_empty());
        for rule in &config.sign_in.group_roles {
            rule.check().map_err(OidcError::GroupRole)?;
        }
        Ok(Self {
            config,
            // A provider that hangs must not hold sign-ins (and the
            // requests waiting on the key set) for ever.
            client: reqwest::Client::builder()
                .connect_timeout(JWKS_CONNECT_TIMEOUT)
                .timeout(JWKS_TIMEOUT)
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(None),
            discovery: RwLock::new(None),
            client_secret,
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Whether the web UI signs people in through the provider.
    pub fn web_sign_in(&self) -> bool {
        self.config.sign_in.web_sign_in
    }

    /// Whether a bearer value looks like a JWT (three dot-separated parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// A bearer token: a JWT the provider issued for our audience.
    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        let claims = self.decode(token, &self.config.audience).await?;
        self.identity(&claims)
    }

    /// The claims of a JWT signed by one of the provider's keys, issued by
    /// it for `audience`, and valid now.
    async fn decode(&self, token: &str, audience: &str) -> Result<serde_json::Value, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| OidcError::Malformed(error.to_string()))?;
        let kid = header.kid.ok_or(OidcError::UnknownKey)?;
        let keys = self.keys_with(&kid).await?;
        let jwk = keys.find(&kid).ok_or(OidcError::UnknownKey)?;
        let key =
            DecodingKey::from_jwk(jwk).map_err(|error| OidcError::Malformed(error.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // A token not valid yet is refused like an expired one.
        validation.validate_nbf = true;
        Ok(
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
                .map_err(|error| OidcError::Refused(error.to_string()))?
                .claims,
        )
    }

    /// Who the claims name, whether they are a server admin, and what their
    /// groups give them.
    pub fn identity(&self, claims: &serde_json::Value) -> Result<Identity, OidcError> {
        let claimed = groups::claim(claims, &self.config.subject_claim)
            .and_then(|value| value.as_str())
            .ok_or_else(|| OidcError::NoSubject(self.config.subject_claim.clone()))?;
        let subject = format!("{SUBJECT_PREFIX}{claimed}");
        envstore_core::validate_subject(&subject).map_err(OidcError::InvalidSubject)?;
        // Anyone can put any address in an unverified `email`.
        let verified = self.config.subject_claim != "email"
            || claims["email_verified"] == serde_json::Value::Bool(true);
        let sign_in = &self.config.sign_in;
        let grants = match &sign_in.groups_claim {
            Some(name) => groups::group_grants(&sign_in.group_roles, &groups::groups(claims, name)),
            None => Vec::new(),
        };
        Ok(Identity {
            server_admin: verified
                && self
                    .config
                    .server_admins
                    .iter()
                    .any(|admin| admin == claimed),
            subject,
            grants,
            username: groups::claim(claims, &sign_in.username_claim)
                .and_then(|value| value.as_str())
                .map(str::to_owned),
        })
    }

    /// The key set, fetched again when `kid` is not in it (keys rotate),
    /// but not more often than every [`REFRESH_INTERVAL`].
    async fn keys_with(&self, kid: &str) -> Result<Arc<JwkSet>, OidcError> {
        if let Some((fetched, keys)) = self.keys.read().await.as_ref()
            && (keys.find(kid).is_some() || fetched.elapsed() < REFRESH_INTERVAL)
        {
            return Ok(keys.clone());
        }
        let keys: JwkSet = self
            .client
            .get(self.config.jwks_url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(OidcError::Keys)?
            .json()
            .await
            .map_err(OidcError::Keys)?;
        let keys = Arc::new(keys);
        *self.keys.write().await = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: serde_json::Value) -> Result<OidcConfig, serde_json::Error> {
        let mut table = serde_json::json!({
            "issuer": "https://id.example.org", "audience": "envstore",
            "jwks_url": "https://id.example.org/jwks",
        });
        if let (Some(table), Some(extra)) = (table.as_object_mut(), extra.as_object()) {
            table.extend(extra.clone());
        }
        serde_json::from_value(table)
    }

    #[test]
    fn the_oidc_table_reads_flat_and_keeps_its_defaults() {
        let plain = config(serde_json::json!({})).unwrap();
        assert_eq!(plain.client_id(), "envstore");
        assert!(plain.sign_in.web_sign_in);
        assert_eq!(plain.sign_in.session, Duration::from_secs(8 * 3600));
        assert_eq!(plain.sign_in.username_claim, "preferred_username");
        assert!(plain.sign_in.group_roles.is_empty());

        let full = config(serde_json::json!({
            "client_id": "envstore-web", "groups_claim": "groups",
            "personal_namespaces": true, "session_minutes": 30,
            "group_roles": [{ "group": "team-*", "namespace": "{group}", "role": "developer" }],
        }))
        .unwrap();
        assert_eq!(full.client_id(), "envstore-web");
        assert_eq!(full.sign_in.session, Duration::from_secs(30 * 60));
        assert_eq!(full.sign_in.group_roles.len(), 1);
        assert!(full.sign_in.personal_namespaces);

        // The secret never sits in the config file; roles are the project's.
        for wrong in [
            serde_json::json!({ "client_secret": "s3cret" }),
            serde_json::json!({ "group_roles": [{ "group": "x", "namespace": "x", "role": "editor" }] }),
        ] {
            assert!(config(wrong.clone()).is_err(), "{wrong}");
        }
    }

    #[test]
    fn bad_group_rules_and_unreadable_secrets_stop_the_server() {
        let mut config = config(serde_json::json!({
            "group_roles": [{ "group": "*", "namespace": "team/{group}", "role": "viewer" }],
        }))
        .unwrap();
        assert!(matches!(
            OidcVerifier::new(config.clone()),
            Err(OidcError::GroupRole(_))
        ));
        config.sign_in.group_roles.clear();
        config.sign_in.client_secret_file = Some(PathBuf::from("/nonexistent/secret"));
        assert!(matches!(
            OidcVerifier::new(config.clone()),
            Err(OidcError::SecretFile(..))
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs_err::write(&path, "s3cret\n").unwrap();
        config.sign_in.client_secret_file = Some(path);
        let verifier = OidcVerifier::new(config).unwrap();
        assert_eq!(verifier.client_secret.as_deref(), Some("s3cret"));
        assert!(!format!("{verifier:?}").contains("s3cret"));
    }
}

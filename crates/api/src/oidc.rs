//! OIDC bearer tokens: JWTs signed by the organisation's identity provider,
//! checked against its published keys (JWKS), its issuer and our audience.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

/// What every subject from the identity provider starts with, so none can
/// be mistaken for a local one (the bootstrap `admin`, a robot's token):
/// bind `oidc:alice`, not `alice`, to give the provider's `alice` a role.
pub const SUBJECT_PREFIX: &str = "oidc:";

/// How long connecting to the identity provider for its key set may take.
pub const JWKS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long fetching the key set may take in all.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(15);

/// How often unknown key ids may trigger a new fetch of the key set.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` the tokens must carry.
    pub issuer: String,
    /// The `aud` the tokens must carry: this service's client id.
    pub audience: String,
    /// Where the provider publishes its signing keys.
    pub jwks_url: url::Url,
    /// The claim that names the subject (`sub`, `email`, `preferred_username`);
    /// the subject is this claim's value after [`SUBJECT_PREFIX`].
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The provider's subjects (the claim's value, without [`SUBJECT_PREFIX`])
    /// that are server admins. With `subject_claim = "email"`, only while
    /// the token says `email_verified: true`.
    #[serde(default)]
    pub server_admins: Vec<String>,
}

fn default_subject_claim() -> String {
    "sub".to_owned()
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
}

/// A verified identity.
pub struct Identity {
    /// [`SUBJECT_PREFIX`] and the subject claim.
    pub subject: String,
    pub server_admin: bool,
}

pub struct OidcVerifier {
    config: OidcConfig,
    client: reqwest::Client,
    keys: RwLock<Option<(Instant, Arc<JwkSet>)>>,
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Self {
        Self {
            config,
            // A provider that hangs must not hold sign-ins (and the
            // requests waiting on the key set) for ever.
            client: reqwest::Client::builder()
                .connect_timeout(JWKS_CONNECT_TIMEOUT)
                .timeout(JWKS_TIMEOUT)
                .build()
                .unwrap_or_default(),
            keys: RwLock::new(None),
        }
    }

    /// Whether a bearer value looks like a JWT (three dot-separated parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| OidcError::Malformed(error.to_string()))?;
        let kid = header.kid.ok_or(OidcError::UnknownKey)?;
        let keys = self.keys_with(&kid).await?;
        let jwk = keys.find(&kid).ok_or(OidcError::UnknownKey)?;
        let key =
            DecodingKey::from_jwk(jwk).map_err(|error| OidcError::Malformed(error.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // A token not valid yet is refused like an expired one.
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|error| OidcError::Refused(error.to_string()))?
            .claims;
        let claimed = claims
            .get(&self.config.subject_claim)
            .and_then(|value| value.as_str())
            .ok_or_else(|| OidcError::NoSubject(self.config.subject_claim.clone()))?;
        let subject = format!("{SUBJECT_PREFIX}{claimed}");
        envstore_core::validate_subject(&subject).map_err(OidcError::InvalidSubject)?;
        // Anyone can put any address in an unverified `email`.
        let verified = self.config.subject_claim != "email"
            || claims["email_verified"] == serde_json::Value::Bool(true);
        Ok(Identity {
            server_admin: verified
                && self
                    .config
                    .server_admins
                    .iter()
                    .any(|admin| admin == claimed),
            subject,
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

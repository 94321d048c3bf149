//! The authorization-code flow with PKCE (RFC 6749, RFC 7636, OpenID
//! Connect Core): the provider's endpoints from its discovery document, the
//! redirect there with `state`, `nonce` and an S256 `code_challenge`, and
//! the code exchanged for an ID token that is checked like a bearer JWT
//! (keys, issuer, expiry) and for our client id and the nonce.
//!
//! Between the redirect and the callback, `state`, the PKCE verifier, the
//! nonce and the page to return to wait in a [`LoginState`]: an HS256 JWT
//! sealed with a key of the server's (see `AdminToken::derived_key`) and
//! kept for [`LOGIN_STATE_TTL`] in an HttpOnly cookie, so any API process
//! sharing that key finishes a sign-in another began, and nothing the
//! browser sends is trusted unsealed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Identity, OidcError, OidcVerifier};

/// How long a sign-in may take between leaving for the provider and
/// coming back.
pub const LOGIN_STATE_TTL: Duration = Duration::from_secs(600);

/// How long the provider's discovery document is kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// The audience of sealed login states, so no other JWT sealed with the
/// same key passes for one.
const LOGIN_STATE_AUDIENCE: &str = "envstore-web-sign-in";

/// What the provider's `/.well-known/openid-configuration` says we need.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: url::Url,
    pub token_endpoint: url::Url,
    #[serde(default)]
    pub userinfo_endpoint: Option<url::Url>,
    #[serde(default)]
    pub end_session_endpoint: Option<url::Url>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// A sign-in between the redirect to the provider and its callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    state: String,
    nonce: String,
    verifier: String,
    /// The local page to return to.
    next: String,
    redirect_uri: String,
    exp: u64,
    aud: String,
}

/// 244 random bits as 64 hexadecimal characters (two v4 UUIDs, from the
/// operating system's random source, as API tokens are made).
fn random() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The S256 code challenge of a PKCE verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

impl LoginState {
    /// A new sign-in returning to `next` (a local path, checked by the UI).
    fn new(redirect_uri: &str, next: &str) -> Self {
        Self {
            state: random(),
            nonce: random(),
            verifier: random(),
            next: next.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            exp: now_seconds() + LOGIN_STATE_TTL.as_secs(),
            aud: LOGIN_STATE_AUDIENCE.to_owned(),
        }
    }

    /// The page to return to once signed in.
    pub fn next(&self) -> &str {
        &self.next
    }

    /// The state as a cookie value, sealed with `key`.
    pub fn seal(&self, key: &[u8]) -> Result<String, OidcError> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            self,
            &EncodingKey::from_secret(key),
        )
        .map_err(|error| OidcError::LoginState(error.to_string()))
    }

    /// The state a cookie holds, if `key` sealed it and it has not expired.
    pub fn open(sealed: &str, key: &[u8]) -> Result<Self, OidcError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[LOGIN_STATE_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Self>(sealed, &DecodingKey::from_secret(key), &validation)
            .map(|data| data.claims)
            .map_err(|error| {
                OidcError::LoginState(format!(
                    "the sign-in was not started here or took too long ({error})"
                ))
            })
    }

    /// Refuses a callback whose `state` is not this sign-in's (a forged or
    /// crossed callback), in constant time.
    pub fn check_state(&self, offered: &str) -> Result<(), OidcError> {
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(self.state.as_bytes(), offered.as_bytes()).into();
        if same {
            Ok(())
        } else {
            Err(OidcError::LoginState(
                "the callback's state is not this sign-in's".to_owned(),
            ))
        }
    }
}

/// The token endpoint's answer (RFC 6749 §5.1), or its error (§5.2).
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl OidcVerifier {
    /// The provider's endpoints, from its discovery document (kept for an
    /// hour); its `issuer` must be the configured one.
    pub async fn discovery(&self) -> Result<Arc<Discovery>, OidcError> {
        if let Some((fetched, discovery)) = self.discovery.read().await.as_ref()
            && fetched.elapsed() < DISCOVERY_TTL
        {
            return Ok(discovery.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| OidcError::Provider(url.clone(), error))?
            .json()
            .await
            .map_err(|error| OidcError::Provider(url.clone(), error))?;
        if discovery.issuer != self.config.issuer {
            return Err(OidcError::Discovery(
                url,
                format!(
                    "it names the issuer '{}', not '{}'",
                    discovery.issuer.escape_debug(),
                    self.config.issuer
                ),
            ));
        }
        if let Some(methods) = &discovery.code_challenge_methods_supported
            && !methods.iter().any(|method| method == "S256")
        {
            return Err(OidcError::Discovery(
                url,
                "it does not take S256 PKCE challenges".to_owned(),
            ));
        }
        let discovery = Arc::new(discovery);
        *self.discovery.write().await = Some((Instant::now(), discovery.clone()));
        Ok(discovery)
    }

    /// Where to send the browser to sign in, and the state to keep until it
    /// comes back to `redirect_uri`.
    pub async fn begin(
        &self,
        redirect_uri: &str,
        next: &str,
    ) -> Result<(url::Url, LoginState), OidcError> {
        let discovery = self.discovery().await?;
        let login = LoginState::new(redirect_uri, next);
        let mut scopes = vec!["openid".to_owned()];
        for scope in &self.config.sign_in.scopes {
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        let mut url = discovery.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", self.config.client_id())
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &pkce_challenge(&login.verifier))
            .append_pair("code_challenge_method", "S256");
        Ok((url, login))
    }

    /// Exchanges the callback's `code` for the person's identity: the ID
    /// token checked (signature, issuer, our client id, expiry, the nonce),
    /// its claims completed from the userinfo endpoint where it lacks some.
    pub async fn complete(&self, login: &LoginState, code: &str) -> Result<Identity, OidcError> {
        let discovery = self.discovery().await?;
        let client_id = self.config.client_id();
        // The serializer is not Send: it must not live across an await.
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &login.redirect_uri)
            .append_pair("code_verifier", &login.verifier)
            .append_pair("client_id", client_id)
            .finish();
        let mut request = self
            .client
            .post(discovery.token_endpoint.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form);
        if let Some(secret) = &self.client_secret {
            // client_secret_basic: both parts form-encoded first (RFC 6749 §2.3.1).
            let encode = |text: &str| {
                url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
            };
            request = request.basic_auth(encode(client_id), Some(encode(secret)));
        }
        let endpoint = discovery.token_endpoint.to_string();
        let answer: TokenAnswer = request
            .send()
            .await
            .map_err(|error| OidcError::Provider(endpoint.clone(), error))?
            .json()
            .await
            .map_err(|error| OidcError::Provider(endpoint.clone(), error))?;
        if let Some(error) = answer.error {
            return Err(OidcError::SignInRefused(match answer.error_description {
                Some(description) => format!("{error}: {description}"),
                None => error,
            }));
        }
        let id_token = answer.id_token.ok_or_else(|| {
            OidcError::SignInRefused("the provider's answer holds no ID token".to_owned())
        })?;
        let mut claims = self.decode(&id_token, client_id).await?;
        let nonce = claims["nonce"].as_str().unwrap_or_default();
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(nonce.as_bytes(), login.nonce.as_bytes()).into();
        if !same {
            return Err(OidcError::Refused(
                "the ID token's nonce is not this sign-in's".to_owned(),
            ));
        }
        // With several audiences, the token must say it was issued to us.
        if claims["aud"]
            .as_array()
            .is_some_and(|audiences| audiences.len() > 1)
            && claims["azp"].as_str() != Some(client_id)
        {
            return Err(OidcError::Refused(
                "the ID token was issued to another party (azp)".to_owned(),
            ));
        }
        if let (Some(userinfo), Some(access_token)) =
            (&discovery.userinfo_endpoint, &answer.access_token)
            && self.lacks_claims(&claims)
        {
            self.complete_claims(&mut claims, userinfo, access_token)
                .await?;
        }
        self.identity(&claims)
    }

    /// Whether the ID token lacks a claim the configuration reads (many
    /// providers put only `sub` in it, the rest at the userinfo endpoint).
    fn lacks_claims(&self, claims: &serde_json::Value) -> bool {
        let sign_in = &self.config.sign_in;
        let mut wanted = vec![self.config.subject_claim.as_str()];
        wanted.extend(sign_in.groups_claim.as_deref());
        if sign_in.personal_namespaces {
            wanted.push(&sign_in.username_claim);
        }
        wanted
            .into_iter()
            .any(|name| super::groups::claim(claims, name).is_none())
    }

    /// Adds the userinfo endpoint's claims the ID token lacks; its `sub`
    /// must be the ID token's (OpenID Connect Core §5.3.2).
    async fn complete_claims(
        &self,
        claims: &mut serde_json::Value,
        userinfo: &url::Url,
        access_token: &str,
    ) -> Result<(), OidcError> {
        let endpoint = userinfo.to_string();
        let info: serde_json::Value = self
            .client
            .get(userinfo.clone())
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| OidcError::Provider(endpoint.clone(), error))?
            .json()
            .await
            .map_err(|error| OidcError::Provider(endpoint.clone(), error))?;
        if info.get("sub") != claims.get("sub") {
            return Err(OidcError::Refused(
                "the userinfo endpoint names another subject".to_owned(),
            ));
        }
        if let (Some(claims), Some(info)) = (claims.as_object_mut(), info.as_object()) {
            for (name, value) in info {
                claims.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        Ok(())
    }

    /// The provider's end-session URL (RP-initiated logout), when it
    /// advertises one, returning to `post_logout_redirect_uri`.
    pub async fn end_session_url(&self, post_logout_redirect_uri: &str) -> Option<url::Url> {
        let discovery = match self.discovery().await {
            Ok(discovery) => discovery,
            Err(error) => {
                tracing::info!(error = %envstore_core::error_chain(&error), "no provider sign-out");
                return None;
            }
        };
        let mut url = discovery.end_session_endpoint.clone()?;
        url.query_pairs_mut()
            .append_pair("client_id", self.config.client_id())
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn the_pkce_challenge_is_rfc_7636_s256() {
        // RFC 7636 Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let login = LoginState::new("http://127.0.0.1/ui/oidc/callback", "/ui/namespaces");
        assert!(login.verifier.len() >= 43, "RFC 7636: 43 to 128 characters");
        assert_ne!(login.state, login.nonce);
        assert_ne!(
            login.verifier,
            LoginState::new("x", "/").verifier,
            "fresh per sign-in"
        );
    }

    #[test]
    fn a_sealed_login_state_opens_only_with_its_key_unchanged_and_in_time() {
        let login = LoginState::new("http://127.0.0.1/ui/oidc/callback", "/ui/namespaces/x");
        let sealed = login.seal(KEY).unwrap();
        let opened = LoginState::open(&sealed, KEY).unwrap();
        assert_eq!(opened, login);
        assert_eq!(opened.next(), "/ui/namespaces/x");

        assert!(LoginState::open(&sealed, b"another key of thirty-two bytes!").is_err());
        // A state edited in the browser (another `next`) is refused.
        let mut parts: Vec<String> = sealed.split('.').map(str::to_owned).collect();
        let mut edited = login.clone();
        edited.next = "//evil.example".to_owned();
        let forged = edited.seal(b"not the server's key, but valid!").unwrap();
        parts[1] = forged.split('.').nth(1).unwrap().to_owned();
        assert!(LoginState::open(&parts.join("."), KEY).is_err());

        let mut expired = login.clone();
        expired.exp = now_seconds() - 1;
        assert!(LoginState::open(&expired.seal(KEY).unwrap(), KEY).is_err());
        let mut other = login;
        other.aud = "something-else".to_owned();
        assert!(LoginState::open(&other.seal(KEY).unwrap(), KEY).is_err());
    }

    #[test]
    fn a_callback_with_another_state_is_refused() {
        let login = LoginState::new("http://127.0.0.1/cb", "/");
        assert!(login.check_state(&login.state.clone()).is_ok());
        assert!(login.check_state("").is_err());
        assert!(login.check_state(&LoginState::new("x", "/").state).is_err());
        let mut almost = login.state.clone();
        almost.pop();
        assert!(login.check_state(&almost).is_err());
    }
}

//! Web sessions of people signed in through the identity provider. A
//! session is a token row in the database, like an API token, so every API
//! process of a deployment knows it, it expires and can be revoked like one
//! (signing out revokes it), and its value never leaves the HttpOnly cookie.
//!
//! What the person's groups gave at sign-in rides in the row's `scopes`
//! column; for a session those are *added* to the subject's role bindings
//! rather than narrowing them (see `auth.rs`). A session row is told apart
//! by its `created_by`, [`SESSION_CREATOR`], which holds a space and so can
//! be no subject's: no caller can mint a token passing for a session.

use envstore_core::{Grant, NamespaceName, NamespacePattern, Role};
use envstore_db::{DbError, NewToken, TokenRecord};
use serde_json::json;

use super::Identity;
use crate::{ApiError, App};

/// The `created_by` of session rows: no subject can have spaces.
pub const SESSION_CREATOR: &str = "web sign-in";

/// The name session rows show among the person's tokens.
pub const SESSION_NAME: &str = "web session";

/// Whether a token row is a web session.
pub fn is_session(record: &TokenRecord) -> bool {
    record.created_by == SESSION_CREATOR && record.parent_token_id.is_none()
}

/// The grants a session holds beyond its subject's bindings.
pub fn session_grants(record: &TokenRecord) -> Vec<Grant> {
    if is_session(record) {
        record.scopes.clone().unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// What a person's `username_claim` becomes as a namespace name: letters,
/// digits, `-`, `_` and `.` kept, anything else made `-`, at most 64
/// characters, starting with a letter or digit; None when nothing is left.
pub fn personal_namespace_name(username: &str) -> Option<NamespaceName> {
    let cleaned: String = username
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let short: String = trimmed.chars().take(64).collect();
    short.parse().ok()
}

/// Starts a session for a person the provider signed in: their personal
/// namespace first (when configured), then the session row, valid for the
/// configured session length. Returns the session's token value.
pub async fn start(app: &App, identity: &Identity) -> Result<String, ApiError> {
    let Some(oidc) = &app.oidc else {
        return Err(ApiError::Unauthorized);
    };
    let sign_in = &oidc.config().sign_in;
    if sign_in.personal_namespaces
        && let Some(name) = identity
            .username
            .as_deref()
            .and_then(personal_namespace_name)
    {
        personal_namespace(app, &identity.subject, &name).await?;
    }
    let expires_at = envstore_db::now_millis()
        + i64::try_from(sign_in.session.as_millis()).unwrap_or(i64::MAX / 2);
    let (record, value) = app
        .db
        .create_token(&NewToken {
            subject: identity.subject.clone(),
            name: SESSION_NAME.to_owned(),
            created_by: SESSION_CREATOR.to_owned(),
            server_admin: identity.server_admin,
            scopes: Some(identity.grants.clone()),
            expires_at: Some(expires_at),
            parent_token_id: None,
        })
        .await?;
    app.db
        .record_audit(
            &identity.subject,
            "session.start",
            &record.id,
            &json!({ "grants": identity.grants, "server_admin": identity.server_admin, "expires_at": expires_at }),
        )
        .await?;
    tracing::info!(subject = %identity.subject, session = %record.id, "a web session started");
    Ok(value)
}

/// Creates `name` with `subject` as its admin, unless it exists: an existing
/// namespace (someone else's, or a team's) is never handed over.
async fn personal_namespace(
    app: &App,
    subject: &str,
    name: &NamespaceName,
) -> Result<(), ApiError> {
    match app.db.create_namespace(name).await {
        Ok(()) => {
            let pattern: NamespacePattern = name.as_str().parse()?;
            app.db.bind_role(subject, &pattern, Role::Admin).await?;
            app.db
                .record_audit(
                    subject,
                    "namespace.create_personal",
                    name.as_str(),
                    &json!({}),
                )
                .await?;
            tracing::info!(namespace = %name, subject, "personal namespace created");
            Ok(())
        }
        Err(DbError::Conflict(_)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Ends the session whose token is `token`: revokes it when it is a web
/// session (an API token pasted into the sign-in form stays valid).
/// Returns whether it was one.
pub async fn end(app: &App, token: &str) -> Result<bool, ApiError> {
    let Some(record) = app.db.active_token(token).await? else {
        return Ok(false);
    };
    if !is_session(&record) {
        return Ok(false);
    }
    app.db.revoke_token(&record.id).await?;
    app.db
        .record_audit(&record.subject, "session.end", &record.id, &json!({}))
        .await?;
    tracing::info!(subject = %record.subject, session = %record.id, "a web session ended");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_become_valid_namespace_names() {
        for (username, expected) in [
            ("alice", Some("alice")),
            ("Alice.Smith", Some("alice.smith")),
            ("alice@example.org", Some("alice-example.org")),
            ("  bob", Some("bob")),
            ("_x", Some("x")),
            ("é", None),
            ("", None),
            ("api", None),
            ("../..", None),
        ] {
            assert_eq!(
                personal_namespace_name(username).map(|name| name.to_string()),
                expected.map(str::to_owned),
                "{username:?}"
            );
        }
        assert_eq!(
            personal_namespace_name(&"a".repeat(100)).map(|name| name.as_str().len()),
            Some(64)
        );
    }

    #[test]
    fn only_rows_made_by_a_sign_in_are_sessions() {
        let row = |created_by: &str, parent: Option<&str>| TokenRecord {
            id: "t".to_owned(),
            subject: "oidc:alice".to_owned(),
            name: SESSION_NAME.to_owned(),
            created_by: created_by.to_owned(),
            server_admin: false,
            scopes: Some(vec![Grant {
                namespace: "team-data".parse().unwrap(),
                role: Role::Developer,
            }]),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            parent_token_id: parent.map(str::to_owned),
        };
        assert_eq!(session_grants(&row(SESSION_CREATOR, None)).len(), 1);
        assert!(session_grants(&row("oidc:alice", None)).is_empty());
        assert!(session_grants(&row(SESSION_CREATOR, Some("p"))).is_empty());
        assert!(envstore_core::validate_subject(SESSION_CREATOR).is_err());
    }
}

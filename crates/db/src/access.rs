//! Tokens and role bindings. Token values are never stored: only their
//! sha256, which is what a presented token is looked up by.

use envstore_core::{ContentHash, Grant, NamespaceName, NamespacePattern, Role};
use serde::Serialize;
use sqlx::any::AnyRow;

use crate::{Database, DbError, get, now_millis, parse_json};

/// A token as the database knows it (its value is not among its fields).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub subject: String,
    pub name: String,
    pub created_by: String,
    pub server_admin: bool,
    pub scopes: Option<Vec<Grant>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What creating a token needs.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub subject: String,
    pub name: String,
    pub created_by: String,
    pub server_admin: bool,
    pub scopes: Option<Vec<Grant>>,
    pub expires_at: Option<i64>,
}

const TOKEN_COLUMNS: &str =
    "id, subject, name, created_by, server_admin, scopes, created_at, expires_at, revoked_at";

impl TokenRecord {
    fn from_row(row: &AnyRow) -> Result<Self, DbError> {
        let scopes: Option<String> = get(row, "scopes")?;
        Ok(Self {
            id: get(row, "id")?,
            subject: get(row, "subject")?,
            name: get(row, "name")?,
            created_by: get(row, "created_by")?,
            server_admin: get::<i64>(row, "server_admin")? != 0,
            scopes: scopes.map(|text| parse_json("tokens.scopes", &text)).transpose()?,
            created_at: get(row, "created_at")?,
            expires_at: get(row, "expires_at")?,
            revoked_at: get(row, "revoked_at")?,
        })
    }
}

/// The sha256 a token value is stored and looked up under.
pub fn token_digest(token: &str) -> String {
    ContentHash::of(token.as_bytes()).to_hex()
}

impl Database {
    /// Creates a token and returns its record and its value, which is shown
    /// once and never stored.
    pub async fn create_token(&self, token: &NewToken) -> Result<(TokenRecord, String), DbError> {
        // Two v4 UUIDs: 244 bits from the operating system's random source.
        let value = format!(
            "envstore_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO tokens (id, token_sha256, subject, name, created_by, server_admin, scopes, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(token_digest(&value))
        .bind(&token.subject)
        .bind(&token.name)
        .bind(&token.created_by)
        .bind(i64::from(token.server_admin))
        .bind(token.scopes.as_ref().map(|scopes| serde_json::to_string(scopes).unwrap_or_default()))
        .bind(now_millis())
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        let record = self.token(&id).await?.ok_or_else(|| DbError::NotFound(format!("token '{id}'")))?;
        Ok((record, value))
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(TokenRecord::from_row).transpose()
    }

    /// The token a caller presented, if it is known, unexpired and not revoked.
    pub async fn active_token(&self, value: &str) -> Result<Option<TokenRecord>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_sha256 = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)"
        )))
        .bind(token_digest(value))
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(TokenRecord::from_row).transpose()
    }

    pub async fn tokens_of(&self, subject: &str) -> Result<Vec<TokenRecord>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE subject = $1 ORDER BY created_at"
        )))
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TokenRecord::from_row).collect()
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Binds `subject` to `role` in the namespaces `pattern` matches,
    /// replacing an earlier binding of the same pattern.
    pub async fn bind_role(&self, subject: &str, pattern: &NamespacePattern, role: Role) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO role_bindings (subject, namespace_pattern, role, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject, namespace_pattern) DO UPDATE SET role = excluded.role",
        )
        .bind(subject)
        .bind(pattern.as_str())
        .bind(role.as_str())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn unbind_role(&self, subject: &str, pattern: &NamespacePattern) -> Result<bool, DbError> {
        let deleted = sqlx::query("DELETE FROM role_bindings WHERE subject = $1 AND namespace_pattern = $2")
            .bind(subject)
            .bind(pattern.as_str())
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Every binding of one subject.
    pub async fn bindings_of(&self, subject: &str) -> Result<Vec<Grant>, DbError> {
        let rows = sqlx::query("SELECT namespace_pattern, role FROM role_bindings WHERE subject = $1")
            .bind(subject)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(grant_from_row).collect()
    }

    /// Every binding, as (subject, grant), for listings.
    pub async fn all_bindings(&self) -> Result<Vec<(String, Grant)>, DbError> {
        let rows = sqlx::query("SELECT subject, namespace_pattern, role FROM role_bindings ORDER BY subject, namespace_pattern")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((get(row, "subject")?, grant_from_row(row)?)))
            .collect()
    }

    /// Whether anyone may view a namespace; None when it does not exist.
    pub async fn namespace_public_read(&self, namespace: &str) -> Result<Option<bool>, DbError> {
        let row = sqlx::query("SELECT public_read FROM namespaces WHERE name = $1")
            .bind(namespace)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(get::<i64>(&row, "public_read")? != 0)).transpose()
    }

    pub async fn set_public_read(&self, namespace: &NamespaceName, public_read: bool) -> Result<(), DbError> {
        sqlx::query("UPDATE namespaces SET public_read = $2 WHERE name = $1")
            .bind(namespace.as_str())
            .bind(i64::from(public_read))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The namespaces that hold a build of this lock: who may read the lock's
    /// artifacts follows from them.
    pub async fn namespaces_with_lock(&self, lock_hash: &str) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT DISTINCT namespace FROM builds WHERE lock_hash = $1")
            .bind(lock_hash)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| get(row, "namespace")).collect()
    }
}

fn grant_from_row(row: &AnyRow) -> Result<Grant, DbError> {
    let corrupt = |reason: String| DbError::Corrupt {
        column: "role_bindings",
        reason,
    };
    let pattern: String = get(row, "namespace_pattern")?;
    let role: String = get(row, "role")?;
    Ok(Grant {
        namespace: pattern.parse().map_err(|error: envstore_core::AccessError| corrupt(error.to_string()))?,
        role: role.parse().map_err(|error: envstore_core::AccessError| corrupt(error.to_string()))?,
    })
}

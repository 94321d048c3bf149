//! Tokens and role bindings. Token values are never stored: only their
//! sha256, which is what a presented token is looked up by.

use envstore_core::{ContentHash, Grant, NamespaceName, NamespacePattern, Role};
use serde::Serialize;

use crate::{Database, DbError, now_millis, parse_json};

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
    /// The token this one was minted with; None when a server admin or an
    /// identity-provider login minted it. Revoking the parent revokes it.
    pub parent_token_id: Option<String>,
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
    /// The token the caller minted it with, if any: the new token is
    /// refused unless that token is still active, and dies with it.
    pub parent_token_id: Option<String>,
}

const TOKEN_COLUMNS: &str = "id, subject, name, created_by, server_admin, scopes, created_at, expires_at, revoked_at, parent_token_id";

/// Every token a token minted, directly or through its children, with the
/// token itself: `$1` is its id. Recursive CTEs read the same in SQLite and
/// PostgreSQL.
const LINEAGE: &str = "WITH RECURSIVE lineage(id) AS (SELECT id FROM tokens WHERE id = $1 \
     UNION SELECT tokens.id FROM tokens JOIN lineage ON tokens.parent_token_id = lineage.id)";

/// A `tokens` row as stored ([`TOKEN_COLUMNS`]): the admin flag is an
/// integer and the scopes JSON text.
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    subject: String,
    name: String,
    created_by: String,
    server_admin: i64,
    scopes: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    parent_token_id: Option<String>,
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = DbError;

    fn try_from(row: TokenRow) -> Result<Self, DbError> {
        Ok(Self {
            id: row.id,
            subject: row.subject,
            name: row.name,
            created_by: row.created_by,
            server_admin: row.server_admin != 0,
            scopes: row
                .scopes
                .map(|text| parse_json("tokens.scopes", &text))
                .transpose()?,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            parent_token_id: row.parent_token_id,
        })
    }
}

/// A `role_bindings` row: a subject's role in the namespaces a pattern
/// matches.
#[derive(sqlx::FromRow)]
struct BindingRow {
    subject: String,
    namespace_pattern: String,
    role: String,
}

impl BindingRow {
    fn grant(&self) -> Result<Grant, DbError> {
        let corrupt = |reason: String| DbError::Corrupt {
            column: "role_bindings",
            reason,
        };
        Ok(Grant {
            namespace: self
                .namespace_pattern
                .parse()
                .map_err(|error: envstore_core::AccessError| corrupt(error.to_string()))?,
            role: self
                .role
                .parse()
                .map_err(|error: envstore_core::AccessError| corrupt(error.to_string()))?,
        })
    }
}

/// The chain of a token and the tokens above it: how many, and how many
/// of them are unrevoked and unexpired (NULL for an empty chain).
#[derive(sqlx::FromRow)]
struct ChainRow {
    total: i64,
    active: Option<i64>,
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
        let now = now_millis();
        // One statement, so the parent cannot be revoked between the check
        // and the insert on SQLite; on PostgreSQL a revocation racing with
        // it is still caught by the ancestor check of `active_token`.
        let inserted = sqlx::query(
            "INSERT INTO tokens (id, token_sha256, subject, name, created_by, server_admin, scopes, \
             created_at, expires_at, parent_token_id) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE CAST($10 AS TEXT) IS NULL OR EXISTS \
             (SELECT 1 FROM tokens WHERE id = $10 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $8))",
        )
        .bind(&id)
        .bind(token_digest(&value))
        .bind(&token.subject)
        .bind(&token.name)
        .bind(&token.created_by)
        .bind(i64::from(token.server_admin))
        .bind(token.scopes.as_ref().map(|scopes| serde_json::to_string(scopes).unwrap_or_default()))
        .bind(now)
        .bind(token.expires_at)
        .bind(token.parent_token_id.as_deref())
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DbError::NotFound(format!(
                "the active token '{}' to mint from",
                token
                    .parent_token_id
                    .as_deref()
                    .unwrap_or_default()
                    .escape_debug()
            )));
        }
        let record = self
            .token(&id)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("token '{id}'")))?;
        Ok((record, value))
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, DbError> {
        let row = sqlx::query_as::<_, TokenRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(TokenRecord::try_from).transpose()
    }

    /// The token a caller presented, if it is known, unexpired and not
    /// revoked. Answers come from the access cache when it has them (see
    /// [`crate::ACCESS_CACHE_TTL`]): a revocation through this process is
    /// seen at once, one made elsewhere within the TTL.
    pub async fn active_token(&self, value: &str) -> Result<Option<TokenRecord>, DbError> {
        let digest = ContentHash::of(value.as_bytes());
        let now = now_millis();
        if let Some(record) = self.access.token(&digest, now) {
            return Ok(Some(record));
        }
        let since = self.access.generation();
        let row = sqlx::query_as::<_, TokenRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_sha256 = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)"
        )))
        .bind(digest.to_hex())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let mut record = row.map(TokenRecord::try_from).transpose()?;
        if let Some(parent) = record
            .as_ref()
            .and_then(|record| record.parent_token_id.clone())
            && !self.ancestors_active(&parent, now).await?
        {
            record = None;
        }
        if let Some(record) = &record {
            self.access.put_token(since, digest, record);
        }
        Ok(record)
    }

    /// Whether the token `id` and every token above it are unrevoked and
    /// unexpired: a token dies with the token it was minted from, even when
    /// a revocation raced with its minting.
    async fn ancestors_active(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let chain = sqlx::query_as::<_, ChainRow>(
            "WITH RECURSIVE chain(id, parent_token_id, revoked_at, expires_at) AS (\
             SELECT id, parent_token_id, revoked_at, expires_at FROM tokens WHERE id = $1 \
             UNION SELECT tokens.id, tokens.parent_token_id, tokens.revoked_at, tokens.expires_at \
             FROM tokens JOIN chain ON tokens.id = chain.parent_token_id) \
             SELECT COUNT(*) AS total, SUM(CASE WHEN revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
             THEN 1 ELSE 0 END) AS active FROM chain",
        )
        .bind(id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        // Tokens are never deleted: a missing parent row means no chain.
        Ok(chain.total > 0 && chain.active == Some(chain.total))
    }

    /// The token `id` and every token minted from it, directly or not.
    pub async fn token_lineage(&self, id: &str) -> Result<Vec<TokenRecord>, DbError> {
        let rows = sqlx::query_as::<_, TokenRow>(sqlx::AssertSqlSafe(format!(
            "{LINEAGE} SELECT {TOKEN_COLUMNS} FROM tokens WHERE id IN (SELECT id FROM lineage) ORDER BY created_at"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TokenRecord::try_from).collect()
    }

    pub async fn tokens_of(&self, subject: &str) -> Result<Vec<TokenRecord>, DbError> {
        let rows = sqlx::query_as::<_, TokenRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE subject = $1 ORDER BY created_at"
        )))
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TokenRecord::try_from).collect()
    }

    /// Revokes a token and every token minted from it; they stop working in
    /// this process before this returns.
    pub async fn revoke_token(&self, id: &str) -> Result<(), DbError> {
        let _invalidate = self.access.invalidate_when_done();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{LINEAGE} UPDATE tokens SET revoked_at = $2 WHERE id IN (SELECT id FROM lineage) AND revoked_at IS NULL"
        )))
            .bind(id)
            .bind(now_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Binds `subject` to `role` in the namespaces `pattern` matches,
    /// replacing an earlier binding of the same pattern.
    pub async fn bind_role(
        &self,
        subject: &str,
        pattern: &NamespacePattern,
        role: Role,
    ) -> Result<(), DbError> {
        let _invalidate = self.access.invalidate_when_done();
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

    pub async fn unbind_role(
        &self,
        subject: &str,
        pattern: &NamespacePattern,
    ) -> Result<bool, DbError> {
        let _invalidate = self.access.invalidate_when_done();
        let deleted =
            sqlx::query("DELETE FROM role_bindings WHERE subject = $1 AND namespace_pattern = $2")
                .bind(subject)
                .bind(pattern.as_str())
                .execute(&self.pool)
                .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Every binding of one subject, from the access cache when it has them.
    pub async fn bindings_of(&self, subject: &str) -> Result<Vec<Grant>, DbError> {
        if let Some(bindings) = self.access.bindings(subject) {
            return Ok(bindings);
        }
        let since = self.access.generation();
        let rows = sqlx::query_as::<_, BindingRow>(
            "SELECT subject, namespace_pattern, role FROM role_bindings WHERE subject = $1",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        let bindings = rows
            .iter()
            .map(BindingRow::grant)
            .collect::<Result<Vec<_>, _>>()?;
        self.access.put_bindings(since, subject, &bindings);
        Ok(bindings)
    }

    /// Every binding, as (subject, grant), for listings.
    pub async fn all_bindings(&self) -> Result<Vec<(String, Grant)>, DbError> {
        let rows = sqlx::query_as::<_, BindingRow>("SELECT subject, namespace_pattern, role FROM role_bindings ORDER BY subject, namespace_pattern")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let grant = row.grant()?;
                Ok((row.subject, grant))
            })
            .collect()
    }

    /// Whether anyone may view a namespace; None when it does not exist.
    /// From the access cache when it has the namespace.
    pub async fn namespace_public_read(&self, namespace: &str) -> Result<Option<bool>, DbError> {
        if let Some(public_read) = self.access.public_read(namespace) {
            return Ok(Some(public_read));
        }
        let since = self.access.generation();
        let flag: Option<i64> = sqlx::query_scalar(
            "SELECT public_read FROM namespaces WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(namespace)
        .fetch_optional(&self.pool)
        .await?;
        let public_read = flag.map(|flag| flag != 0);
        if let Some(public_read) = public_read {
            self.access.put_public_read(since, namespace, public_read);
        }
        Ok(public_read)
    }

    pub async fn set_public_read(
        &self,
        namespace: &NamespaceName,
        public_read: bool,
    ) -> Result<(), DbError> {
        let _invalidate = self.access.invalidate_when_done();
        sqlx::query("UPDATE namespaces SET public_read = $2 WHERE name = $1")
            .bind(namespace.as_str())
            .bind(i64::from(public_read))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The namespaces that hold a build of this lock: who may read the lock's
    /// artifacts follows from them. Always asks the database.
    pub async fn namespaces_with_lock(&self, lock_hash: &str) -> Result<Vec<String>, DbError> {
        let namespaces: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT namespace FROM builds WHERE lock_hash = $1 AND deleted_at IS NULL",
        )
        .bind(lock_hash)
        .fetch_all(&self.pool)
        .await?;
        self.locks.put_namespaces(lock_hash, &namespaces);
        Ok(namespaces)
    }

    /// Namespaces this process already knows to hold a build of this lock,
    /// from earlier answers of [`Self::namespaces_with_lock`]; empty when
    /// none. The list only ever grows, so this is a subset of the truth:
    /// enough to grant access, but ask the database before refusing it.
    pub fn known_namespaces_with_lock(&self, lock_hash: &str) -> Vec<String> {
        self.locks.namespaces(lock_hash).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::databases;

    fn new_token(subject: &str, expires_at: Option<i64>) -> NewToken {
        NewToken {
            subject: subject.to_owned(),
            name: "ci".to_owned(),
            created_by: "admin".to_owned(),
            server_admin: false,
            scopes: None,
            expires_at,
            parent_token_id: None,
        }
    }

    fn minted_by(parent: &TokenRecord) -> NewToken {
        NewToken {
            parent_token_id: Some(parent.id.clone()),
            ..new_token(&parent.subject, parent.expires_at)
        }
    }

    #[tokio::test]
    async fn revoking_a_token_revokes_every_token_minted_from_it() {
        for db in databases().await {
            let (root, root_value) = db.create_token(&new_token("vera", None)).await.unwrap();
            let (child, child_value) = db.create_token(&minted_by(&root)).await.unwrap();
            let (_, grandchild_value) = db.create_token(&minted_by(&child)).await.unwrap();
            let (_, sibling_value) = db.create_token(&new_token("vera", None)).await.unwrap();
            assert_eq!(child.parent_token_id.as_deref(), Some(root.id.as_str()));
            assert_eq!(db.token_lineage(&root.id).await.unwrap().len(), 3);
            for value in [&root_value, &child_value, &grandchild_value] {
                assert!(db.active_token(value).await.unwrap().is_some());
            }
            db.revoke_token(&root.id).await.unwrap();
            for value in [&root_value, &child_value, &grandchild_value] {
                assert!(
                    db.active_token(value).await.unwrap().is_none(),
                    "the whole lineage is revoked"
                );
            }
            assert!(
                db.active_token(&sibling_value).await.unwrap().is_some(),
                "other tokens live on"
            );
            assert!(
                db.tokens_of("vera")
                    .await
                    .unwrap()
                    .iter()
                    .filter(|t| t.revoked_at.is_some())
                    .count()
                    == 3
            );
            let error = db.create_token(&minted_by(&root)).await.unwrap_err();
            assert!(
                matches!(error, DbError::NotFound(_)),
                "a revoked token mints nothing: {error:?}"
            );
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn a_token_whose_ancestor_died_without_cascading_is_refused() {
        for test in databases().await {
            let db = test.db.clone().with_access_cache_ttl(Duration::ZERO);
            let (root, _) = db.create_token(&new_token("vera", None)).await.unwrap();
            let (child, _) = db.create_token(&minted_by(&root)).await.unwrap();
            let (_, grandchild_value) = db.create_token(&minted_by(&child)).await.unwrap();
            // As if a revocation raced with minting (or another writer marked
            // only the root): the root alone is revoked.
            sqlx::query("UPDATE tokens SET revoked_at = 1 WHERE id = $1")
                .bind(&root.id)
                .execute(&db.pool)
                .await
                .unwrap();
            assert!(db.active_token(&grandchild_value).await.unwrap().is_none());
            sqlx::query("UPDATE tokens SET revoked_at = NULL, expires_at = 1 WHERE id = $1")
                .bind(&root.id)
                .execute(&db.pool)
                .await
                .unwrap();
            assert!(
                db.active_token(&grandchild_value).await.unwrap().is_none(),
                "an expired ancestor counts too"
            );
            test.finish().await;
        }
    }

    #[tokio::test]
    async fn a_revoked_token_is_refused_at_once_though_it_was_cached() {
        for db in databases().await {
            let (record, value) = db.create_token(&new_token("vera", None)).await.unwrap();
            assert_eq!(
                db.active_token(&value).await.unwrap().unwrap().id,
                record.id
            );
            assert!(
                db.access
                    .token(&ContentHash::of(value.as_bytes()), now_millis())
                    .is_some(),
                "the answer is cached"
            );
            // Another clone of the same database (another handler) revokes it.
            db.clone().revoke_token(&record.id).await.unwrap();
            assert!(db.active_token(&value).await.unwrap().is_none());
            assert!(db.active_token("envstore_unknown").await.unwrap().is_none());
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_though_it_was_cached() {
        for db in databases().await {
            let (_, value) = db
                .create_token(&new_token("vera", Some(now_millis() + 150)))
                .await
                .unwrap();
            assert!(db.active_token(&value).await.unwrap().is_some());
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(db.active_token(&value).await.unwrap().is_none());
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn role_and_visibility_changes_are_seen_at_once() {
        for db in databases().await {
            let team: NamespaceName = "team".parse().unwrap();
            let pattern: NamespacePattern = "team".parse().unwrap();
            db.create_namespace(&team).await.unwrap();
            assert_eq!(db.namespace_public_read("team").await.unwrap(), Some(false));
            assert_eq!(db.namespace_public_read("nowhere").await.unwrap(), None);
            assert!(db.bindings_of("vera").await.unwrap().is_empty());

            db.bind_role("vera", &pattern, Role::Viewer).await.unwrap();
            let bindings = db.bindings_of("vera").await.unwrap();
            assert_eq!((bindings.len(), bindings[0].role), (1, Role::Viewer));
            db.bind_role("vera", &pattern, Role::Developer)
                .await
                .unwrap();
            assert_eq!(
                db.bindings_of("vera").await.unwrap()[0].role,
                Role::Developer
            );
            assert!(db.unbind_role("vera", &pattern).await.unwrap());
            assert!(db.bindings_of("vera").await.unwrap().is_empty());

            db.set_public_read(&team, true).await.unwrap();
            assert_eq!(db.namespace_public_read("team").await.unwrap(), Some(true));
            db.set_public_read(&team, false).await.unwrap();
            assert_eq!(db.namespace_public_read("team").await.unwrap(), Some(false));
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn changes_made_by_another_process_are_seen_within_the_ttl() {
        let ttl = Duration::from_millis(100);
        for elsewhere in databases().await {
            // Another process on the same database.
            let open = || async { Database::connect(&elsewhere.test.url).await.unwrap() };
            let here = open().await.with_access_cache_ttl(ttl);
            let (record, value) = elsewhere
                .create_token(&new_token("vera", None))
                .await
                .unwrap();
            assert!(here.active_token(&value).await.unwrap().is_some());
            elsewhere.revoke_token(&record.id).await.unwrap();
            tokio::time::sleep(ttl + Duration::from_millis(20)).await;
            assert!(here.active_token(&value).await.unwrap().is_none());

            let uncached = open().await.with_access_cache_ttl(Duration::ZERO);
            let (record, value) = elsewhere
                .create_token(&new_token("vera", None))
                .await
                .unwrap();
            assert!(uncached.active_token(&value).await.unwrap().is_some());
            elsewhere.revoke_token(&record.id).await.unwrap();
            assert!(
                uncached.active_token(&value).await.unwrap().is_none(),
                "a zero TTL always asks"
            );
            here.close().await;
            uncached.close().await;
            elsewhere.finish().await;
        }
    }
}

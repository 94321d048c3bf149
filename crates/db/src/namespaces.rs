use envstore_core::{NamespaceName, Policy};

use crate::{Database, DbError, now_millis, parse_json};

/// A live `namespaces` row as listed.
#[derive(sqlx::FromRow)]
struct NamespaceListRow {
    name: String,
    created_at: i64,
    public_read: i64,
}

impl Database {
    /// Creates a namespace; one deleted and not yet collected is created
    /// afresh (public read off, no policy, no members).
    pub async fn create_namespace(&self, name: &NamespaceName) -> Result<(), DbError> {
        let _invalidate = self.access.invalidate_when_done();
        let inserted = sqlx::query(
            "INSERT INTO namespaces (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE \
             SET deleted_at = NULL, created_at = excluded.created_at, public_read = 0, policy = NULL \
             WHERE namespaces.deleted_at IS NOT NULL",
        )
        .bind(name.as_str())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(DbError::Conflict(format!("namespace '{name}'")));
        }
        Ok(())
    }

    pub async fn namespace_exists(&self, name: &NamespaceName) -> Result<bool, DbError> {
        let row = sqlx::query("SELECT name FROM namespaces WHERE name = $1 AND deleted_at IS NULL")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Namespaces in order: name, creation time, public read.
    pub async fn list_namespaces(&self) -> Result<Vec<(String, i64, bool)>, DbError> {
        let rows = sqlx::query_as::<_, NamespaceListRow>("SELECT name, created_at, public_read FROM namespaces WHERE deleted_at IS NULL ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.name, row.created_at, row.public_read != 0))
            .collect())
    }

    /// A namespace's own policy (the server's applies on top).
    pub async fn namespace_policy(&self, name: &NamespaceName) -> Result<Policy, DbError> {
        // No namespace and one without a policy read the same: the default.
        let text: Option<Option<String>> =
            sqlx::query_scalar("SELECT policy FROM namespaces WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?;
        text.flatten()
            .map(|text| parse_json("namespaces.policy", &text))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    pub async fn set_namespace_policy(
        &self,
        name: &NamespaceName,
        policy: &Policy,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE namespaces SET policy = $2 WHERE name = $1")
            .bind(name.as_str())
            .bind(serde_json::to_string(policy).unwrap_or_default())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_environments(&self, name: &NamespaceName) -> Result<i64, DbError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) AS environments FROM environments WHERE namespace = $1 AND deleted_at IS NULL")
            .bind(name.as_str())
            .fetch_one(&self.pool)
            .await?)
    }
}

//! The audit log: who created, submitted, granted, revoked or opened what,
//! and when. Rows are only ever added.

use serde::Serialize;

use crate::{Database, DbError, get, now_millis, parse_json};

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    pub subject: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

impl Database {
    pub async fn record_audit(
        &self,
        subject: &str,
        action: &str,
        target: &str,
        detail: &serde_json::Value,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO audit_log (id, at, subject, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(now_millis())
        .bind(subject)
        .bind(action)
        .bind(target)
        .bind(detail.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Entries newest first, at most `limit`, older than the entry `before`
    /// (ids are time-ordered UUIDv7s), for paging back through history.
    pub async fn audit_entries(
        &self,
        limit: i64,
        before: Option<&str>,
    ) -> Result<Vec<AuditEntry>, DbError> {
        let rows = sqlx::query(
            "SELECT id, at, subject, action, target, detail FROM audit_log \
             WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: get(row, "id")?,
                    at: get(row, "at")?,
                    subject: get(row, "subject")?,
                    action: get(row, "action")?,
                    target: get(row, "target")?,
                    detail: parse_json("audit_log.detail", &get::<String>(row, "detail")?)?,
                })
            })
            .collect()
    }
}

//! The audit log: who created, submitted, granted, revoked or opened what,
//! and when. Rows are only ever added.

use serde::Serialize;

use crate::{Database, DbError, now_millis, parse_json};

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    pub subject: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// An `audit_log` row; its detail is JSON text.
#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    at: i64,
    subject: String,
    action: String,
    target: String,
    detail: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = DbError;

    fn try_from(row: AuditRow) -> Result<Self, DbError> {
        Ok(Self {
            id: row.id,
            at: row.at,
            subject: row.subject,
            action: row.action,
            target: row.target,
            detail: parse_json("audit_log.detail", &row.detail)?,
        })
    }
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
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT id, at, subject, action, target, detail FROM audit_log \
             WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }
}

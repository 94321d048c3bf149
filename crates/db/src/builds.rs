use envstore_core::{
    BuildStatus, CanonicalSpec, ContentHash, EnvironmentName, NamespaceName, PhaseTiming,
    SpecFormat,
};
use serde::Serialize;

use crate::{Database, DbError, now_millis, parse_json};

#[derive(Debug, Clone, Serialize)]
pub struct BuildRecord {
    pub id: String,
    pub namespace: String,
    pub environment: String,
    pub spec_hash: String,
    pub status: BuildStatus,
    pub lock_hash: Option<String>,
    pub lock_reused: bool,
    pub prefix_reused: bool,
    pub phases: Vec<PhaseTiming>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When garbage collection released this build's prefix; its lock and
    /// log stay, and making it current again rebuilds the prefix.
    pub prefix_collected_at: Option<i64>,
    /// When the build's environment or namespace was deleted; hidden since.
    #[serde(skip)]
    pub deleted_at: Option<i64>,
    /// Where the build stands in the order builds were accepted (one
    /// database-wide counter): the later of two succeeded builds of an
    /// environment becomes current, whichever finished first.
    #[serde(skip)]
    pub seq: i64,
}

pub(crate) const BUILD_COLUMNS: &str = "id, namespace, environment, spec_hash, status, lock_hash, lock_reused, \
     prefix_reused, phases, error, created_at, started_at, finished_at, prefix_collected_at, deleted_at, seq";

/// A `builds` row as stored ([`BUILD_COLUMNS`]); flags are integers and
/// phases JSON text, which [`BuildRecord`] decodes.
#[derive(sqlx::FromRow)]
pub(crate) struct BuildRow {
    id: String,
    namespace: String,
    environment: String,
    spec_hash: String,
    status: String,
    lock_hash: Option<String>,
    lock_reused: i64,
    prefix_reused: i64,
    phases: String,
    error: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    prefix_collected_at: Option<i64>,
    deleted_at: Option<i64>,
    seq: i64,
}

impl TryFrom<BuildRow> for BuildRecord {
    type Error = DbError;

    fn try_from(row: BuildRow) -> Result<Self, DbError> {
        Ok(Self {
            id: row.id,
            namespace: row.namespace,
            environment: row.environment,
            spec_hash: row.spec_hash,
            status: parse_status("builds.status", &row.status)?,
            lock_hash: row.lock_hash,
            lock_reused: row.lock_reused != 0,
            prefix_reused: row.prefix_reused != 0,
            phases: parse_json("builds.phases", &row.phases)?,
            error: row.error,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            prefix_collected_at: row.prefix_collected_at,
            deleted_at: row.deleted_at,
            seq: row.seq,
        })
    }
}

/// A build status read from `column` as a [`BuildStatus`].
pub(crate) fn parse_status(column: &'static str, status: &str) -> Result<BuildStatus, DbError> {
    status
        .parse()
        .map_err(|error: envstore_core::UnknownStatus| DbError::Corrupt {
            column,
            reason: error.to_string(),
        })
}

/// How long an idempotency key's answer is kept and replayed.
pub const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Keys claimed at or before this time have expired.
fn idempotency_cutoff(now: i64) -> i64 {
    now - IDEMPOTENCY_TTL.as_millis() as i64
}

/// A submission's `Idempotency-Key`, whose it is and what it asked for.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// Who sent it: the same key of two callers is two keys.
    pub caller: String,
    pub key: String,
    /// A digest of the request (method, path, body): the same key sent
    /// with another request is refused, not replayed.
    pub request_hash: String,
}

/// The answer kept under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

/// What a submission under an idempotency key came to.
#[derive(Debug, Clone)]
pub enum Submission {
    /// Queued (or joined) now; its answer is kept under the key, if any.
    Submitted(Box<SubmittedBuild>),
    /// The key was used already: nothing new was queued; its kept answer.
    Replayed(StoredAnswer),
}

#[derive(Debug, Clone)]
pub struct SubmittedBuild {
    pub build: BuildRecord,
    /// True when an identical spec was already queued or running for this
    /// environment, and the submission joined that build.
    pub joined: bool,
}

/// The spec text a build was submitted with, byte for byte, so users get
/// back what they wrote (comments, order, spelling) rather than the
/// canonical form that is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedSpec {
    pub text: String,
    pub format: SpecFormat,
}

/// How [`SubmittedSpec::format`] is stored in `builds.submitted_format`.
fn format_name(format: SpecFormat) -> &'static str {
    match format {
        SpecFormat::Yaml => "yaml",
        SpecFormat::Json => "json",
    }
}

fn parse_format(name: &str) -> Result<SpecFormat, DbError> {
    match name {
        "yaml" => Ok(SpecFormat::Yaml),
        "json" => Ok(SpecFormat::Json),
        other => Err(DbError::Corrupt {
            column: "builds.submitted_format",
            reason: format!("unknown spec format '{other}'"),
        }),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentRecord {
    pub namespace: String,
    pub name: String,
    pub current_build_id: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockRecord {
    pub lock_hash: String,
    pub platforms: Vec<String>,
    pub packages: serde_json::Value,
    /// What activating the environment sets; part of the lock's hash.
    pub variables: std::collections::BTreeMap<String, String>,
    pub created_at: i64,
}

/// An environment's current build and its lock, read in one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLock {
    pub current_build_id: Option<String>,
    /// None until the current build has a lock.
    pub lock_hash: Option<String>,
}

/// An environment whose current build succeeded, with its lock's packages:
/// what listings that depend on the installed packages (kernels) filter.
#[derive(Debug, Clone)]
pub struct SucceededEnvironment {
    pub namespace: String,
    pub name: String,
    /// Whether the namespace is readable without a token.
    pub public_read: bool,
    pub build_id: String,
    pub lock_hash: String,
    /// Packages per platform, as the lock records them.
    pub packages: serde_json::Value,
    /// What activating the environment sets.
    pub variables: std::collections::BTreeMap<String, String>,
}

/// How a build ended, as the worker reports it.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub status: BuildStatus,
    pub lock_hash: Option<ContentHash>,
    pub lock_reused: bool,
    pub prefix_reused: bool,
    pub phases: Vec<PhaseTiming>,
    pub error: Option<String>,
}

impl Database {
    /// Records a build and its job in one transaction, with who submitted
    /// it. An identical spec already queued or running for the same
    /// environment is joined instead (and keeps its own submitter).
    pub async fn submit_build(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
        spec: &CanonicalSpec,
        submitted_by: Option<&str>,
    ) -> Result<SubmittedBuild, DbError> {
        match self
            .submit_build_once(
                namespace,
                environment,
                (spec, None),
                submitted_by,
                None,
                |_| (0, String::new()),
            )
            .await?
        {
            Submission::Submitted(submitted) => Ok(*submitted),
            Submission::Replayed(_) => Err(DbError::Conflict(
                "an idempotent answer without a key".to_owned(),
            )),
        }
    }

    /// [`Self::submit_build`] under an optional idempotency key: the key is
    /// claimed first in the same transaction, and `answer` (status and
    /// body of the HTTP answer) is kept under it with the build, so the
    /// build and its kept answer exist together or not at all. A key
    /// claimed already (before, or by a concurrent request that committed
    /// first) makes no build: its kept answer comes back instead.
    ///
    /// `spec` is the canonical spec and, when the submitter sent one, its
    /// text as received; a joined build keeps the text of the submission
    /// that made it.
    pub async fn submit_build_once(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
        (spec, submitted_spec): (&CanonicalSpec, Option<&SubmittedSpec>),
        submitted_by: Option<&str>,
        key: Option<&IdempotencyKey>,
        answer: impl FnOnce(&SubmittedBuild) -> (u16, String),
    ) -> Result<Submission, DbError> {
        let spec_hash = spec.hash().to_hex();
        let now = now_millis();
        let mut transaction = self.pool.begin().await?;
        if let Some(key) = key {
            // Blocks (PostgreSQL) or waits for the writer lock (SQLite)
            // while a concurrent request holds the same key, then finds it.
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (caller, idempotency_key, request_hash, status, body, created_at) \
                 VALUES ($1, $2, $3, NULL, NULL, $4) ON CONFLICT (caller, idempotency_key) DO UPDATE \
                 SET request_hash = excluded.request_hash, status = NULL, body = NULL, created_at = excluded.created_at \
                 WHERE idempotency_keys.created_at <= $5",
            )
            .bind(&key.caller)
            .bind(&key.key)
            .bind(&key.request_hash)
            .bind(now)
            .bind(idempotency_cutoff(now))
            .execute(&mut *transaction)
            .await?;
            if claimed.rows_affected() == 0 {
                transaction.rollback().await?;
                let stored = self
                    .idempotent_answer(&key.caller, &key.key)
                    .await?
                    .ok_or_else(|| {
                        DbError::Conflict(format!(
                            "a request with Idempotency-Key '{}' that is still running",
                            key.key
                        ))
                    })?;
                return Ok(Submission::Replayed(stored));
            }
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
                .bind(idempotency_cutoff(now))
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query(
            "INSERT INTO specs (spec_hash, canonical, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (spec_hash) DO NOTHING",
        )
        .bind(&spec_hash)
        .bind(spec.to_json())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        // A deleted environment submitted again starts afresh: its old
        // builds stay hidden until garbage collection removes them.
        sqlx::query(
            "INSERT INTO environments (namespace, name, current_build_id, created_at) \
             VALUES ($1, $2, NULL, $3) ON CONFLICT (namespace, name) DO UPDATE \
             SET deleted_at = NULL, current_build_id = NULL, created_at = excluded.created_at \
             WHERE environments.deleted_at IS NOT NULL",
        )
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        let existing = sqlx::query_as::<_, BuildRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE namespace = $1 AND environment = $2 \
             AND spec_hash = $3 AND status IN ('queued', 'running') ORDER BY seq LIMIT 1"
        )))
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .bind(&spec_hash)
        .fetch_optional(&mut *transaction)
        .await?;
        let submitted = match existing {
            Some(row) => SubmittedBuild {
                build: row.try_into()?,
                joined: true,
            },
            None => {
                let build_id = self
                    .insert_build(
                        &mut transaction,
                        namespace,
                        environment,
                        &spec_hash,
                        submitted_by,
                        submitted_spec,
                        now,
                    )
                    .await?;
                let row = sqlx::query_as::<_, BuildRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1"
                )))
                .bind(&build_id)
                .fetch_one(&mut *transaction)
                .await?;
                SubmittedBuild {
                    build: row.try_into()?,
                    joined: false,
                }
            }
        };
        if let Some(key) = key {
            let (status, body) = answer(&submitted);
            sqlx::query("UPDATE idempotency_keys SET status = $3, body = $4 WHERE caller = $1 AND idempotency_key = $2")
                .bind(&key.caller)
                .bind(&key.key)
                .bind(i64::from(status))
                .bind(body)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(Submission::Submitted(Box::new(submitted)))
    }

    /// Inserts a queued build, its acceptance number and its job; returns
    /// the build's id.
    #[allow(clippy::too_many_arguments)]
    async fn insert_build(
        &self,
        transaction: &mut sqlx::Transaction<'static, sqlx::Any>,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
        spec_hash: &str,
        submitted_by: Option<&str>,
        submitted_spec: Option<&SubmittedSpec>,
        now: i64,
    ) -> Result<String, DbError> {
        let build_id = uuid::Uuid::now_v7().to_string();
        let spec_text = submitted_spec.map(|spec| spec.text.as_str());
        let spec_format = submitted_spec.map(|spec| format_name(spec.format));
        match self.dialect {
            // One writer at a time: the counter row hands out each number
            // once, in the order submissions commit.
            crate::Dialect::Sqlite => {
                let seq: i64 = sqlx::query_scalar(
                    "UPDATE build_seq SET last = last + 1 WHERE id = 1 RETURNING last",
                )
                .fetch_one(&mut **transaction)
                .await?;
                sqlx::query(
                    "INSERT INTO builds (id, namespace, environment, spec_hash, status, created_at, submitted_by, seq, \
                     submitted_spec, submitted_format) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9)",
                )
                .bind(&build_id)
                .bind(namespace.as_str())
                .bind(environment.as_str())
                .bind(spec_hash)
                .bind(now)
                .bind(submitted_by)
                .bind(seq)
                .bind(spec_text)
                .bind(spec_format)
                .execute(&mut **transaction)
                .await?;
            }
            // The column's default takes the next number of its sequence.
            crate::Dialect::Postgres => {
                sqlx::query(
                    "INSERT INTO builds (id, namespace, environment, spec_hash, status, created_at, submitted_by, \
                     submitted_spec, submitted_format) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8)",
                )
                .bind(&build_id)
                .bind(namespace.as_str())
                .bind(environment.as_str())
                .bind(spec_hash)
                .bind(now)
                .bind(submitted_by)
                .bind(spec_text)
                .bind(spec_format)
                .execute(&mut **transaction)
                .await?;
            }
        }
        sqlx::query(
            "INSERT INTO jobs (id, build_id, state, attempts, run_after, created_at) \
             VALUES ($1, $2, 'queued', 0, $3, $3)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&build_id)
        .bind(now)
        .execute(&mut **transaction)
        .await?;
        if self.dialect == crate::Dialect::Postgres {
            // Delivered on commit, to every listening worker.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::jobs::JOBS_CHANNEL)
                .bind(&build_id)
                .execute(&mut **transaction)
                .await?;
        }
        Ok(build_id)
    }

    /// The answer kept under a caller's idempotency key, if the key was
    /// used within [`IDEMPOTENCY_TTL`].
    pub async fn idempotent_answer(
        &self,
        caller: &str,
        key: &str,
    ) -> Result<Option<StoredAnswer>, DbError> {
        let row = sqlx::query_as::<_, StoredAnswerRow>(
            "SELECT request_hash, status, body FROM idempotency_keys \
             WHERE caller = $1 AND idempotency_key = $2 AND created_at > $3 AND status IS NOT NULL",
        )
        .bind(caller)
        .bind(key)
        .bind(idempotency_cutoff(now_millis()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredAnswer::try_from).transpose()
    }

    pub async fn build(&self, id: &str) -> Result<Option<BuildRecord>, DbError> {
        let row = sqlx::query_as::<_, BuildRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(BuildRecord::try_from).transpose()
    }

    /// The builds of one environment, newest first.
    pub async fn environment_builds(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
    ) -> Result<Vec<BuildRecord>, DbError> {
        let rows = sqlx::query_as::<_, BuildRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE namespace = $1 AND environment = $2 \
             AND deleted_at IS NULL ORDER BY seq DESC"
        )))
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(BuildRecord::try_from).collect()
    }

    pub async fn environment(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
    ) -> Result<Option<EnvironmentRecord>, DbError> {
        let row = sqlx::query_as::<_, EnvironmentRow>(
            "SELECT namespace, name, current_build_id, created_at FROM environments \
             WHERE namespace = $1 AND name = $2 AND deleted_at IS NULL",
        )
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(EnvironmentRecord::from))
    }

    /// An environment's current build and that build's lock hash, or None
    /// when the environment does not exist. Not cached: a build finished by
    /// any process must be served at once.
    pub async fn current_lock(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
    ) -> Result<Option<CurrentLock>, DbError> {
        let row = sqlx::query_as::<_, CurrentLockRow>(
            "SELECT environments.current_build_id AS current_build_id, builds.lock_hash AS lock_hash \
             FROM environments LEFT JOIN builds ON builds.id = environments.current_build_id \
             WHERE environments.namespace = $1 AND environments.name = $2 AND environments.deleted_at IS NULL",
        )
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(CurrentLock::from))
    }

    pub async fn list_environments(
        &self,
        namespace: &NamespaceName,
    ) -> Result<Vec<EnvironmentRecord>, DbError> {
        let rows = sqlx::query_as::<_, EnvironmentRow>(
            "SELECT namespace, name, current_build_id, created_at FROM environments \
             WHERE namespace = $1 AND deleted_at IS NULL ORDER BY name",
        )
        .bind(namespace.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(EnvironmentRecord::from).collect())
    }

    /// Environments whose current build succeeded, ordered by (namespace,
    /// name), strictly after `after` (`("", "")`: from the start), at most
    /// `limit`. One query for a whole page, so listings over every
    /// namespace stay one round trip per page however many there are.
    pub async fn succeeded_environments(
        &self,
        after: (&str, &str),
        limit: i64,
    ) -> Result<Vec<SucceededEnvironment>, DbError> {
        let rows = sqlx::query_as::<_, SucceededEnvironmentRow>(
            "SELECT environments.namespace AS namespace, environments.name AS name, \
             namespaces.public_read AS public_read, builds.id AS build_id, builds.lock_hash AS lock_hash, \
             locks.packages AS packages, locks.variables AS variables \
             FROM environments \
             JOIN namespaces ON namespaces.name = environments.namespace \
             JOIN builds ON builds.id = environments.current_build_id \
             JOIN locks ON locks.lock_hash = builds.lock_hash \
             WHERE builds.status = 'succeeded' \
             AND environments.deleted_at IS NULL AND namespaces.deleted_at IS NULL \
             AND (environments.namespace > $1 OR (environments.namespace = $1 AND environments.name > $2)) \
             ORDER BY environments.namespace, environments.name LIMIT $3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(SucceededEnvironment::try_from)
            .collect()
    }

    /// The spec text build `id` was submitted with: None when there is no
    /// such build, `Some(None)` when it has no text (made before texts were
    /// kept, or installing a lockfile).
    pub async fn submitted_spec(&self, id: &str) -> Result<Option<Option<SubmittedSpec>>, DbError> {
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT submitted_spec, submitted_format FROM builds WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(text, format)| match (text, format) {
            (Some(text), Some(format)) => Ok(Some(SubmittedSpec {
                text,
                format: parse_format(&format)?,
            })),
            _ => Ok(None),
        })
        .transpose()
    }

    /// The canonical spec a build was submitted with.
    pub async fn spec(&self, spec_hash: &str) -> Result<Option<CanonicalSpec>, DbError> {
        self.spec_text(spec_hash)
            .await?
            .map(|text| parse_json("specs.canonical", &text))
            .transpose()
    }

    /// A stored spec as it was written.
    async fn spec_text(&self, spec_hash: &str) -> Result<Option<String>, DbError> {
        Ok(
            sqlx::query_scalar("SELECT canonical FROM specs WHERE spec_hash = $1")
                .bind(spec_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The fields of a stored spec this release does not know
    /// ([`CanonicalSpec::fields_unknown_here`]): a newer API wrote them,
    /// and a worker of this release would build the spec without them.
    /// None for a spec not stored.
    pub async fn spec_fields_unknown_here(&self, spec_hash: &str) -> Result<Vec<String>, DbError> {
        match self.spec_text(spec_hash).await? {
            Some(text) => {
                CanonicalSpec::fields_unknown_here(&text).map_err(|error| DbError::Corrupt {
                    column: "specs.canonical",
                    reason: error.to_string(),
                })
            }
            None => Ok(Vec::new()),
        }
    }

    /// Marks a claimed build as running (again, after a lease ran out).
    /// False when the build already ended (it was cancelled while queued):
    /// its job is then closed and there is nothing to run.
    pub async fn start_build(&self, id: &str) -> Result<bool, DbError> {
        let started = sqlx::query(
            "UPDATE builds SET status = 'running', started_at = COALESCE(started_at, $2), \
             phases = '[]', error = NULL WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        if started.rows_affected() == 0 {
            sqlx::query("UPDATE jobs SET state = 'done', locked_until = NULL WHERE build_id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Cancels a queued build at once, or asks the worker of a running one
    /// to stop. Returns the build's status afterwards.
    pub async fn cancel_build(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<Option<BuildStatus>, DbError> {
        let mut transaction = self.pool.begin().await?;
        let cancelled = sqlx::query(
            "UPDATE builds SET status = 'cancelled', error = $2, finished_at = $3 \
             WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .bind(reason)
        .bind(now_millis())
        .execute(&mut *transaction)
        .await?;
        if cancelled.rows_affected() == 1 {
            sqlx::query("UPDATE jobs SET state = 'done', locked_until = NULL WHERE build_id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
        } else {
            sqlx::query(
                "UPDATE builds SET cancel_requested = 1 WHERE id = $1 AND status = 'running'",
            )
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(self.build(id).await?.map(|build| build.status))
    }

    /// Whether someone asked a running build to stop.
    pub async fn cancel_requested(&self, id: &str) -> Result<bool, DbError> {
        let cancel_requested: Option<i64> =
            sqlx::query_scalar("SELECT cancel_requested FROM builds WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(cancel_requested.is_some_and(|flag| flag != 0))
    }

    /// Publishes the phases of a running build, so readers see progress.
    pub async fn record_phases(&self, id: &str, phases: &[PhaseTiming]) -> Result<(), DbError> {
        sqlx::query("UPDATE builds SET phases = $2 WHERE id = $1")
            .bind(id)
            .bind(serde_json::to_string(phases).unwrap_or_else(|_| "[]".into()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a build and its job. A succeeded build becomes its environment's
    /// current build unless a newer submission already did.
    pub async fn finish_build(&self, id: &str, outcome: &BuildOutcome) -> Result<(), DbError> {
        let now = now_millis();
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "UPDATE builds SET status = $2, lock_hash = $3, lock_reused = $4, prefix_reused = $5, \
             phases = $6, error = $7, finished_at = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(outcome.status.as_str())
        .bind(outcome.lock_hash.map(|hash| hash.to_hex()))
        .bind(i64::from(outcome.lock_reused))
        .bind(i64::from(outcome.prefix_reused))
        .bind(serde_json::to_string(&outcome.phases).unwrap_or_else(|_| "[]".into()))
        .bind(outcome.error.as_deref())
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("UPDATE jobs SET state = 'done', locked_until = NULL WHERE build_id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        if outcome.status == BuildStatus::Succeeded {
            sqlx::query(
                "UPDATE environments SET current_build_id = $1 \
                 WHERE (namespace, name) = (SELECT namespace, environment FROM builds WHERE id = $1) \
                 AND (current_build_id IS NULL OR \
                      (SELECT seq FROM builds WHERE id = environments.current_build_id) <= \
                      (SELECT seq FROM builds WHERE id = $1))",
            )
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Whether the build would become its environment's current build if
    /// it succeeded now: no newer submission is current. The same rule as
    /// `finish_build`, asked before it so that the environment's link can be
    /// pointed before anyone is told of the success.
    pub async fn would_become_current(&self, id: &str) -> Result<bool, DbError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM environments JOIN builds \
             ON (builds.namespace, builds.environment) = (environments.namespace, environments.name) \
             WHERE builds.id = $1 \
             AND (environments.current_build_id IS NULL OR \
                  (SELECT seq FROM builds current WHERE current.id = environments.current_build_id) <= builds.seq)",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Makes an earlier succeeded build of the environment current again.
    /// False when the build is not a succeeded build of this environment.
    pub async fn set_current_build(
        &self,
        namespace: &NamespaceName,
        environment: &EnvironmentName,
        build_id: &str,
    ) -> Result<bool, DbError> {
        let updated = sqlx::query(
            "UPDATE environments SET current_build_id = $3 WHERE namespace = $1 AND name = $2 \
             AND deleted_at IS NULL \
             AND EXISTS (SELECT 1 FROM builds WHERE id = $3 AND namespace = $1 AND environment = $2 \
                         AND status = 'succeeded' AND deleted_at IS NULL)",
        )
        .bind(namespace.as_str())
        .bind(environment.as_str())
        .bind(build_id)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Records a lock once; the same hash always holds the same packages
    /// and variables.
    pub async fn insert_lock(
        &self,
        lock_hash: &ContentHash,
        platforms: &[String],
        packages: &serde_json::Value,
        variables: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool, DbError> {
        let mut transaction = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO locks (lock_hash, platforms, packages, variables, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (lock_hash) DO NOTHING",
        )
        .bind(lock_hash.to_hex())
        .bind(serde_json::to_string(platforms).unwrap_or_else(|_| "[]".into()))
        .bind(packages.to_string())
        .bind((!variables.is_empty()).then(|| serde_json::to_string(variables).unwrap_or_default()))
        .bind(now_millis())
        .execute(&mut *transaction)
        .await?;
        let inserted = inserted.rows_affected() == 1;
        if inserted {
            crate::packages::insert_lock_packages(&mut transaction, &lock_hash.to_hex(), packages)
                .await?;
        }
        transaction.commit().await?;
        Ok(inserted)
    }

    /// The platforms a lock was solved for, without its packages. A lock
    /// never changes, so the answer is kept for the life of the process.
    pub async fn lock_platforms(&self, lock_hash: &str) -> Result<Option<Vec<String>>, DbError> {
        if let Some(platforms) = self.locks.platforms(lock_hash) {
            return Ok(Some(platforms));
        }
        let text: Option<String> =
            sqlx::query_scalar("SELECT platforms FROM locks WHERE lock_hash = $1")
                .bind(lock_hash)
                .fetch_optional(&self.pool)
                .await?;
        let platforms: Option<Vec<String>> = text
            .map(|text| parse_json("locks.platforms", &text))
            .transpose()?;
        if let Some(platforms) = &platforms {
            self.locks.put_platforms(lock_hash, platforms);
        }
        Ok(platforms)
    }

    pub async fn lock(&self, lock_hash: &str) -> Result<Option<LockRecord>, DbError> {
        let row = sqlx::query_as::<_, LockRow>(
            "SELECT lock_hash, platforms, packages, variables, created_at FROM locks WHERE lock_hash = $1",
        )
        .bind(lock_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(LockRecord::try_from).transpose()
    }
}

/// An `environments` row (live ones only are read).
#[derive(sqlx::FromRow)]
struct EnvironmentRow {
    namespace: String,
    name: String,
    current_build_id: Option<String>,
    created_at: i64,
}

impl From<EnvironmentRow> for EnvironmentRecord {
    fn from(row: EnvironmentRow) -> Self {
        Self {
            namespace: row.namespace,
            name: row.name,
            current_build_id: row.current_build_id,
            created_at: row.created_at,
        }
    }
}

/// An environment's current build id and that build's lock hash.
#[derive(sqlx::FromRow)]
struct CurrentLockRow {
    current_build_id: Option<String>,
    lock_hash: Option<String>,
}

impl From<CurrentLockRow> for CurrentLock {
    fn from(row: CurrentLockRow) -> Self {
        Self {
            current_build_id: row.current_build_id,
            lock_hash: row.lock_hash,
        }
    }
}

/// An `idempotency_keys` row whose answer was kept.
#[derive(sqlx::FromRow)]
struct StoredAnswerRow {
    request_hash: String,
    status: i64,
    body: Option<String>,
}

impl TryFrom<StoredAnswerRow> for StoredAnswer {
    type Error = DbError;

    fn try_from(row: StoredAnswerRow) -> Result<Self, DbError> {
        Ok(Self {
            request_hash: row.request_hash,
            status: u16::try_from(row.status).map_err(|error| DbError::Corrupt {
                column: "idempotency_keys.status",
                reason: error.to_string(),
            })?,
            body: row.body.unwrap_or_default(),
        })
    }
}

/// A `locks` row; its lists and maps are JSON text.
#[derive(sqlx::FromRow)]
struct LockRow {
    lock_hash: String,
    platforms: String,
    packages: String,
    variables: Option<String>,
    created_at: i64,
}

impl TryFrom<LockRow> for LockRecord {
    type Error = DbError;

    fn try_from(row: LockRow) -> Result<Self, DbError> {
        Ok(Self {
            lock_hash: row.lock_hash,
            platforms: parse_json("locks.platforms", &row.platforms)?,
            packages: parse_json("locks.packages", &row.packages)?,
            variables: parse_variables(row.variables)?,
            created_at: row.created_at,
        })
    }
}

/// An environment with a succeeded current build, joined with its
/// namespace's visibility and its lock.
#[derive(sqlx::FromRow)]
struct SucceededEnvironmentRow {
    namespace: String,
    name: String,
    public_read: i64,
    build_id: String,
    lock_hash: String,
    packages: String,
    variables: Option<String>,
}

impl TryFrom<SucceededEnvironmentRow> for SucceededEnvironment {
    type Error = DbError;

    fn try_from(row: SucceededEnvironmentRow) -> Result<Self, DbError> {
        Ok(Self {
            namespace: row.namespace,
            name: row.name,
            public_read: row.public_read != 0,
            build_id: row.build_id,
            lock_hash: row.lock_hash,
            packages: parse_json("locks.packages", &row.packages)?,
            variables: parse_variables(row.variables)?,
        })
    }
}

/// `locks.variables`: NULL when the lock sets none.
fn parse_variables(
    text: Option<String>,
) -> Result<std::collections::BTreeMap<String, String>, DbError> {
    text.map(|text| parse_json("locks.variables", &text))
        .transpose()
        .map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use envstore_core::{ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
    use rattler_conda_types::Subdir;

    use super::*;
    use crate::testing::databases;

    fn spec(dependencies: &str) -> CanonicalSpec {
        let allow = ChannelAllowlist::new(vec![NamedChannel::parse("demo=file:///demo").unwrap()]);
        EnvironmentSpec::parse(
            format!("dependencies: [{dependencies}]").as_bytes(),
            SpecFormat::Yaml,
        )
        .unwrap()
        .canonicalize(&allow, Subdir::Linux64)
        .unwrap()
    }

    /// Builds `namespace/env` to `lock` and returns the build id.
    async fn build_with_lock(db: &Database, namespace: &str, lock: &ContentHash) -> String {
        let namespace: NamespaceName = namespace.parse().unwrap();
        if !db.namespace_exists(&namespace).await.unwrap() {
            db.create_namespace(&namespace).await.unwrap();
        }
        let build = db
            .submit_build(&namespace, &"env".parse().unwrap(), &spec("python"), None)
            .await
            .unwrap()
            .build;
        db.insert_lock(
            lock,
            &["linux-64".to_owned()],
            &serde_json::json!([]),
            &Default::default(),
        )
        .await
        .unwrap();
        let outcome = BuildOutcome {
            status: BuildStatus::Succeeded,
            lock_hash: Some(*lock),
            lock_reused: false,
            prefix_reused: false,
            phases: Vec::new(),
            error: None,
        };
        db.finish_build(&build.id, &outcome).await.unwrap();
        build.id
    }

    fn succeeded(lock: &ContentHash) -> BuildOutcome {
        BuildOutcome {
            status: BuildStatus::Succeeded,
            lock_hash: Some(*lock),
            lock_reused: false,
            prefix_reused: false,
            phases: Vec::new(),
            error: None,
        }
    }

    #[tokio::test]
    async fn the_build_accepted_later_becomes_current_whatever_the_clocks_and_finish_order_say() {
        for db in databases().await {
            accepted_later_wins(&db).await;
            db.finish().await;
        }
    }

    async fn accepted_later_wins(db: &Database) {
        let team: NamespaceName = "team".parse().unwrap();
        let env: EnvironmentName = "env".parse().unwrap();
        db.create_namespace(&team).await.unwrap();
        let lock = ContentHash::of(b"lock");
        db.insert_lock(
            &lock,
            &["linux-64".to_owned()],
            &serde_json::json!([]),
            &Default::default(),
        )
        .await
        .unwrap();
        // Equal time stamps (one millisecond), then the earlier build's clock
        // ahead of the later one's (two API nodes whose clocks differ).
        for earlier_created_at in [1_000, 2_000] {
            let earlier = db
                .submit_build(&team, &env, &spec("python"), None)
                .await
                .unwrap()
                .build;
            let later = db
                .submit_build(&team, &env, &spec("numpy"), None)
                .await
                .unwrap()
                .build;
            assert!(later.seq > earlier.seq);
            for (id, created_at) in [(&earlier.id, earlier_created_at), (&later.id, 1_000)] {
                sqlx::query("UPDATE builds SET created_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(created_at)
                    .execute(&db.pool)
                    .await
                    .unwrap();
            }
            // The later one finishes first; the earlier one must not replace it.
            assert!(db.would_become_current(&earlier.id).await.unwrap());
            assert!(db.would_become_current(&later.id).await.unwrap());
            db.finish_build(&later.id, &succeeded(&lock)).await.unwrap();
            assert!(
                !db.would_become_current(&earlier.id).await.unwrap(),
                "a newer build is current"
            );
            db.finish_build(&earlier.id, &succeeded(&lock))
                .await
                .unwrap();
            let current = db
                .environment(&team, &env)
                .await
                .unwrap()
                .unwrap()
                .current_build_id;
            assert_eq!(
                current.as_deref(),
                Some(later.id.as_str()),
                "created_at {earlier_created_at}"
            );
            let history: Vec<String> = db
                .environment_builds(&team, &env)
                .await
                .unwrap()
                .into_iter()
                .map(|build| build.id)
                .collect();
            assert_eq!(
                &history[..2],
                [later.id.clone(), earlier.id.clone()],
                "newest first, by acceptance"
            );
        }
    }

    fn key(key: &str, request: &str) -> IdempotencyKey {
        IdempotencyKey {
            caller: "alice".to_owned(),
            key: key.to_owned(),
            request_hash: request.to_owned(),
        }
    }

    async fn count_builds(db: &Database) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) AS n FROM builds")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_idempotency_key_makes_one_build_and_replays_its_answer() {
        for db in databases().await {
            one_build_per_key(&db).await;
            db.finish().await;
        }
    }

    async fn one_build_per_key(db: &Database) {
        let team: NamespaceName = "team".parse().unwrap();
        let env: EnvironmentName = "env".parse().unwrap();
        db.create_namespace(&team).await.unwrap();
        let answer = |submitted: &SubmittedBuild| {
            (202, format!("{{\"build_id\":\"{}\"}}", submitted.build.id))
        };
        let first = db
            .submit_build_once(
                &team,
                &env,
                (&spec("python"), None),
                None,
                Some(&key("k1", "h1")),
                answer,
            )
            .await
            .unwrap();
        let Submission::Submitted(first) = first else {
            panic!("the first use of a key submits")
        };
        assert_eq!(count_builds(db).await, 1);

        // Again, even with another spec: nothing new, the kept answer.
        for spec_text in ["python", "numpy"] {
            let (spec, key) = (spec(spec_text), key("k1", "h2"));
            let again = db
                .submit_build_once(&team, &env, (&spec, None), None, Some(&key), answer)
                .await
                .unwrap();
            let Submission::Replayed(stored) = again else {
                panic!("a used key replays")
            };
            assert_eq!(stored.status, 202);
            assert_eq!(
                stored.request_hash, "h1",
                "the first request's digest, for the caller to compare"
            );
            assert_eq!(
                stored.body,
                format!("{{\"build_id\":\"{}\"}}", first.build.id)
            );
        }
        assert_eq!(count_builds(db).await, 1);
        assert_eq!(
            db.idempotent_answer("alice", "k1")
                .await
                .unwrap()
                .unwrap()
                .request_hash,
            "h1"
        );
        assert_eq!(
            db.idempotent_answer("bob", "k1").await.unwrap(),
            None,
            "keys are per caller"
        );

        // A key older than a day is free again.
        sqlx::query("UPDATE idempotency_keys SET created_at = $1")
            .bind(now_millis() - IDEMPOTENCY_TTL.as_millis() as i64 - 1)
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(db.idempotent_answer("alice", "k1").await.unwrap(), None);
        let (spec, key) = (spec("numpy"), key("k1", "h3"));
        let fresh = db
            .submit_build_once(&team, &env, (&spec, None), None, Some(&key), answer)
            .await
            .unwrap();
        assert!(matches!(fresh, Submission::Submitted(_)));
        assert_eq!(count_builds(db).await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_submissions_with_one_key_make_one_build() {
        for db in databases().await {
            one_build_for_racing_requests(&db).await;
            db.finish().await;
        }
    }

    async fn one_build_for_racing_requests(db: &Database) {
        let team: NamespaceName = "team".parse().unwrap();
        db.create_namespace(&team).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|index| {
                let db = db.clone();
                let team = team.clone();
                tokio::spawn(async move {
                    // Different specs: were the key ignored, each would be a build.
                    let spec = spec(&format!("pkg{index}"));
                    let answer = |submitted: &SubmittedBuild| (202, submitted.build.id.clone());
                    db.submit_build_once(
                        &team,
                        &"env".parse().unwrap(),
                        (&spec, None),
                        None,
                        Some(&key("same", "h")),
                        answer,
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut ids = Vec::new();
        let mut submitted = 0;
        for task in tasks {
            match task.await.unwrap() {
                Submission::Submitted(build) => {
                    submitted += 1;
                    ids.push(build.build.id);
                }
                Submission::Replayed(stored) => ids.push(stored.body),
            }
        }
        assert_eq!(submitted, 1);
        ids.dedup();
        assert_eq!(ids.len(), 1, "every request answers the same build");
        assert_eq!(count_builds(db).await, 1);
    }

    #[tokio::test]
    async fn lock_facts_are_read_once_and_namespaces_only_grow() {
        for db in databases().await {
            let lock = ContentHash::of(b"lock");
            let hex = lock.to_hex();
            assert!(db.known_namespaces_with_lock(&hex).is_empty());
            assert!(db.namespaces_with_lock(&hex).await.unwrap().is_empty());
            assert_eq!(db.lock_platforms(&hex).await.unwrap(), None);

            let env: EnvironmentName = "env".parse().unwrap();
            let team: NamespaceName = "team".parse().unwrap();
            db.create_namespace(&team).await.unwrap();
            assert_eq!(db.current_lock(&team, &env).await.unwrap(), None);
            db.submit_build(&team, &env, &spec("numpy"), None)
                .await
                .unwrap();
            assert_eq!(
                db.current_lock(&team, &env).await.unwrap(),
                Some(CurrentLock {
                    current_build_id: None,
                    lock_hash: None
                }),
                "an environment without a finished build has no lock"
            );

            let first = build_with_lock(&db, "team", &lock).await;
            assert_eq!(
                db.current_lock(&team, &env).await.unwrap(),
                Some(CurrentLock {
                    current_build_id: Some(first),
                    lock_hash: Some(hex.clone())
                })
            );
            assert!(
                db.known_namespaces_with_lock(&hex).is_empty(),
                "not known until the database is asked"
            );
            assert_eq!(
                db.namespaces_with_lock(&hex).await.unwrap(),
                vec!["team".to_owned()]
            );
            assert_eq!(db.known_namespaces_with_lock(&hex), vec!["team".to_owned()]);
            assert_eq!(
                db.lock_platforms(&hex).await.unwrap(),
                Some(vec!["linux-64".to_owned()])
            );

            // Another namespace builds the same lock: the known list lags until
            // the database is asked again, and never loses a namespace.
            build_with_lock(&db, "other", &lock).await;
            assert_eq!(db.known_namespaces_with_lock(&hex), vec!["team".to_owned()]);
            let mut fresh = db.namespaces_with_lock(&hex).await.unwrap();
            fresh.sort();
            assert_eq!(fresh, vec!["other".to_owned(), "team".to_owned()]);
            let mut known = db.known_namespaces_with_lock(&hex);
            known.sort();
            assert_eq!(known, fresh);
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn a_build_keeps_the_text_it_was_submitted_with() {
        for db in databases().await {
            let team: NamespaceName = "team".parse().unwrap();
            let env: EnvironmentName = "env".parse().unwrap();
            db.create_namespace(&team).await.unwrap();
            let written = SubmittedSpec {
                text: "# ours\ndependencies:\n  - python   # any\n".to_owned(),
                format: SpecFormat::Yaml,
            };
            let submit = |text: Option<SubmittedSpec>| {
                let (db, team, env) = (db.clone(), team.clone(), env.clone());
                async move {
                    let submission = db
                        .submit_build_once(
                            &team,
                            &env,
                            (&spec("python"), text.as_ref()),
                            None,
                            None,
                            |_| (0, String::new()),
                        )
                        .await
                        .unwrap();
                    let Submission::Submitted(submitted) = submission else {
                        panic!("no key, no replay")
                    };
                    *submitted
                }
            };
            let first = submit(Some(written.clone())).await;
            assert_eq!(
                db.submitted_spec(&first.build.id).await.unwrap(),
                Some(Some(written.clone()))
            );

            // The same spec written otherwise joins the build under way,
            // which keeps the first text.
            let joined = submit(Some(SubmittedSpec {
                text: "{\"dependencies\": [\"python\"]}".to_owned(),
                format: SpecFormat::Json,
            }))
            .await;
            assert!(joined.joined);
            assert_eq!(joined.build.id, first.build.id);
            assert_eq!(
                db.submitted_spec(&first.build.id).await.unwrap(),
                Some(Some(written))
            );

            // Without a text (a lockfile, or a build from before): none.
            let other = db
                .submit_build(&team, &"other".parse().unwrap(), &spec("numpy"), None)
                .await
                .unwrap();
            assert_eq!(
                db.submitted_spec(&other.build.id).await.unwrap(),
                Some(None)
            );
            assert_eq!(db.submitted_spec("no-such-build").await.unwrap(), None);
            db.finish().await;
        }
    }
}

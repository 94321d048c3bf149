//! Build submission shared by the routes that queue builds (a spec, a
//! lockfile, a rollback whose prefix was collected): the environment limit
//! and quotas, joining the same spec's build under way, the audit record,
//! and the Idempotency-Key glue (a kept answer replayed, a new one kept in
//! the build's transaction).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envstore_api_types::BuildQueued;
use envstore_core::{ContentHash, EnvironmentName, NamespaceName};
use envstore_db::{BuildRecord, IdempotencyKey, Submission, SubmittedBuild, SubmittedSpec};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::idempotency;
use crate::{ApiError, AppState};

/// The answer kept under `key`, sent again (or 422 when the key was used
/// for another request); None when the key is new. Checked before any
/// expensive work (solving, verifying a lock against its channels).
pub(crate) async fn replay_if_known(
    app: &AppState,
    key: Option<&IdempotencyKey>,
) -> Result<Option<Response>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    match app.db.idempotent_answer(&key.caller, &key.key).await? {
        Some(stored) => idempotency::replay(stored, key).map(Some),
        None => Ok(None),
    }
}

/// Queues a build of `canonical` for `namespace/name` (or joins the same
/// spec's build already under way) and answers 202 with the build; under
/// an idempotency key, the key's first answer when it was used already.
/// `spec` is the canonical spec and the text it was submitted as, if any,
/// kept with a new build.
pub(crate) async fn queue_build(
    app: &AppState,
    caller: &Caller,
    namespace: &NamespaceName,
    name: &EnvironmentName,
    policy: &envstore_core::Policy,
    spec: (&envstore_core::CanonicalSpec, Option<&SubmittedSpec>),
    key: Option<&IdempotencyKey>,
) -> Result<Response, ApiError> {
    let answer = |summary: &BuildQueued| (StatusCode::ACCEPTED, to_value(summary));
    let queued = match queue(app, caller, namespace, name, policy, spec, key, answer).await? {
        Queued::New(queued) => queued,
        Queued::Replayed(stored, key) => return idempotency::replay(stored, &key),
    };
    let location = HeaderValue::from_str(&queued.url).ok();
    let mut response = (StatusCode::ACCEPTED, Json(queued)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A body as JSON, to be kept as the answer of an idempotency key.
pub(crate) fn to_value(body: &impl serde::Serialize) -> Value {
    serde_json::to_value(body).unwrap_or_default()
}

/// What [`queue`] came to.
pub(crate) enum Queued {
    /// The build's summary (queued now, or joined).
    New(BuildQueued),
    /// The idempotency key was used already: its kept answer.
    Replayed(envstore_db::StoredAnswer, IdempotencyKey),
}

/// What [`queue_build`] does, with the build's summary (its id, status,
/// spec hash, whether it joined one under way, and its URL).
/// `answer` makes the HTTP answer from the summary, kept under `key` in the
/// build's transaction.
#[allow(clippy::too_many_arguments)]
async fn queue(
    app: &AppState,
    caller: &Caller,
    namespace: &NamespaceName,
    name: &EnvironmentName,
    policy: &envstore_core::Policy,
    (canonical, submitted): (&envstore_core::CanonicalSpec, Option<&SubmittedSpec>),
    key: Option<&IdempotencyKey>,
    answer: impl FnOnce(&BuildQueued) -> (StatusCode, Value),
) -> Result<Queued, ApiError> {
    if let Some(max) = policy.max_environments
        && app.db.environment(namespace, name).await?.is_none()
        && app.db.count_environments(namespace).await? >= i64::try_from(max).unwrap_or(i64::MAX)
    {
        return Err(envstore_core::PolicyError::Violated {
            rule: "max_environments",
            message: format!("namespace '{namespace}' already holds {max} environments, its limit"),
        }
        .into());
    }
    crate::quota::check_quota(app, namespace, name, canonical).await?;
    let summary = |submitted: &SubmittedBuild| {
        let build = &submitted.build;
        BuildQueued {
            build_id: build.id.clone(),
            status: build.status,
            spec_hash: build.spec_hash.clone(),
            joined: submitted.joined,
            url: format!("/api/v1/builds/{}", build.id),
        }
    };
    let keep = |submitted: &SubmittedBuild| {
        let (status, body) = answer(&summary(submitted));
        (status.as_u16(), body.to_string())
    };
    let submitted = match app
        .db
        .submit_build_once(
            namespace,
            name,
            (canonical, submitted),
            caller.subject.as_deref(),
            key,
            keep,
        )
        .await?
    {
        Submission::Submitted(submitted) => *submitted,
        Submission::Replayed(stored) => {
            let key = key
                .cloned()
                .ok_or_else(|| ApiError::Conflict("a kept answer without a key".to_owned()))?;
            return Ok(Queued::Replayed(stored, key));
        }
    };
    if !submitted.joined {
        app.events.submitted();
    }
    let build = &submitted.build;
    app.audit(
        caller,
        "environment.submit",
        &format!("{namespace}/{name}"),
        json!({ "build_id": build.id, "spec_hash": build.spec_hash, "joined": submitted.joined, "from_lock": canonical.from_lock }),
    )
    .await?;
    tracing::info!(namespace = %namespace, environment = %name, build = %build.id, joined = submitted.joined, by = caller.subject.as_deref(), "build submitted");
    Ok(Queued::New(summary(&submitted)))
}

/// Queues a build that installs `build`'s lock again, with its variables.
pub(crate) async fn rebuild_from_lock(
    app: &AppState,
    caller: &Caller,
    namespace: &NamespaceName,
    name: &EnvironmentName,
    build: &BuildRecord,
    key: Option<&IdempotencyKey>,
    answer: impl FnOnce(&BuildQueued) -> (StatusCode, Value),
) -> Result<Queued, ApiError> {
    let missing = || {
        ApiError::Conflict(format!(
            "build '{}' has no lock to rebuild its prefix from",
            build.id
        ))
    };
    let lock_hash: ContentHash = build
        .lock_hash
        .as_deref()
        .and_then(|hash| hash.parse().ok())
        .ok_or_else(missing)?;
    let lock = app
        .db
        .lock(&lock_hash.to_hex())
        .await?
        .ok_or_else(missing)?;
    let spec = app.db.spec(&build.spec_hash).await?.ok_or_else(missing)?;
    let canonical = envstore_core::CanonicalSpec::from_lock(
        lock_hash,
        spec.channels,
        lock.platforms,
        lock.variables,
    );
    let policy = app
        .default_policy
        .tightened_by(&app.db.namespace_policy(namespace).await?);
    queue(
        app,
        caller,
        namespace,
        name,
        &policy,
        (&canonical, None),
        key,
        answer,
    )
    .await
}

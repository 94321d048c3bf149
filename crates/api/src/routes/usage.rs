//! What namespaces use (disk, builds, downloads, and what that costs when
//! the server has prices), and the quotas that bound it: set per namespace
//! by server admins, defaulted by the server's flags, enforced when a build
//! is submitted.

use std::fmt;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytesize::ByteSize;
use envstore_core::{CanonicalSpec, EnvironmentName, NamespaceName, Role};
use envstore_db::{NamespaceUsage, Quota, SharedPrefix, UsageFigures, UsageReport};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::routes::namespaces::{authorized_namespace, parse_json};
use crate::{ApiError, AppState};

/// Prices and the default quota, from the server's flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageSettings {
    /// Price of one GiB of prefixes kept for a month; None: no disk cost.
    pub price_per_gib_month: Option<f64>,
    /// Price of one minute of building; None: no build cost.
    pub price_per_build_minute: Option<f64>,
    /// The limits of namespaces that set none of their own.
    pub default_quota: Quota,
}

const BYTES_PER_GIB: f64 = (1u64 << 30) as f64;
const MILLIS_PER_MINUTE: f64 = 60_000.0;

/// How long a client refused for concurrent builds is asked to wait when
/// the namespace has no finished build to go by, and the bounds of the
/// estimate when it has.
const DEFAULT_RETRY_AFTER_SECONDS: u64 = 30;
const RETRY_AFTER_SECONDS: std::ops::RangeInclusive<u64> = 5..=600;

/// The figures of one row of `GET /api/v1/usage`: flat columns a UI shows
/// as they are. Clients (the CLI, the web UI) read the answer with it too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    pub disk_bytes: i64,
    /// The part of `disk_bytes` in prefixes other namespaces hold too.
    pub shared_disk_bytes: i64,
    pub prefixes: i64,
    pub builds_succeeded: i64,
    pub builds_failed: i64,
    pub builds_cancelled: i64,
    pub builds_queued: i64,
    pub builds_running: i64,
    pub build_millis: i64,
    pub build_minutes: f64,
    pub lockfile_downloads: i64,
    pub artifact_downloads: i64,
    /// The disk's price for a month, at its current size.
    pub cost_disk_per_month: Option<f64>,
    /// The price of the build minutes so far.
    pub cost_builds: Option<f64>,
}

impl Figures {
    /// Builds of every status.
    pub fn builds(&self) -> i64 {
        self.builds_succeeded
            + self.builds_failed
            + self.builds_cancelled
            + self.builds_queued
            + self.builds_running
    }

    /// Builds that count against the concurrent-builds quota.
    pub fn active_builds(&self) -> i64 {
        self.builds_queued + self.builds_running
    }

    fn new(settings: &UsageSettings, figures: &UsageFigures) -> Self {
        let build_minutes = figures.build_millis as f64 / MILLIS_PER_MINUTE;
        Self {
            disk_bytes: figures.disk_bytes,
            shared_disk_bytes: figures.shared_disk_bytes,
            prefixes: figures.prefixes,
            builds_succeeded: figures.builds.succeeded,
            builds_failed: figures.builds.failed,
            builds_cancelled: figures.builds.cancelled,
            builds_queued: figures.builds.queued,
            builds_running: figures.builds.running,
            build_millis: figures.build_millis,
            build_minutes,
            lockfile_downloads: figures.lockfile_downloads,
            artifact_downloads: figures.artifact_downloads,
            cost_disk_per_month: settings
                .price_per_gib_month
                .map(|price| figures.disk_bytes as f64 / BYTES_PER_GIB * price),
            cost_builds: settings
                .price_per_build_minute
                .map(|price| build_minutes * price),
        }
    }
}

/// One namespace's row: its figures, its effective limits, and the prefixes
/// it shares as detail.
#[derive(Debug, Serialize)]
struct NamespaceRow<'a> {
    namespace: &'a str,
    #[serde(flatten)]
    figures: Figures,
    shared_prefixes: usize,
    /// None: no limit.
    max_disk_bytes: Option<i64>,
    max_concurrent_builds: Option<i64>,
    shared: &'a [SharedPrefix],
}

impl<'a> NamespaceRow<'a> {
    fn new(settings: &UsageSettings, usage: &'a NamespaceUsage) -> Self {
        let quota = usage.quota.or(settings.default_quota);
        Self {
            namespace: &usage.namespace,
            figures: Figures::new(settings, &usage.figures),
            shared_prefixes: usage.shared.len(),
            max_disk_bytes: quota.max_disk_bytes,
            max_concurrent_builds: quota.max_concurrent_builds,
            shared: &usage.shared,
        }
    }
}

/// A usage table: one row per namespace and a row of totals, in which each
/// prefix and each lock counts once.
fn usage_table(settings: &UsageSettings, report: &UsageReport) -> Value {
    let rows: Vec<NamespaceRow<'_>> = report
        .namespaces
        .iter()
        .map(|usage| NamespaceRow::new(settings, usage))
        .collect();
    json!({
        "namespaces": rows,
        "totals": Figures::new(settings, &report.totals),
        "prices": {
            "per_gib_month": settings.price_per_gib_month,
            "per_build_minute": settings.price_per_build_minute,
        },
    })
}

/// Usage of every namespace the caller may view (server admins: all), with
/// totals over them. This process's uncounted downloads are flushed first,
/// so its own requests are in the figures; other API processes' arrive
/// with their next periodic flush.
#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "usage",
    responses(
        (status = 200, description = "Usage of every namespace the caller may view, with totals.", body = serde_json::Value)
    ),
    security((), ("bearer" = []))
)]
pub async fn list_usage(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    app.db.flush_downloads().await?;
    let report = app
        .db
        .usage_report(|name, public_read| caller.grants.role_in(name, public_read).is_some())
        .await?;
    Ok(Json(usage_table(&app.usage, &report)))
}

/// One namespace's usage, as a table of one row.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/usage",
    tag = "usage",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "The namespace's usage as a table of one row.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_namespace_usage(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    app.db.flush_downloads().await?;
    let report = app
        .db
        .usage_report(|name, _| name == namespace.as_str())
        .await?;
    Ok(Json(usage_table(&app.usage, &report)))
}

fn quota_view(app: &AppState, namespace: &NamespaceName, own: Quota) -> Value {
    json!({
        "namespace": namespace,
        "quota": own,
        "default": app.usage.default_quota,
        "effective": own.or(app.usage.default_quota),
    })
}

/// A namespace's own quota, the server's default, and the limits in effect.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/quota",
    tag = "usage",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "The namespace's quota, the server's default and the limits in effect.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_quota(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let own = app.db.namespace_quota(&namespace).await?;
    Ok(Json(quota_view(&app, &namespace, own)))
}

/// Server admins set a namespace's quota; a limit left out (or null) falls
/// back to the server's default.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{namespace}/quota",
    tag = "usage",
    params(crate::openapi::NamespacePath),
    request_body(content = serde_json::Value, content_type = "application/json", description = "`{\"max_disk_bytes\": …, \"max_concurrent_builds\": …}`; null: the server's default."),
    responses(
        (status = 200, description = "Quota set.", body = serde_json::Value),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn set_quota(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require_server_admin()?;
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let quota: Quota = parse_json(
        &body,
        "{\"max_disk_bytes\": 53687091200, \"max_concurrent_builds\": 4}",
    )?;
    if quota.max_disk_bytes.is_some_and(|bytes| bytes < 0) {
        return Err(ApiError::BadRequest(
            "max_disk_bytes cannot be negative".to_owned(),
        ));
    }
    if quota.max_concurrent_builds.is_some_and(|builds| builds < 1) {
        return Err(ApiError::BadRequest(
            "max_concurrent_builds must be at least 1 (null: the server's default)".to_owned(),
        ));
    }
    app.db.set_namespace_quota(&namespace, &quota).await?;
    app.audit(
        &caller,
        "quota.set",
        namespace.as_str(),
        serde_json::to_value(quota).unwrap_or_default(),
    )
    .await?;
    tracing::info!(namespace = %namespace, ?quota, by = caller.subject.as_deref(), "quota set");
    Ok(Json(quota_view(&app, &namespace, quota)))
}

/// A submission refused because its namespace is at a limit.
#[derive(Debug)]
pub enum QuotaExceeded {
    ConcurrentBuilds {
        namespace: String,
        active: i64,
        limit: i64,
        retry_after_seconds: u64,
    },
    Disk {
        namespace: String,
        used: i64,
        limit: i64,
    },
}

impl QuotaExceeded {
    /// 429 for builds: the condition clears by itself as builds end, which
    /// is what 429 and `Retry-After` tell a client. 403 for disk: only the
    /// namespace's owners (deleting environments) or a server admin (raising
    /// the quota) can clear it, so retrying is pointless; 507 would call it
    /// a server fault that clients and monitoring retry and alert on.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::ConcurrentBuilds { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Disk { .. } => StatusCode::FORBIDDEN,
        }
    }

    pub(crate) fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::ConcurrentBuilds {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            Self::Disk { .. } => None,
        }
    }

    /// The quota's name, the figure and the limit, for clients to show.
    pub(crate) fn extensions(&self) -> Map<String, Value> {
        let (quota, used, limit) = match self {
            Self::ConcurrentBuilds { active, limit, .. } => {
                ("max_concurrent_builds", active, limit)
            }
            Self::Disk { used, limit, .. } => ("max_disk_bytes", used, limit),
        };
        let mut extensions = Map::new();
        extensions.insert("quota".into(), json!(quota));
        extensions.insert("used".into(), json!(used));
        extensions.insert("limit".into(), json!(limit));
        extensions
    }
}

fn human(bytes: i64) -> ByteSize {
    ByteSize::b(u64::try_from(bytes).unwrap_or(0))
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConcurrentBuilds {
                namespace,
                active,
                limit,
                retry_after_seconds,
            } => write!(
                f,
                "namespace '{namespace}' has {active} builds queued or running and its limit is {limit}: \
                 submit again when one has ended (in about {retry_after_seconds} s), cancel one \
                 (POST /api/v1/builds/{{id}}/cancel), or ask a server admin to raise the quota"
            ),
            Self::Disk {
                namespace,
                used,
                limit,
            } => write!(
                f,
                "namespace '{namespace}' uses {} of disk ({used} bytes) and its limit is {} ({limit} bytes): \
                 delete environments it no longer needs (their prefixes are freed when collected) or ask a \
                 server admin to raise the quota; a spec whose prefix already exists is still accepted, \
                 since it takes no more disk",
                human(*used),
                human(*limit)
            ),
        }
    }
}

impl std::error::Error for QuotaExceeded {}

/// Refuses a submission that would take its namespace over a quota:
/// - builds: when as many as the limit are queued or running (cancelled,
///   failed and stopping builds do not count);
/// - disk: when the namespace's prefixes already reach the limit and the
///   spec needs a new prefix. A spec expected to reuse a prefix on disk
///   (the same spec built before, or a lock installed as is) adds nothing
///   and is accepted; the size of a new prefix is unknown until it is built,
///   so a namespace under its limit may end up above it.
///
/// A submission that joins the same spec's build already under way adds
/// nothing either and is always accepted. The check and the insertion are
/// not one transaction: submissions racing each other may pass a limit by
/// the number that raced.
pub(crate) async fn check_quota(
    app: &AppState,
    namespace: &NamespaceName,
    environment: &EnvironmentName,
    spec: &CanonicalSpec,
) -> Result<(), ApiError> {
    let quota = app
        .db
        .namespace_quota(namespace)
        .await?
        .or(app.usage.default_quota);
    if quota == Quota::default() {
        return Ok(());
    }
    let spec_hash = spec.hash();
    if app
        .db
        .joins_active_build(namespace, environment, &spec_hash)
        .await?
    {
        return Ok(());
    }
    if let Some(limit) = quota.max_concurrent_builds {
        let active = app.db.active_builds(namespace).await?;
        if active >= limit {
            let typical = app.db.typical_build_millis(namespace).await?;
            return Err(QuotaExceeded::ConcurrentBuilds {
                namespace: namespace.to_string(),
                active,
                limit,
                retry_after_seconds: retry_after_seconds(typical),
            }
            .into());
        }
    }
    if let Some(limit) = quota.max_disk_bytes {
        let used = app.db.namespace_disk_bytes(namespace).await?;
        if used >= limit
            && !app
                .db
                .prefix_reusable(&spec_hash, spec.from_lock.as_ref())
                .await?
        {
            return Err(QuotaExceeded::Disk {
                namespace: namespace.to_string(),
                used,
                limit,
            }
            .into());
        }
    }
    Ok(())
}

/// How long until a build slot is likely free: the namespace's typical
/// build time, within bounds.
fn retry_after_seconds(typical_build_millis: Option<i64>) -> u64 {
    match typical_build_millis {
        Some(millis) => u64::try_from(millis)
            .unwrap_or(0)
            .div_ceil(1000)
            .clamp(*RETRY_AFTER_SECONDS.start(), *RETRY_AFTER_SECONDS.end()),
        None => DEFAULT_RETRY_AFTER_SECONDS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_follows_the_typical_build_within_bounds() {
        assert_eq!(retry_after_seconds(None), DEFAULT_RETRY_AFTER_SECONDS);
        assert_eq!(retry_after_seconds(Some(42_100)), 43);
        assert_eq!(retry_after_seconds(Some(20)), 5);
        assert_eq!(retry_after_seconds(Some(3_600_000)), 600);
    }

    #[test]
    fn costs_follow_the_prices_and_are_absent_without_them() {
        let used = UsageFigures {
            disk_bytes: 3 << 30,
            prefixes: 1,
            build_millis: 90_000,
            ..UsageFigures::default()
        };
        let priced = UsageSettings {
            price_per_gib_month: Some(0.5),
            price_per_build_minute: Some(0.25),
            default_quota: Quota::default(),
        };
        let figures = Figures::new(&priced, &used);
        assert_eq!(figures.build_minutes, 1.5);
        assert_eq!(figures.cost_disk_per_month, Some(1.5));
        assert_eq!(figures.cost_builds, Some(0.375));
        let free = Figures::new(&UsageSettings::default(), &used);
        assert_eq!((free.cost_disk_per_month, free.cost_builds), (None, None));
    }

    #[test]
    fn a_disk_refusal_names_the_figure_the_limit_and_what_to_do() {
        let refusal = QuotaExceeded::Disk {
            namespace: "team".to_owned(),
            used: 3 << 30,
            limit: 2 << 30,
        };
        let detail = refusal.to_string();
        assert!(
            detail.contains("3.0 GiB") && detail.contains("2.0 GiB"),
            "{detail}"
        );
        assert!(detail.contains("delete environments"), "{detail}");
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        assert_eq!(refusal.retry_after_seconds(), None);
        assert_eq!(refusal.extensions()["quota"], "max_disk_bytes");
    }
}

//! What namespaces use (disk, builds, downloads, and what that costs when
//! the server has prices, in its currency), over all time or a period
//! (`?since=&until=`), and the quotas that bound it: set per namespace by
//! server admins, defaulted by the server's flags, enforced when a build is
//! submitted.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use envstore_api_types::problem::ProblemItem;
use envstore_api_types::usage::UsagePeriod;
use envstore_api_types::{
    NamespaceUsage, PROBLEM_CONTENT_TYPE, Prices, Problem, Quota, QuotaView, SharedPrefix,
    UsageTable,
};
use envstore_core::usage::{Currency, MONTH_MILLIS, Period, PeriodError};
use envstore_core::{NamespaceName, Role};
use envstore_db::{self as db, UsageReport};

use crate::auth::{Caller, authorized_namespace};
use crate::extract::{JsonBody, JsonExample};
use crate::{ApiError, AppState};

/// Prices and the default quota, from the server's flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageSettings {
    /// Price of one GiB of prefixes kept for a month; None: no disk cost.
    pub price_per_gib_month: Option<f64>,
    /// Price of one minute of building; None: no build cost.
    pub price_per_build_minute: Option<f64>,
    /// The currency of those prices, shown with every cost; None: none
    /// named.
    pub currency: Option<Currency>,
    /// The limits of namespaces that set none of their own.
    pub default_quota: db::Quota,
}

const BYTES_PER_GIB: f64 = (1u64 << 30) as f64;
const MILLIS_PER_MINUTE: f64 = 60_000.0;

/// `?since=&until=` of the usage routes.
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read from the raw query; here for the OpenAPI document
pub struct PeriodQuery {
    /// Start of the period (included): an RFC 3339 time
    /// (`2026-11-01T00:00:00Z`) or a date (`2026-11-01`, its start in UTC).
    /// Default: the beginning.
    since: Option<String>,
    /// End of the period (excluded), in the same forms. Default: now.
    until: Option<String>,
}

/// A usage answer, or why its period was refused.
pub enum UsageError {
    Api(ApiError),
    /// Every problem of `since` and `until`, in one problem+json answer.
    Period(Vec<PeriodError>),
}

impl From<ApiError> for UsageError {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<db::DbError> for UsageError {
    fn from(error: db::DbError) -> Self {
        Self::Api(error.into())
    }
}

impl IntoResponse for UsageError {
    fn into_response(self) -> Response {
        let problems = match self {
            Self::Api(error) => return error.into_response(),
            Self::Period(problems) => problems,
        };
        let kind = "/problems/invalid-period".to_owned();
        let problem = Problem {
            kind: kind.clone(),
            title: "Bad Request".to_owned(),
            status: StatusCode::BAD_REQUEST.as_u16(),
            detail: problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            errors: problems
                .iter()
                .map(|problem| ProblemItem {
                    kind: kind.clone(),
                    detail: problem.to_string(),
                    ..ProblemItem::default()
                })
                .collect(),
            ..Problem::default()
        };
        let body = serde_json::to_string(&problem).unwrap_or_default();
        let mut response = (StatusCode::BAD_REQUEST, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        response
    }
}

/// The period a raw query asks for: `since` and `until`, each at most
/// once; other parameters are ignored.
fn period(query: Option<&str>) -> Result<Period, UsageError> {
    let (mut since, mut until) = (None, None);
    let mut problems = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let (parameter, slot) = match name.as_ref() {
            "since" => ("since", &mut since),
            "until" => ("until", &mut until),
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            problems.push(PeriodError::Repeated { parameter });
        }
    }
    match Period::parse(since.as_deref(), until.as_deref()) {
        Ok(period) if problems.is_empty() => Ok(period),
        Ok(_) => Err(UsageError::Period(problems)),
        Err(more) => {
            problems.extend(more);
            Err(UsageError::Period(problems))
        }
    }
}

/// The figures of one row of `GET /api/v1/usage`, as clients read them.
pub use envstore_api_types::UsageFigures as Figures;

/// A row's figures from what the database measured, with their costs at
/// the server's prices.
fn figures(settings: &UsageSettings, figures: &db::UsageFigures) -> Figures {
    let build_minutes = figures.build_millis as f64 / MILLIS_PER_MINUTE;
    let disk_gib_months = figures.disk_byte_millis as f64 / BYTES_PER_GIB / MONTH_MILLIS as f64;
    let cost_disk = settings
        .price_per_gib_month
        .map(|price| disk_gib_months * price);
    let cost_builds = settings
        .price_per_build_minute
        .map(|price| build_minutes * price);
    let cost = match (cost_disk, cost_builds) {
        (None, None) => None,
        (disk, builds) => Some(disk.unwrap_or(0.0) + builds.unwrap_or(0.0)),
    };
    Figures {
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
        cost_builds,
        disk_gib_months,
        cost_disk,
        cost,
    }
}

/// One namespace's row: its figures, its effective limits, and the prefixes
/// it shares as detail.
fn namespace_row(settings: &UsageSettings, usage: &db::NamespaceUsage) -> NamespaceUsage {
    let quota = usage.quota.or(settings.default_quota);
    NamespaceUsage {
        namespace: usage.namespace.clone(),
        figures: figures(settings, &usage.figures),
        shared_prefixes: usage.shared.len(),
        max_disk_bytes: quota.max_disk_bytes,
        max_concurrent_builds: quota.max_concurrent_builds,
        shared: usage
            .shared
            .iter()
            .map(|shared| SharedPrefix {
                lock_hash: shared.lock_hash.clone(),
                bytes: shared.bytes,
                other_namespaces: shared.other_namespaces,
            })
            .collect(),
    }
}

/// A usage table: one row per namespace and a row of totals, in which each
/// prefix and each lock counts once.
fn usage_table(settings: &UsageSettings, report: &UsageReport) -> UsageTable {
    UsageTable {
        namespaces: report
            .namespaces
            .iter()
            .map(|usage| namespace_row(settings, usage))
            .collect(),
        totals: figures(settings, &report.totals),
        prices: Prices {
            per_gib_month: settings.price_per_gib_month,
            per_build_minute: settings.price_per_build_minute,
        },
        currency: settings.currency.map(|currency| currency.to_string()),
        period: UsagePeriod {
            since: report.period.since,
            until: report.period.until,
            counted_since: report.counted_since,
        },
    }
}

/// Usage of every namespace the caller may view (server admins: all), with
/// totals over them, over all time or `?since=&until=`. This process's
/// uncounted downloads are flushed first, so its own requests are in the
/// figures; other API processes' arrive with their next periodic flush.
#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "usage",
    params(PeriodQuery),
    responses(
        (status = 200, description = "Usage of every namespace the caller may view, with totals.", body = UsageTable),
        (status = 400, description = "`since` or `until` is not a time, or the period is empty: every problem in `errors`.", body = Problem, content_type = "application/problem+json")
    ),
    security((), ("bearer" = []))
)]
pub async fn list_usage(
    State(app): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageTable>, UsageError> {
    let period = period(query.as_deref())?;
    app.db.flush_downloads().await?;
    let report = app
        .db
        .usage_report_for(period, |name, public_read| {
            caller.grants.role_in(name, public_read).is_some()
        })
        .await?;
    Ok(Json(usage_table(&app.usage, &report)))
}

/// One namespace's usage, as a table of one row, over all time or
/// `?since=&until=`.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/usage",
    tag = "usage",
    params(crate::openapi::NamespacePath, PeriodQuery),
    responses(
        (status = 200, description = "The namespace's usage as a table of one row.", body = UsageTable),
        (status = 400, description = "`since` or `until` is not a time, or the period is empty: every problem in `errors`.", body = Problem, content_type = "application/problem+json"),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_namespace_usage(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageTable>, UsageError> {
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Viewer).await?;
    let period = period(query.as_deref())?;
    app.db.flush_downloads().await?;
    let report = app
        .db
        .usage_report_for(period, |name, _| name == namespace.as_str())
        .await?;
    Ok(Json(usage_table(&app.usage, &report)))
}

impl JsonExample for Quota {
    const EXAMPLE: &'static str = "{\"max_disk_bytes\": 53687091200, \"max_concurrent_builds\": 4}";
}

/// A quota as the database keeps it.
fn kept(quota: Quota) -> db::Quota {
    db::Quota {
        max_disk_bytes: quota.max_disk_bytes,
        max_concurrent_builds: quota.max_concurrent_builds,
    }
}

/// A quota as the API shows it.
fn shown(quota: db::Quota) -> Quota {
    Quota {
        max_disk_bytes: quota.max_disk_bytes,
        max_concurrent_builds: quota.max_concurrent_builds,
    }
}

fn quota_view(app: &AppState, namespace: &NamespaceName, own: db::Quota) -> QuotaView {
    QuotaView {
        namespace: namespace.to_string(),
        quota: shown(own),
        default: shown(app.usage.default_quota),
        effective: shown(own.or(app.usage.default_quota)),
    }
}

/// A namespace's own quota, the server's default, and the limits in effect.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{namespace}/quota",
    tag = "usage",
    params(crate::openapi::NamespacePath),
    responses(
        (status = 200, description = "The namespace's quota, the server's default and the limits in effect.", body = QuotaView),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn get_quota(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Json<QuotaView>, ApiError> {
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
    request_body(content = Quota, content_type = "application/json", description = "`{\"max_disk_bytes\": …, \"max_concurrent_builds\": …}`; null: the server's default."),
    responses(
        (status = 200, description = "Quota set.", body = QuotaView),
        crate::openapi::InNamespace
    ),
    security(("bearer" = []))
)]
pub async fn set_quota(
    State(app): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    body: JsonBody<Quota>,
) -> Result<Json<QuotaView>, ApiError> {
    caller.require_server_admin()?;
    let namespace = authorized_namespace(&app, &caller, &namespace, Role::Admin).await?;
    let quota = kept(body.parse()?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_prices_and_are_absent_without_them() {
        let used = db::UsageFigures {
            disk_bytes: 3 << 30,
            prefixes: 1,
            build_millis: 90_000,
            ..db::UsageFigures::default()
        };
        let priced = UsageSettings {
            price_per_gib_month: Some(0.5),
            price_per_build_minute: Some(0.25),
            currency: None,
            default_quota: db::Quota::default(),
        };
        let figures = figures(&priced, &used);
        assert_eq!(figures.build_minutes, 1.5);
        assert_eq!(figures.cost_disk_per_month, Some(1.5));
        assert_eq!(figures.cost_builds, Some(0.375));
        let free = super::figures(&UsageSettings::default(), &used);
        assert_eq!((free.cost_disk_per_month, free.cost_builds), (None, None));
        assert_eq!((free.cost_disk, free.cost), (None, None));
    }

    #[test]
    fn disk_held_is_priced_by_the_gib_month() {
        let held = db::UsageFigures {
            // 4 GiB for half a month.
            disk_byte_millis: i128::from(4i64 << 30) * i128::from(MONTH_MILLIS / 2),
            build_millis: 60_000,
            ..db::UsageFigures::default()
        };
        let settings = UsageSettings {
            price_per_gib_month: Some(0.5),
            price_per_build_minute: None,
            ..UsageSettings::default()
        };
        let figures = figures(&settings, &held);
        assert!((figures.disk_gib_months - 2.0).abs() < 1e-12);
        assert_eq!(figures.cost_disk, Some(1.0));
        assert_eq!((figures.cost_builds, figures.cost), (None, Some(1.0)));
    }

    #[test]
    fn a_period_query_names_every_problem_at_once() {
        assert_eq!(period(None).ok(), Some(Period::default()));
        assert_eq!(period(Some("since=&other=1")).ok(), Some(Period::default()));
        let ok = period(Some("since=2026-11-01&until=2026-12-01T00%3A00%3A00Z")).ok();
        assert_eq!(
            ok.map(|period| period.until.unwrap_or_default() - period.since.unwrap_or_default()),
            Some(30 * envstore_core::usage::DAY_MILLIS)
        );
        let Err(UsageError::Period(problems)) = period(Some("since=soon&until=later")) else {
            panic!("refused");
        };
        assert_eq!(problems.len(), 2);
        let Err(UsageError::Period(problems)) = period(Some("since=2026-11-01&since=2026-11-02"))
        else {
            panic!("refused");
        };
        assert!(problems[0].to_string().contains("more than once"));
        let response = period(Some("since=2026-12-01&until=2026-11-01"))
            .err()
            .map(IntoResponse::into_response)
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
    }
}

//! Namespace quotas, enforced when a build is submitted: concurrent builds
//! (429 with `Retry-After`) and disk (403). Set and shown by the usage
//! routes; checked by [`crate::submission`].

use std::fmt;

use axum::http::StatusCode;
use bytesize::ByteSize;
use envstore_api_types::Problem;
use envstore_core::{CanonicalSpec, EnvironmentName, NamespaceName};
use envstore_db::Quota;

use crate::{ApiError, AppState};

/// How long a client refused for concurrent builds is asked to wait when
/// the namespace has no finished build to go by, and the bounds of the
/// estimate when it has.
const DEFAULT_RETRY_AFTER_SECONDS: u64 = 30;
const RETRY_AFTER_SECONDS: std::ops::RangeInclusive<u64> = 5..=600;

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
    pub(crate) fn point_at(&self, problem: &mut Problem) {
        let (quota, used, limit) = match self {
            Self::ConcurrentBuilds { active, limit, .. } => {
                ("max_concurrent_builds", *active, *limit)
            }
            Self::Disk { used, limit, .. } => ("max_disk_bytes", *used, *limit),
        };
        problem.quota = Some(quota.to_owned());
        problem.used = Some(used);
        problem.limit = Some(limit);
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
        let mut problem = Problem::default();
        refusal.point_at(&mut problem);
        assert_eq!(problem.quota.as_deref(), Some("max_disk_bytes"));
        assert_eq!(
            (problem.used, problem.limit),
            (Some(3 << 30), Some(2 << 30))
        );
    }
}

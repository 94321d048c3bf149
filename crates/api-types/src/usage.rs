//! What namespaces use (disk, builds, downloads, and their cost when the
//! server has prices), and the quotas that bound it.

use serde::{Deserialize, Serialize};

/// The figures of one row of `GET /api/v1/usage`: flat columns a UI shows
/// as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageFigures {
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

impl UsageFigures {
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
}

/// A prefix a namespace holds together with others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SharedPrefix {
    pub lock_hash: String,
    pub bytes: i64,
    /// How many other namespaces hold it: only a count, since the caller may
    /// not be allowed to know their names.
    pub other_namespaces: i64,
}

/// One namespace's row: its figures, its effective limits, and the prefixes
/// it shares as detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceUsage {
    pub namespace: String,
    #[serde(flatten)]
    pub figures: UsageFigures,
    pub shared_prefixes: usize,
    /// The limits in effect (the namespace's own, else the server's
    /// default); null: no limit.
    pub max_disk_bytes: Option<i64>,
    pub max_concurrent_builds: Option<i64>,
    pub shared: Vec<SharedPrefix>,
}

/// The server's prices; null: that cost is not computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Prices {
    /// Price of one GiB of prefixes kept for a month.
    pub per_gib_month: Option<f64>,
    /// Price of one minute of building.
    pub per_build_minute: Option<f64>,
}

impl Prices {
    /// Whether any cost is computed.
    pub fn any(&self) -> bool {
        self.per_gib_month.is_some() || self.per_build_minute.is_some()
    }
}

/// A usage table: one row per namespace and a row of totals, in which each
/// prefix and each lock counts once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageTable {
    pub namespaces: Vec<NamespaceUsage>,
    pub totals: UsageFigures,
    pub prices: Prices,
}

/// Limits on what a namespace may use; null: no limit (in a namespace's
/// own quota: the server's default). Also the body of `PUT …/quota`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Disk its prefixes may take; once reached, specs that need a new
    /// prefix are refused.
    #[serde(default)]
    pub max_disk_bytes: Option<i64>,
    /// Builds queued or running at once.
    #[serde(default)]
    pub max_concurrent_builds: Option<i64>,
}

/// A namespace's own quota, the server's default, and the limits in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub namespace: String,
    pub quota: Quota,
    pub default: Quota,
    pub effective: Quota,
}

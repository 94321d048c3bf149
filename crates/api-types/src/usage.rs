//! What namespaces use (disk, builds, downloads, and their cost when the
//! server has prices), over all time or a period, and the quotas that bound
//! it.

use serde::{Deserialize, Serialize};

/// A time (milliseconds since the epoch) as RFC 3339 in UTC, as a usage
/// period's ends are shown.
pub use envstore_core::usage::format_time;

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
    /// Running time of the builds (in a period: the part inside it).
    pub build_millis: i64,
    pub build_minutes: f64,
    /// Lockfile downloads (in a period: on the days it touches).
    pub lockfile_downloads: i64,
    pub artifact_downloads: i64,
    /// The disk's price for a month, at its current size.
    pub cost_disk_per_month: Option<f64>,
    /// The price of the build minutes (in a period: those inside it).
    pub cost_builds: Option<f64>,
    /// Disk held over the period (all time without one), in GiB-months
    /// (2^30 bytes for 730 hours): each prefix's size times the part of its
    /// life inside the period.
    #[serde(default)]
    pub disk_gib_months: f64,
    /// The price of `disk_gib_months`.
    #[serde(default)]
    pub cost_disk: Option<f64>,
    /// `cost_disk` and `cost_builds` together, when the server has a price.
    #[serde(default)]
    pub cost: Option<f64>,
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
    /// The ISO 4217 code every cost is in (`EUR`); null: none set.
    #[serde(default)]
    pub currency: Option<String>,
    /// What builds, downloads, disk held and costs cover.
    #[serde(default)]
    pub period: UsagePeriod,
}

impl UsageTable {
    /// A cost as shown beside the figures: `12.50 EUR`, or `12.50`
    /// without a currency.
    pub fn money(&self, amount: f64) -> String {
        match &self.currency {
            Some(currency) => format!("{amount:.2} {currency}"),
            None => format!("{amount:.2}"),
        }
    }
}

/// The period of a usage table: `[since, until)`, in milliseconds since
/// the epoch; null ends reach back to the beginning and up to now (both
/// null: all time, with the all-time counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsagePeriod {
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Since when downloads are also counted per day. A period's downloads
    /// come from those daily counts, so one reaching back before this
    /// time misses the downloads made earlier (all time counts them).
    pub counted_since: Option<i64>,
}

impl UsagePeriod {
    /// The period in words: "all time", "2026-11-01T00:00:00Z to now".
    pub fn describe(&self) -> String {
        let end = |time: Option<i64>, open: &str| time.map_or_else(|| open.to_owned(), format_time);
        match (self.since, self.until) {
            (None, None) => "all time".to_owned(),
            (since, until) => format!("{} to {}", end(since, "the beginning"), end(until, "now")),
        }
    }

    /// Whether a period's downloads may miss some: it starts before daily
    /// counts began.
    pub fn misses_downloads(&self) -> bool {
        (self.since.is_some() || self.until.is_some())
            && self
                .counted_since
                .is_some_and(|counted| self.since.is_none_or(|since| since < counted))
    }
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

//! What each namespace uses, computed from facts the database reads, and
//! the quotas that bound it.
//!
//! - **Disk**: a prefix is measured once, when a node builds or materialises
//!   it, and recorded under its lock hash. A namespace's disk is the sum over
//!   the distinct prefixes its builds still hold (succeeded, neither deleted
//!   nor collected). A prefix held by several namespaces counts in full in
//!   each of them and is reported as shared; totals count it once.
//! - **Builds**: counts by status, and the running time (start to finish) of
//!   those that ran.
//! - **Downloads**: lockfile GETs are counted per namespace. By-hash
//!   artifact GETs name only a lock, which any number of namespaces may
//!   hold, so they are counted per lock and shown in every namespace holding
//!   it (once in totals), like shared prefixes.
//!
//! Over a [`Period`] (`since`/`until`, all time without them):
//!
//! - **Disk held**: each prefix a namespace's builds held, for the part of
//!   the time they held it inside the period ([`PrefixHold`]), in
//!   byte-milliseconds (a GiB-month is 2^30 bytes for 730 hours). A prefix
//!   two builds of a namespace hold at once counts once.
//! - **Builds**: those whose life (queued to finished, or to now) meets the
//!   period, and the part of their running time inside it.
//! - **Downloads**: counted per UTC day; a day the period touches counts in
//!   full.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::BuildStatus;

/// Milliseconds in a day: downloads are counted per UTC day.
pub const DAY_MILLIS: i64 = 86_400_000;

/// Milliseconds in the month a GiB-month is priced by: 730 hours, the
/// average month (8,760 hours a year over 12), as cloud providers bill.
pub const MONTH_MILLIS: i64 = 730 * 3_600_000;

/// The day (since 1970-01-01, UTC) a time falls on.
pub fn day_of(millis: i64) -> i64 {
    millis.div_euclid(DAY_MILLIS)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A fixed-width decimal field of `text`, or None.
fn digits(text: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let field = text.get(range)?;
    if field.bytes().all(|byte| byte.is_ascii_digit()) {
        field.parse().ok()
    } else {
        None
    }
}

/// Milliseconds since the epoch of an RFC 3339 time
/// (`2026-11-01T08:30:00Z`, `2026-11-01T08:30:00.250+01:00`) or of a date
/// (`2026-11-01`: its start, UTC). None for anything else.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let year = digits(text, 0..4)?;
    let month = digits(text, 5..7)?;
    let day = digits(text, 8..10)?;
    if text.get(4..5) != Some("-")
        || text.get(7..8) != Some("-")
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
    {
        return None;
    }
    let date = days_from_civil(year, month, day) * DAY_MILLIS;
    if text.len() == 10 {
        return Some(date);
    }
    if !matches!(text.get(10..11), Some("T" | "t" | " "))
        || text.get(13..14) != Some(":")
        || text.get(16..17) != Some(":")
    {
        return None;
    }
    let hour = digits(text, 11..13)?;
    let minute = digits(text, 14..16)?;
    // 60: a leap second, read as the last second of its minute.
    let second = digits(text, 17..19)?.min(59);
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let length = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if length == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..length.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[length..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.get(3..4) != Some(":") {
                return None;
            }
            let hours = digits(rest, 1..3)?;
            let minutes = digits(rest, 4..6)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
    };
    Some(date + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000 + millis)
}

/// A time as RFC 3339 in UTC: `2026-11-01T00:00:00Z`, with milliseconds
/// when it has any.
pub fn format_time(millis: i64) -> String {
    let (year, month, day) = civil_from_days(millis.div_euclid(DAY_MILLIS));
    let of_day = millis.rem_euclid(DAY_MILLIS);
    let (seconds, fraction) = (of_day / 1000, of_day % 1000);
    let time = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction == 0 {
        format!("{time}Z")
    } else {
        format!("{time}.{fraction:03}Z")
    }
}

/// What is wrong with a period's bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error(
        "{parameter} '{text}' is neither an RFC 3339 time (2026-11-01T00:00:00Z) nor a date (2026-11-01)"
    )]
    Unreadable {
        parameter: &'static str,
        text: String,
    },
    #[error("since ({since}) must be before until ({until})")]
    Empty { since: String, until: String },
    #[error("{parameter} is given more than once")]
    Repeated { parameter: &'static str },
}

impl PeriodError {
    /// The query parameter the problem is about.
    pub fn parameter(&self) -> &'static str {
        match self {
            Self::Unreadable { parameter, .. } | Self::Repeated { parameter } => parameter,
            Self::Empty { .. } => "until",
        }
    }
}

/// The longest bound echoed back in an error: the rest is cut.
const ECHOED_CHARS: usize = 64;

/// The time span a usage report covers, `[since, until)` in milliseconds
/// since the epoch; an open end reaches back to the beginning or up to now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Period {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Period {
    /// A period from its query parameters (blank ones are left out), with
    /// every problem found rather than the first.
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<Period, Vec<PeriodError>> {
        let mut problems = Vec::new();
        let mut bound = |parameter: &'static str, text: Option<&str>| {
            let text = text.map(str::trim).filter(|text| !text.is_empty())?;
            let parsed = parse_time(text);
            if parsed.is_none() {
                problems.push(PeriodError::Unreadable {
                    parameter,
                    text: text.chars().take(ECHOED_CHARS).collect(),
                });
            }
            parsed
        };
        let period = Period {
            since: bound("since", since),
            until: bound("until", until),
        };
        if let (Some(since), Some(until)) = (period.since, period.until)
            && since >= until
        {
            problems.push(PeriodError::Empty {
                since: format_time(since),
                until: format_time(until),
            });
        }
        if problems.is_empty() {
            Ok(period)
        } else {
            Err(problems)
        }
    }

    /// Whether the period is all time (no bound).
    pub fn is_all_time(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    fn start(&self) -> i64 {
        self.since.unwrap_or(i64::MIN)
    }

    fn end(&self) -> i64 {
        self.until.unwrap_or(i64::MAX)
    }

    /// Milliseconds of `[from, to)` inside the period.
    pub fn overlap(&self, from: i64, to: i64) -> i64 {
        let (from, to) = (from.max(self.start()), to.min(self.end()));
        to.saturating_sub(from).max(0)
    }

    /// Whether something that lived over `[from, to]` met the period: an
    /// instant on its start counts, one on its end does not.
    pub fn meets(&self, from: i64, to: i64) -> bool {
        from < self.end() && to >= self.start()
    }

    /// The first and last UTC day the period touches, for counts kept per
    /// day (unbounded ends as i64::MIN and i64::MAX).
    pub fn days(&self) -> (i64, i64) {
        (
            self.since.map_or(i64::MIN, day_of),
            self.until.map_or(i64::MAX, |until| day_of(until - 1)),
        )
    }

    /// The period up to `now` at most: what has already happened of it.
    fn until_now(self, now: i64) -> Period {
        Period {
            since: self.since,
            until: Some(self.until.map_or(now, |until| until.min(now))),
        }
    }
}

/// A currency code for costs (ISO 4217: three letters, `EUR`), kept in
/// upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a currency code: ISO 4217 codes are three letters, such as EUR or USD")]
pub struct CurrencyError(String);

impl Currency {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;

    fn from_str(text: &str) -> Result<Self, CurrencyError> {
        match text.trim().as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|byte| byte.is_ascii_alphabetic()) => Ok(Self([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
                c.to_ascii_uppercase(),
            ])),
            _ => Err(CurrencyError(text.chars().take(ECHOED_CHARS).collect())),
        }
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Limits on what a namespace may use; None: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
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

impl Quota {
    /// This quota, with `default`'s limit wherever it sets none.
    pub fn or(self, default: Quota) -> Quota {
        Quota {
            max_disk_bytes: self.max_disk_bytes.or(default.max_disk_bytes),
            max_concurrent_builds: self.max_concurrent_builds.or(default.max_concurrent_builds),
        }
    }
}

/// Builds by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BuildCounts {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl BuildCounts {
    fn add_status(&mut self, status: BuildStatus, builds: i64) {
        let slot = match status {
            BuildStatus::Queued => &mut self.queued,
            BuildStatus::Running => &mut self.running,
            BuildStatus::Succeeded => &mut self.succeeded,
            BuildStatus::Failed => &mut self.failed,
            BuildStatus::Cancelled => &mut self.cancelled,
        };
        *slot += builds;
    }

    fn add(&mut self, other: &BuildCounts) {
        self.queued += other.queued;
        self.running += other.running;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }
}

/// A prefix a namespace holds together with others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SharedPrefix {
    pub lock_hash: String,
    pub bytes: i64,
    /// How many other namespaces hold it. Only a count: the caller may not
    /// be allowed to know their names.
    pub other_namespaces: i64,
}

/// What one namespace uses, or several together. In a namespace's figures
/// a shared prefix or lock counts in full; in totals, once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageFigures {
    pub disk_bytes: i64,
    pub prefixes: i64,
    /// The part of `disk_bytes` in prefixes more than one namespace holds.
    pub shared_disk_bytes: i64,
    pub builds: BuildCounts,
    /// Running time of the builds, start to finish.
    pub build_millis: i64,
    pub lockfile_downloads: i64,
    /// By-hash downloads of the locks held.
    pub artifact_downloads: i64,
    /// Disk held over the period: each prefix's bytes times the
    /// milliseconds it was held inside it (a shared prefix in full in each
    /// holder, once in totals). i128: a TiB held for a year overflows i64.
    pub disk_byte_millis: i128,
}

/// One namespace's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceUsage {
    pub namespace: String,
    #[serde(flatten)]
    pub figures: UsageFigures,
    pub shared: Vec<SharedPrefix>,
    /// Its own quota; the server's default applies where it sets none.
    pub quota: Quota,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// By name.
    pub namespaces: Vec<NamespaceUsage>,
    pub totals: UsageFigures,
    /// What builds, downloads and disk held cover.
    pub period: Period,
    /// Since when downloads are counted per day (what a period's downloads
    /// come from); earlier ones are only in the all-time counts.
    pub counted_since: Option<i64>,
}

/// A namespace's build held a lock's prefix from `from` (the build's end)
/// until `until` (its prefix collected or the build deleted; None: still
/// held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixHold {
    pub namespace: String,
    pub lock_hash: String,
    pub bytes: i64,
    pub from: i64,
    pub until: Option<i64>,
}

/// One build's life, for the builds of a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRun {
    pub namespace: String,
    pub status: BuildStatus,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The builds of `runs` that met `period` (queued to finished, or to `now`
/// while unfinished), grouped by namespace and status, with the part of
/// their running time inside it. Only finished builds have a running time,
/// as in the all-time figures.
pub fn group_runs(period: Period, now: i64, runs: &[BuildRun]) -> Vec<BuildGroup> {
    let mut groups: BTreeMap<(&str, &'static str), BuildGroup> = BTreeMap::new();
    for run in runs {
        if !period.meets(run.created_at, run.finished_at.unwrap_or(now)) {
            continue;
        }
        let group = groups
            .entry((run.namespace.as_str(), run.status.as_str()))
            .or_insert_with(|| BuildGroup {
                namespace: run.namespace.clone(),
                status: run.status,
                builds: 0,
                millis: 0,
            });
        group.builds += 1;
        if let (Some(started), Some(finished)) = (run.started_at, run.finished_at) {
            group.millis += period.overlap(started, finished);
        }
    }
    groups.into_values().collect()
}

/// `[from, to)` in milliseconds since the epoch.
type Span = (i64, i64);

/// The milliseconds `intervals` cover inside `period`, each instant once.
fn covered(period: Period, intervals: impl IntoIterator<Item = (i64, i64)>) -> i64 {
    let mut clipped: Vec<(i64, i64)> = intervals
        .into_iter()
        .map(|(from, to)| (from.max(period.start()), to.min(period.end())))
        .filter(|(from, to)| from < to)
        .collect();
    clipped.sort_unstable();
    let mut total = 0i64;
    let mut current: Option<(i64, i64)> = None;
    for (from, to) in clipped {
        current = match current {
            Some((start, end)) if from <= end => Some((start, end.max(to))),
            Some((start, end)) => {
                total = total.saturating_add(end - start);
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
    if let Some((start, end)) = current {
        total = total.saturating_add(end - start);
    }
    total
}

/// Byte-milliseconds of `holds` inside `period` (already cut at now): per
/// lock, its size times the time any of the holds held it.
fn held_byte_millis<'a>(
    period: Period,
    now: i64,
    holds: impl IntoIterator<Item = &'a PrefixHold>,
) -> i128 {
    // Per lock: its size and the spans it was held.
    let mut by_lock: BTreeMap<&str, (i64, Vec<Span>)> = BTreeMap::new();
    for hold in holds {
        let entry = by_lock
            .entry(hold.lock_hash.as_str())
            .or_insert_with(|| (hold.bytes, Vec::new()));
        entry.1.push((hold.from, hold.until.unwrap_or(now)));
    }
    by_lock
        .into_values()
        .map(|(bytes, intervals)| i128::from(bytes) * i128::from(covered(period, intervals)))
        .sum()
}

/// A lock a namespace holds, with an amount (bytes, downloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    pub namespace: String,
    pub lock_hash: String,
    pub amount: i64,
}

/// Builds of one namespace in one status, and their running time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildGroup {
    pub namespace: String,
    pub status: BuildStatus,
    pub builds: i64,
    pub millis: i64,
}

/// A live namespace, as a usage report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageNamespace {
    pub name: String,
    /// Whether anyone may read it.
    pub public_read: bool,
    /// Its own quota.
    pub quota: Quota,
}

/// What a usage report is computed from, as read from the database.
#[derive(Debug, Clone, Default)]
pub struct UsageFacts {
    /// Live namespaces, by name.
    pub namespaces: Vec<UsageNamespace>,
    /// Every measured prefix each namespace holds, with its size.
    pub prefixes: Vec<HeldLock>,
    pub builds: Vec<BuildGroup>,
    /// Lockfile downloads by namespace.
    pub lockfile_downloads: HashMap<String, i64>,
    /// Every lock each namespace holds a build of, with its downloads.
    pub lock_downloads: Vec<HeldLock>,
    /// Every prefix each namespace's builds held, and when; the disk held
    /// over the period is computed from these.
    pub holds: Vec<PrefixHold>,
    /// What builds, downloads and holds cover (the database selected the
    /// builds and downloads of it).
    pub period: Period,
    /// When the facts were read: the end of holds still open.
    pub now: i64,
    /// Since when downloads are counted per day.
    pub counted_since: Option<i64>,
}

impl UsageFacts {
    /// The figures of the namespaces `include` accepts (given the name and
    /// whether it is public), and their totals. Sharer counts cover every
    /// namespace, included or not.
    pub fn report(&self, include: impl Fn(&str, bool) -> bool) -> UsageReport {
        let mut holders: HashMap<&str, i64> = HashMap::new();
        for held in &self.prefixes {
            *holders.entry(held.lock_hash.as_str()).or_default() += 1;
        }
        let prefixes = by_namespace(&self.prefixes);
        let lock_downloads = by_namespace(&self.lock_downloads);
        let held_period = self.period.until_now(self.now);
        let mut holds: HashMap<&str, Vec<&PrefixHold>> = HashMap::new();
        for hold in &self.holds {
            holds.entry(hold.namespace.as_str()).or_default().push(hold);
        }
        let mut counted_holds: Vec<&PrefixHold> = Vec::new();
        let mut builds: HashMap<&str, Vec<&BuildGroup>> = HashMap::new();
        for group in &self.builds {
            builds
                .entry(group.namespace.as_str())
                .or_default()
                .push(group);
        }
        let mut counted_prefixes: BTreeMap<&str, i64> = BTreeMap::new();
        let mut counted_locks: BTreeMap<&str, i64> = BTreeMap::new();
        let mut totals = UsageFigures::default();
        let mut namespaces = Vec::new();
        for namespace in &self.namespaces {
            let name = namespace.name.as_str();
            if !include(name, namespace.public_read) {
                continue;
            }
            let mut figures = UsageFigures {
                lockfile_downloads: self.lockfile_downloads.get(name).copied().unwrap_or(0),
                ..UsageFigures::default()
            };
            let mut shared = Vec::new();
            for held in prefixes.get(name).into_iter().flatten() {
                figures.disk_bytes += held.amount;
                figures.prefixes += 1;
                let sharers = holders.get(held.lock_hash.as_str()).copied().unwrap_or(1);
                if sharers > 1 {
                    figures.shared_disk_bytes += held.amount;
                    shared.push(SharedPrefix {
                        lock_hash: held.lock_hash.clone(),
                        bytes: held.amount,
                        other_namespaces: sharers - 1,
                    });
                }
                counted_prefixes.insert(&held.lock_hash, held.amount);
            }
            for group in builds.get(name).into_iter().flatten() {
                figures.builds.add_status(group.status, group.builds);
                figures.build_millis += group.millis;
            }
            for held in lock_downloads.get(name).into_iter().flatten() {
                figures.artifact_downloads += held.amount;
                counted_locks.insert(&held.lock_hash, held.amount);
            }
            let own_holds = holds.get(name).map(Vec::as_slice).unwrap_or_default();
            figures.disk_byte_millis =
                held_byte_millis(held_period, self.now, own_holds.iter().copied());
            counted_holds.extend(own_holds);
            totals.builds.add(&figures.builds);
            totals.build_millis += figures.build_millis;
            totals.lockfile_downloads += figures.lockfile_downloads;
            namespaces.push(NamespaceUsage {
                namespace: namespace.name.clone(),
                figures,
                shared,
                quota: namespace.quota,
            });
        }
        totals.disk_bytes = counted_prefixes.values().sum();
        totals.prefixes = i64::try_from(counted_prefixes.len()).unwrap_or(i64::MAX);
        totals.shared_disk_bytes = counted_prefixes
            .iter()
            .filter(|(lock, _)| holders.get(*lock).is_some_and(|sharers| *sharers > 1))
            .map(|(_, bytes)| bytes)
            .sum();
        totals.artifact_downloads = counted_locks.values().sum();
        totals.disk_byte_millis = held_byte_millis(held_period, self.now, counted_holds);
        UsageReport {
            namespaces,
            totals,
            period: self.period,
            counted_since: self.counted_since,
        }
    }
}

fn by_namespace(held: &[HeldLock]) -> HashMap<&str, Vec<&HeldLock>> {
    let mut grouped: HashMap<&str, Vec<&HeldLock>> = HashMap::new();
    for lock in held {
        grouped
            .entry(lock.namespace.as_str())
            .or_default()
            .push(lock);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, public_read: bool) -> UsageNamespace {
        UsageNamespace {
            name: name.to_owned(),
            public_read,
            quota: Quota::default(),
        }
    }

    fn held(namespace: &str, lock_hash: &str, amount: i64) -> HeldLock {
        HeldLock {
            namespace: namespace.to_owned(),
            lock_hash: lock_hash.to_owned(),
            amount,
        }
    }

    fn group(namespace: &str, status: BuildStatus, builds: i64, millis: i64) -> BuildGroup {
        BuildGroup {
            namespace: namespace.to_owned(),
            status,
            builds,
            millis,
        }
    }

    fn facts() -> UsageFacts {
        UsageFacts {
            namespaces: vec![namespace("alpha", false), namespace("beta", true)],
            prefixes: vec![
                held("alpha", "shared", 1_000),
                held("alpha", "own", 300),
                held("beta", "shared", 1_000),
            ],
            builds: vec![
                group("alpha", BuildStatus::Succeeded, 3, 3_000),
                group("alpha", BuildStatus::Failed, 1, 250),
                group("beta", BuildStatus::Succeeded, 2, 2_000),
            ],
            lockfile_downloads: HashMap::from([("alpha".to_owned(), 3)]),
            lock_downloads: vec![held("alpha", "shared", 2), held("beta", "shared", 2)],
            ..UsageFacts::default()
        }
    }

    fn row<'a>(report: &'a UsageReport, name: &str) -> &'a NamespaceUsage {
        report
            .namespaces
            .iter()
            .find(|usage| usage.namespace == name)
            .unwrap()
    }

    #[test]
    fn a_shared_prefix_counts_in_full_in_each_holder_and_once_in_totals() {
        let report = facts().report(|_, _| true);
        let alpha = row(&report, "alpha");
        assert_eq!(
            (
                alpha.figures.disk_bytes,
                alpha.figures.prefixes,
                alpha.figures.shared_disk_bytes
            ),
            (1_300, 2, 1_000)
        );
        assert_eq!(
            alpha.shared,
            [SharedPrefix {
                lock_hash: "shared".to_owned(),
                bytes: 1_000,
                other_namespaces: 1
            }]
        );
        assert_eq!(
            alpha.figures.builds,
            BuildCounts {
                succeeded: 3,
                failed: 1,
                ..BuildCounts::default()
            }
        );
        assert_eq!(alpha.figures.build_millis, 3_250);
        let totals = &report.totals;
        assert_eq!(
            (totals.disk_bytes, totals.prefixes, totals.shared_disk_bytes),
            (1_300, 2, 1_000)
        );
        assert_eq!(totals.builds.succeeded, 5);
        assert_eq!(totals.build_millis, 5_250);
    }

    #[test]
    fn a_download_by_hash_shows_in_every_holder_and_once_in_totals() {
        let report = facts().report(|_, _| true);
        let downloads = |name| {
            let figures = &row(&report, name).figures;
            (figures.lockfile_downloads, figures.artifact_downloads)
        };
        assert_eq!(downloads("alpha"), (3, 2));
        assert_eq!(downloads("beta"), (0, 2));
        assert_eq!(
            (
                report.totals.lockfile_downloads,
                report.totals.artifact_downloads
            ),
            (3, 2)
        );
    }

    #[test]
    fn a_caller_who_sees_one_namespace_learns_it_shares_but_not_with_whom() {
        let report = facts().report(|_, public_read| public_read);
        assert_eq!(report.namespaces.len(), 1);
        assert_eq!(report.namespaces[0].namespace, "beta");
        assert_eq!(report.namespaces[0].shared[0].other_namespaces, 1);
        assert_eq!(
            (report.totals.disk_bytes, report.totals.build_millis),
            (1_000, 2_000),
            "totals are over what the caller sees"
        );
    }

    #[test]
    fn a_quota_takes_the_default_where_it_sets_no_limit() {
        let own = Quota {
            max_disk_bytes: Some(10),
            max_concurrent_builds: None,
        };
        let default = Quota {
            max_disk_bytes: Some(99),
            max_concurrent_builds: Some(2),
        };
        assert_eq!(
            own.or(default),
            Quota {
                max_disk_bytes: Some(10),
                max_concurrent_builds: Some(2)
            }
        );
    }

    const DAY: i64 = DAY_MILLIS;
    const GIB: i64 = 1 << 30;

    #[test]
    fn times_read_as_rfc_3339_or_dates_and_print_as_rfc_3339() {
        // Reference values from Python's datetime.
        assert_eq!(parse_time("2026-11-01"), Some(1_793_491_200_000));
        assert_eq!(parse_time("2026-11-01T00:00:00Z"), Some(1_793_491_200_000));
        assert_eq!(
            parse_time("2026-11-01T08:30:00.250+01:00"),
            Some(1_793_518_200_250)
        );
        assert_eq!(parse_time("2024-02-29T23:59:59z"), Some(1_709_251_199_000));
        assert_eq!(parse_time("1969-12-31"), Some(-86_400_000));
        for bad in [
            "",
            "2026-11",
            "2026-13-01",
            "2025-02-29",
            "2026-11-01T25:00:00Z",
            "2026-11-01T08:30:00",
            "2026-11-01T08:30:00+0100",
            "2026-11-01T08:30:00.Z",
            "yesterday",
            "2026-11-01x",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(format_time(1_793_491_200_000), "2026-11-01T00:00:00Z");
        assert_eq!(format_time(1_793_518_200_250), "2026-11-01T07:30:00.250Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999Z");
        for millis in [0, 951_782_400_000, 1_709_251_199_000, 4_107_542_400_123] {
            assert_eq!(parse_time(&format_time(millis)), Some(millis));
        }
    }

    #[test]
    fn a_period_reports_every_problem_of_its_bounds() {
        assert_eq!(Period::parse(None, Some("  ")), Ok(Period::default()));
        assert!(Period::default().is_all_time());
        let period = Period::parse(Some("2026-11-01"), Some("2026-12-01")).unwrap();
        assert_eq!(period.until.unwrap() - period.since.unwrap(), 30 * DAY);
        let problems = Period::parse(Some("last week"), Some("2026-13-01")).unwrap_err();
        assert_eq!(
            problems
                .iter()
                .map(PeriodError::parameter)
                .collect::<Vec<_>>(),
            ["since", "until"]
        );
        assert!(problems[0].to_string().contains("'last week'"));
        let problems = Period::parse(Some("2026-12-01"), Some("2026-12-01")).unwrap_err();
        assert_eq!(
            problems,
            [PeriodError::Empty {
                since: "2026-12-01T00:00:00Z".to_owned(),
                until: "2026-12-01T00:00:00Z".to_owned()
            }]
        );
        let long = "x".repeat(1000);
        let problems = Period::parse(Some(&long), None).unwrap_err();
        assert!(problems[0].to_string().len() < 200, "echoed text is cut");
    }

    #[test]
    fn a_period_touches_the_days_its_bounds_fall_on() {
        let period = Period {
            since: Some(10 * DAY + 5),
            until: Some(12 * DAY),
        };
        assert_eq!(period.days(), (10, 11), "until is excluded");
        assert_eq!(Period::default().days(), (i64::MIN, i64::MAX));
        assert_eq!(day_of(-1), -1);
        assert_eq!(period.overlap(0, 11 * DAY), DAY - 5);
        assert_eq!(period.overlap(13 * DAY, 14 * DAY), 0);
    }

    fn hold(
        namespace: &str,
        lock_hash: &str,
        bytes: i64,
        from: i64,
        until: Option<i64>,
    ) -> PrefixHold {
        PrefixHold {
            namespace: namespace.to_owned(),
            lock_hash: lock_hash.to_owned(),
            bytes,
            from,
            until,
        }
    }

    #[test]
    fn a_prefix_held_across_the_period_boundary_counts_only_its_part() {
        let mut facts = facts();
        facts.now = 100 * DAY;
        facts.holds = vec![
            // Held from day 0 to day 10: 5 of its days fall after since.
            hold("alpha", "own", GIB, 0, Some(10 * DAY)),
            // Two builds of alpha hold "shared" at once: counted once.
            hold("alpha", "shared", 2 * GIB, 2 * DAY, Some(8 * DAY)),
            hold("alpha", "shared", 2 * GIB, 6 * DAY, Some(9 * DAY)),
            // beta holds it later and still does: up to until.
            hold("beta", "shared", 2 * GIB, 7 * DAY, None),
            // Before the period: nothing.
            hold("beta", "old", GIB, 0, Some(DAY)),
        ];
        facts.period = Period {
            since: Some(5 * DAY),
            until: Some(20 * DAY),
        };
        let report = facts.report(|_, _| true);
        let byte_days = |figures: &UsageFigures| {
            let day = i128::from(DAY);
            assert_eq!(figures.disk_byte_millis % day, 0);
            figures.disk_byte_millis / day
        };
        let gib = i128::from(GIB);
        assert_eq!(
            byte_days(&row(&report, "alpha").figures),
            5 * gib + 2 * gib * 4,
            "own: days 5-10; shared: days 5-9 once"
        );
        assert_eq!(byte_days(&row(&report, "beta").figures), 2 * gib * 13);
        assert_eq!(
            byte_days(&report.totals),
            5 * gib + 2 * gib * 15,
            "shared: days 5-20 once in the totals"
        );
        assert_eq!(report.period, facts.period);

        // An open hold ends now; a period reaching past now stops there.
        facts.now = 15 * DAY;
        let report = facts.report(|name, _| name == "beta");
        assert_eq!(byte_days(&report.totals), 2 * gib * 8);
        // All time: from the first hold on.
        facts.period = Period::default();
        let report = facts.report(|name, _| name == "alpha");
        assert_eq!(byte_days(&report.totals), 10 * gib + 2 * gib * 7);
    }

    #[test]
    fn builds_of_a_period_are_those_it_meets_with_their_minutes_inside_it() {
        let run = |namespace: &str, status, created_at, started_at, finished_at| BuildRun {
            namespace: namespace.to_owned(),
            status,
            created_at,
            started_at,
            finished_at,
        };
        let runs = [
            run("alpha", BuildStatus::Succeeded, 0, Some(10), Some(50)),
            run("alpha", BuildStatus::Succeeded, 90, Some(95), Some(130)),
            run("alpha", BuildStatus::Failed, 100, Some(110), Some(120)),
            run("alpha", BuildStatus::Queued, 10, None, None),
            run("beta", BuildStatus::Succeeded, 300, Some(300), Some(400)),
        ];
        let period = Period {
            since: Some(100),
            until: Some(200),
        };
        let groups = group_runs(period, 1_000, &runs);
        assert_eq!(
            groups,
            [
                group("alpha", BuildStatus::Failed, 1, 10),
                group("alpha", BuildStatus::Queued, 1, 0),
                group("alpha", BuildStatus::Succeeded, 1, 30),
            ],
            "the first build ended before, beta's began after; the second ran 30 ms inside"
        );
        let all = group_runs(Period::default(), 1_000, &runs);
        let millis: i64 = all.iter().map(|group| group.millis).sum();
        assert_eq!(millis, 40 + 35 + 10 + 100);
    }

    #[test]
    fn currencies_are_three_letters_kept_in_upper_case() {
        let euro: Currency = "eur".parse().unwrap();
        assert_eq!(euro.as_str(), "EUR");
        assert_eq!(serde_json::to_string(&euro).unwrap(), "\"EUR\"");
        assert_eq!(
            serde_json::from_str::<Currency>("\"USD\"")
                .unwrap()
                .to_string(),
            "USD"
        );
        for bad in ["", "EU", "EURO", "E1R", "€", "ÉUR"] {
            assert!(bad.parse::<Currency>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Currency>("\"euros\"").is_err());
    }
}

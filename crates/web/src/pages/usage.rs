//! What the namespaces one may see use (disk, builds, downloads and, when
//! the server has prices, what that costs), beside each namespace's quotas
//! and how close it is to them: the page a team lead or an admin reads.

use axum::extract::{Query, State};
use bytesize::ByteSize;
use envstore_api_types::{NamespaceUsage, Prices, SharedPrefix, UsageFigures, UsageTable};
use maud::{Markup, html};
use serde::Deserialize;

use crate::api::Api;
use crate::error::UiError;
use crate::layout::{self, Chrome, Section};
use crate::links;
use crate::session::Session;

/// The share of a limit (in percent) from which a namespace is told it is
/// near it.
const NEAR_PERCENT: i64 = 80;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct UsageQuery {
    q: Option<String>,
}

pub(crate) async fn show(
    State(api): State<Api>,
    session: Session,
    Query(query): Query<UsageQuery>,
) -> Result<Markup, UiError> {
    let table: UsageTable = api.get(&session, "/api/v1/usage").await?;
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let wanted = |row: &&NamespaceUsage| {
        search.is_none_or(|q| row.namespace.to_lowercase().contains(&q.to_lowercase()))
    };
    let shown: Vec<&NamespaceUsage> = table.namespaces.iter().filter(wanted).collect();
    let priced = table.prices.any();
    let here = links::usage();
    let body = html! {
        p.hint {
            "A namespace's disk is the prefixes its builds still hold; a prefix several namespaces hold counts in full in each. "
            "Quotas are checked when a build is submitted."
        }
        p.hint { (prices_note(&table.prices)) }
        (layout::search(&here, "Search namespaces by name", search))
        @if shown.is_empty() {
            p { @if search.is_some() { "No namespace matches this search." } @else { "There is no namespace you may see yet." } }
        } @else {
            table.usage {
                caption.visually-hidden { "Usage and quotas per namespace, with the totals" }
                thead {
                    tr {
                        th scope="col" { "Namespace" }
                        th scope="col" { "Disk" }
                        th scope="col" { "Quotas" }
                        th scope="col" { "Builds" }
                        th scope="col" { "Build time" }
                        th scope="col" { "Downloads" }
                        @if priced { th scope="col" { "Cost" } }
                    }
                }
                tbody {
                    @for row in &shown {
                        tr data-namespace=(row.namespace) data-disk-bytes=(row.figures.disk_bytes) data-builds=(row.figures.builds()) {
                            th scope="row" { a href=(links::namespace(&row.namespace)) { (row.namespace) } }
                            td { (disk(&row.figures, &row.shared)) }
                            td { (quotas(row)) }
                            (figure_cells(&row.figures, priced))
                        }
                    }
                }
                tfoot {
                    tr.totals data-disk-bytes=(table.totals.disk_bytes) data-builds=(table.totals.builds()) {
                        th scope="row" { "Total" }
                        td {
                            strong { (bytes(table.totals.disk_bytes)) }
                            br;
                            span.count { "in " (counted(table.totals.prefixes, "prefix", "prefixes")) }
                            @if table.totals.shared_disk_bytes > 0 {
                                br;
                                span.count { (bytes(table.totals.shared_disk_bytes)) " of it shared, counted once" }
                            }
                        }
                        td { span.visually-hidden { "No quota applies to the total" } }
                        (figure_cells(&table.totals, priced))
                    }
                }
            }
            p.hint {
                "The total counts each prefix and each lock's downloads once, however many namespaces hold them, "
                "so it can be less than the sum of the rows."
                @if shown.len() < table.namespaces.len() {
                    " It covers all " (counted(table.namespaces.len() as i64, "namespace", "namespaces"))
                    " you may see, not only the " (shown.len()) " this search shows."
                }
            }
        }
    };
    Ok(layout::page(
        "Usage",
        Chrome::new(&session, Section::Usage),
        &[],
        body,
    ))
}

/// The cells a namespace's row and the totals share: builds, build time,
/// downloads and, when the server has prices, cost.
fn figure_cells(figures: &UsageFigures, priced: bool) -> Markup {
    html! {
        td { (builds_by_status(figures)) }
        td { (layout::duration(figures.build_millis)) }
        td {
            (counted(figures.lockfile_downloads, "lockfile", "lockfiles"))
            br;
            (counted(figures.artifact_downloads, "artifact", "artifacts"))
        }
        @if priced {
            td {
                @for (index, line) in costs(figures).iter().enumerate() {
                    @if index > 0 { br; }
                    (line)
                }
            }
        }
    }
}

/// A namespace's disk, and the part of it it shares with other namespaces
/// (each shared prefix listed, with how many others hold it).
fn disk(figures: &UsageFigures, shared: &[SharedPrefix]) -> Markup {
    html! {
        strong { (bytes(figures.disk_bytes)) }
        br;
        span.count { "in " (counted(figures.prefixes, "prefix", "prefixes")) }
        @if let Some(summary) = shared_summary(figures.shared_disk_bytes, shared) {
            details.shared {
                summary { (summary) }
                ul {
                    @for prefix in shared {
                        li {
                            "prefix " code title=(prefix.lock_hash) { (prefix_name(&prefix.lock_hash)) } ": " (bytes(prefix.bytes))
                            ", also held by " (counted(prefix.other_namespaces, "other namespace", "other namespaces"))
                        }
                    }
                }
            }
        }
    }
}

/// A namespace's two quotas, each with how close it is to it.
fn quotas(row: &NamespaceUsage) -> Markup {
    html! {
        ul.quotas {
            li {
                "Disk: "
                (gauge(&disk_gauge(row.figures.disk_bytes, row.max_disk_bytes)))
                @if let Some(limit) = row.max_disk_bytes.filter(|limit| *limit > 0) {
                    " "
                    meter min="0" max=(limit) value=(row.figures.disk_bytes.min(limit))
                        high=(limit.saturating_mul(NEAR_PERCENT) / 100) optimum="0" aria-hidden="true" {}
                }
            }
            li {
                "Builds at once: "
                (gauge(&builds_gauge(row.figures.active_builds(), row.max_concurrent_builds)))
            }
        }
    }
}

fn gauge(gauge: &Gauge) -> Markup {
    let symbol = match gauge.headroom {
        Headroom::Unlimited | Headroom::Plenty => None,
        Headroom::Near => Some("⚠"),
        Headroom::Reached => Some("✗"),
    };
    html! {
        span.quota data-headroom=(gauge.headroom.name()) {
            @if let Some(symbol) = symbol { span.symbol aria-hidden="true" { (symbol) } " " }
            (gauge.text)
        }
    }
}

/// How close a figure is to its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Headroom {
    Unlimited,
    Plenty,
    /// At [`NEAR_PERCENT`] of the limit or more.
    Near,
    /// At the limit or over it: submissions the limit covers are refused.
    Reached,
}

impl Headroom {
    fn of(used: i64, limit: i64) -> Self {
        if used >= limit {
            Self::Reached
        } else if percent(used, limit) >= NEAR_PERCENT {
            Self::Near
        } else {
            Self::Plenty
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Unlimited => "unlimited",
            Self::Plenty => "plenty",
            Self::Near => "near",
            Self::Reached => "reached",
        }
    }
}

/// A quota in words, so it never rests on colour alone.
#[derive(Debug, PartialEq, Eq)]
struct Gauge {
    headroom: Headroom,
    text: String,
}

/// `used` as a whole percentage of `limit`, rounded down (so 99.9 % is not
/// shown as the full 100 %; [`disk_gauge`] says "under 1 %" rather than 0).
fn percent(used: i64, limit: i64) -> i64 {
    if limit <= 0 {
        return 100;
    }
    (i128::from(used.max(0)) * 100 / i128::from(limit))
        .try_into()
        .unwrap_or(i64::MAX)
}

/// "3.2 GiB of 5.0 GiB (64 %)", and what happens once it is reached.
fn disk_gauge(used: i64, limit: Option<i64>) -> Gauge {
    let Some(limit) = limit else {
        return Gauge {
            headroom: Headroom::Unlimited,
            text: "no limit".to_owned(),
        };
    };
    let headroom = Headroom::of(used, limit);
    let share = match percent(used, limit) {
        0 if used > 0 => "under 1 %".to_owned(),
        share => format!("{share} %"),
    };
    let figure = format!("{} of {} ({share})", bytes(used), bytes(limit));
    let text = match headroom {
        Headroom::Near => format!("{figure}, near the limit"),
        Headroom::Reached => {
            format!("{figure}, limit reached: specs that need a new prefix are refused")
        }
        Headroom::Unlimited | Headroom::Plenty => figure,
    };
    Gauge { headroom, text }
}

/// "1 of 4 queued or running", and what happens once it is reached.
fn builds_gauge(active: i64, limit: Option<i64>) -> Gauge {
    let Some(limit) = limit else {
        return Gauge {
            headroom: Headroom::Unlimited,
            text: format!("no limit ({active} queued or running)"),
        };
    };
    let headroom = Headroom::of(active, limit);
    let figure = format!("{active} of {limit} queued or running");
    let text = match headroom {
        Headroom::Near => format!("{figure}, near the limit"),
        Headroom::Reached => {
            format!("{figure}, limit reached: new builds are refused until one ends")
        }
        Headroom::Unlimited | Headroom::Plenty => figure,
    };
    Gauge { headroom, text }
}

/// A prefix as its folder is named: the first 16 hex of its lock hash.
fn prefix_name(lock_hash: &str) -> &str {
    lock_hash.get(..16).unwrap_or(lock_hash)
}

/// A size a person reads at a glance: `812.4 MiB`, `3.2 GiB`.
fn bytes(bytes: i64) -> String {
    ByteSize::b(u64::try_from(bytes).unwrap_or(0)).to_string()
}

/// "1 prefix", "3 prefixes".
fn counted(count: i64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// "3 succeeded, 1 failed": the statuses that have builds, most telling
/// first; "none" without builds.
fn builds_by_status(figures: &UsageFigures) -> String {
    let statuses = [
        (figures.builds_succeeded, "succeeded"),
        (figures.builds_failed, "failed"),
        (figures.builds_cancelled, "cancelled"),
        (figures.builds_running, "running"),
        (figures.builds_queued, "queued"),
    ];
    let parts: Vec<String> = statuses
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, status)| format!("{count} {status}"))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// "1.2 GiB shared with 2 other namespaces" ("with 1 to 3 …" when its
/// shared prefixes are held by different numbers of others); None when the
/// namespace shares nothing.
fn shared_summary(shared_bytes: i64, shared: &[SharedPrefix]) -> Option<String> {
    let fewest = shared.iter().map(|prefix| prefix.other_namespaces).min()?;
    let most = shared.iter().map(|prefix| prefix.other_namespaces).max()?;
    let others = if fewest == most {
        counted(most, "other namespace", "other namespaces")
    } else {
        format!("{fewest} to {most} other namespaces")
    };
    Some(format!("{} shared with {others}", bytes(shared_bytes)))
}

/// A row's costs at the server's prices, one line each.
fn costs(figures: &UsageFigures) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(disk) = figures.cost_disk_per_month {
        lines.push(format!("disk {disk:.2} a month"));
    }
    if let Some(builds) = figures.cost_builds {
        lines.push(format!("builds {builds:.2}"));
    }
    lines
}

/// The prices the costs follow, or that there are none.
fn prices_note(prices: &Prices) -> String {
    match (prices.per_gib_month, prices.per_build_minute) {
        (None, None) => "The server has no prices set, so no costs are shown.".to_owned(),
        (Some(disk), None) => {
            format!("Costs follow the server's price of {disk:.2} per GiB of prefixes a month.")
        }
        (None, Some(minute)) => {
            format!("Costs follow the server's price of {minute:.2} per build minute.")
        }
        (Some(disk), Some(minute)) => format!(
            "Costs follow the server's prices: {disk:.2} per GiB of prefixes a month and {minute:.2} per build minute."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: i64 = 1 << 30;

    #[test]
    fn disk_quotas_read_as_x_of_y_with_the_share_rounded_down() {
        let gauge = disk_gauge(3 * GIB, Some(4 * GIB));
        assert_eq!(gauge.text, "3.0 GiB of 4.0 GiB (75 %)");
        assert_eq!(gauge.headroom, Headroom::Plenty);
        let near = disk_gauge(5 * GIB - 1, Some(5 * GIB));
        assert_eq!(near.headroom, Headroom::Near);
        assert!(
            near.text.contains("(99 %), near the limit"),
            "{}",
            near.text
        );
        let over = disk_gauge(6 * GIB, Some(5 * GIB));
        assert_eq!(over.headroom, Headroom::Reached);
        assert!(
            over.text
                .starts_with("6.0 GiB of 5.0 GiB (120 %), limit reached"),
            "{}",
            over.text
        );
        assert_eq!(disk_gauge(GIB, None).text, "no limit");
        assert_eq!(percent(999, 1000), 99);
        assert_eq!(
            disk_gauge(1024, Some(GIB)).text,
            "1.0 KiB of 1.0 GiB (under 1 %)"
        );
        assert_eq!(disk_gauge(0, Some(GIB)).text, "0 B of 1.0 GiB (0 %)");
        assert_eq!(disk_gauge(0, Some(0)).headroom, Headroom::Reached);
    }

    #[test]
    fn build_quotas_count_what_is_queued_or_running() {
        assert_eq!(builds_gauge(1, Some(4)).text, "1 of 4 queued or running");
        let full = builds_gauge(4, Some(4));
        assert_eq!(full.headroom, Headroom::Reached);
        assert!(
            full.text.contains("refused until one ends"),
            "{}",
            full.text
        );
        assert_eq!(builds_gauge(4, Some(5)).headroom, Headroom::Near);
        assert_eq!(builds_gauge(2, None).text, "no limit (2 queued or running)");
    }

    #[test]
    fn builds_show_only_the_statuses_they_have() {
        let figures = UsageFigures {
            builds_succeeded: 3,
            builds_failed: 1,
            builds_queued: 2,
            ..UsageFigures::default()
        };
        assert_eq!(
            builds_by_status(&figures),
            "3 succeeded, 1 failed, 2 queued"
        );
        assert_eq!(figures.builds(), 6);
        assert_eq!(figures.active_builds(), 2);
        assert_eq!(builds_by_status(&UsageFigures::default()), "none");
    }

    #[test]
    fn shared_disk_says_with_how_many_others() {
        let prefix = |other_namespaces| SharedPrefix {
            lock_hash: "ab".repeat(32),
            bytes: GIB,
            other_namespaces,
        };
        assert_eq!(shared_summary(0, &[]), None);
        assert_eq!(
            shared_summary(GIB, &[prefix(1)]).as_deref(),
            Some("1.0 GiB shared with 1 other namespace")
        );
        assert_eq!(
            shared_summary(2 * GIB, &[prefix(3), prefix(1)]).as_deref(),
            Some("2.0 GiB shared with 1 to 3 other namespaces")
        );
    }

    #[test]
    fn costs_and_prices_appear_only_when_the_server_has_prices() {
        let figures = UsageFigures {
            cost_disk_per_month: Some(1.5),
            cost_builds: Some(0.375),
            ..UsageFigures::default()
        };
        assert_eq!(costs(&figures), ["disk 1.50 a month", "builds 0.38"]);
        assert!(costs(&UsageFigures::default()).is_empty());
        let none = Prices {
            per_gib_month: None,
            per_build_minute: None,
        };
        assert!(!none.any());
        assert!(prices_note(&none).contains("no prices"));
        let both = Prices {
            per_gib_month: Some(0.5),
            per_build_minute: Some(0.25),
        };
        assert!(
            prices_note(&both).contains("0.50 per GiB")
                && prices_note(&both).contains("0.25 per build minute")
        );
    }

    #[test]
    fn the_api_rows_decode() {
        let table: UsageTable = serde_json::from_value(serde_json::json!({
            "namespaces": [{
                "namespace": "team", "disk_bytes": 2048, "shared_disk_bytes": 1024, "prefixes": 2,
                "builds_succeeded": 1, "builds_failed": 0, "builds_cancelled": 0, "builds_queued": 0,
                "builds_running": 1, "build_millis": 1500, "build_minutes": 0.025,
                "lockfile_downloads": 3, "artifact_downloads": 4,
                "cost_disk_per_month": null, "cost_builds": null,
                "shared_prefixes": 1, "max_disk_bytes": 4096, "max_concurrent_builds": null,
                "shared": [{ "lock_hash": "ab", "bytes": 1024, "other_namespaces": 2 }]
            }],
            "totals": {
                "disk_bytes": 2048, "shared_disk_bytes": 1024, "prefixes": 2,
                "builds_succeeded": 1, "builds_failed": 0, "builds_cancelled": 0, "builds_queued": 0,
                "builds_running": 1, "build_millis": 1500, "build_minutes": 0.025,
                "lockfile_downloads": 3, "artifact_downloads": 4,
                "cost_disk_per_month": null, "cost_builds": null
            },
            "prices": { "per_gib_month": null, "per_build_minute": null }
        }))
        .expect("the API's usage table decodes");
        let row = &table.namespaces[0];
        assert_eq!((row.figures.disk_bytes, row.figures.builds()), (2048, 2));
        assert_eq!(row.max_disk_bytes, Some(4096));
        assert_eq!(row.shared[0].other_namespaces, 2);
        assert_eq!(
            disk_gauge(row.figures.disk_bytes, row.max_disk_bytes).text,
            "2.0 KiB of 4.0 KiB (50 %)"
        );
    }
}

//! What the namespaces one may see use (disk, builds, downloads and, when
//! the server has prices, what that costs, in its currency), over all time
//! or a period picked in a form, beside each namespace's quotas and how
//! close it is to them: the page a team lead or an admin reads.

use axum::extract::{Query, State};
use bytesize::ByteSize;
use envstore_api_types::usage::format_time;
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
    /// The period, passed on to the API as given (it checks them).
    since: Option<String>,
    until: Option<String>,
}

impl UsageQuery {
    fn since(&self) -> Option<&str> {
        self.since
            .as_deref()
            .map(str::trim)
            .filter(|since| !since.is_empty())
    }

    fn until(&self) -> Option<&str> {
        self.until
            .as_deref()
            .map(str::trim)
            .filter(|until| !until.is_empty())
    }

    /// The API's usage path, with the period when one is asked for.
    fn api_path(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [("since", self.since()), ("until", self.until())] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        match query.finish() {
            query if query.is_empty() => "/api/v1/usage".to_owned(),
            query => format!("/api/v1/usage?{query}"),
        }
    }
}

/// The form that picks the period (dates, UTC; the end excluded), keeping
/// the search.
fn period_form(query: &UsageQuery) -> Markup {
    let here = links::usage();
    html! {
        form.period method="get" action=(here) aria-label="Period" {
            @if let Some(q) = query.q.as_deref().filter(|q| !q.trim().is_empty()) {
                input type="hidden" name="q" value=(q);
            }
            label for="since" { "From" }
            " "
            input #since type="date" name="since" value=[query.since()];
            " "
            label for="until" { "until (not included)" }
            " "
            input #until type="date" name="until" value=[query.until()];
            " "
            button type="submit" { "Show this period" }
            @if query.since().is_some() || query.until().is_some() {
                " " a href=(here) { "All time" }
            }
        }
    }
}

pub(crate) async fn show(
    State(api): State<Api>,
    session: Session,
    Query(query): Query<UsageQuery>,
) -> Result<Markup, UiError> {
    let table: UsageTable = match api.get(&session, &query.api_path()).await {
        Ok(table) => table,
        // A period the API refuses: the form again, with why.
        Err(UiError::Problem(problem)) if problem.status == 400 => {
            let body = html! {
                (period_form(&query))
                div.problem role="alert" {
                    p { "This period cannot be shown:" }
                    ul {
                        @for item in &problem.errors { li { (item.detail) } }
                        @if problem.errors.is_empty() { li { (problem.detail) } }
                    }
                }
            };
            return Ok(layout::page(
                "Usage",
                Chrome::new(&session, Section::Usage),
                &[],
                body,
            ));
        }
        Err(error) => return Err(error),
    };
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
        p.hint { (prices_note(&table)) }
        (period_form(&query))
        p.period data-since=[table.period.since] data-until=[table.period.until] {
            @if has_period(&table) {
                "Builds, build time, downloads, disk held and costs from " (table.period.describe()) ". "
                "Disk on hand and quotas are as they stand now."
                @if table.period.misses_downloads() {
                    @if let Some(counted) = table.period.counted_since {
                        " Downloads are counted per day since " (format_time(counted))
                        "; earlier ones are only in the all-time figures."
                    }
                }
            } @else {
                "All time."
            }
        }
        (layout::search_keeping(
            &here,
            "Search namespaces by name",
            search,
            &[("since", query.since()), ("until", query.until())],
        ))
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
                            td { (disk(&row.figures, &row.shared)) (held(&table, &row.figures)) }
                            td { (quotas(row)) }
                            (figure_cells(&table, &row.figures, priced))
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
                            (held(&table, &table.totals))
                        }
                        td { span.visually-hidden { "No quota applies to the total" } }
                        (figure_cells(&table, &table.totals, priced))
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

/// Whether the table covers a period rather than all time.
fn has_period(table: &UsageTable) -> bool {
    table.period.since.is_some() || table.period.until.is_some()
}

/// Over a period, the disk held during it.
fn held(table: &UsageTable, figures: &UsageFigures) -> Markup {
    html! {
        @if has_period(table) {
            br;
            span.count.held { (format!("{:.3}", figures.disk_gib_months)) " GiB-months held in the period" }
        }
    }
}

/// The cells a namespace's row and the totals share: builds, build time,
/// downloads and, when the server has prices, cost.
fn figure_cells(table: &UsageTable, figures: &UsageFigures, priced: bool) -> Markup {
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
                @for (index, line) in costs(table, figures).iter().enumerate() {
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

/// A row's costs at the server's prices, one line each, in its currency;
/// over a period, the disk held in it and the sum too.
fn costs(table: &UsageTable, figures: &UsageFigures) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(disk) = figures.cost_disk_per_month {
        lines.push(format!("disk {} a month", table.money(disk)));
    }
    if has_period(table)
        && let Some(held) = figures.cost_disk
    {
        lines.push(format!("disk held {}", table.money(held)));
    }
    if let Some(builds) = figures.cost_builds {
        lines.push(format!("builds {}", table.money(builds)));
    }
    if has_period(table)
        && let Some(cost) = figures.cost
    {
        lines.push(format!("in the period {}", table.money(cost)));
    }
    lines
}

/// The prices the costs follow, or that there are none.
fn prices_note(table: &UsageTable) -> String {
    let prices: &Prices = &table.prices;
    let money = |amount: f64| table.money(amount);
    match (prices.per_gib_month, prices.per_build_minute) {
        (None, None) => "The server has no prices set, so no costs are shown.".to_owned(),
        (Some(disk), None) => format!(
            "Costs follow the server's price of {} per GiB of prefixes a month.",
            money(disk)
        ),
        (None, Some(minute)) => format!(
            "Costs follow the server's price of {} per build minute.",
            money(minute)
        ),
        (Some(disk), Some(minute)) => format!(
            "Costs follow the server's prices: {} per GiB of prefixes a month and {} per build minute.",
            money(disk),
            money(minute)
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

    fn usage_table(prices: Prices, currency: Option<&str>) -> UsageTable {
        UsageTable {
            namespaces: Vec::new(),
            totals: UsageFigures::default(),
            prices,
            currency: currency.map(str::to_owned),
            period: Default::default(),
        }
    }

    #[test]
    fn costs_and_prices_appear_only_when_the_server_has_prices() {
        let figures = UsageFigures {
            cost_disk_per_month: Some(1.5),
            cost_builds: Some(0.375),
            cost_disk: Some(0.75),
            cost: Some(1.125),
            ..UsageFigures::default()
        };
        let none = Prices {
            per_gib_month: None,
            per_build_minute: None,
        };
        let plain = usage_table(none, None);
        assert_eq!(
            costs(&plain, &figures),
            ["disk 1.50 a month", "builds 0.38"]
        );
        assert!(costs(&plain, &UsageFigures::default()).is_empty());
        assert!(!none.any());
        assert!(prices_note(&plain).contains("no prices"));
        let both = Prices {
            per_gib_month: Some(0.5),
            per_build_minute: Some(0.25),
        };
        let note = prices_note(&usage_table(both, None));
        assert!(note.contains("0.50 per GiB") && note.contains("0.25 per build minute"));
    }

    #[test]
    fn every_cost_carries_the_currency_and_a_period_adds_its_own() {
        let both = Prices {
            per_gib_month: Some(0.5),
            per_build_minute: Some(0.25),
        };
        let mut table = usage_table(both, Some("EUR"));
        let figures = UsageFigures {
            cost_disk_per_month: Some(1.5),
            cost_builds: Some(0.375),
            cost_disk: Some(0.75),
            cost: Some(1.1),
            ..UsageFigures::default()
        };
        assert_eq!(
            costs(&table, &figures),
            ["disk 1.50 EUR a month", "builds 0.38 EUR"]
        );
        let note = prices_note(&table);
        assert!(
            note.contains("0.50 EUR per GiB") && note.contains("0.25 EUR per build minute"),
            "{note}"
        );
        table.period.since = Some(1_793_491_200_000);
        assert_eq!(
            costs(&table, &figures),
            [
                "disk 1.50 EUR a month",
                "disk held 0.75 EUR",
                "builds 0.38 EUR",
                "in the period 1.10 EUR"
            ]
        );
        assert_eq!(table.period.describe(), "2026-11-01T00:00:00Z to now");
    }

    #[test]
    fn the_period_reaches_the_api_as_given() {
        let query = |since: Option<&str>, until: Option<&str>| UsageQuery {
            q: None,
            since: since.map(str::to_owned),
            until: until.map(str::to_owned),
        };
        assert_eq!(query(None, Some(" ")).api_path(), "/api/v1/usage");
        assert_eq!(
            query(Some("2026-11-01"), Some("2026-12-01T00:00:00+01:00")).api_path(),
            "/api/v1/usage?since=2026-11-01&until=2026-12-01T00%3A00%3A00%2B01%3A00"
        );
        let form = period_form(&query(Some("2026-11-01"), None)).into_string();
        assert!(form.contains("value=\"2026-11-01\""), "{form}");
        assert!(form.contains("All time"), "{form}");
    }

    #[test]
    fn searching_namespaces_keeps_the_period() {
        let period = [("since", Some("2026-11-01")), ("until", None)];
        let form =
            layout::search_keeping("/ui/usage", "Search", Some("team"), &period).into_string();
        assert!(
            form.contains(r#"<input type="hidden" name="since" value="2026-11-01">"#),
            "{form}"
        );
        assert!(!form.contains(r#"name="until""#), "{form}");
        assert!(
            form.contains(r#"href="/ui/usage?since=2026-11-01""#),
            "the search is cleared, the period kept: {form}"
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

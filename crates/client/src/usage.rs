//! `envstore usage`: the server's usage table, for a terminal.

use bytesize::ByteSize;
use envstore_api_types::usage::format_time;
use envstore_api_types::{UsageFigures, UsageTable};

fn size(bytes: i64) -> String {
    ByteSize::b(u64::try_from(bytes).unwrap_or(0)).to_string()
}

fn limit(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// The usage as an aligned table: one line per namespace, then the totals
/// (each shared prefix counted once), then which prefixes are shared, then
/// the period when there is one. Cost columns appear when the server has
/// prices, each cost with the server's currency. Over a period, the disk
/// held in it (GiB-months) and its cost are added.
pub fn usage_table(table: &UsageTable) -> String {
    let disk_cost = table.prices.per_gib_month.is_some();
    let build_cost = table.prices.per_build_minute.is_some();
    let period = table.period.since.is_some() || table.period.until.is_some();
    let money = |cost: Option<f64>| cost.map(|cost| table.money(cost)).unwrap_or_default();
    let mut header = vec![
        "NAMESPACE",
        "DISK",
        "SHARED",
        "PREFIXES",
        "BUILDS ok/failed/cancelled",
        "ACTIVE",
        "BUILD MIN",
        "LOCKFILE GETS",
        "ARTIFACT GETS",
        "MAX DISK",
        "MAX BUILDS",
    ];
    if period {
        header.push("GIB-MONTHS");
    }
    if disk_cost {
        header.push("DISK COST/MONTH");
        if period {
            header.push("DISK COST");
        }
    }
    if build_cost {
        header.push("BUILD COST");
    }
    if period && (disk_cost || build_cost) {
        header.push("COST");
    }
    let cells = |name: &str, figures: &UsageFigures, max_disk: String, max_builds: String| {
        let mut cells = vec![
            name.to_owned(),
            size(figures.disk_bytes),
            size(figures.shared_disk_bytes),
            figures.prefixes.to_string(),
            format!(
                "{}/{}/{}",
                figures.builds_succeeded, figures.builds_failed, figures.builds_cancelled
            ),
            (figures.builds_queued + figures.builds_running).to_string(),
            format!("{:.2}", figures.build_minutes),
            figures.lockfile_downloads.to_string(),
            figures.artifact_downloads.to_string(),
            max_disk,
            max_builds,
        ];
        if period {
            cells.push(format!("{:.3}", figures.disk_gib_months));
        }
        if disk_cost {
            cells.push(money(figures.cost_disk_per_month));
            if period {
                cells.push(money(figures.cost_disk));
            }
        }
        if build_cost {
            cells.push(money(figures.cost_builds));
        }
        if period && (disk_cost || build_cost) {
            cells.push(money(figures.cost));
        }
        cells
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|title| (*title).to_owned()).collect()];
    for row in &table.namespaces {
        rows.push(cells(
            &row.namespace,
            &row.figures,
            limit(row.max_disk_bytes.map(size)),
            limit(row.max_concurrent_builds.map(|builds| builds.to_string())),
        ));
    }
    rows.push(cells("total", &table.totals, String::new(), String::new()));
    let mut text = aligned(&rows);
    for row in &table.namespaces {
        for shared in &row.shared {
            text.push_str(&format!(
                "{}: prefix {} ({}) is shared with {} other namespace(s)\n",
                row.namespace,
                shared.lock_hash.get(..16).unwrap_or(&shared.lock_hash),
                size(shared.bytes),
                shared.other_namespaces
            ));
        }
    }
    if period {
        text.push_str(&format!("period: {}\n", table.period.describe()));
        if let Some(counted) = table
            .period
            .counted_since
            .filter(|_| table.period.misses_downloads())
        {
            text.push_str(&format!(
                "downloads are counted per day since {}: earlier ones are only in the all-time figures\n",
                format_time(counted)
            ));
        }
    }
    text
}

/// Columns padded to their widest cell: the first left-aligned (names), the
/// others right-aligned (figures).
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, width))| match column {
                0 => format!("{cell:<width$}"),
                _ => format!("{cell:>width$}"),
            })
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn table(usage: Value) -> String {
        usage_table(&serde_json::from_value(usage).unwrap())
    }

    fn figures(disk: i64, minutes: f64, cost: Option<f64>) -> Value {
        json!({
            "disk_bytes": disk, "shared_disk_bytes": disk, "prefixes": 1,
            "builds_succeeded": 3, "builds_failed": 1, "builds_cancelled": 0, "builds_queued": 1, "builds_running": 1,
            "build_millis": 0, "build_minutes": minutes, "lockfile_downloads": 12, "artifact_downloads": 4,
            "cost_disk_per_month": cost, "cost_builds": None::<f64>,
        })
    }

    fn usage(prices: Value) -> Value {
        let mut row = figures(3 << 30, 2.26, prices["per_gib_month"].as_f64().map(|_| 1.5));
        row["namespace"] = json!("team-ml");
        row["shared_prefixes"] = json!(1);
        row["max_disk_bytes"] = json!(10_u64 << 30);
        row["max_concurrent_builds"] = Value::Null;
        row["shared"] =
            json!([{ "lock_hash": "ab".repeat(32), "bytes": 3_u64 << 30, "other_namespaces": 2 }]);
        json!({ "namespaces": [row], "totals": figures(3 << 30, 2.26, None), "prices": prices })
    }

    #[test]
    fn one_aligned_line_per_namespace_then_totals_then_shared_prefixes() {
        let text = table(usage(
            json!({ "per_gib_month": 0.5, "per_build_minute": null }),
        ));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("NAMESPACE") && lines[0].ends_with("DISK COST/MONTH"),
            "{text}"
        );
        assert!(!lines[0].contains("BUILD COST"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "team-ml", "3.0", "GiB", "3.0", "GiB", "1", "3/1/0", "2", "2.26", "12", "4",
                "10.0", "GiB", "-", "1.50"
            ]
        );
        assert!(lines[2].starts_with("total "), "{text}");
        assert_eq!(
            lines[3],
            format!(
                "team-ml: prefix {} (3.0 GiB) is shared with 2 other namespace(s)",
                "ab".repeat(8)
            )
        );
        let disk_column = lines[0].find("DISK").unwrap() + "DISK".len();
        assert_eq!(
            &lines[1][disk_column - 3..disk_column],
            "GiB",
            "figures end under their title"
        );
    }

    #[test]
    fn no_cost_columns_without_prices_and_a_clear_error_for_other_answers() {
        let text = table(usage(
            json!({ "per_gib_month": null, "per_build_minute": null }),
        ));
        assert!(!text.contains("COST"), "{text}");
        assert!(serde_json::from_value::<UsageTable>(json!({ "namespaces": "no" })).is_err());
    }

    #[test]
    fn a_period_adds_the_disk_held_its_costs_in_the_currency_and_a_line_naming_it() {
        let mut usage = usage(json!({ "per_gib_month": 0.5, "per_build_minute": 0.25 }));
        let priced = |figures: &mut Value| {
            figures["disk_gib_months"] = json!(3.0);
            figures["cost_disk"] = json!(1.5);
            figures["cost_builds"] = json!(0.5);
            figures["cost"] = json!(2.0);
        };
        priced(&mut usage["namespaces"][0]);
        priced(&mut usage["totals"]);
        usage["currency"] = json!("EUR");
        // 2026-11-01T00:00:00Z, and daily counts from 2026-11-15.
        usage["period"] = json!({
            "since": 1_793_491_200_000_i64, "until": null, "counted_since": 1_793_491_200_000_i64 + 14 * 86_400_000
        });
        let text = table(usage.clone());
        let lines: Vec<&str> = text.lines().collect();
        // Cells are apart by two spaces or more; a cell holds single ones.
        let last_cells = |line: &str, count: usize| {
            let cells: Vec<String> = line
                .split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect();
            cells[cells.len() - count..].to_vec()
        };
        assert_eq!(
            last_cells(lines[0], 5),
            [
                "GIB-MONTHS",
                "DISK COST/MONTH",
                "DISK COST",
                "BUILD COST",
                "COST"
            ],
            "{text}"
        );
        assert_eq!(
            last_cells(lines[1], 5),
            ["3.000", "1.50 EUR", "1.50 EUR", "0.50 EUR", "2.00 EUR"],
            "{text}"
        );
        assert_eq!(lines[4], "period: 2026-11-01T00:00:00Z to now", "{text}");
        assert!(
            lines[5].contains("counted per day since 2026-11-15T00:00:00Z"),
            "{text}"
        );

        // All time: no period columns or lines, the currency still shown.
        usage["period"] = json!({ "since": null, "until": null, "counted_since": 1 });
        let text = table(usage);
        assert!(
            !text.contains("GIB-MONTHS") && !text.contains("period:"),
            "{text}"
        );
        assert_eq!(
            last_cells(text.lines().nth(1).unwrap(), 2),
            ["1.50 EUR", "0.50 EUR"],
            "{text}"
        );
    }
}

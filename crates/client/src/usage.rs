//! `envstore usage`: the server's usage table, for a terminal.

use bytesize::ByteSize;
use envstore_api_types::{UsageFigures, UsageTable};

fn size(bytes: i64) -> String {
    ByteSize::b(u64::try_from(bytes).unwrap_or(0)).to_string()
}

fn limit(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// The usage as an aligned table: one line per namespace, then the totals
/// (each shared prefix counted once), then which prefixes are shared. Cost
/// columns appear when the server has prices.
pub fn usage_table(table: &UsageTable) -> String {
    let disk_cost = table.prices.per_gib_month.is_some();
    let build_cost = table.prices.per_build_minute.is_some();
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
    if disk_cost {
        header.push("DISK COST/MONTH");
    }
    if build_cost {
        header.push("BUILD COST");
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
        if disk_cost {
            cells.push(
                figures
                    .cost_disk_per_month
                    .map(|cost| format!("{cost:.2}"))
                    .unwrap_or_default(),
            );
        }
        if build_cost {
            cells.push(
                figures
                    .cost_builds
                    .map(|cost| format!("{cost:.2}"))
                    .unwrap_or_default(),
            );
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
}

//! How the resource commands print: aligned tables for people, the
//! server's JSON (pretty) for scripts, times as ages, sizes in binary units.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Prints `value` as pretty JSON on standard output.
pub(crate) fn json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Columns aligned on the widest cell; the last column is not padded.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|header| (*header).to_owned()).collect()],
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or_default();
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or_default()
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[column].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            let _ = writeln!(text, "{}", line.trim_end());
        }
        text
    }

    pub(crate) fn print(&self) {
        print!("{}", self.render());
    }
}

/// `label  value` lines with the labels aligned.
pub(crate) fn fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or_default();
    let mut text = String::new();
    for (label, value) in fields {
        let _ = writeln!(text, "{label:<width$}  {value}");
    }
    text
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A moment as people read it: an age (`5m ago`, `in 3d`) within two
/// weeks, the date (`2026-11-30`) beyond.
pub(crate) fn when(ms: i64) -> String {
    when_from(ms, now_ms())
}

fn when_from(ms: i64, now: i64) -> String {
    let seconds = (now - ms) / 1000;
    let (ago, span) = if seconds >= 0 {
        (true, seconds)
    } else {
        (false, -seconds)
    };
    let amount = match span {
        0..=4 if ago => return "just now".to_owned(),
        0..=59 => format!("{span}s"),
        60..=3599 => format!("{}m", span / 60),
        3600..=172_799 => format!("{}h", span / 3600),
        172_800..=1_209_599 => format!("{}d", span / 86_400),
        _ => return iso_date(ms),
    };
    if ago {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// `2026-11-30 14:02:09Z` (UTC).
pub(crate) fn iso(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}Z",
        iso_date(ms),
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// `2026-11-30` (UTC): the civil date of a day count (Howard Hinnant's
/// `civil_from_days`).
fn iso_date(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A span of milliseconds: `850 ms`, `3.2 s`, `4m 05s`, `1h 02m`.
pub(crate) fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// How long something took from `start` to `end`, if it ended.
pub(crate) fn took(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(start), Some(end)) => duration(end - start),
        _ => "-".to_owned(),
    }
}

/// Bytes in binary units (`50.0 GiB`).
pub(crate) fn size(bytes: i64) -> String {
    bytesize::ByteSize::b(u64::try_from(bytes).unwrap_or_default())
        .display()
        .iec()
        .to_string()
}

/// An optional cell: the value, or `-`.
pub(crate) fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let mut table = Table::new(&["NAME", "STATUS", "WHEN"]);
        table.row(vec!["analysis".into(), "ok".into(), "5m ago".into()]);
        table.row(vec!["x".into(), "succeeded".into(), String::new()]);
        assert_eq!(
            table.render(),
            "NAME      STATUS     WHEN\nanalysis  ok         5m ago\nx         succeeded\n"
        );
    }

    #[test]
    fn times_read_as_ages_then_dates() {
        let now = 1_764_600_000_000; // 2025-12-01 14:40:00Z
        assert_eq!(iso(now), "2025-12-01 14:40:00Z");
        assert_eq!(iso(0), "1970-01-01 00:00:00Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(when_from(now - 2_000, now), "just now");
        assert_eq!(when_from(now - 42_000, now), "42s ago");
        assert_eq!(when_from(now - 5 * 60_000, now), "5m ago");
        assert_eq!(when_from(now - 3 * 3_600_000, now), "3h ago");
        assert_eq!(when_from(now + 89 * 86_400_000, now), "2026-02-28");
        assert_eq!(when_from(now + 3 * 86_400_000, now), "in 3d");
        assert_eq!(when_from(now - 20 * 86_400_000, now), "2025-11-11");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(3_240), "3.2 s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(3_720_000), "1h 02m");
        assert_eq!(size(50 * 1024 * 1024 * 1024), "50.0 GiB");
    }
}

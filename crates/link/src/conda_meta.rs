//! What envstore keeps in a prefix's `conda-meta/` besides the package
//! records rattler writes: the completion marker and conda's `history`.
//!
//! conda (`conda list -p`, `conda env export -p`), conda-pack and rattler's
//! `PrefixRecord::collect_from_prefix` parse every `conda-meta/*.json` as a
//! package record, so nothing of ours may be named `*.json` there. Like
//! pixi's `conda-meta/pixi`, the marker is `conda-meta/envstore`: it stays in
//! the prefix, so it is removed, packed around and checked together with it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use envstore_core::ContentHash;
use rattler_conda_types::RepoDataRecord;
use serde::{Deserialize, Serialize};

use crate::error::PrefixError;

/// Written last into a finished prefix; a prefix without it (or the legacy
/// marker) is never served.
pub const MARKER_FILE: &str = "conda-meta/envstore";

/// Where releases before issue 17 wrote the marker. Prefixes are immutable,
/// so those prefixes keep it: it is read, never written.
pub const LEGACY_MARKER_FILE: &str = "conda-meta/envstore-complete.json";

/// conda's own log of a prefix; conda treats a folder as an environment
/// only when it exists (`conda activate <path>`, `conda run -p`).
pub const HISTORY_FILE: &str = "conda-meta/history";

/// The mode of `conda-meta/` and of the files in it: readable by everyone,
/// whatever the umask of the service.
pub(crate) const META_DIR_MODE: u32 = 0o755;
pub(crate) const META_FILE_MODE: u32 = 0o644;

/// What the marker records about a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionMarker {
    pub lock_hash: ContentHash,
    pub platform: String,
    pub packages: usize,
}

/// Whether `prefix` is complete: it has the marker, or the marker an
/// earlier release wrote.
pub fn is_complete(prefix: &Path) -> bool {
    prefix.join(MARKER_FILE).is_file() || prefix.join(LEGACY_MARKER_FILE).is_file()
}

/// The marker of `prefix`, if it has a readable one (the current name
/// first, then the legacy one).
pub fn read_marker(prefix: &Path) -> Option<CompletionMarker> {
    [MARKER_FILE, LEGACY_MARKER_FILE].iter().find_map(|name| {
        let text = fs_err::read(prefix.join(name)).ok()?;
        serde_json::from_slice(&text).ok()
    })
}

/// Whether `relative` (a path inside a prefix) is a marker, current or
/// legacy: a packed prefix leaves both out.
pub(crate) fn is_marker(relative: &Path) -> bool {
    relative == Path::new(MARKER_FILE) || relative == Path::new(LEGACY_MARKER_FILE)
}

/// Writes the marker durably: a temp file, fsync, rename, fsync of the folder.
pub(crate) fn write_marker(prefix: &Path, marker: &CompletionMarker) -> Result<(), PrefixError> {
    let bytes = serde_json::to_vec_pretty(marker).unwrap_or_default();
    write_durably(prefix, MARKER_FILE, &bytes)
}

/// Removes both markers, so nothing serves or reuses the prefix from now on.
pub(crate) async fn remove_markers(prefix: &Path) -> Result<(), PrefixError> {
    for name in [MARKER_FILE, LEGACY_MARKER_FILE] {
        match tokio::fs::remove_file(prefix.join(name)).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(PrefixError::io("remove the marker of", prefix)(source)),
        }
    }
    Ok(())
}

/// Writes `conda-meta/history` as conda does after creating an environment:
/// one revision that adds every package, as `+<channel>/<subdir>::<name>-<version>-<build>`.
pub(crate) fn write_history(
    prefix: &Path,
    lock_hash: &ContentHash,
    records: &[RepoDataRecord],
) -> Result<(), PrefixError> {
    let text = history_text(SystemTime::now(), lock_hash, records);
    write_durably(prefix, HISTORY_FILE, text.as_bytes())
}

fn history_text(at: SystemTime, lock_hash: &ContentHash, records: &[RepoDataRecord]) -> String {
    let mut lines: Vec<String> = records.iter().map(dist_str).collect();
    lines.sort();
    let mut text = format!(
        "==> {} <==\n# cmd: envstore build (lock {})\n",
        utc_timestamp(at),
        lock_hash.to_hex()
    );
    for line in lines {
        text.push('+');
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// conda's `PackageRecord.dist_str()`: `<channel>/<subdir>::<name>-<version>-<build>`,
/// the channel by its canonical name (`conda-forge` for
/// `https://conda.anaconda.org/conda-forge`, else its URL).
fn dist_str(record: &RepoDataRecord) -> String {
    let package = &record.package_record;
    let channel = record
        .channel
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/');
    let channel = channel
        .strip_prefix("https://conda.anaconda.org/")
        .unwrap_or(channel);
    let identity = format!(
        "{}-{}-{}",
        package.name.as_normalized(),
        package.version,
        package.build
    );
    if channel.is_empty() {
        identity
    } else {
        format!("{channel}/{}::{identity}", package.subdir)
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, conda's header format (conda uses local
/// time; a service has no meaningful one).
fn utc_timestamp(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`), so no date crate is needed for one header line.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
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
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes `relative` inside `prefix` durably and readable by everyone: a
/// temp file (created 0600 by tempfile, so its mode is set explicitly),
/// fsync, rename, fsync of the folder.
fn write_durably(prefix: &Path, relative: &str, bytes: &[u8]) -> Result<(), PrefixError> {
    let path = prefix.join(relative);
    let folder = path.parent().unwrap_or(prefix).to_owned();
    fs_err::create_dir_all(&folder).map_err(PrefixError::io("create", &folder))?;
    // A unique name: two writers never write into each other's file.
    let mut file = tempfile::Builder::new()
        .prefix(".envstore-meta-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(META_FILE_MODE))
        .tempfile_in(&folder)
        .map_err(PrefixError::io("create a temporary file in", &folder))?;
    file.write_all(bytes)
        .map_err(PrefixError::io("write", file.path()))?;
    // The umask applies at creation; the mode others read by may not.
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(META_FILE_MODE))
        .map_err(PrefixError::io("set the mode of", file.path()))?;
    file.as_file()
        .sync_all()
        .map_err(PrefixError::io("sync", file.path()))?;
    file.persist(&path)
        .map_err(|error| PrefixError::io("rename into place", &path)(error.error))?;
    fs_err::File::open(&folder)
        .and_then(|dir| dir.sync_all())
        .map_err(PrefixError::io("sync", &folder))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use std::time::Duration;

    use rattler_conda_types::{PackageName, PackageRecord, Version};

    /// `<name>-1.2.3-h0_1` for linux-64 from `channel`.
    pub(crate) fn record(name: &str, channel: Option<&str>) -> RepoDataRecord {
        let package_record = PackageRecord::new(
            PackageName::new_unchecked(name),
            "1.2.3".parse::<Version>().unwrap(),
            "h0_1".parse().unwrap(),
        );
        let mut package_record = package_record;
        package_record.subdir = "linux-64".to_owned();
        RepoDataRecord {
            package_record,
            identifier: format!("{name}-1.2.3-h0_1.conda").parse().unwrap(),
            url: format!("https://example.invalid/{name}-1.2.3-h0_1.conda")
                .parse()
                .unwrap(),
            channel: channel.map(str::to_owned),
        }
    }

    #[test]
    fn history_is_in_condas_format() {
        let at = UNIX_EPOCH + Duration::from_secs(1_764_560_339);
        let records = [
            record("zlib", Some("https://conda.anaconda.org/conda-forge/")),
            record("abc", Some("https://mirror.example/channels/main")),
        ];
        let lock = ContentHash::of(b"lock");
        let text = history_text(at, &lock, &records);
        assert_eq!(
            text,
            format!(
                "==> 2025-12-01 03:38:59 <==\n\
                 # cmd: envstore build (lock {})\n\
                 +conda-forge/linux-64::zlib-1.2.3-h0_1\n\
                 +https://mirror.example/channels/main/linux-64::abc-1.2.3-h0_1\n",
                lock.to_hex()
            )
        );
    }

    #[test]
    fn dates_convert_across_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        assert_eq!(civil_from_days(20_819), (2027, 1, 1));
    }

    #[test]
    fn an_old_marker_still_counts_and_the_new_one_is_readable_by_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path();
        assert!(!is_complete(prefix));
        let marker = CompletionMarker {
            lock_hash: ContentHash::of(b"lock"),
            platform: "linux-64".into(),
            packages: 1,
        };
        fs_err::create_dir_all(prefix.join("conda-meta")).unwrap();
        fs_err::write(
            prefix.join(LEGACY_MARKER_FILE),
            serde_json::to_vec(&marker).unwrap(),
        )
        .unwrap();
        assert!(is_complete(prefix));
        assert_eq!(read_marker(prefix), Some(marker.clone()));

        fs_err::remove_file(prefix.join(LEGACY_MARKER_FILE)).unwrap();
        write_marker(prefix, &marker).unwrap();
        assert!(is_complete(prefix));
        assert_eq!(read_marker(prefix), Some(marker));
        let mode = fs_err::metadata(prefix.join(MARKER_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, META_FILE_MODE);
        assert!(!MARKER_FILE.ends_with(".json"));
    }
}

//! What the data folders hold, for `/metrics`: the bytes under each folder
//! (walked now and then, since a walk of many prefixes takes a while) and
//! the size and free space of the file system each is on (cheap, read
//! often). node_exporter sees only the file system; these say which
//! folder fills it.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::layout::Layout;

/// Bytes of the regular files under a data folder, each inode once.
pub const FOLDER_BYTES_METRIC: &str = "envstore_data_folder_bytes";
/// Size of the file system a data folder is on.
pub const FILESYSTEM_SIZE_METRIC: &str = "envstore_data_filesystem_size_bytes";
/// Bytes an unprivileged process may still write on that file system.
pub const FILESYSTEM_FREE_METRIC: &str = "envstore_data_filesystem_free_bytes";

/// How often the file systems' free space is read.
const FREE_EVERY: Duration = Duration::from_secs(30);

/// The folders measured, by their `folder` label.
fn folders(layout: &Layout) -> [(&'static str, PathBuf); 4] {
    [
        ("prefixes", layout.prefixes.clone()),
        ("environments", layout.environments.clone()),
        ("package_cache", layout.package_cache.clone()),
        ("pypi_cache", layout.pypi_cache.clone()),
    ]
}

/// Measures the data folders until dropped: free space every 30 s, the
/// folders' contents every `walk_every`. Meant to be spawned once per node.
pub async fn watch_disk_usage(layout: Layout, walk_every: Duration) {
    metrics::describe_gauge!(
        FOLDER_BYTES_METRIC,
        metrics::Unit::Bytes,
        "Bytes of the regular files under a data folder, each hardlinked file once within the folder (prefixes share files with the package cache, and count in both)."
    );
    metrics::describe_gauge!(
        FILESYSTEM_SIZE_METRIC,
        metrics::Unit::Bytes,
        "Size of the file system a data folder is on."
    );
    metrics::describe_gauge!(
        FILESYSTEM_FREE_METRIC,
        metrics::Unit::Bytes,
        "Bytes still free, for an unprivileged writer, on the file system a data folder is on."
    );
    let mut last_walk: Option<tokio::time::Instant> = None;
    loop {
        let walk = last_walk.is_none_or(|at| at.elapsed() >= walk_every);
        let measured = {
            let layout = layout.clone();
            tokio::task::spawn_blocking(move || measure(&layout, walk)).await
        };
        if measured.is_ok() && walk {
            last_walk = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(FREE_EVERY.min(walk_every)).await;
    }
}

/// Sets the gauges: free space always, folder contents when `walk`.
fn measure(layout: &Layout, walk: bool) {
    for (label, folder) in folders(layout) {
        if let Some((size, free)) = filesystem_space(&folder) {
            metrics::gauge!(FILESYSTEM_SIZE_METRIC, "folder" => label).set(size as f64);
            metrics::gauge!(FILESYSTEM_FREE_METRIC, "folder" => label).set(free as f64);
        }
        if walk {
            metrics::gauge!(FOLDER_BYTES_METRIC, "folder" => label)
                .set(folder_bytes(&folder) as f64);
        }
    }
}

/// Size and free bytes of the file system holding `folder` (the nearest
/// existing ancestor, for a folder not made yet).
fn filesystem_space(folder: &Path) -> Option<(u64, u64)> {
    let existing = folder.ancestors().find(|path| path.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some((
        stat.f_blocks.saturating_mul(stat.f_frsize),
        stat.f_bavail.saturating_mul(stat.f_frsize),
    ))
}

/// Bytes of the regular files under `folder`, counting a hardlinked inode
/// once and never following symbolic links; what cannot be read is skipped
/// (a prefix being removed while walked).
fn folder_bytes(folder: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    for entry in walkdir::WalkDir::new(folder).follow_links(false) {
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.nlink() > 1 && !seen.insert((metadata.dev(), metadata.ino())) {
            continue;
        }
        bytes = bytes.saturating_add(metadata.len());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_counts_its_files_once_per_inode_and_not_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("prefixes");
        fs_err::create_dir_all(folder.join("a/bin")).unwrap();
        fs_err::write(folder.join("a/bin/tool"), vec![0u8; 1000]).unwrap();
        fs_err::hard_link(folder.join("a/bin/tool"), folder.join("a/bin/same")).unwrap();
        fs_err::write(folder.join("a/other"), vec![0u8; 24]).unwrap();
        let outside = dir.path().join("outside");
        fs_err::write(&outside, vec![0u8; 5000]).unwrap();
        std::os::unix::fs::symlink(&outside, folder.join("a/link")).unwrap();
        assert_eq!(folder_bytes(&folder), 1024);
        assert_eq!(folder_bytes(&dir.path().join("missing")), 0);
    }

    #[test]
    fn free_space_is_read_from_the_nearest_existing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (size, free) = filesystem_space(&dir.path().join("not/made/yet")).unwrap();
        assert!(size > 0 && free <= size, "{size} {free}");
    }
}

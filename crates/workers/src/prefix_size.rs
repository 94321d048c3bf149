//! How much disk a prefix takes, for usage figures and disk quotas. A
//! prefix never changes once complete, so it is measured once, by the first
//! node that builds or materialises it (or, for prefixes older than the
//! measurement, the first build that reuses it), and recorded under its
//! lock hash.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use envstore_core::ContentHash;
use envstore_db::Database;

/// A prefix's regular files: their bytes and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrefixSize {
    pub(crate) bytes: u64,
    pub(crate) files: u64,
    /// Bytes of the files linked nowhere else (not from the package cache,
    /// nor twice in the prefix): what removing the prefix frees.
    pub(crate) unshared_bytes: u64,
}

/// Adds up the regular files under `prefix`, counting each inode once (files
/// linked from the package cache are often hardlinked to each other) and
/// never following symbolic links.
pub(crate) fn measure_prefix(prefix: &Path) -> Result<PrefixSize, walkdir::Error> {
    let mut seen = HashSet::new();
    let mut size = PrefixSize {
        bytes: 0,
        files: 0,
        unshared_bytes: 0,
    };
    for entry in walkdir::WalkDir::new(prefix).follow_links(false) {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let metadata = entry.metadata()?;
        if metadata.nlink() > 1 && !seen.insert((metadata.dev(), metadata.ino())) {
            continue;
        }
        size.bytes += metadata.len();
        size.files += 1;
        if metadata.nlink() == 1 {
            size.unshared_bytes += metadata.len();
        }
    }
    Ok(size)
}

/// Measures and records the prefix of `lock_hash` unless its size is
/// already known. Returns the size when it was measured now. Usage figures
/// are bookkeeping: a failure is logged and never fails a build.
pub(crate) async fn record_prefix_size(
    db: &Database,
    lock_hash: &ContentHash,
    prefix: &Path,
) -> Option<PrefixSize> {
    match db.prefix_size(lock_hash).await {
        Ok(Some(_)) => return None,
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(lock = %lock_hash, error = %envstore_core::error_chain(&error), "failed to read a prefix's size");
            return None;
        }
    }
    let path: PathBuf = prefix.to_owned();
    let size = match tokio::task::spawn_blocking(move || measure_prefix(&path)).await {
        Ok(Ok(size)) => size,
        Ok(Err(error)) => {
            let error = envstore_core::error_chain(&error);
            tracing::warn!(prefix = %prefix.display(), error = %error, "failed to measure a prefix");
            return None;
        }
        Err(error) => {
            tracing::warn!(prefix = %prefix.display(), error = %error, "the task measuring a prefix failed");
            return None;
        }
    };
    if let Err(error) = db
        .record_prefix_size(lock_hash, size.bytes, size.files)
        .await
    {
        tracing::warn!(lock = %lock_hash, error = %envstore_core::error_chain(&error), "failed to record a prefix's size");
        return None;
    }
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_regular_files_once_per_inode_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("prefix");
        fs_err::create_dir_all(prefix.join("lib/deep")).unwrap();
        fs_err::write(prefix.join("lib/a.so"), vec![0u8; 1000]).unwrap();
        fs_err::hard_link(prefix.join("lib/a.so"), prefix.join("lib/deep/a-again.so")).unwrap();
        fs_err::write(prefix.join("lib/deep/b.py"), b"print()\n").unwrap();
        std::os::unix::fs::symlink("a.so", prefix.join("lib/link.so")).unwrap();
        // Outside the prefix, reached only through a link: not counted.
        fs_err::write(dir.path().join("outside"), vec![0u8; 5000]).unwrap();
        std::os::unix::fs::symlink(dir.path(), prefix.join("escape")).unwrap();

        let size = measure_prefix(&prefix).unwrap();
        assert_eq!(
            size,
            PrefixSize {
                bytes: 1008,
                files: 2,
                unshared_bytes: 8
            }
        );
        assert!(measure_prefix(&dir.path().join("missing")).is_err());
    }
}

//! How big a package may get once extracted. Packages come from people we
//! do not trust: without limits a small archive could fill the disk (a
//! decompression bomb) or its inodes (an inode bomb) before anything notices.

use serde::{Deserialize, Serialize};

/// Limits every package is extracted under. The defaults are far above any
/// real conda package (the largest ones are a few GiB and tens of thousands
/// of files) and far below what hurts a build node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackageLimits {
    /// Bytes of all files of one package once extracted (and of its archive).
    pub max_extracted_bytes: u64,
    /// Members (files, folders, links) of one package.
    pub max_files: u64,
    /// Extracted bytes per archive byte, checked once a package is past
    /// `ratio_grace_bytes` (small text-only packages compress very well).
    pub max_compression_ratio: u64,
    /// Extracted bytes below which the ratio is not checked.
    pub ratio_grace_bytes: u64,
}

/// 5 GiB.
pub const DEFAULT_MAX_EXTRACTED_BYTES: u64 = 5 * 1024 * 1024 * 1024;
pub const DEFAULT_MAX_FILES: u64 = 200_000;
pub const DEFAULT_MAX_COMPRESSION_RATIO: u64 = 1000;
/// 16 MiB.
pub const DEFAULT_RATIO_GRACE_BYTES: u64 = 16 * 1024 * 1024;

impl Default for PackageLimits {
    fn default() -> Self {
        Self {
            max_extracted_bytes: DEFAULT_MAX_EXTRACTED_BYTES,
            max_files: DEFAULT_MAX_FILES,
            max_compression_ratio: DEFAULT_MAX_COMPRESSION_RATIO,
            ratio_grace_bytes: DEFAULT_RATIO_GRACE_BYTES,
        }
    }
}

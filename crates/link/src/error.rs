//! The link crate's errors: why a package could not pass the gate
//! ([`GateError`]) and why a prefix could not be built, packed or unpacked
//! ([`PrefixError`]). Their own module, so the modules that return them
//! (fetch, prefix, pack, activation) depend on it and not on each other.

use std::path::{Path, PathBuf};

use rattler::install::InstallerError;

use crate::entry_lock::EntryLockError;
use crate::validate::Rejection;

/// Why the gate could not get a package (besides refusing it).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("refused: {0}")]
    Rejected(Rejection),
    #[error("failed to download '{url}': {message}")]
    Download { url: String, message: String },
    #[error("failed to {action} '{}'", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("packages from '{0}' cannot be fetched: only http, https and file URLs are")]
    Scheme(String),
    #[error("the cache entry '{}' was replaced while it was checked; try the build again", .0.display())]
    Replaced(PathBuf),
    #[error("the package cache has no folder to write to")]
    NoCacheFolder,
    #[error("{0}")]
    Cache(String),
    #[error(transparent)]
    Lock(#[from] EntryLockError),
}

impl GateError {
    /// For `map_err`: an IO error on `path` while doing `action`.
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error("failed to fetch package '{package}'")]
    Gate {
        package: String,
        #[source]
        source: GateError,
    },
    #[error("refused package '{package}'")]
    Rejected {
        package: String,
        #[source]
        reason: Rejection,
    },
    #[error("failed to install into '{}'", prefix.display())]
    Install {
        prefix: PathBuf,
        #[source]
        source: InstallerError,
    },
    #[error("refused the prefix '{}'", prefix.display())]
    Unsafe {
        prefix: PathBuf,
        #[source]
        reason: Rejection,
    },
    #[error("the prefix '{}' does not hold the lock's packages (missing: {missing:?}, unexpected: {extra:?})", prefix.display())]
    Mismatch {
        prefix: PathBuf,
        missing: Vec<String>,
        extra: Vec<String>,
    },
    /// A packed prefix whose bytes are not the ones published: damaged or
    /// cut short on the way. Nothing of it is kept.
    #[error("the packed prefix for '{}' has sha256 {found}, expected {expected}", prefix.display())]
    Checksum {
        prefix: PathBuf,
        expected: envstore_core::ContentHash,
        found: envstore_core::ContentHash,
    },
    /// What was installed after the conda packages (the PyPI wheels)
    /// failed; the prefix is removed like any unfinished one.
    #[error("failed to install the PyPI packages into '{}'", prefix.display())]
    AfterLink {
        prefix: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to {action} '{}'", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PrefixError {
    /// For `map_err`: an IO error on `path` while doing `action`.
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

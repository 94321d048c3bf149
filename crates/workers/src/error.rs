//! Why a build step failed, and whether trying again may help.

use envstore_core::{ContentHash, error_chain};
use envstore_db::DbError;
use envstore_link::PrefixError;
use envstore_solve::{LockError, SolveError};
use envstore_store::StoreError;

use crate::materialize::MaterializeError;
use crate::urls::UrlNotAllowed;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("the build's spec '{0}' is missing from the database")]
    MissingSpec(String),
    #[error(transparent)]
    Solve(#[from] SolveError),
    #[error("failed to write the lockfiles")]
    Lock(#[from] LockError),
    #[error("failed to build the prefix")]
    Prefix(#[from] PrefixError),
    #[error(transparent)]
    PypiResolve(#[from] envstore_pypi::EnvironmentError),
    #[error("failed to fetch the PyPI packages")]
    Pypi(#[from] envstore_pypi::PypiError),
    #[error("failed to publish artifacts")]
    Store(#[from] StoreError),
    #[error("the database failed")]
    Db(#[from] DbError),
    #[error(transparent)]
    UrlNotAllowed(#[from] UrlNotAllowed),
    #[error("failed to point the environment at its prefix")]
    Link(#[source] std::io::Error),
    #[error("failed to materialise the prefix built elsewhere")]
    Materialize(#[from] MaterializeError),
    #[error("a background task failed: {0}")]
    Task(String),
    #[error("lost the lease on building the prefix: {0}")]
    PrefixLeaseLost(&'static str),
    #[error(
        "the stored lock reads back as {found}, not as the lock {expected} the build asked for"
    )]
    LockMismatch {
        expected: ContentHash,
        found: ContentHash,
    },
}

impl BuildError {
    /// Whether another attempt may succeed: unreachable repodata, a store or
    /// database hiccup. Unsolvable specs and bad packages fail for good.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Solve(error) => error.is_transient(),
            Self::PypiResolve(error) => error.is_transient(),
            Self::Pypi(
                envstore_pypi::PypiError::IndexUnreachable { .. }
                | envstore_pypi::PypiError::Download { .. },
            ) => true,
            _ if disk_full_message(self).is_some() => false,
            Self::Store(_) | Self::Db(_) | Self::PrefixLeaseLost(_) => true,
            _ => false,
        }
    }
}

/// Whether the error comes from a full disk (or quota): then the build
/// fails for good, with a message that says so and names the path.
pub(crate) fn disk_full_message(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        chain.push(error);
        current = error.source();
    }
    // Some libraries keep only the text of the operating system's error.
    let full = chain.iter().any(|error| {
        error.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded
                || matches!(io.raw_os_error(), Some(28 | 122))
        }) || {
            let text = error.to_string();
            text.contains("(os error 28)")
                || text.contains("(os error 122)")
                || text.contains("database or disk is full")
        }
    });
    if !full {
        return None;
    }
    // The innermost message that names a path ('…').
    let path = chain
        .iter()
        .rev()
        .find_map(|error| quoted_path(&error.to_string()));
    Some(match path {
        Some(path) => format!("no space left on device while writing '{path}'"),
        None => format!("no space left on device ({})", error_chain(error)),
    })
}

/// The first `'/…'` in a message.
fn quoted_path(message: &str) -> Option<String> {
    let start = message.find("'/")? + 1;
    let length = message[start..].find('\'')?;
    Some(message[start..start + length].to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_full_disk_fails_the_build_for_good_naming_the_path() {
        let io = std::io::Error::from_raw_os_error(28);
        let error = BuildError::Prefix(PrefixError::Io {
            action: "write",
            path: PathBuf::from("/data/prefixes/0123/lib/libz.so"),
            source: io,
        });
        assert_eq!(
            disk_full_message(&error).as_deref(),
            Some("no space left on device while writing '/data/prefixes/0123/lib/libz.so'")
        );
        assert!(!error.is_transient());
        // A library that keeps only the text of the error.
        let store = BuildError::Task(
            "Unable to copy data to file: No space left on device (os error 28)".to_owned(),
        );
        assert!(
            disk_full_message(&store)
                .unwrap()
                .starts_with("no space left on device (")
        );
        let other = BuildError::Task("connection reset".to_owned());
        assert_eq!(disk_full_message(&other), None);
    }
}

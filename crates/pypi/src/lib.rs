//! The PyPI part of an environment, resolved and installed with uv's crates
//! in-process, the way pixi does it: the target interpreter is described by
//! the locked conda `python` record (no interpreter is run), PyPI projects
//! the conda part provides are pinned to their conda versions and never
//! fetched, only wheels are used (no source builds), and every wheel passes
//! a safety gate before anything of it is written into a prefix.

mod build_context;
mod cache;
mod client;
mod conda;
mod environment;
mod install;
mod resolve;
mod target;

use std::path::PathBuf;

pub use cache::{DEFAULT_MAX_WHEEL_BYTES, WheelCache};
pub use client::{IndexSettings, PYPI_INDEX_URL, TlsSettings};
pub use conda::{KNOWN_RENAMES, conda_provided};
pub use environment::{
    EnvironmentError, SolvedPlatform, resolve_environment, resolve_solved, settings_for,
};
pub use envstore_core::pypi::LockedWheel;
pub use install::{InstalledWheel, WheelLimits, install_wheels};
/// The timestamp type of [`IndexSettings::exclude_newer`] (uv's).
pub use jiff::Timestamp;
pub use resolve::resolve;
pub use target::{DEFAULT_GLIBC, DEFAULT_MACOS_ARM64, DEFAULT_MACOS_X86_64, PythonTarget};

/// Everything resolving, fetching and installing PyPI packages can fail
/// with, each variant something a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PypiError {
    /// The requirements cannot be satisfied; `report` is uv's explanation
    /// (a `Requires-Python` mismatch shows up here too).
    #[error("the PyPI requirements have no solution:\n{report}")]
    NoSolution { report: String },

    #[error(
        "'{package}' has no wheel for this platform and python, only a source distribution: source builds are not supported yet"
    )]
    SourceBuildRequired { package: String },

    #[error("the package index could not be reached: {message}")]
    IndexUnreachable { message: String },

    #[error("'{requirement}' is not a valid PEP 508 requirement: {message}")]
    InvalidRequirement {
        requirement: String,
        message: String,
    },

    #[error(
        "the conda package providing '{package}' has version '{version}', which is not a PEP 440 version"
    )]
    InvalidCondaVersion { package: String, version: String },

    #[error("no PyPI wheels can be chosen for {platform}: {reason}")]
    UnsupportedTarget { platform: String, reason: String },

    /// A wheel named by URL (`name @ https://…/x.whl`) that cannot be taken.
    #[error("the wheel '{url}' cannot be used: {reason}")]
    NamedWheel { url: String, reason: String },

    #[error("the index gave no sha256 for '{wheel}'; every locked wheel needs one")]
    MissingHash { wheel: String },

    #[error("'{url}' does not match its locked sha256 (expected {expected}, got {actual})")]
    HashMismatch {
        url: String,
        expected: String,
        actual: String,
    },

    #[error("'{url}' is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },

    #[error("downloading '{url}' failed: {message}")]
    Download { url: String, message: String },

    /// A wheel that would write outside its place, over another package's
    /// files, or beyond the size limits: refused before anything is written.
    #[error("refusing wheel '{wheel}': '{path}' {rule}")]
    HostileWheel {
        wheel: String,
        path: String,
        rule: String,
    },

    #[error("the wheel '{wheel}' is not a valid wheel: {message}")]
    InvalidWheel { wheel: String, message: String },

    #[error("installing '{wheel}' failed: {message}")]
    Install { wheel: String, message: String },

    #[error("reading the conda records of the prefix {prefix}: {message}")]
    PrefixRecords { prefix: PathBuf, message: String },

    #[error("resolving the PyPI requirements failed: {message}")]
    Resolve { message: String },

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// uv renders its messages with terminal colours; envstore shows them in
/// logs, JSON and web pages.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        if character == '\u{1b}' && characters.peek() == Some(&'[') {
            characters.next();
            for code in characters.by_ref() {
                if code.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(character);
        }
    }
    plain
}

/// An error and its sources, one line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    strip_ansi(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[36mfoo\u{1b}[39m==\u{1b}[1;31m1.0\u{1b}[0m"),
            "foo==1.0"
        );
    }
}

//! Fetching packages into the shared package cache and linking them into
//! hash-addressed prefixes: the hot path of every build.
//!
//! A prefix is built at its final path, because conda prefixes embed their
//! own location. It counts as complete only once its marker file exists; the
//! marker is written last, after everything else is on disk. Everything in
//! `conda-meta/` besides the marker is what conda tools expect there.

mod activation;
mod conda_meta;
mod entry_lock;
mod error;
mod extract;
mod fetch;
mod limits;
mod pack;
mod prefix;
mod progress;
mod symlink;
mod validate;

pub use activation::write_activation_scripts;
pub use conda_meta::{
    CompletionMarker, HISTORY_FILE, LEGACY_MARKER_FILE, MARKER_FILE, is_complete, read_marker,
};
pub use entry_lock::{
    EntryLock, EntryLockError, LockMode, lock_path as entry_lock_path, try_lock_entry,
};
pub use error::{GateError, PrefixError};
pub use fetch::{DEFAULT_TRANSIENT_RETRY, PackageGate, fetch_packages};
pub use limits::{
    DEFAULT_MAX_COMPRESSION_RATIO, DEFAULT_MAX_EXTRACTED_BYTES, DEFAULT_MAX_FILES,
    DEFAULT_RATIO_GRACE_BYTES, PackageLimits,
};
pub use pack::{installed_packages, pack_prefix, unpack_prefix};
pub use prefix::{AfterLink, PrefixBuilder, PrefixReport, remove_prefix};
pub use progress::{ProgressSink, TransferCounts};
pub use symlink::point_environment;
pub use validate::{Rejection, validate_package};

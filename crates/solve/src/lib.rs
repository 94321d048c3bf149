//! From a canonical spec to a lock: repodata through rattler's gateway, a
//! resolvo solve per platform with that platform's virtual packages, and the
//! lock with its content hash and every published lockfile format.

mod cache;
mod freshness;
pub mod http;
mod lock;
mod solver;
mod verify;
mod virtual_packages;

pub use http::{
    ChannelClient, ChannelRequestError, DEFAULT_MAX_REPODATA_BYTES, DEFAULT_TRANSIENT_RETRY,
    NetworkLimits, RequestFailure, Retried,
};
pub use lock::{Lock, LockError, LockedPackage, PYPI_MANAGER};
pub use solver::{
    DEFAULT_REMOTE_REPODATA_TTL, DEFAULT_SOLVE_CACHE_CAPACITY, EnvironmentSolver, SolveError,
    SolvedEnvironment,
};
pub use verify::{VERIFY_TIMEOUT, VerifyError};
pub use virtual_packages::{virtual_packages_for, virtual_packages_with};

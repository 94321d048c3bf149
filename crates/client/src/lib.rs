//! The client of an envstore server, for CI and people: submit a spec and wait
//! for its build, fetch a lockfile. Server and token come from flags or
//! `ENVSTORE_URL` / `ENVSTORE_TOKEN`.

mod client;
mod error;
pub mod kernels;
pub mod prefixes;
mod progress;
mod resources;
mod sse;
pub mod usage;

pub use client::{Client, Followed, SolveRequest, build_outcome, is_lockfile, read_spec_file};
/// The wire types the client's methods answer, for its users.
pub use envstore_api_types;
pub use error::ApiError;
pub use progress::Downloads;
pub use resources::{LogEnd, LogEvent, read_policy_file};
pub use sse::{EventParser, StreamEvent};

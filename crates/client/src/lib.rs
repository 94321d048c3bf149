//! The client of an envstore server, for CI and people: submit a spec and wait
//! for its build, fetch a lockfile. Server and token come from flags or
//! `ENVSTORE_URL` / `ENVSTORE_TOKEN`.

mod client;
pub mod kernels;
pub mod prefixes;
mod progress;
mod sse;
pub mod usage;

pub use client::{Client, SolveRequest, build_outcome, is_lockfile, read_spec_file};
pub use sse::{EventParser, StreamEvent};

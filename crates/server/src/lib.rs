//! The `envstore` binary's library: the server assembled from the crates
//! (also used by the end-to-end tests) and the command-line definition.

pub mod args;
pub mod config;
pub mod gc;
pub mod server;

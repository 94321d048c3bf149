//! envstore-server's integration tests, one binary (each file was a binary of
//! its own: one link and one ~200 MB executable per file, in CI's disk too).
#![allow(clippy::unwrap_used)] // helpers outside #[test] unwrap too

mod backup;
mod cli;
mod client;
mod dependencies;
mod deploy;
mod distributed;
mod faults_backends;
mod faults_kill;
mod gc;
mod kernels;
mod load;
mod logs;
mod migrate;
mod support;
mod usage;

//! envstore-solve's integration tests, one binary (each file was a binary of
//! its own: one link and one ~200 MB executable per file, in CI's disk too).
#![allow(clippy::unwrap_used)] // helpers outside #[test] unwrap too

mod demo_channel;
mod pypi_lock;
mod repodata_retries;

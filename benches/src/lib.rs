//! The workloads behind envstore's benchmarks, shared by the criterion benches
//! (`cargo bench -p envstore-benches`) and by `envstore-bench`, the binary the
//! peer comparison (`benches/compare.sh`) drives.
//!
//! Solve cases come from `benches/cases.json` and run on the real repodata in
//! `../shared/fixtures/repodata`; when that is absent, benches say so and skip.

pub mod build;
pub mod cases;
pub mod forge;
pub mod link;
pub mod pypi;
pub mod scale;

pub use cases::{Cases, SolveCase, repodata_root};

use std::path::PathBuf;

/// Where generated benchmark data (mirror channels, package caches) is kept
/// between runs: `ENVSTORE_BENCH_DATA`, else `target/bench-data`. Created,
/// and absolute without `..`, because channel URLs are made from it.
pub fn bench_data_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::var_os("ENVSTORE_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"));
    fs_err::create_dir_all(&dir)?;
    fs_err::canonicalize(dir)
}

/// A progress sink that drops every line: benchmarks measure, they do not log.
pub struct Quiet;

impl envstore_link::ProgressSink for Quiet {
    fn line(&self, _line: String) {}
}

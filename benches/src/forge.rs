//! The first solve on a channel of conda-forge's size, served over HTTP:
//! sharded (CEP-16) against monolithic `repodata.json.zst`, a million
//! records against the 26,000 of the real base they are grown from, cold
//! (empty repodata cache) and warm (cache on disk, a new process: what a
//! worker that restarted pays). Each solve runs in a child process of its
//! own, so its peak memory is its own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use envstore_core::NamedChannel;
use envstore_fixtures::{ForgeOptions, ForgeSummary, write_forge_channel};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::cases::{fresh_solver, spec_for};
use crate::scale::peak_memory_mib;

/// The real channels the forge channel is grown from (26,420 records with
/// noarch), as the `osx2018-*` solve cases use them.
pub const FORGE_BASE_CHANNELS: [&str; 3] = [
    "anaconda-main-2018-10",
    "anaconda-free-2018-10",
    "anaconda-r-2018-10",
];

/// The base's architecture subdir.
pub const FORGE_SOURCE_SUBDIR: &str = "osx-64";

/// A data-science environment of the base's time.
pub const FORGE_SPECS: [&str; 7] = [
    "python 3.6.*",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "scikit-learn",
    "jupyter",
];

/// The options of a forge channel grown from the 2018 base under `root`.
pub fn forge_options(root: &Path, clusters: usize, versions: usize) -> ForgeOptions {
    ForgeOptions {
        root: root.to_owned(),
        channels: FORGE_BASE_CHANNELS.map(str::to_owned).to_vec(),
        source_subdir: FORGE_SOURCE_SUBDIR.to_owned(),
        clusters,
        versions,
        zstd_level: 9,
    }
}

/// Where the channel of these options is written under `data`.
pub fn forge_dir(data: &Path, clusters: usize, versions: usize) -> PathBuf {
    data.join(format!("forge-c{clusters}-v{versions}"))
}

/// Writes (or finds) the channel.
pub fn write_forge(
    root: &Path,
    data: &Path,
    clusters: usize,
    versions: usize,
) -> anyhow::Result<ForgeSummary> {
    let dir = forge_dir(data, clusters, versions);
    write_forge_channel(&forge_options(root, clusters, versions), &dir)
        .with_context(|| format!("writing the forge channel {}", dir.display()))
}

/// What one child's solve measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgeSolve {
    pub ms: f64,
    /// The child's peak resident memory, in MiB.
    pub peak_mib: f64,
    /// Its peak before the solve began (the runtime and the binary).
    pub peak_mib_before: f64,
    pub packages: usize,
}

/// The child's side: one solve of [`FORGE_SPECS`] on `channel` with the
/// repodata cache in `cache`, printed as one JSON line.
pub async fn solve_once(channel: &Url, cache: &Path) -> anyhow::Result<ForgeSolve> {
    let specs: Vec<String> = FORGE_SPECS.map(str::to_owned).to_vec();
    let spec = spec_for(
        &specs,
        "linux-64",
        vec![NamedChannel {
            name: "forge".to_owned(),
            url: channel.clone(),
        }],
    )?;
    let before = peak_memory_mib().unwrap_or(f64::NAN);
    let solver = fresh_solver(cache).with_solve_cache_capacity(0);
    let started = Instant::now();
    let solved = solver.solve(&spec).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(ForgeSolve {
        ms,
        peak_mib: peak_memory_mib().unwrap_or(f64::NAN),
        peak_mib_before: before,
        packages: solved
            .platforms
            .get("linux-64")
            .map_or(0, |records| records.len()),
    })
}

//! The solve cases of `benches/cases.json` and the repodata they run on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use envstore_core::{CanonicalSpec, ChannelAllowlist, EnvironmentSpec, NamedChannel, SpecFormat};
use envstore_solve::EnvironmentSolver;
use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::Subdir;
use serde::Deserialize;
use url::Url;

const CASES: &str = include_str!("../cases.json");

/// The solve timeout of benchmark solves: far above any case's real time.
pub const SOLVE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Deserialize)]
pub struct Cases {
    pub virtual_packages: BTreeMap<String, Vec<String>>,
    pub cases: Vec<SolveCase>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SolveCase {
    pub name: String,
    /// Channel directories under the repodata root, highest priority first.
    pub channels: Vec<String>,
    pub platform: String,
    pub specs: Vec<String>,
    /// How many packages py-rattler's solve gave (SOURCES.md).
    pub reference_packages: usize,
}

impl Cases {
    pub fn load() -> anyhow::Result<Self> {
        serde_json::from_str(CASES).context("benches/cases.json is not valid")
    }

    pub fn get(&self, name: &str) -> anyhow::Result<&SolveCase> {
        self.cases
            .iter()
            .find(|case| case.name == name)
            .with_context(|| format!("no solve case named '{name}' in benches/cases.json"))
    }
}

/// The real repodata fixtures: `ENVSTORE_REPODATA`, else
/// `../shared/fixtures/repodata` beside the workspace. None when absent.
pub fn repodata_root() -> Option<PathBuf> {
    let root = std::env::var_os("ENVSTORE_REPODATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/repodata")
        });
    let root = fs_err::canonicalize(root).ok()?;
    root.join("SOURCES.md").is_file().then_some(root)
}

impl SolveCase {
    pub fn subdir(&self) -> anyhow::Result<Subdir> {
        self.platform
            .parse()
            .with_context(|| format!("unknown platform '{}'", self.platform))
    }

    /// The case as the service would see it: an environment spec
    /// canonicalised against an allowlist of its channels under `root`.
    pub fn canonical_spec(&self, root: &Path) -> anyhow::Result<CanonicalSpec> {
        let channels = self
            .channels
            .iter()
            .map(|name| {
                let url = Url::from_directory_path(root.join(name))
                    .map_err(|()| anyhow::anyhow!("'{name}' is not an absolute channel path"))?;
                Ok(NamedChannel {
                    name: name.clone(),
                    url,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        spec_for(&self.specs, &self.platform, channels)
    }
}

/// Canonicalises `specs` for `platform` against exactly `channels`.
pub fn spec_for(
    specs: &[String],
    platform: &str,
    channels: Vec<NamedChannel>,
) -> anyhow::Result<CanonicalSpec> {
    let body = serde_json::json!({
        "channels": channels.iter().map(|channel| channel.name.clone()).collect::<Vec<_>>(),
        "dependencies": specs,
        "platforms": [platform],
    });
    let allowlist = ChannelAllowlist::new(channels);
    let subdir: Subdir = platform
        .parse()
        .with_context(|| format!("unknown platform '{platform}'"))?;
    Ok(
        EnvironmentSpec::parse(body.to_string().as_bytes(), SpecFormat::Json)?
            .canonicalize(&allowlist, subdir)?,
    )
}

/// A solver with nothing in memory, its caches under `cache_dir`.
pub fn fresh_solver(cache_dir: &Path) -> EnvironmentSolver {
    EnvironmentSolver::new(
        cache_dir,
        PackageCache::new(cache_dir.join(rattler_cache::PACKAGE_CACHE_DIR)),
        SOLVE_TIMEOUT,
    )
}

/// rattler alone, as a program using it directly would call it: the gateway's
/// recursive query, then resolvo with the same virtual packages and strict
/// channel priority. The baseline of envstore's own solve.
pub struct BareRattler {
    gateway: rattler_repodata_gateway::Gateway,
}

impl BareRattler {
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            gateway: rattler_repodata_gateway::Gateway::builder()
                .with_cache_dir(cache_dir.join(rattler_cache::REPODATA_CACHE_DIR))
                .finish(),
        }
    }

    /// Solves `case` and returns the number of packages.
    pub async fn solve(&self, case: &SolveCase, root: &Path) -> anyhow::Result<usize> {
        use rattler_solve::{SolverImpl, SolverTask};
        let subdir = case.subdir()?;
        let channels = case
            .channels
            .iter()
            .map(|name| {
                Url::from_directory_path(root.join(name))
                    .map(rattler_conda_types::Channel::from_url)
                    .map_err(|()| anyhow::anyhow!("'{name}' is not an absolute channel path"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let specs = case
            .specs
            .iter()
            .map(|spec| {
                rattler_conda_types::MatchSpec::from_str(
                    spec,
                    rattler_conda_types::ParseStrictness::Lenient,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let repodata = self
            .gateway
            .query(channels, [subdir, Subdir::NoArch], specs.clone())
            .recursive(true)
            .execute()
            .await?;
        let solved = tokio::task::spawn_blocking(move || {
            rattler_solve::resolvo::Solver.solve(SolverTask {
                specs,
                virtual_packages: envstore_solve::virtual_packages_for(subdir),
                channel_priority: rattler_solve::ChannelPriority::Strict,
                ..SolverTask::from_iter(repodata.iter())
            })
        })
        .await??;
        Ok(solved.records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_names_a_platform_and_channels() {
        let cases = Cases::load().unwrap();
        assert!(cases.cases.len() >= 4);
        for case in &cases.cases {
            case.subdir().unwrap();
            assert!(!case.channels.is_empty());
            assert!(
                cases.virtual_packages.contains_key(&case.platform),
                "{}",
                case.name
            );
        }
    }

    /// The golden package counts of SOURCES.md, through the service's own
    /// solver (skipped where the fixtures are absent).
    #[tokio::test]
    async fn the_small_cases_solve_to_the_reference_package_count() {
        let Some(root) = repodata_root() else {
            eprintln!("skipped: ../shared/fixtures/repodata is absent");
            return;
        };
        let cases = Cases::load().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let solver = fresh_solver(cache.path());
        for name in ["index4-py36", "osx2018-py36"] {
            let case = cases.get(name).unwrap();
            let solved = solver
                .solve(&case.canonical_spec(&root).unwrap())
                .await
                .unwrap();
            let records = &solved.platforms[&case.platform];
            assert_eq!(records.len(), case.reference_packages, "{name}");
        }
    }
}

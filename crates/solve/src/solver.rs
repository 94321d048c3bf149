use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envstore_core::spec::SystemRequirements;
use envstore_core::{CanonicalSpec, SpecError};
use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::{Channel, RepoDataRecord, Subdir};
use rattler_repodata_gateway::{Gateway, GatewayError};
use rattler_solve::resolvo::Solver;
use rattler_solve::{ChannelPriority, SolverImpl, SolverTask};
use url::Url;

use crate::cache::{SolveCache, SolveKey};
use crate::freshness::Freshness;
use crate::http::ChannelClient;
use crate::virtual_packages::virtual_packages_with;

/// How long a remote channel's repodata is trusted before the gateway
/// revalidates it, unless configured otherwise.
pub const DEFAULT_REMOTE_REPODATA_TTL: Duration = Duration::from_secs(30);

/// How many solves are remembered, unless configured otherwise.
pub const DEFAULT_SOLVE_CACHE_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The reason names the channel and the path below it that failed, in
    /// words of ours: nothing the channel's server answered is echoed (the
    /// gateway's error goes to the server log).
    #[error("failed to load repodata for {platform}: {reason}")]
    Repodata {
        platform: String,
        reason: String,
        /// The channel client already retried it for the whole
        /// `--transient-retry-seconds` budget: retrying the build would
        /// only multiply the wait the operator chose.
        retried: bool,
    },
    #[error("the spec cannot be solved for {platform}:\n{explanation}")]
    Unsolvable {
        platform: String,
        explanation: String,
    },
    #[error("the solve for {platform} took longer than {seconds} s and was stopped")]
    Timeout { platform: String, seconds: u64 },
    #[error("the solve for {platform} failed")]
    Solver {
        platform: String,
        #[source]
        source: rattler_solve::SolveError,
    },
    #[error("the solver task stopped unexpectedly")]
    Join(#[source] tokio::task::JoinError),
}

impl SolveError {
    /// Whether trying again could help: repodata that could not be fetched
    /// may be reachable later, unless it was retried for the whole budget
    /// already; an unsolvable spec stays unsolvable.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Repodata { retried: false, .. } | Self::Join(_))
    }
}

/// The records chosen for each platform of a spec.
#[derive(Debug, Clone)]
pub struct SolvedEnvironment {
    pub channels: Vec<Url>,
    /// Records per platform, by package name. Shared with the solve cache,
    /// so a cached answer costs no copy.
    pub platforms: BTreeMap<String, Arc<Vec<RepoDataRecord>>>,
    /// How many platforms were answered from the solve cache.
    pub cached_platforms: usize,
}

/// Solves specs against repodata, keeping the gateway's caches warm across
/// builds and remembering recent solves while their repodata is unchanged.
#[derive(Clone)]
pub struct EnvironmentSolver {
    pub(crate) gateway: Gateway,
    timeout: Duration,
    freshness: Arc<Freshness>,
    solves: Arc<SolveCache>,
    cache_dir: std::path::PathBuf,
    package_cache: PackageCache,
    /// The client the gateway fetches with, when one was given: it also
    /// masks channel secrets in what is logged.
    client: Option<ChannelClient>,
    /// How long one call of [`Self::solve`] may take in all.
    call_limit: Option<Duration>,
}

impl EnvironmentSolver {
    /// `cache_dir` holds the repodata cache; `package_cache` is shared with the
    /// installer so the gateway can reuse what was already downloaded.
    pub fn new(cache_dir: &Path, package_cache: PackageCache, timeout: Duration) -> Self {
        let gateway = Gateway::builder()
            .with_cache_dir(cache_dir.join(rattler_cache::REPODATA_CACHE_DIR))
            .with_package_cache(package_cache.clone())
            .finish();
        Self {
            gateway,
            timeout,
            freshness: Arc::new(Freshness::new(DEFAULT_REMOTE_REPODATA_TTL)),
            solves: Arc::new(SolveCache::new(DEFAULT_SOLVE_CACHE_CAPACITY)),
            cache_dir: cache_dir.to_owned(),
            package_cache,
            client: None,
            call_limit: None,
        }
    }

    /// Fetches repodata through `client` (allowed channels only, time
    /// limits, credentials): call before the solver is cloned, since the
    /// gateway (and its in-memory repodata) is made anew.
    pub fn with_channel_client(mut self, client: &ChannelClient) -> Self {
        self.gateway = Gateway::builder()
            .with_cache_dir(self.cache_dir.join(rattler_cache::REPODATA_CACHE_DIR))
            .with_package_cache(self.package_cache.clone())
            .with_client(client.lazy())
            .finish();
        self.client = Some(client.clone());
        self
    }

    /// Limits each call of [`Self::solve`] (all platforms, repodata
    /// included) to `limit`; the clone shares its caches with `self`.
    pub fn with_call_limit(mut self, limit: Duration) -> Self {
        self.call_limit = Some(limit);
        self
    }

    /// How long a remote channel's repodata is trusted before it is
    /// revalidated; zero revalidates on every solve. Local (`file://`)
    /// channels are checked on every solve whatever this says.
    pub fn with_remote_repodata_ttl(mut self, ttl: Duration) -> Self {
        self.freshness = Arc::new(Freshness::new(ttl));
        self
    }

    /// How many solves to remember; zero solves every spec afresh.
    pub fn with_solve_cache_capacity(mut self, capacity: usize) -> Self {
        self.solves = Arc::new(SolveCache::new(capacity));
        self
    }

    pub async fn solve(&self, spec: &CanonicalSpec) -> Result<SolvedEnvironment, SolveError> {
        let Some(limit) = self.call_limit else {
            return self.solve_unlimited(spec).await;
        };
        tokio::time::timeout(limit, self.solve_unlimited(spec))
            .await
            .unwrap_or_else(|_| {
                Err(SolveError::Timeout {
                    platform: spec.platforms.join(", "),
                    seconds: limit.as_secs(),
                })
            })
    }

    async fn solve_unlimited(&self, spec: &CanonicalSpec) -> Result<SolvedEnvironment, SolveError> {
        // Parsed on the first cache miss only: a cached answer needs none.
        let mut specs = None;
        let channels: Vec<Url> = spec
            .channels
            .iter()
            .map(|url| {
                Url::parse(url).map_err(|_| {
                    SpecError::Channel(envstore_core::ChannelError::InvalidUrl(url.clone()))
                })
            })
            .collect::<Result<_, _>>()?;
        let mut platforms = BTreeMap::new();
        let mut cached_platforms = 0;
        for subdir in spec.subdirs()? {
            let requirements = spec
                .system_requirements
                .get(&subdir.to_string())
                .cloned()
                .unwrap_or_default();
            let key = self.solve_key(&channels, subdir, &spec.dependencies, &requirements);
            let records = match self.solves.get(&key) {
                Some(records) => {
                    cached_platforms += 1;
                    records
                }
                None => {
                    let specs = match &specs {
                        Some(specs) => specs,
                        None => specs.insert(spec.match_specs()?),
                    };
                    let records = Arc::new(
                        self.solve_platform(&channels, subdir, specs.clone(), &requirements)
                            .await?,
                    );
                    self.solves.insert(key, records.clone());
                    records
                }
            };
            platforms.insert(subdir.to_string(), records);
        }
        Ok(SolvedEnvironment {
            channels,
            platforms,
            cached_platforms,
        })
    }

    /// The cache key of one platform's solve, with each channel's current
    /// revision. A channel found changed is dropped from the gateway's memory
    /// so the solve that follows reads it again.
    fn solve_key(
        &self,
        channels: &[Url],
        subdir: Subdir,
        dependencies: &[String],
        requirements: &SystemRequirements,
    ) -> SolveKey {
        let subdirs = [subdir, Subdir::NoArch];
        let channels = channels
            .iter()
            .map(|url| {
                let checked = self.freshness.check(url, &subdirs);
                if checked.stale {
                    self.gateway
                        .clear_repodata_cache(
                            &Channel::from_url(url.clone()),
                            rattler_repodata_gateway::SubdirSelection::All,
                            rattler_repodata_gateway::CacheClearMode::InMemoryOnly,
                        )
                        .ok();
                }
                (url.clone(), checked.revision)
            })
            .collect();
        SolveKey {
            channels,
            subdir,
            specs: dependencies.to_vec(),
            system_requirements: requirements.clone(),
        }
    }

    /// The caller's message for a failed repodata load, the gateway's error
    /// (secrets masked) in the server log.
    fn repodata_error(&self, platform: &str, channels: &[Url], error: &GatewayError) -> SolveError {
        let detail = envstore_core::error_chain(error);
        let detail = match &self.client {
            Some(client) => client.redact(&detail),
            None => detail,
        };
        tracing::warn!(platform, error = %detail, "failed to load repodata");
        let failed = crate::http::request_error(error);
        let retried = failed
            .as_ref()
            .is_some_and(|failed| failed.retried.is_some());
        let reason = match failed {
            Some(failed) => failed.to_string(),
            None => format!(
                "the repodata of {} could not be read (the server log has the details)",
                channels
                    .iter()
                    .map(|url| format!("'{}'", envstore_core::public_url(url)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        SolveError::Repodata {
            platform: platform.to_owned(),
            reason,
            retried,
        }
    }

    async fn solve_platform(
        &self,
        channels: &[Url],
        subdir: Subdir,
        specs: Vec<rattler_conda_types::MatchSpec>,
        requirements: &SystemRequirements,
    ) -> Result<Vec<RepoDataRecord>, SolveError> {
        let platform = subdir.to_string();
        let virtual_packages = virtual_packages_with(subdir, requirements);
        let sources: Vec<Channel> = channels.iter().cloned().map(Channel::from_url).collect();
        let repodata = self
            .gateway
            .query(sources, [subdir, Subdir::NoArch], specs.clone())
            .recursive(true)
            .execute()
            .await
            .map_err(|error| self.repodata_error(&platform, channels, &error))?;
        let timeout = self.timeout;
        let solved = tokio::task::spawn_blocking(move || {
            let task = SolverTask {
                specs,
                virtual_packages,
                timeout: Some(timeout),
                channel_priority: ChannelPriority::Strict,
                ..SolverTask::from_iter(repodata.iter())
            };
            Solver.solve(task)
        })
        .await
        .map_err(SolveError::Join)?;
        match solved {
            // By name, not in install order: only an `@EXPLICIT` file needs
            // install order, and it is sorted when one is rendered, once per
            // new lock rather than on every solve.
            Ok(mut result) => {
                result
                    .records
                    .sort_unstable_by(|a, b| a.package_record.name.cmp(&b.package_record.name));
                Ok(result.records)
            }
            Err(rattler_solve::SolveError::Unsolvable(reasons)) => Err(SolveError::Unsolvable {
                platform,
                explanation: reasons.join("\n"),
            }),
            Err(rattler_solve::SolveError::Cancelled) => Err(SolveError::Timeout {
                platform,
                seconds: timeout.as_secs(),
            }),
            Err(source) => Err(SolveError::Solver { platform, source }),
        }
    }
}

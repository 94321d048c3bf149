//! The end-to-end workload: a real `envstore` server (SQLite, a local store,
//! two in-process workers) on the link fixture's mirror channel, timed from
//! the submission to the moment the API reports the build succeeded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use envstore_link::{TransferCounts, fetch_packages};
use envstore_server::config::ServerConfig;
use envstore_server::server::RunningServer;
use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::RepoDataRecord;
use serde_json::Value;

use crate::Quiet;
use crate::cases::{SolveCase, fresh_solver, spec_for};
use crate::link::LinkFixture;

/// How often the client asks whether the build is done.
const POLL: Duration = Duration::from_millis(1);
/// How often the throughput run looks over its queue of builds.
const QUEUE_POLL: Duration = Duration::from_millis(20);

const NAMESPACE: &str = "bench";

pub struct BuildBench {
    server: Option<RunningServer>,
    base: String,
    token: String,
    client: reqwest::Client,
    platform: String,
    specs: Vec<String>,
    /// One extra package per "new lock" submission, so each builds a new
    /// prefix from packages that are all in the cache already.
    extras: Vec<String>,
    submissions: usize,
    _data: tempfile::TempDir,
}

impl BuildBench {
    /// Starts a server with `workers` workers whose package cache already
    /// holds the environment and `variants` variants of it, and builds the
    /// environment once.
    pub async fn start(
        fixture: &LinkFixture,
        case: &SolveCase,
        variants: usize,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir_in(fixture.work.parent().unwrap_or(&fixture.work))?;
        let data_dir = fs_err::canonicalize(data.path())?;
        let platform = fixture.platform.to_string();
        let package_cache = PackageCache::new(
            data_dir
                .join("cache")
                .join(rattler_cache::PACKAGE_CACHE_DIR),
        );
        warm(&package_cache, &fixture.records).await?;

        let installed: BTreeSet<&str> = fixture
            .records
            .iter()
            .map(|record| record.package_record.name.as_normalized())
            .collect();
        let solver = fresh_solver(&data_dir.join("bench-solver"));
        let mut extras = Vec::new();
        for name in pure_python_packages(fixture)? {
            if extras.len() == variants {
                break;
            }
            if installed.contains(name.as_str()) {
                continue;
            }
            let mut specs = case.specs.clone();
            specs.push(name.clone());
            let Ok(solved) = solver
                .solve(&spec_for(&specs, &platform, vec![fixture.channel.clone()])?)
                .await
            else {
                continue;
            };
            let records = &solved.platforms[&platform];
            if records.len() == fixture.records.len() + 1 {
                warm(&package_cache, records).await?;
                extras.push(name);
            }
        }
        if extras.len() < variants {
            bail!(
                "only {} variants of the environment solve; {variants} wanted",
                extras.len()
            );
        }

        let config = ServerConfig {
            bind: "127.0.0.1:0".parse()?,
            database: format!("sqlite://{}", data_dir.join("envstore.db").display()),
            store: url::Url::from_directory_path(data_dir.join("store"))
                .map_err(|()| anyhow::anyhow!("the data folder is not absolute"))?,
            workers,
            channels: vec![fixture.channel.clone()],
            admin_token: Some("bench-admin-token-0123456789abcdef".to_owned()),
            lease: Duration::from_secs(30),
            publish_packed_prefixes: false,
            test_pause: None,
            policy: envstore_core::Policy::default(),
            oidc: None,
            usage: envstore_server::config::UsageConfig::default(),
            limits: envstore_server::config::TimeLimits::default(),
            event_streams: Default::default(),
            package_limits: Default::default(),
            data_dir,
        };
        let server = envstore_server::server::start(config).await?;
        let mut bench = Self {
            base: format!("http://{}", server.local_addr.context("the API listens")?),
            token: server.admin_token.clone().context("an admin token")?,
            server: Some(server),
            client: reqwest::Client::new(),
            platform,
            specs: case.specs.clone(),
            extras,
            submissions: 0,
            _data: data,
        };
        let response = bench
            .client
            .post(format!("{}/api/v1/namespaces", bench.base))
            .bearer_auth(&bench.token)
            .json(&serde_json::json!({ "name": NAMESPACE }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("creating the namespace failed: {}", response.text().await?);
        }
        let specs = bench.specs.clone();
        bench.submit_and_wait(&specs).await?;
        Ok(bench)
    }

    /// Submits the environment plus a package never asked for before: a new
    /// lock and a new prefix, every package already in the cache.
    pub async fn new_lock(&mut self) -> anyhow::Result<Duration> {
        let extra = self
            .extras
            .pop()
            .context("no unused variant left; start the bench with more")?;
        let mut specs = self.specs.clone();
        specs.push(extra);
        self.submit_and_wait(&specs).await
    }

    /// Submits the environment again under a new name: its lock and prefix
    /// exist already.
    pub async fn built_lock(&mut self) -> anyhow::Result<Duration> {
        let specs = self.specs.clone();
        self.submit_and_wait(&specs).await
    }

    pub fn variants_left(&self) -> usize {
        self.extras.len()
    }

    /// Submits every variant left at once (the environment plus one package
    /// each: distinct locks that share every other package, all in the
    /// cache) and waits until every build has succeeded: how many, and how
    /// long the queue took from the first submission to the last success.
    pub async fn drain_variants(&mut self) -> anyhow::Result<(usize, Duration)> {
        let started = Instant::now();
        let mut pending = Vec::new();
        while let Some(extra) = self.extras.pop() {
            let mut specs = self.specs.clone();
            specs.push(extra);
            pending.push(self.submit(&specs).await?);
        }
        let builds = pending.len();
        while !pending.is_empty() {
            let mut still = Vec::with_capacity(pending.len());
            for build_id in pending {
                if !self.succeeded(&build_id).await? {
                    still.push(build_id);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(QUEUE_POLL).await;
            }
        }
        Ok((builds, started.elapsed()))
    }

    async fn submit_and_wait(&mut self, specs: &[String]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let build_id = self.submit(specs).await?;
        while !self.succeeded(&build_id).await? {
            tokio::time::sleep(POLL).await;
        }
        Ok(started.elapsed())
    }

    /// Submits `specs` as a new environment; its build id.
    async fn submit(&mut self, specs: &[String]) -> anyhow::Result<String> {
        self.submissions += 1;
        let body = serde_json::json!({
            "channels": ["mirror"],
            "dependencies": specs,
            "platforms": [self.platform],
        });
        let response = self
            .client
            .put(format!(
                "{}/api/v1/namespaces/{NAMESPACE}/environments/env-{}",
                self.base, self.submissions
            ))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let accepted: Value = response.json().await?;
        accepted["build_id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the submission was refused: {accepted}"))
    }

    /// Whether the build has succeeded (false while it runs); an error once
    /// it failed or was cancelled.
    async fn succeeded(&self, build_id: &str) -> anyhow::Result<bool> {
        let build: Value = self
            .client
            .get(format!("{}/api/v1/builds/{build_id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .json()
            .await?;
        match build["status"].as_str() {
            Some("succeeded") => Ok(true),
            Some("failed" | "cancelled") => bail!("build {build_id} did not succeed: {build}"),
            _ => Ok(false),
        }
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await?;
        }
        Ok(())
    }
}

/// Puts the archives of `records` into the server's package cache.
async fn warm(package_cache: &PackageCache, records: &[RepoDataRecord]) -> anyhow::Result<()> {
    fetch_packages(
        package_cache,
        &Default::default(),
        records,
        Arc::new(Quiet),
        Arc::new(TransferCounts::default()),
    )
    .await?;
    Ok(())
}

/// Names of noarch packages of the mirror that depend on python alone, in
/// name order: adding one to the environment changes nothing else.
fn pure_python_packages(fixture: &LinkFixture) -> anyhow::Result<Vec<String>> {
    let path = fixture
        .channel
        .url
        .to_file_path()
        .map_err(|()| anyhow::anyhow!("the mirror is not a local channel"))?
        .join("noarch/repodata.json");
    let repodata: Value = serde_json::from_slice(&fs_err::read(&path)?)?;
    let mut only_python: BTreeMap<String, bool> = BTreeMap::new();
    for key in ["packages", "packages.conda"] {
        for record in repodata[key]
            .as_object()
            .into_iter()
            .flat_map(|records| records.values())
        {
            let Some(name) = record["name"].as_str() else {
                continue;
            };
            let python_only = record["depends"].as_array().is_some_and(|depends| {
                depends.iter().all(|depend| {
                    depend.as_str().and_then(|d| d.split_whitespace().next()) == Some("python")
                })
            });
            let entry = only_python.entry(name.to_owned()).or_insert(true);
            *entry &= python_only;
        }
    }
    Ok(only_python
        .into_iter()
        .filter(|(name, python_only)| {
            *python_only && !name.contains("-cos") && !name.contains("doc")
        })
        .map(|(name, _)| name)
        .collect())
}

//! Assembling a node: `envstore serve` (the API with an in-process worker
//! pool, or none) and `envstore worker` (workers only).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use envstore_api::{AdminToken, App, BuildEvents};
use envstore_core::ChannelAllowlist;
use envstore_db::Database;
use envstore_link::PrefixBuilder;
use envstore_solve::EnvironmentSolver;
use envstore_store::ArtifactStore;
use envstore_workers::{BuildContext, BuildLogs, Layout, WorkerPool, WorkerPoolConfig};
use rattler::package_cache::PackageCache;
use rattler_conda_types::Subdir;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ServerConfig, redact_password};

/// How long a solve may run before the build fails with a timeout.
const SOLVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Solves the API runs at once for `POST …/solve`; more wait their turn.
const API_SOLVES: usize = 2;

/// Connects the API to the worker pool of this process, if it has one.
struct LocalBuildEvents {
    wake: Option<Arc<Notify>>,
    logs: BuildLogs,
}

impl BuildEvents for LocalBuildEvents {
    fn submitted(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }

    fn live_log(&self, build_id: &str) -> Option<String> {
        self.logs.live(build_id)
    }

    fn live_events(&self, build_id: &str, from: u64) -> Option<Vec<envstore_core::ProgressRecord>> {
        self.logs.live_events(build_id, from)
    }
}

/// What every node has: the database, the store and the build context.
struct Node {
    context: Arc<BuildContext>,
    allowlist: ChannelAllowlist,
    native_platform: Subdir,
    logs: BuildLogs,
}

async fn open_node(config: &ServerConfig) -> anyhow::Result<Node> {
    // First: the store and the solver register their counters as they are made.
    envstore_api::prometheus::install()?;
    let data_dir = &config.data_dir;
    fs_err::create_dir_all(data_dir)?;
    let db = Database::connect_with_timeout(&config.database, config.limits.database)
        .await
        .with_context(|| {
            format!(
                "failed to open the database {}",
                redact_password(&config.database)
            )
        })?;
    let store = ArtifactStore::open_with(&config.store, config.limits.store)?;
    if config.limits.store.timeout >= config.lease {
        tracing::warn!(
            store_timeout = ?config.limits.store.timeout,
            lease = ?config.lease,
            "--store-timeout-seconds is not below --lease-seconds: a hanging object store can outlast a lease"
        );
    }
    // conda's channel alias, custom channels and the default channels come
    // from the server's `[policy]`.
    let allowlist = config
        .policy
        .configure_channels(ChannelAllowlist::new(config.channels.clone()))?;
    let native_platform =
        Subdir::current().context("envstore cannot tell which conda platform this machine is")?;
    let cache_dir = data_dir.join("cache");
    let package_cache = PackageCache::new(cache_dir.join(rattler_cache::PACKAGE_CACHE_DIR));
    let layout = Layout::under(data_dir);
    let pypi_cache = layout.pypi_cache.clone();
    fs_err::create_dir_all(&layout.prefixes)?;
    restrict_data_dir(data_dir, &layout, &cache_dir, &config.store)?;
    let logs = BuildLogs::default();
    // The one client towards channels, for repodata and packages: allowed
    // channels only (redirects too), time limits, and the credentials the
    // allowlist took out of the configured URLs.
    let channel_client = envstore_solve::ChannelClient::new(&allowlist, config.limits.network)?;
    let prefixes = PrefixBuilder::new(layout.prefixes.clone(), package_cache.clone())
        .with_client(channel_client.lazy())
        .with_limits(config.package_limits)
        .with_transient_retry(config.limits.network.transient_retry);
    #[cfg(feature = "test-hooks")]
    let prefixes = prefixes
        .with_pause_after_first_link(config.test_pause == Some(crate::config::TestPause::Linking))
        .with_pause_after_first_download(
            config.test_pause == Some(crate::config::TestPause::Downloading),
        );
    let context = Arc::new(BuildContext {
        db,
        store,
        solver: EnvironmentSolver::new(&cache_dir, package_cache, SOLVE_TIMEOUT)
            .with_channel_client(&channel_client),
        prefixes,
        layout,
        native_platform,
        allowlist: allowlist.clone(),
        logs: logs.clone(),
        lease: config.lease,
        publish_packed_prefixes: config.publish_packed_prefixes,
        test_pause: config.test_pause,
        build_timeout: config.limits.build,
        pypi: envstore_workers::PypiContext::new(
            pypi_cache,
            envstore_pypi::WheelLimits {
                max_unpacked_bytes: config.package_limits.max_extracted_bytes,
                max_entries: usize::try_from(config.package_limits.max_files).unwrap_or(usize::MAX),
            },
            config.limits.network.read_timeout,
        )?,
    });
    Ok(Node {
        context,
        allowlist,
        native_platform,
        logs,
    })
}

/// A started node: its address (if it serves the API), and a handle to stop it.
pub struct RunningServer {
    /// Where the API listens; None for a workers-only node.
    pub local_addr: Option<SocketAddr>,
    pub admin_token: Option<String>,
    /// A workers-only node's readiness checks, for its metrics listener.
    readiness: Option<envstore_api::readiness::Readiness>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Waits until the node stops (on its own or after [`Self::stop`]).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task panicked")?
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// How often a node walks its data folders for `envstore_data_folder_bytes`.
const DISK_WALK_EVERY: Duration = Duration::from_secs(600);

/// A task aborted when dropped: the node's own background work ends with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Measures the node's data folders for `/metrics` until dropped.
fn watch_disk(node: &Node) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(envstore_workers::watch_disk_usage(
        node.context.layout.clone(),
        DISK_WALK_EVERY,
    )))
}

fn start_pool(node: &Node, workers: usize) -> Option<WorkerPool> {
    (workers > 0).then(|| {
        WorkerPool::start(
            node.context.clone(),
            WorkerPoolConfig {
                workers,
                ..WorkerPoolConfig::default()
            },
        )
    })
}

/// `envstore serve`: the API, with `config.workers` workers in-process.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let node = open_node(&config).await?;
    let admin_token = match &config.admin_token {
        Some(token) => token.clone(),
        None => admin_token_file(&config.data_dir)?,
    };
    let checked_admin_token =
        AdminToken::checked(&admin_token).context("envstore refuses to start")?;
    // The identity provider's client secret is read and its group rules
    // checked before anything starts.
    let oidc = config
        .oidc
        .clone()
        .map(envstore_api::oidc::OidcVerifier::new)
        .transpose()
        .context("envstore refuses to start: [oidc] is not usable")?;
    let pool = start_pool(&node, config.workers);
    let disk_watch = watch_disk(&node);
    let app = Arc::new(App {
        db: node.context.db.clone(),
        store: node.context.store.clone(),
        allowlist: node.allowlist.clone(),
        default_platform: node.native_platform,
        admin_token: checked_admin_token,
        default_policy: config.policy.clone(),
        oidc,
        events: Arc::new(LocalBuildEvents {
            wake: pool.as_ref().map(WorkerPool::waker),
            logs: node.logs.clone(),
        }),
        prefixes_root: node.context.layout.prefixes.clone(),
        data_dir: config.data_dir.clone(),
        environments_root: node.context.layout.environments.clone(),
        solver: node
            .context
            .solver
            .clone()
            .with_call_limit(config.limits.solve_request),
        pypi_index: node.context.pypi.index.clone(),
        solve_permits: Arc::new(tokio::sync::Semaphore::new(API_SOLVES)),
        usage: config.usage.settings,
        event_streams: envstore_api::EventStreams::new(config.event_streams),
    });
    // Stopped only once the HTTP server has drained, so its final flush
    // holds every download counted.
    let flusher_stop = CancellationToken::new();
    let flusher = tokio::spawn({
        let db = app.db.clone();
        let stop = flusher_stop.clone().cancelled_owned();
        let interval = config.usage.flush_interval;
        async move { db.flush_downloads_every(interval, stop).await }
    });
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("failed to listen on {}", config.bind))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(address = %local_addr, config = ?config, "envstore is listening");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let _disk_watch = disk_watch;
        // The web UI beside the API: `/` and `/ui/…`; it calls the API in-process.
        let streams = app.clone();
        let routes = envstore_api::router(app.clone()).merge(envstore_web::router(app));
        axum::serve(listener, routes)
            .with_graceful_shutdown(async move {
                stop.cancelled().await;
                // Open event streams would hold the shutdown for their life.
                streams.event_streams.close_all();
            })
            .await
            .context("the HTTP server failed")?;
        flusher_stop.cancel();
        flusher
            .await
            .context("the download counter task panicked")?;
        if let Some(pool) = pool {
            pool.shutdown().await;
        }
        Ok(())
    });
    Ok(RunningServer {
        local_addr: Some(local_addr),
        admin_token: Some(admin_token),
        readiness: None,
        shutdown,
        task,
    })
}

/// `envstore worker`: build workers only, fed by the shared database.
pub async fn start_workers(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let node = open_node(&config).await?;
    let pool = start_pool(&node, config.workers.max(1));
    let disk_watch = watch_disk(&node);
    let readiness = envstore_api::readiness::Readiness {
        db: node.context.db.clone(),
        store: node.context.store.clone(),
        data_dir: config.data_dir.clone(),
    };
    tracing::info!(config = ?config, "envstore workers are running");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let _disk_watch = disk_watch;
        stop.cancelled().await;
        if let Some(pool) = pool {
            pool.shutdown().await;
        }
        Ok(())
    });
    Ok(RunningServer {
        local_addr: None,
        admin_token: None,
        readiness: Some(readiness),
        shutdown,
        task,
    })
}

/// Serves a workers-only node's metrics, liveness and readiness on `bind`
/// until the node stops; returns the address it listens on.
pub async fn serve_worker_metrics(
    bind: SocketAddr,
    workers: &RunningServer,
) -> anyhow::Result<SocketAddr> {
    let shutdown = workers.shutdown_token();
    let router = match &workers.readiness {
        Some(readiness) => {
            envstore_api::prometheus::worker_router_with_readiness(readiness.clone())
        }
        None => envstore_api::prometheus::worker_router(),
    };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("failed to listen on {bind} for metrics"))?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the metrics listener failed");
        }
    });
    tracing::info!(address = %address, "serving worker metrics");
    Ok(address)
}

/// What envstore keeps in the data folder besides prefixes and links (the
/// database files make themselves private). Only these are touched, so a
/// data folder shared with other files keeps theirs as they are.
const PRIVATE_ENTRIES: &[&str] = &["cache", "artifacts", "channels", "admin-token"];

/// Who may read what in the data folder, set on every start: the folder
/// itself can be passed through but not listed (0711), the package cache,
/// a local artifact store, the demo channel and the admin token stay with
/// the service user (0700, files 0600; the database makes itself 0600), and
/// only the prefixes and environment links that users run programs from are
/// readable by all (0755).
fn restrict_data_dir(
    data_dir: &Path,
    layout: &Layout,
    cache_dir: &Path,
    store: &url::Url,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let set = |path: &Path, mode: u32| -> anyhow::Result<()> {
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    set(data_dir, 0o711)?;
    fs_err::create_dir_all(&layout.environments)?;
    set(&layout.prefixes, 0o755)?;
    set(&layout.environments, 0o755)?;
    fs_err::create_dir_all(cache_dir)?;
    let local_store = (store.scheme() == "file")
        .then(|| store.to_file_path().ok())
        .flatten();
    let private = PRIVATE_ENTRIES
        .iter()
        .map(|name| data_dir.join(name))
        .chain(local_store);
    for path in private {
        // Only what lies in the data folder itself, never through a link.
        let inside = path.parent() == Some(data_dir);
        match fs_err::symlink_metadata(&path) {
            Ok(metadata) if inside && !metadata.file_type().is_symlink() => {
                set(&path, if metadata.is_dir() { 0o700 } else { 0o600 })?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads the admin token kept in the data folder, or makes one (readable by
/// the owner only) on first start.
fn admin_token_file(data_dir: &Path) -> anyhow::Result<String> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    use std::io::Write;

    let path = data_dir.join("admin-token");
    if let Ok(token) = fs_err::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    // Two v4 UUIDs: 244 bits from the operating system's random source.
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    tracing::info!(path = %path.display(), "created the admin token file");
    Ok(token)
}

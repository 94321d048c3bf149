//! `envstore serve`: the API, the worker pool, the database and the object
//! store in one process.

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

use crate::config::ServerConfig;

/// How long a solve may run before the build fails with a timeout.
const SOLVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Connects the API to the worker pool of this process.
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
}

/// A started server: its address, and a handle to stop it.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub admin_token: String,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Waits until the server stops (on its own or after [`Self::stop`]).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task panicked")?
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
    }
}

pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let data_dir = &config.data_dir;
    fs_err::create_dir_all(data_dir)?;
    let db = Database::connect(&config.database)
        .await
        .with_context(|| format!("failed to open the database {}", crate::config::redact_password(&config.database)))?;
    let store = ArtifactStore::open(&config.store)?;
    let admin_token = match &config.admin_token {
        Some(token) => token.clone(),
        None => admin_token_file(data_dir)?,
    };
    let allowlist = ChannelAllowlist::new(config.channels.clone());
    let native_platform = Subdir::current()
        .context("envstore cannot tell which conda platform this machine is")?;
    let cache_dir = data_dir.join("cache");
    let package_cache = PackageCache::new(cache_dir.join(rattler_cache::PACKAGE_CACHE_DIR));
    let layout = Layout::under(data_dir);
    let logs = BuildLogs::default();
    let context = Arc::new(BuildContext {
        db: db.clone(),
        store: store.clone(),
        solver: EnvironmentSolver::new(&cache_dir, package_cache.clone(), SOLVE_TIMEOUT),
        prefixes: PrefixBuilder::new(layout.prefixes.clone(), package_cache),
        layout: layout.clone(),
        native_platform,
        allowlist: allowlist.clone(),
        logs: logs.clone(),
    });
    let pool = (config.workers > 0).then(|| {
        WorkerPool::start(
            context,
            WorkerPoolConfig {
                workers: config.workers,
                ..WorkerPoolConfig::default()
            },
        )
    });
    let app = Arc::new(App {
        db,
        store,
        allowlist,
        default_platform: native_platform,
        admin_token: AdminToken::new(&admin_token),
        events: Arc::new(LocalBuildEvents {
            wake: pool.as_ref().map(WorkerPool::waker),
            logs,
        }),
        prefixes_root: layout.prefixes.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("failed to listen on {}", config.bind))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(address = %local_addr, config = ?config, "envstore is listening");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, envstore_api::router(app))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .context("the HTTP server failed")?;
        if let Some(pool) = pool {
            pool.shutdown().await;
        }
        Ok(())
    });
    Ok(RunningServer {
        local_addr,
        admin_token,
        shutdown,
        task,
    })
}

/// Reads the admin token kept in the data folder, or makes one (readable by
/// the owner only) on first start.
fn admin_token_file(data_dir: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

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
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    tracing::info!(path = %path.display(), "created the admin token file");
    Ok(token)
}

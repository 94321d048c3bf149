//! `envstore`: the conda environment build and artifact service.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use envstore_cli::config::{FileConfig, ServerConfig};
use envstore_core::NamedChannel;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "envstore", version, about = "Builds conda environments and serves their lockfiles")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and an in-process worker pool.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate {
        /// sqlite://path or postgres://…
        #[arg(long, env = "ENVSTORE_DATABASE")]
        database: String,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML file with the same settings; flags override it.
    #[arg(long, env = "ENVSTORE_CONFIG")]
    config: Option<PathBuf>,
    /// Where to listen [default: 127.0.0.1:8080].
    #[arg(long, env = "ENVSTORE_BIND")]
    bind: Option<SocketAddr>,
    /// Database, prefixes, caches and artifacts live here [default: ./envstore-data].
    #[arg(long, env = "ENVSTORE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite://path or postgres://… [default: sqlite://<data-dir>/envstore.db].
    #[arg(long, env = "ENVSTORE_DATABASE")]
    database: Option<String>,
    /// file:///path or s3://bucket/prefix [default: file://<data-dir>/artifacts].
    #[arg(long, env = "ENVSTORE_STORE")]
    store: Option<String>,
    /// Build workers in this process; 0 runs the API only [default: the number of cores].
    #[arg(long, env = "ENVSTORE_WORKERS")]
    workers: Option<usize>,
    /// An allowed channel, as NAME=URL or a URL; repeat for more.
    #[arg(long = "channel", value_name = "NAME=URL")]
    channels: Vec<String>,
    /// Also generate the demo channel under the data folder and allow it as `demo`.
    #[arg(long)]
    demo: bool,
    /// The admin token; without it, one is kept in <data-dir>/admin-token.
    #[arg(long, env = "ENVSTORE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("ENVSTORE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate { database } => {
            envstore_db::Database::connect(&database).await?;
            println!("migrations applied");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let data_dir = absolute(&args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("envstore-data")))?;
    let mut channels = file.channels;
    for channel in &args.channels {
        channels.push(NamedChannel::parse(channel)?);
    }
    if args.demo {
        let demo_dir = data_dir.join("channels").join("demo");
        if !demo_dir.join("noarch").join("repodata.json").exists() {
            tracing::info!(path = %demo_dir.display(), "writing the demo channel");
            envstore_fixtures::write_demo_channel(&demo_dir).await.context("failed to write the demo channel")?;
        }
        let url = url::Url::from_directory_path(&demo_dir)
            .map_err(|()| anyhow::anyhow!("the demo channel path is not absolute"))?;
        channels.push(NamedChannel { name: "demo".to_owned(), url });
    }
    if channels.is_empty() {
        tracing::warn!("no channels are allowed: every build will be refused (use --channel NAME=URL or --demo)");
    }
    let store = match args.store.or(file.store) {
        Some(store) => url::Url::parse(&store).with_context(|| format!("invalid store URL '{store}'"))?,
        None => url::Url::from_directory_path(data_dir.join("artifacts"))
            .map_err(|()| anyhow::anyhow!("the data folder is not absolute"))?,
    };
    let config = ServerConfig {
        bind: args.bind.or(file.bind).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        database: args
            .database
            .or(file.database)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("envstore.db").display())),
        store,
        workers: args
            .workers
            .or(file.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map(usize::from).unwrap_or(2)),
        channels,
        admin_token: args.admin_token,
        data_dir,
    };
    let server = envstore_cli::server::start(config).await?;
    println!("envstore listening on http://{}", server.local_addr);
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    server.wait().await
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    fs_err::create_dir_all(path)?;
    Ok(fs_err::canonicalize(path)?)
}

//! `envstore`: the conda environment build and artifact service.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use envstore_cli::config::{FileConfig, ServerConfig, TestPause};
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
    /// Run the API and an in-process worker pool (`--workers 0`: the API only).
    Serve(ServeArgs),
    /// Run build workers only, fed by a shared database.
    Worker(NodeArgs),
    /// Fetch an environment's packed prefix from the store and unpack it here,
    /// at the same path it was built at.
    Materialize(MaterializeArgs),
    /// Submit an environment.yml (or .json) for NAMESPACE/NAME; with --wait,
    /// follow the build and exit non-zero unless it succeeds.
    Submit {
        /// NAMESPACE/NAME
        environment: String,
        /// The spec file; `-` reads standard input.
        file: PathBuf,
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print the current lockfile of NAMESPACE/NAME.
    Lock {
        /// NAMESPACE/NAME
        environment: String,
        /// conda-lock, pixi or explicit
        #[arg(long, default_value = "conda-lock")]
        format: String,
        /// The platform, for --format explicit.
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Solve a spec under NAMESPACE's policy and print its lockfile, without
    /// building anything.
    Solve {
        /// The spec file; `-` reads standard input.
        file: PathBuf,
        /// The namespace whose channels and policy apply.
        #[arg(long, short = 'n', env = "ENVSTORE_NAMESPACE")]
        namespace: String,
        /// Lock for these platforms instead of the spec's (repeatable).
        #[arg(long = "platform")]
        platforms: Vec<String>,
        /// conda-lock, pixi or explicit
        #[arg(long, default_value = "conda-lock")]
        format: String,
        /// The platform of an explicit file, when several are locked.
        #[arg(long)]
        explicit_platform: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Jupyter kernels for the environments the server lists.
    #[command(subcommand)]
    Kernels(KernelsCommand),
    /// Apply pending database migrations and exit.
    Migrate {
        /// sqlite://path or postgres://…
        #[arg(long, env = "ENVSTORE_DATABASE")]
        database: String,
    },
}

#[derive(Subcommand)]
enum KernelsCommand {
    /// Write one kernelspec per environment the server lists as a kernel
    /// into DIR/kernels, materialising prefixes missing here (with
    /// --database and --store), and remove the ones it wrote before for
    /// environments no longer listed.
    Sync(KernelsSyncArgs),
}

#[derive(clap::Args)]
struct KernelsSyncArgs {
    /// The Jupyter data folder (e.g. ~/.local/share/jupyter); kernelspecs go
    /// to DIR/kernels/<id>.
    #[arg(long)]
    dir: PathBuf,
    /// Where environments live on this machine (`<root>/envs/<ns>/<name>`)
    /// [default: the server's own paths].
    #[arg(long)]
    root: Option<PathBuf>,
    /// To materialise missing prefixes: the server's database (sqlite://path or postgres://…).
    #[arg(long, env = "ENVSTORE_DATABASE")]
    database: Option<String>,
    /// To materialise missing prefixes: the server's store (file:///path or s3://bucket/prefix).
    #[arg(long, env = "ENVSTORE_STORE")]
    store: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Settings every node shares.
#[derive(clap::Args)]
struct NodeArgs {
    /// A TOML file with the same settings; flags override it.
    #[arg(long, env = "ENVSTORE_CONFIG")]
    config: Option<PathBuf>,
    /// Database, prefixes, caches and artifacts live here [default: ./envstore-data].
    #[arg(long, env = "ENVSTORE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite://path or postgres://… [default: sqlite://<data-dir>/envstore.db].
    #[arg(long, env = "ENVSTORE_DATABASE")]
    database: Option<String>,
    /// file:///path or s3://bucket/prefix [default: file://<data-dir>/artifacts].
    /// S3 reads AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP.
    #[arg(long, env = "ENVSTORE_STORE")]
    store: Option<String>,
    /// Build workers in this process [default: the number of cores].
    #[arg(long, env = "ENVSTORE_WORKERS")]
    workers: Option<usize>,
    /// An allowed channel, as NAME=URL or a URL; repeat for more.
    #[arg(long = "channel", value_name = "NAME=URL")]
    channels: Vec<String>,
    /// Also generate the demo channel under the data folder and allow it as `demo`.
    #[arg(long)]
    demo: bool,
    /// Seconds a job or prefix lease holds without renewal; a crashed
    /// worker's build is taken over after this.
    #[arg(long, env = "ENVSTORE_LEASE_SECONDS", default_value_t = 30)]
    lease_seconds: u64,
    /// Publish each new prefix as prefixes/<lock_hash>.tar.zst so other nodes
    /// can materialise it [default: on for an s3:// store, off for a local folder].
    #[arg(long, env = "ENVSTORE_PACK_PREFIXES")]
    pack_prefixes: Option<bool>,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Where to listen [default: 127.0.0.1:8080].
    #[arg(long, env = "ENVSTORE_BIND")]
    bind: Option<SocketAddr>,
    /// The admin token; without it, one is kept in <data-dir>/admin-token.
    #[arg(long, env = "ENVSTORE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// Where the client commands find the server.
#[derive(clap::Args)]
struct ServerArgs {
    /// The envstore server.
    #[arg(long, env = "ENVSTORE_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A token for `Authorization: Bearer`.
    #[arg(long, env = "ENVSTORE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
struct MaterializeArgs {
    /// The environment, as NAMESPACE/NAME.
    environment: String,
    /// The data folder the prefix is unpacked under; it must be the same
    /// path as on the node that built it [default: ./envstore-data].
    #[arg(long, env = "ENVSTORE_DATA_DIR")]
    root: Option<PathBuf>,
    /// sqlite://path or postgres://…
    #[arg(long, env = "ENVSTORE_DATABASE")]
    database: String,
    /// file:///path or s3://bucket/prefix
    #[arg(long, env = "ENVSTORE_STORE")]
    store: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_env("ENVSTORE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let mut config = node_config(args.node).await?;
            if let Some(bind) = args.bind {
                config.bind = bind;
            }
            config.admin_token = args.admin_token;
            let server = envstore_cli::server::start(config).await?;
            if let Some(address) = server.local_addr {
                println!("envstore listening on http://{address}");
            }
            run_until_signal(server).await
        }
        Command::Worker(args) => {
            let config = node_config(args).await?;
            run_until_signal(envstore_cli::server::start_workers(config).await?).await
        }
        Command::Materialize(args) => materialize(args).await,
        Command::Submit { environment, file, wait, server } => {
            let client = envstore_cli::client::Client::new(&server.server, server.token)?;
            let (body, json) = read_spec_file(&file)?;
            let build_id = client.submit(&environment, body, json).await?;
            println!("{build_id}");
            if wait {
                let build = client.wait(&build_id).await?;
                envstore_cli::client::build_outcome(&build)?;
            }
            Ok(())
        }
        Command::Lock { environment, format, platform, server } => {
            let client = envstore_cli::client::Client::new(&server.server, server.token)?;
            print!("{}", client.lockfile(&environment, &format, platform.as_deref()).await?);
            Ok(())
        }
        Command::Solve { file, namespace, platforms, format, explicit_platform, server } => {
            let client = envstore_cli::client::Client::new(&server.server, server.token)?;
            let (body, json) = read_spec_file(&file)?;
            print!(
                "{}",
                client
                    .solve(envstore_cli::client::SolveRequest {
                        namespace: &namespace,
                        body,
                        json,
                        platforms: &platforms,
                        format: &format,
                        platform: explicit_platform.as_deref(),
                    })
                    .await?
            );
            Ok(())
        }
        Command::Kernels(KernelsCommand::Sync(args)) => kernels_sync(args).await,
        Command::Migrate { database } => {
            envstore_db::Database::connect(&database).await?;
            println!("migrations applied");
            Ok(())
        }
    }
}

async fn node_config(args: NodeArgs) -> anyhow::Result<ServerConfig> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let data_dir = absolute(&args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("envstore-data")))?;
    file.policy.validate()?;
    let mut channels = file.channels;
    for channel in &args.channels {
        channels.push(NamedChannel::parse(channel)?);
    }
    if args.demo {
        let demo_dir = data_dir.join("channels").join("demo");
        if !demo_dir.join("noarch").join("repodata.json").exists() {
            tracing::info!(path = %demo_dir.display(), "writing the demo channel");
            envstore_fixtures::write_demo_channel(&demo_dir)
                .await
                .context("failed to write the demo channel")?;
        }
        let url = url::Url::from_directory_path(&demo_dir)
            .map_err(|()| anyhow::anyhow!("the demo channel path is not absolute"))?;
        channels.push(NamedChannel { name: "demo".to_owned(), url });
    }
    if channels.is_empty() {
        tracing::warn!("no channels are allowed: every build will be refused (use --channel NAME=URL or --demo)");
    }
    let store = match args.store.or(file.store) {
        Some(store) => store_url(&store)?,
        None => url::Url::from_directory_path(data_dir.join("artifacts"))
            .map_err(|()| anyhow::anyhow!("the data folder is not absolute"))?,
    };
    let test_pause = match std::env::var("ENVSTORE_TEST_PAUSE") {
        Ok(point) => Some(point.parse::<TestPause>().map_err(anyhow::Error::msg)?),
        Err(_) => None,
    };
    Ok(ServerConfig {
        publish_packed_prefixes: args.pack_prefixes.unwrap_or(store.scheme() != "file"),
        bind: file.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
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
        admin_token: None,
        lease: Duration::from_secs(args.lease_seconds.max(1)),
        test_pause,
        policy: file.policy,
        oidc: file.oidc,
        data_dir,
    })
}

async fn materialize(args: MaterializeArgs) -> anyhow::Result<()> {
    let (namespace, name) = args
        .environment
        .split_once('/')
        .context("the environment is NAMESPACE/NAME")?;
    let root = absolute(&args.root.unwrap_or_else(|| PathBuf::from("envstore-data")))?;
    let db = envstore_db::Database::connect(&args.database).await?;
    let store = envstore_store::ArtifactStore::open(&store_url(&args.store)?)?;
    let platform = rattler_conda_types::Subdir::current()
        .context("envstore cannot tell which conda platform this machine is")?;
    let prefix = envstore_workers::materialize_environment(
        &db,
        &store,
        &envstore_workers::Layout::under(&root),
        &platform.to_string(),
        &namespace.parse()?,
        &name.parse()?,
    )
    .await?;
    println!("{}", prefix.display());
    Ok(())
}

/// A spec file's bytes (`-`: standard input) and whether it is JSON.
fn read_spec_file(file: &Path) -> anyhow::Result<(Vec<u8>, bool)> {
    let body = if file.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)?;
        body
    } else {
        fs_err::read(file)?
    };
    Ok((body, file.extension().is_some_and(|extension| extension == "json")))
}

/// `envstore kernels sync`: kernelspecs for what the server lists, each
/// run from a prefix present on this machine (materialised when missing and
/// the database and store are given), and stale ones of ours removed.
async fn kernels_sync(args: KernelsSyncArgs) -> anyhow::Result<()> {
    use envstore_cli::kernels::{self, Change};

    let client = envstore_cli::client::Client::new(&args.server.server, args.server.token)?;
    let listed = client.kernels().await?;
    let kernels_dir = args.dir.join("kernels");
    let root = args.root.as_deref().map(absolute).transpose()?;
    let materializer = match (&args.database, &args.store) {
        (Some(database), Some(store)) => Some((
            envstore_db::Database::connect(database).await?,
            envstore_store::ArtifactStore::open(&store_url(store)?)?,
        )),
        (None, None) => None,
        _ => anyhow::bail!("materialising prefixes needs both --database and --store"),
    };
    let mut keep = std::collections::BTreeSet::new();
    let mut missing = Vec::new();
    for kernel in &listed {
        kernels::check_id(&kernel.id)?;
        keep.insert(kernel.id.clone());
        let label = &kernel.display_name;
        let mut prefix = match &root {
            Some(root) => root.join("envs").join(&kernel.namespace).join(&kernel.environment),
            None => kernel.prefix.clone(),
        };
        if !holds_lock(&prefix, &kernel.lock_hash) {
            let Some((db, store)) = &materializer else {
                eprintln!(
                    "skipped {label}: its prefix {} is not here (pass --database and --store to materialise it)",
                    prefix.display()
                );
                missing.push(label.clone());
                continue;
            };
            let data_dir = match &root {
                Some(root) => root.clone(),
                None => server_data_dir(kernel)?,
            };
            let layout = envstore_workers::Layout::under(&data_dir);
            let platform = rattler_conda_types::Subdir::current()
                .context("envstore cannot tell which conda platform this machine is")?;
            let unpacked = envstore_workers::materialize_environment(
                db,
                store,
                &layout,
                &platform.to_string(),
                &kernel.namespace.parse()?,
                &kernel.environment.parse()?,
            )
            .await
            .with_context(|| format!("failed to materialise {label}"))?;
            println!("materialised {label} at {}", unpacked.display());
            prefix = layout.environment_link(&kernel.namespace, &kernel.environment);
        }
        let spec = kernels::kernelspec(kernel, &prefix);
        match kernels::write_kernelspec(&kernels_dir, &kernel.id, &spec)? {
            Change::Added => println!("added {} ({label})", kernel.id),
            Change::Updated => println!("updated {} ({label})", kernel.id),
            Change::Unchanged => {}
        }
    }
    for id in kernels::stale_kernelspecs(&kernels_dir, &keep)? {
        kernels::remove_kernelspec(&kernels_dir, &id)?;
        println!("removed {id}");
    }
    if !missing.is_empty() {
        anyhow::bail!("{} environment(s) have no prefix here: {}", missing.len(), missing.join(", "));
    }
    Ok(())
}

/// Whether `prefix` is a complete prefix of `lock_hash`: its completion
/// marker, written last, names that lock.
fn holds_lock(prefix: &Path, lock_hash: &str) -> bool {
    std::fs::read(prefix.join(envstore_link::MARKER_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<envstore_link::CompletionMarker>(&bytes).ok())
        .is_some_and(|marker| marker.lock_hash.to_hex() == lock_hash)
}

/// The server's data folder, from an environment path it lists
/// (`<data-dir>/envs/<ns>/<name>`): prefixes embed their path, so a
/// materialised one must sit where the server put it.
fn server_data_dir(kernel: &envstore_cli::kernels::Kernel) -> anyhow::Result<PathBuf> {
    let expected = Path::new("envs").join(&kernel.namespace).join(&kernel.environment);
    let mut data_dir = kernel.prefix.clone();
    for _ in 0..3 {
        data_dir.pop();
    }
    anyhow::ensure!(
        kernel.prefix.is_absolute() && kernel.prefix.ends_with(&expected),
        "the server lists {} at '{}', not under <data-dir>/envs/: pass --root",
        kernel.display_name,
        kernel.prefix.display()
    );
    Ok(data_dir)
}

fn store_url(text: &str) -> anyhow::Result<url::Url> {
    url::Url::parse(text).with_context(|| format!("invalid store URL '{text}'"))
}

async fn run_until_signal(server: envstore_cli::server::RunningServer) -> anyhow::Result<()> {
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

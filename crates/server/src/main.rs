//! `envstore`: the conda environment build and artifact service.

mod cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use envstore_core::NamedChannel;
use envstore_server::args::{
    Cli, Command, GcArgs, KernelsCommand, KernelsSyncArgs, LogFormat, MaterializeArgs, NodeArgs,
};
use envstore_server::config::{FileConfig, ServerConfig, TestPause};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            let mut config = node_config(args.node).await?;
            if let Some(bind) = args.bind {
                config.bind = bind;
            }
            config.admin_token = args.admin_token;
            config.usage = args.usage.config(config.usage);
            let server = envstore_server::server::start(config).await?;
            if let Some(address) = server.local_addr {
                println!("envstore listening on http://{address}");
            }
            run_until_signal(server).await
        }
        Command::Worker(args) => {
            let config = node_config(args.node).await?;
            let workers = envstore_server::server::start_workers(config).await?;
            if let Some(bind) = args.metrics_bind {
                let address = envstore_server::server::serve_worker_metrics(bind, &workers).await?;
                println!("envstore worker metrics on http://{address}");
            }
            run_until_signal(workers).await
        }
        Command::Materialize(args) => materialize(args).await,
        Command::Gc(args) => gc(args).await,
        Command::Submit {
            environment,
            file,
            wait,
            server,
        } => cli::submit::run(&environment, &file, wait, server).await,
        Command::Env(command) => cli::env::run(command).await,
        Command::Builds(command) => cli::builds::run(command).await,
        Command::Namespaces(command) => cli::namespaces::run(command).await,
        Command::Tokens(command) => cli::tokens::run(command).await,
        Command::Whoami(args) => cli::tokens::whoami(args).await,
        Command::Lock {
            environment,
            format,
            platform,
            server,
        } => {
            let client = envstore_client::Client::new(&server.server, server.token)?;
            print!(
                "{}",
                client
                    .lockfile(&environment, &format, platform.as_deref())
                    .await?
            );
            Ok(())
        }
        Command::Solve {
            file,
            namespace,
            platforms,
            format,
            explicit_platform,
            server,
        } => {
            let client = envstore_client::Client::new(&server.server, server.token)?;
            let (body, json) = envstore_client::read_spec_file(&file)?;
            print!(
                "{}",
                client
                    .solve(envstore_client::SolveRequest {
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
        Command::Usage {
            namespace,
            since,
            until,
            json,
            server,
        } => {
            let client = envstore_client::Client::new(&server.server, server.token)?;
            let usage = client
                .usage(namespace.as_deref(), since.as_deref(), until.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&usage)?);
            } else {
                print!("{}", envstore_client::usage::usage_table(&usage));
            }
            Ok(())
        }
        Command::Migrate {
            database,
            status,
            dry_run,
            json,
        } => migrate(&database, status, dry_run, json).await,
    }
}

/// Log lines go to standard error, filtered by `ENVSTORE_LOG`. As JSON,
/// each is one object with the event's fields at the top level and its
/// spans beside them: the request span carries `request_id`, `method`,
/// `route` and `status`, so every line of a request names it.
fn init_logging(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("ENVSTORE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        );
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

async fn node_config(args: NodeArgs) -> anyhow::Result<ServerConfig> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let data_dir = absolute(
        &args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("envstore-data")),
    )?;
    file.policy.validate()?;
    let mut channels = file.channels;
    for channel in &args.channels {
        channels.push(NamedChannel::parse(channel)?);
    }
    if args.demo {
        channels.push(demo_channel(&data_dir).await?);
    }
    if channels.is_empty() {
        tracing::warn!(
            "no channels are allowed: every build will be refused (use --channel NAME=URL or --demo)"
        );
    }
    let store = match args.store.or(file.store) {
        Some(store) => store_url(&store)?,
        None => url::Url::from_directory_path(data_dir.join("artifacts"))
            .map_err(|()| anyhow::anyhow!("the data folder is not absolute"))?,
    };
    let test_pause = test_pause()?;
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2);
    let workers = args.workers.or(file.workers).unwrap_or(cores);
    if let Some(warning) = oversubscribed(workers, cores) {
        tracing::warn!(workers, cores, "{warning}");
    }
    Ok(ServerConfig {
        publish_packed_prefixes: args.pack_prefixes.unwrap_or(store.scheme() != "file"),
        bind: file
            .bind
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        database: args
            .database
            .or(file.database)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("envstore.db").display())),
        store,
        workers,
        channels,
        admin_token: None,
        lease: Duration::from_secs(args.lease_seconds.max(1)),
        test_pause,
        policy: file.policy,
        oidc: file.oidc,
        usage: file.usage.config(),
        limits: args.limits.config(),
        event_streams: file.event_streams.limits(),
        package_limits: args.packages.apply(file.packages),
        data_dir,
    })
}

/// What an operator is told when a node runs more workers than it has
/// cores: builds extract and link with the CPU and the disk, so the extra
/// workers wait on the others (BENCHMARKS.md, throughput: 4 workers on 2
/// cores finished fewer builds a minute than 2).
fn oversubscribed(workers: usize, cores: usize) -> Option<String> {
    (workers > cores).then(|| {
        format!(
            "{workers} workers on {cores} cores: builds compete for the CPU and the disk, so more workers than cores usually finish fewer builds a minute (docs/operations.md, \"How many workers\")"
        )
    })
}

/// The demo channel, generated under the data folder on first use and
/// allowed as `demo`.
#[cfg(feature = "demo")]
async fn demo_channel(data_dir: &Path) -> anyhow::Result<NamedChannel> {
    let demo_dir = data_dir.join("channels").join("demo");
    if !demo_dir.join("noarch").join("repodata.json").exists() {
        tracing::info!(path = %demo_dir.display(), "writing the demo channel");
        envstore_fixtures::write_demo_channel(&demo_dir)
            .await
            .context("failed to write the demo channel")?;
    }
    let url = url::Url::from_directory_path(&demo_dir)
        .map_err(|()| anyhow::anyhow!("the demo channel path is not absolute"))?;
    Ok(NamedChannel {
        name: "demo".to_owned(),
        url,
    })
}

/// A release build has no demo channel generator: it would bring
/// `rattler_index` and the D-Bus stack into the server binary.
#[cfg(not(feature = "demo"))]
async fn demo_channel(_data_dir: &Path) -> anyhow::Result<NamedChannel> {
    anyhow::bail!(
        "this envstore was built without the demo channel: run `cargo run -p envstore-server --features demo -- serve --demo`, or allow a channel with --channel NAME=URL"
    )
}

/// Where fault tests tell workers to stop for good
/// (`ENVSTORE_TEST_PAUSE=solving|downloading|linking|packing|publishing`): read only by a build with
/// the `test-hooks` feature, which the tests turn on.
#[cfg(feature = "test-hooks")]
fn test_pause() -> anyhow::Result<Option<TestPause>> {
    match std::env::var("ENVSTORE_TEST_PAUSE") {
        Ok(point) => Ok(Some(
            point.parse::<TestPause>().map_err(anyhow::Error::msg)?,
        )),
        Err(_) => Ok(None),
    }
}

/// A release build has no fault-injection pauses: the variable is not read.
#[cfg(not(feature = "test-hooks"))]
fn test_pause() -> anyhow::Result<Option<TestPause>> {
    Ok(None)
}

async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let config = node_config(args.node).await?;
    let db = envstore_db::Database::connect(&config.database).await?;
    db.migrate().await?;
    let store = envstore_store::ArtifactStore::open_with(&config.store, config.limits.store)?;
    let options = envstore_workers::GcOptions {
        keep_builds: args.keep_builds,
        dry_run: args.dry_run,
        worker: format!("gc-{}", uuid::Uuid::now_v7()),
        lease: config.lease,
        cache_idle: std::time::Duration::from_secs(args.cache_idle_minutes.saturating_mul(60)),
        cache_budget: args.cache_budget.as_u64(),
    };
    let layout = envstore_workers::Layout::under(&config.data_dir);
    let report = envstore_workers::collect_garbage(&db, &store, &layout, &options).await?;
    print!(
        "{}",
        envstore_server::gc::render_report(&report, args.keep_builds)
    );
    Ok(())
}

/// `envstore migrate`: applies pending migrations, says which it would
/// apply (`--dry-run`), or lists them all (`--status`). Reads where the
/// database stands first, and fails without touching it when this envstore
/// must not migrate it (a migration it does not know, one edited since it
/// was applied, one that failed).
async fn migrate(database: &str, status: bool, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let before = envstore_db::schema::status(database).await?;
    let report = if status || dry_run || !before.problems.is_empty() {
        if json {
            println!("{}", serde_json::to_string_pretty(&before)?);
        } else if status {
            print!("{}", before.table());
        } else if dry_run {
            println!("dry run: nothing is applied");
            let pending = before.in_state(envstore_db::schema::MigrationState::Pending);
            for migration in pending.filter(|_| before.problems.is_empty()) {
                println!(
                    "would apply migration {} ({})",
                    migration.version, migration.description
                );
            }
            println!("{}", before.summary());
        }
        before
    } else {
        envstore_db::Database::connect(database)
            .await?
            .close()
            .await;
        let after = envstore_db::schema::status(database).await?;
        let applied: Vec<envstore_db::schema::MigrationEntry> = after
            .in_state(envstore_db::schema::MigrationState::Applied)
            .filter(|migration| before.pending.contains(&migration.version))
            .cloned()
            .collect();
        if json {
            let mut value = serde_json::to_value(&after)?;
            value["applied"] = serde_json::json!(
                applied
                    .iter()
                    .map(|migration| migration.version)
                    .collect::<Vec<_>>()
            );
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            for migration in &applied {
                println!(
                    "applied migration {} ({})",
                    migration.version, migration.description
                );
            }
            println!(
                "migrations applied: {} now, the database is at migration {}",
                applied.len(),
                after
                    .migrations
                    .last()
                    .map_or(0, |migration| migration.version)
            );
        }
        after
    };
    if !report.problems.is_empty() {
        anyhow::bail!(
            "this envstore must not migrate this database:\n  - {}",
            report.problems.join("\n  - ")
        );
    }
    Ok(())
}

async fn materialize(args: MaterializeArgs) -> anyhow::Result<()> {
    let (namespace, name) = args
        .environment
        .split_once('/')
        .context("the environment is NAMESPACE/NAME")?;
    let root = absolute(&args.root.unwrap_or_else(|| PathBuf::from("envstore-data")))?;
    let platform = rattler_conda_types::Subdir::current()
        .context("envstore cannot tell which conda platform this machine is")?;
    let layout = envstore_workers::Layout::under(&root);
    let prefix = match (&args.database, &args.store) {
        (Some(database), Some(store)) => {
            let db = envstore_db::Database::connect(database).await?;
            let store = envstore_store::ArtifactStore::open_with(
                &store_url(store)?,
                args.store_limits.settings(),
            )?;
            envstore_workers::materialize_environment(
                &db,
                &store,
                &layout,
                &prefix_builder(&layout),
                &pypi_context(&layout)?,
                &platform.to_string(),
                &namespace.parse()?,
                &name.parse()?,
            )
            .await?
        }
        (None, None) => {
            let client = envstore_client::Client::new(&args.server.server, args.server.token)?;
            envstore_workers::materialize_from_server(
                &client,
                &layout,
                &platform.to_string(),
                namespace,
                name,
            )
            .await?
        }
        _ => anyhow::bail!("reading the store directly needs both --database and --store"),
    };
    println!("{}", prefix.display());
    Ok(())
}

/// What builds a prefix here when its packed form was never published:
/// the package cache under the same data folder, default package limits.
fn prefix_builder(layout: &envstore_workers::Layout) -> envstore_link::PrefixBuilder {
    let cache = rattler::package_cache::PackageCache::new(layout.package_cache.clone());
    envstore_link::PrefixBuilder::new(layout.prefixes.clone(), cache)
}

/// What fetches and installs a lock's PyPI wheels when its prefix is built
/// here: the wheel cache under the same data folder, default limits, the
/// channel client's trust roots and proxies.
fn pypi_context(
    layout: &envstore_workers::Layout,
) -> anyhow::Result<envstore_workers::PypiContext> {
    Ok(envstore_workers::PypiContext::new(
        layout.pypi_cache.clone(),
        envstore_pypi::WheelLimits::default(),
        envstore_solve::NetworkLimits::default().read_timeout,
    )?)
}

/// `envstore kernels sync`: kernelspecs for what the server lists, each
/// run from a prefix present on this machine (materialised when missing:
/// from the server, or from the store when the database and store are
/// given), and stale ones of ours removed.
async fn kernels_sync(args: KernelsSyncArgs) -> anyhow::Result<()> {
    use envstore_client::kernels::{self, Change};

    let client = envstore_client::Client::new(&args.server.server, args.server.token)?;
    let listed = client.kernels().await?;
    let kernels_dir = args.dir.join("kernels");
    let root = args.root.as_deref().map(absolute).transpose()?;
    // Without them, missing prefixes come from the server.
    let direct = match (&args.database, &args.store) {
        (Some(database), Some(store)) => Some((
            envstore_db::Database::connect(database).await?,
            envstore_store::ArtifactStore::open_with(
                &store_url(store)?,
                args.store_limits.settings(),
            )?,
        )),
        (None, None) => None,
        _ => {
            anyhow::bail!("materialising prefixes from the store needs both --database and --store")
        }
    };
    let mut keep = std::collections::BTreeSet::new();
    let mut missing = Vec::new();
    for kernel in &listed {
        kernels::check_id(&kernel.id)?;
        keep.insert(kernel.id.clone());
        let label = &kernel.display_name;
        let mut prefix = match &root {
            Some(root) => root
                .join("envs")
                .join(&kernel.namespace)
                .join(&kernel.environment),
            None => PathBuf::from(&kernel.prefix),
        };
        if !holds_lock(&prefix, &kernel.lock_hash) {
            let data_dir = match &root {
                Some(root) => root.clone(),
                None => server_data_dir(kernel)?,
            };
            let layout = envstore_workers::Layout::under(&data_dir);
            let platform = rattler_conda_types::Subdir::current()
                .context("envstore cannot tell which conda platform this machine is")?
                .to_string();
            let unpacked = match &direct {
                Some((db, store)) => {
                    envstore_workers::materialize_environment(
                        db,
                        store,
                        &layout,
                        &prefix_builder(&layout),
                        &pypi_context(&layout)?,
                        &platform,
                        &kernel.namespace.parse()?,
                        &kernel.environment.parse()?,
                    )
                    .await
                }
                None => {
                    envstore_workers::materialize_from_server(
                        &client,
                        &layout,
                        &platform,
                        &kernel.namespace,
                        &kernel.environment,
                    )
                    .await
                }
            };
            // The other kernels are still synced; the failure is reported at the end.
            let unpacked = match unpacked {
                Ok(unpacked) => unpacked,
                Err(error) => {
                    eprintln!(
                        "skipped {label}: failed to materialise its prefix: {}",
                        envstore_workers::error_chain(&error)
                    );
                    missing.push(label.clone());
                    continue;
                }
            };
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
        anyhow::bail!(
            "{} environment(s) have no prefix here: {}",
            missing.len(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// Whether `prefix` is a complete prefix of `lock_hash`: its completion
/// marker, written last, names that lock.
fn holds_lock(prefix: &Path, lock_hash: &str) -> bool {
    envstore_link::read_marker(prefix).is_some_and(|marker| marker.lock_hash.to_hex() == lock_hash)
}

/// The server's data folder, from an environment path it lists
/// (`<data-dir>/envs/<ns>/<name>`): prefixes embed their path, so a
/// materialised one must sit where the server put it.
fn server_data_dir(kernel: &envstore_client::kernels::Kernel) -> anyhow::Result<PathBuf> {
    let expected = Path::new("envs")
        .join(&kernel.namespace)
        .join(&kernel.environment);
    let listed = Path::new(&kernel.prefix);
    let mut data_dir = listed.to_owned();
    for _ in 0..3 {
        data_dir.pop();
    }
    anyhow::ensure!(
        listed.is_absolute() && listed.ends_with(&expected),
        "the server lists {} at '{}', not under <data-dir>/envs/: pass --root",
        kernel.display_name,
        listed.display()
    );
    Ok(data_dir)
}

fn store_url(text: &str) -> anyhow::Result<url::Url> {
    url::Url::parse(text).with_context(|| format!("invalid store URL '{text}'"))
}

async fn run_until_signal(server: envstore_server::server::RunningServer) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::oversubscribed;

    #[test]
    fn more_workers_than_cores_is_warned_about_and_no_more_is_not() {
        assert_eq!(oversubscribed(2, 2), None);
        assert_eq!(oversubscribed(1, 2), None);
        let warning = oversubscribed(4, 2).expect("4 workers on 2 cores are warned about");
        assert!(warning.starts_with("4 workers on 2 cores"), "{warning}");
    }
}

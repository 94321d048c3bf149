//! The command line of `envstore`, in the library so that tests parse the
//! command lines of the deployment files with the real definition.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod resources;

use resources::{BuildsCommand, ClientArgs, EnvCommand, NamespacesCommand, TokensCommand};

#[derive(Parser)]
#[command(
    name = "envstore",
    version,
    about = "Builds conda environments and serves their lockfiles"
)]
pub struct Cli {
    /// How log lines on standard error look: `text` for people, `json` (one
    /// object per line, with the request id of each HTTP request's lines)
    /// for log collectors. `ENVSTORE_LOG` filters them (default `info`).
    #[arg(long, global = true, env = "ENVSTORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the API and an in-process worker pool (`--workers 0`: the API only).
    Serve(ServeArgs),
    /// Run build workers only, fed by a shared database.
    Worker(WorkerArgs),
    /// Fetch an environment's packed prefix and unpack it here, at the same
    /// path it was built at: from the server (only its URL and a token), or
    /// with --database and --store straight from the store.
    Materialize(MaterializeArgs),
    /// Submit an environment.yml (or .json) for NAMESPACE/NAME; with --wait,
    /// follow the build and exit non-zero unless it succeeds (Ctrl-C stops
    /// following, not the build).
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
    /// Environments: list, show with history, rollback, delete, diff, spec.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Builds: show, log (--follow), cancel.
    #[command(subcommand, visible_alias = "build")]
    Builds(BuildsCommand),
    /// Namespaces: list, create, delete, members, policy, visibility, quota.
    #[command(subcommand, visible_alias = "ns")]
    Namespaces(NamespacesCommand),
    /// API tokens: create, list, revoke.
    #[command(subcommand, visible_alias = "token")]
    Tokens(TokensCommand),
    /// Who the server takes you for: subject, roles, token and its expiry.
    Whoami(ClientArgs),
    /// Jupyter kernels for the environments the server lists.
    #[command(subcommand)]
    Kernels(KernelsCommand),
    /// Print what each namespace you may see uses: disk (shared prefixes
    /// marked), builds and their minutes, downloads, quotas and cost, over
    /// all time or a period (`--since 2026-11-01 --until 2026-12-01`).
    Usage {
        /// Only this namespace.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Start of the period (included): an RFC 3339 time or a date
        /// (`2026-11-01`, its start in UTC) [default: the beginning].
        #[arg(long)]
        since: Option<String>,
        /// End of the period (excluded), in the same forms [default: now].
        #[arg(long)]
        until: Option<String>,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Garbage collection by policy: release the prefixes of all but the
    /// newest builds of each environment (lockfiles and logs stay), remove
    /// prefixes and packed prefixes nothing holds, and clean deleted
    /// environments and namespaces. Run it on each node that holds prefixes.
    Gc(GcArgs),
    /// Apply pending database migrations and exit. `serve` and `worker`
    /// apply them as they start as well; run this first to upgrade in a
    /// step of its own.
    Migrate {
        /// sqlite://path or postgres://…
        #[arg(long, env = "ENVSTORE_DATABASE")]
        database: String,
        /// List every migration this envstore knows and where the database
        /// stands (applied and when, pending), and apply nothing. Exits
        /// non-zero when the database cannot be migrated by this envstore:
        /// a migration it does not know (a newer envstore migrated it), one
        /// whose text changed since it was applied, or one that failed.
        #[arg(long, conflicts_with = "dry_run")]
        status: bool,
        /// Say which migrations would be applied, and apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum KernelsCommand {
    /// Write one kernelspec per environment the server lists as a kernel
    /// into DIR/kernels, materialising prefixes missing here (from the
    /// server, or with --database and --store from the store), and remove
    /// the ones it wrote before for environments no longer listed.
    Sync(KernelsSyncArgs),
}

#[derive(clap::Args)]
pub struct KernelsSyncArgs {
    /// The Jupyter data folder (e.g. ~/.local/share/jupyter); kernelspecs go
    /// to DIR/kernels/<id>.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where environments live on this machine (`<root>/envs/<ns>/<name>`)
    /// [default: the server's own paths].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// To materialise missing prefixes from the store instead of the
    /// server: the server's database (sqlite://path or postgres://…).
    #[arg(long, env = "ENVSTORE_DATABASE", requires = "store")]
    pub database: Option<String>,
    /// To materialise missing prefixes from the store instead of the
    /// server: the server's store (file:///path or s3://bucket/prefix).
    #[arg(long, env = "ENVSTORE_STORE", requires = "database")]
    pub store: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub store_limits: StoreArgs,
}

/// Settings every node shares.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// A TOML file with the same settings; flags override it.
    #[arg(long, env = "ENVSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database, prefixes, caches and artifacts live here [default: ./envstore-data].
    #[arg(long, env = "ENVSTORE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://path or postgres://… [default: sqlite://<data-dir>/envstore.db].
    #[arg(long, env = "ENVSTORE_DATABASE")]
    pub database: Option<String>,
    /// file:///path or s3://bucket/prefix [default: file://<data-dir>/artifacts].
    /// S3 reads AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP.
    #[arg(long, env = "ENVSTORE_STORE")]
    pub store: Option<String>,
    /// Build workers in this process [default: the number of cores].
    #[arg(long, env = "ENVSTORE_WORKERS")]
    pub workers: Option<usize>,
    /// An allowed channel, as NAME=URL or a URL; repeat for more.
    #[arg(long = "channel", value_name = "NAME=URL")]
    pub channels: Vec<String>,
    /// Also generate the demo channel under the data folder and allow it as `demo`.
    #[arg(long)]
    pub demo: bool,
    /// Seconds a job or prefix lease holds without renewal; a crashed
    /// worker's build is taken over after this.
    #[arg(long, env = "ENVSTORE_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// Publish each new prefix as prefixes/<lock_hash>.tar.zst so other nodes
    /// can materialise it [default: on for an s3:// store, off for a local folder].
    #[arg(long, env = "ENVSTORE_PACK_PREFIXES")]
    pub pack_prefixes: Option<bool>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub packages: PackageLimitArgs,
}

/// Limits every package is extracted under; unset flags keep the config
/// file's `[packages]` value, or the default.
#[derive(clap::Args)]
pub struct PackageLimitArgs {
    /// Bytes one package may extract to [default: 5 GiB].
    #[arg(long, env = "ENVSTORE_MAX_PACKAGE_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_package_bytes: Option<u64>,
    /// Files, folders and links one package may have [default: 200000].
    #[arg(long, env = "ENVSTORE_MAX_PACKAGE_FILES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_package_files: Option<u64>,
    /// Extracted bytes per archive byte, past 16 MiB [default: 1000].
    #[arg(long, env = "ENVSTORE_MAX_PACKAGE_RATIO", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_package_ratio: Option<u64>,
}

impl PackageLimitArgs {
    pub fn apply(&self, file: envstore_link::PackageLimits) -> envstore_link::PackageLimits {
        envstore_link::PackageLimits {
            max_extracted_bytes: self.max_package_bytes.unwrap_or(file.max_extracted_bytes),
            max_files: self.max_package_files.unwrap_or(file.max_files),
            max_compression_ratio: self.max_package_ratio.unwrap_or(file.max_compression_ratio),
            ratio_grace_bytes: file.ratio_grace_bytes,
        }
    }
}

/// Time limits wherever a node waits on something it does not control.
#[derive(clap::Args)]
pub struct LimitArgs {
    /// Seconds one build attempt may take in all; past it the build fails
    /// naming its phase. A graceful shutdown waits no longer.
    #[arg(long, env = "ENVSTORE_BUILD_TIMEOUT_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub build_timeout_seconds: u64,
    /// Seconds one `POST …/solve` call may take, repodata included.
    #[arg(long, env = "ENVSTORE_SOLVE_TIMEOUT_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub solve_timeout_seconds: u64,
    /// Seconds connecting to a channel's server may take.
    #[arg(long, env = "ENVSTORE_CHANNEL_CONNECT_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub channel_connect_timeout_seconds: u64,
    /// Seconds a channel's server may stay silent (before answering, or
    /// between two reads of its answer).
    #[arg(long, env = "ENVSTORE_CHANNEL_READ_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub channel_read_timeout_seconds: u64,
    /// Seconds a database query waits for a connection (connecting to
    /// PostgreSQL included) before the request fails with 503 and
    /// Retry-After instead of hanging.
    #[arg(long, env = "ENVSTORE_DATABASE_TIMEOUT_SECONDS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub database_timeout_seconds: u64,
    /// Bytes one repodata answer from a channel may carry on the wire.
    #[arg(long, env = "ENVSTORE_MAX_REPODATA_BYTES", default_value_t = envstore_solve::DEFAULT_MAX_REPODATA_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_repodata_bytes: u64,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Seconds transient download errors (refused or reset connections,
    /// timeouts, 5xx, 429) of repodata and packages are retried, with
    /// backoff, before the build fails; 0: never retried.
    #[arg(long, env = "ENVSTORE_TRANSIENT_RETRY_SECONDS", default_value_t = 120)]
    pub transient_retry_seconds: u64,
}

/// Time limits of object store calls, for every command that opens the store.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Seconds one object store call may take, its retries included;
    /// bodies get a second more per MiB, uploads count per 8 MiB part and
    /// downloads per chunk. Keep it well below --lease-seconds.
    #[arg(long, env = "ENVSTORE_STORE_TIMEOUT_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub store_timeout_seconds: u64,
}

impl StoreArgs {
    pub fn settings(&self) -> envstore_store::StoreSettings {
        envstore_store::StoreSettings {
            timeout: std::time::Duration::from_secs(self.store_timeout_seconds),
        }
    }
}

impl LimitArgs {
    pub fn config(&self) -> crate::config::TimeLimits {
        use std::time::Duration;
        crate::config::TimeLimits {
            build: Duration::from_secs(self.build_timeout_seconds),
            solve_request: Duration::from_secs(self.solve_timeout_seconds),
            database: Duration::from_secs(self.database_timeout_seconds),
            network: envstore_solve::NetworkLimits {
                connect_timeout: Duration::from_secs(self.channel_connect_timeout_seconds),
                read_timeout: Duration::from_secs(self.channel_read_timeout_seconds),
                max_repodata_bytes: self.max_repodata_bytes,
                transient_retry: Duration::from_secs(self.transient_retry_seconds),
            },
            store: self.store.settings(),
        }
    }
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Serve this node's metrics (`/metrics`, Prometheus) and liveness
    /// (`/health`) here [default: not served].
    #[arg(long, env = "ENVSTORE_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Where to listen [default: 127.0.0.1:8080].
    #[arg(long, env = "ENVSTORE_BIND")]
    pub bind: Option<SocketAddr>,
    /// The admin token; without it, one is kept in <data-dir>/admin-token.
    #[arg(long, env = "ENVSTORE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub usage: UsageArgs,
}

/// Cost estimates and default quotas of `envstore serve`.
#[derive(clap::Args)]
pub struct UsageArgs {
    /// Price of one GiB of prefixes kept for a month, for the cost shown
    /// with usage figures [default: none, no disk cost shown].
    #[arg(long, env = "ENVSTORE_PRICE_PER_GIB_MONTH", value_parser = parse_price)]
    pub price_per_gib_month: Option<f64>,
    /// Price of one minute of building [default: none, no build cost shown].
    #[arg(long, env = "ENVSTORE_PRICE_PER_BUILD_MINUTE", value_parser = parse_price)]
    pub price_per_build_minute: Option<f64>,
    /// The ISO 4217 code of those prices (e.g. `EUR`), shown with every
    /// cost; overrides `[usage] currency` [default: none named].
    #[arg(long, env = "ENVSTORE_CURRENCY")]
    pub currency: Option<envstore_core::usage::Currency>,
    /// Disk a namespace's prefixes may take (e.g. `50GiB`) unless a server
    /// admin set its quota [default: no limit].
    #[arg(long, env = "ENVSTORE_DEFAULT_MAX_DISK", value_name = "SIZE")]
    pub default_max_disk: Option<bytesize::ByteSize>,
    /// Builds a namespace may have queued or running at once unless a
    /// server admin set its quota [default: no limit].
    #[arg(long, env = "ENVSTORE_DEFAULT_MAX_CONCURRENT_BUILDS", value_parser = clap::value_parser!(i64).range(1..))]
    pub default_max_concurrent_builds: Option<i64>,
    /// Seconds between writes of the download counts, kept in memory, to
    /// the database.
    #[arg(long, env = "ENVSTORE_USAGE_FLUSH_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub usage_flush_seconds: u64,
}

fn parse_price(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(price) if price.is_finite() && price >= 0.0 => Ok(price),
        _ => Err(format!("'{text}' is not a price (a number, 0 or more)")),
    }
}

impl UsageArgs {
    /// The flags' settings over the config file's (`[usage]`).
    pub fn config(&self, file: crate::config::UsageConfig) -> crate::config::UsageConfig {
        crate::config::UsageConfig {
            settings: envstore_api::UsageSettings {
                price_per_gib_month: self.price_per_gib_month,
                price_per_build_minute: self.price_per_build_minute,
                currency: self.currency.or(file.settings.currency),
                default_quota: envstore_db::Quota {
                    max_disk_bytes: self
                        .default_max_disk
                        .map(|size| i64::try_from(size.as_u64()).unwrap_or(i64::MAX)),
                    max_concurrent_builds: self.default_max_concurrent_builds,
                },
            },
            flush_interval: std::time::Duration::from_secs(self.usage_flush_seconds),
        }
    }
}

/// Where the client commands find the server.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The envstore server.
    #[arg(long, env = "ENVSTORE_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A token for `Authorization: Bearer`.
    #[arg(long, env = "ENVSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// The newest succeeded builds of each environment that keep their
    /// prefix; the current build keeps it too, however old.
    #[arg(long, env = "ENVSTORE_GC_KEEP_BUILDS", default_value_t = 3)]
    pub keep_builds: usize,
    /// Say what would be removed and freed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Package cache entries no prefix links are removed once idle this
    /// long (longer than a build runs, so none is about to be linked).
    #[arg(long, env = "ENVSTORE_GC_CACHE_IDLE_MINUTES", default_value_t = 120)]
    pub cache_idle_minutes: u64,
    /// While the package cache holds more than this, entries no complete
    /// prefix uses are removed, used longest ago first.
    #[arg(long, env = "ENVSTORE_GC_CACHE_BUDGET", default_value = "20GiB")]
    pub cache_budget: bytesize::ByteSize,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(clap::Args)]
pub struct MaterializeArgs {
    /// The environment, as NAMESPACE/NAME.
    pub environment: String,
    /// The data folder the prefix is unpacked under; it must be the same
    /// path as on the node that built it [default: ./envstore-data].
    #[arg(long, env = "ENVSTORE_DATA_DIR")]
    pub root: Option<PathBuf>,
    /// Read the store directly instead of asking the server: its database
    /// (sqlite://path or postgres://…). A lock without a packed prefix is
    /// then built here from the lock.
    #[arg(long, env = "ENVSTORE_DATABASE", requires = "store")]
    pub database: Option<String>,
    /// With --database: the store (file:///path or s3://bucket/prefix).
    #[arg(long, env = "ENVSTORE_STORE", requires = "database")]
    pub store: Option<String>,
    #[command(flatten)]
    pub store_limits: StoreArgs,
    /// Without --database and --store: the server to download from.
    #[command(flatten)]
    pub server: ServerArgs,
}

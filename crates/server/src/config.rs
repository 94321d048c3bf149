use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use envstore_core::NamedChannel;
use serde::Deserialize;

/// Settings of `envstore serve`, from a TOML file and/or flags (flags win).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    pub store: Option<String>,
    pub workers: Option<usize>,
    #[serde(default)]
    pub channels: Vec<NamedChannel>,
    /// The server's policy, which each namespace's can only tighten.
    #[serde(default)]
    pub policy: envstore_core::Policy,
    /// An OIDC identity provider whose JWTs are accepted as bearer tokens.
    #[serde(default)]
    pub oidc: Option<envstore_api::oidc::OidcConfig>,
    /// Limits on build event streams (`[event_streams]`).
    #[serde(default)]
    pub event_streams: EventStreamsFile,
    /// Limits every package is extracted under (`[packages]`).
    #[serde(default)]
    pub packages: envstore_link::PackageLimits,
    /// How usage is shown (`[usage]`).
    #[serde(default)]
    pub usage: UsageFile,
}

/// `[usage]` of the config file.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageFile {
    /// The ISO 4217 code of the prices (`currency = "EUR"`), shown with
    /// every cost; `--currency` overrides it. A code that is not three
    /// letters is refused when the file is read.
    pub currency: Option<envstore_core::usage::Currency>,
}

impl UsageFile {
    /// The usage settings the file gives, defaults elsewhere.
    pub fn config(self) -> UsageConfig {
        let mut config = UsageConfig::default();
        config.settings.currency = self.currency;
        config
    }
}

/// `[event_streams]` of the config file; what is left out keeps its default.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventStreamsFile {
    /// Streams one caller may have open at once (default 8).
    pub per_caller: Option<usize>,
    /// A stream's longest life in seconds (default 3600).
    pub max_duration_seconds: Option<u64>,
    /// How often a followed build is looked at again, in milliseconds,
    /// besides when workers announce a change (default 250).
    pub poll_interval_ms: Option<u64>,
}

impl EventStreamsFile {
    pub fn limits(self) -> envstore_api::EventStreamLimits {
        let defaults = envstore_api::EventStreamLimits::default();
        envstore_api::EventStreamLimits {
            per_caller: self.per_caller.unwrap_or(defaults.per_caller).max(1),
            max_duration: self
                .max_duration_seconds
                .map_or(defaults.max_duration, |seconds| {
                    std::time::Duration::from_secs(seconds.max(1))
                }),
            recheck: defaults.recheck,
            poll: self.poll_interval_ms.map_or(defaults.poll, |ms| {
                std::time::Duration::from_millis(ms.max(10))
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read the config file '{}'", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the config file '{}' is not valid", .0.display())]
    Parse(PathBuf, #[source] toml::de::Error),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs_err::read_to_string(path)
            .map_err(|error| ConfigError::Read(path.to_owned(), error))?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse(path.to_owned(), error))
    }
}

/// Everything the server needs to start, resolved.
#[derive(Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Absolute: prefixes embed their own path.
    pub data_dir: PathBuf,
    pub database: String,
    pub store: url::Url,
    pub workers: usize,
    pub channels: Vec<NamedChannel>,
    /// None: read `<data_dir>/admin-token`, or create it.
    pub admin_token: Option<String>,
    /// How long job and prefix leases hold without renewal.
    pub lease: std::time::Duration,
    /// Publish `prefixes/<lock_hash>.tar.zst` after each new prefix, for
    /// nodes that materialise prefixes instead of sharing a filesystem.
    pub publish_packed_prefixes: bool,
    /// Fault tests only: where workers stop for good.
    pub test_pause: Option<TestPause>,
    /// The server's policy.
    pub policy: envstore_core::Policy,
    pub oidc: Option<envstore_api::oidc::OidcConfig>,
    /// Prices, default quota, and how often download counts are written.
    pub usage: UsageConfig,
    /// Time limits wherever the service waits.
    pub limits: TimeLimits,
    /// Limits on build event streams.
    pub event_streams: envstore_api::EventStreamLimits,
    /// Extracted size, file count and compression ratio of one package.
    pub package_limits: envstore_link::PackageLimits,
}

/// Time limits wherever the service waits on something it does not control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    /// One build attempt in all; a graceful shutdown waits no longer.
    pub build: std::time::Duration,
    /// One `POST …/solve` call, repodata included.
    pub solve_request: std::time::Duration,
    /// How long a query waits for a database connection before failing
    /// as unavailable (503).
    pub database: std::time::Duration,
    /// Connecting to and hearing from channels; how long transient
    /// download errors are retried.
    pub network: envstore_solve::NetworkLimits,
    /// Deadlines and retries of object store calls.
    pub store: envstore_store::StoreSettings,
}

/// A build may run this long unless configured otherwise.
pub const DEFAULT_BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// A solve-endpoint call may run this long unless configured otherwise.
pub const DEFAULT_SOLVE_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl Default for TimeLimits {
    fn default() -> Self {
        Self {
            build: DEFAULT_BUILD_TIMEOUT,
            solve_request: DEFAULT_SOLVE_REQUEST_TIMEOUT,
            database: envstore_db::DEFAULT_TIMEOUT,
            network: envstore_solve::NetworkLimits::default(),
            store: envstore_store::StoreSettings::default(),
        }
    }
}

/// What an API process needs for usage figures and quotas.
#[derive(Debug, Clone, Copy)]
pub struct UsageConfig {
    pub settings: envstore_api::UsageSettings,
    /// How often the download counts kept in memory are written to the
    /// database (and on shutdown).
    pub flush_interval: std::time::Duration,
}

/// Download counts are written this often unless configured otherwise: a few
/// seconds of counts is what a crash may lose.
pub const DEFAULT_USAGE_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            settings: envstore_api::UsageSettings::default(),
            flush_interval: DEFAULT_USAGE_FLUSH_INTERVAL,
        }
    }
}

/// Points where a worker can be told to stop for good, so fault tests can
/// kill it there (`ENVSTORE_TEST_PAUSE=solving|downloading|linking|packing|publishing`).
pub use envstore_workers::TestPause;

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database", &redact_password(&self.database))
            .field("store", &self.store.as_str())
            .field("workers", &self.workers)
            .field("channels", &self.channels)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("lease", &self.lease)
            .field("publish_packed_prefixes", &self.publish_packed_prefixes)
            .field("test_pause", &self.test_pause)
            .field("usage", &self.usage)
            .field("limits", &self.limits)
            .field("event_streams", &self.event_streams)
            .field("package_limits", &self.package_limits)
            .finish()
    }
}

/// Hides the password of a database URL for logs.
pub fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_limits_come_from_the_config_file() {
        let config: FileConfig =
            toml::from_str("[event_streams]\nper_caller = 2\nmax_duration_seconds = 60\n").unwrap();
        let limits = config.event_streams.limits();
        assert_eq!(limits.per_caller, 2);
        assert_eq!(limits.max_duration, std::time::Duration::from_secs(60));
        let defaults = FileConfig::default().event_streams.limits();
        assert_eq!(defaults, envstore_api::EventStreamLimits::default());
        assert_eq!(defaults.per_caller, 8);
        assert!(toml::from_str::<FileConfig>("[event_streams]\nper_callers = 2\n").is_err());
    }

    #[test]
    fn parses_a_config_file() {
        let config: FileConfig = toml::from_str(
            "bind = \"127.0.0.1:9000\"\nworkers = 2\n[[channels]]\nname = \"demo\"\nurl = \"http://127.0.0.1:8000/demo/\"\n",
        )
        .unwrap();
        assert_eq!(config.workers, Some(2));
        assert_eq!(config.channels[0].name, "demo");
    }

    #[test]
    fn conda_channel_settings_map_public_urls_to_the_mirrors() {
        let config: FileConfig = toml::from_str(
            "[[channels]]\nname = \"conda-forge\"\nurl = \"https://mirror.example/cf/\"\n\
             [[channels]]\nname = \"internal\"\nurl = \"https://mirror.example/internal/\"\n\
             [policy]\ndefault_channels = [\"conda-forge\"]\n\
             channel_alias = \"https://conda.anaconda.org\"\n\
             custom_channels = { internal = \"https://conda.corp.example\" }\n",
        )
        .unwrap();
        config.policy.validate().unwrap();
        let allowlist = config
            .policy
            .configure_channels(envstore_core::ChannelAllowlist::new(config.channels))
            .unwrap();
        assert_eq!(allowlist.default_channels(), ["conda-forge"]);
        for (written, name) in [
            ("https://conda.anaconda.org/conda-forge", "conda-forge"),
            ("https://conda.anaconda.org/conda-forge/", "conda-forge"),
            ("https://conda.corp.example/internal", "internal"),
        ] {
            assert_eq!(allowlist.resolve(written).unwrap().name, name, "{written}");
        }
        assert!(
            allowlist
                .resolve("https://conda.anaconda.org/bioconda")
                .is_err()
        );
    }

    /// docs/sign-in.md's `[oidc]` example is what the server reads.
    #[test]
    fn the_sign_in_docs_example_is_a_valid_config() {
        let docs = include_str!("../../../docs/sign-in.md");
        let example = docs
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml example in docs/sign-in.md");
        let config: FileConfig = toml::from_str(example).unwrap();
        let oidc = config.oidc.expect("[oidc]");
        assert_eq!(oidc.client_id(), "envstore");
        let sign_in = &oidc.sign_in;
        assert!(sign_in.personal_namespaces && sign_in.web_sign_in);
        assert_eq!(sign_in.groups_claim.as_deref(), Some("groups"));
        assert_eq!(sign_in.group_roles.len(), 2);
        assert_eq!(sign_in.group_roles[0].namespace, "{group}");
        assert_eq!(
            sign_in.public_url.as_ref().map(url::Url::as_str),
            Some("https://envstore.example.org/")
        );
        assert!(sign_in.client_secret_file.is_some());
        // The secret itself is refused in the file.
        let with_secret = example.replace("[oidc]\n", "[oidc]\nclient_secret = \"s3cret\"\n");
        assert!(toml::from_str::<FileConfig>(&with_secret).is_err());
    }

    #[test]
    fn the_usage_currency_is_an_iso_code_from_the_file() {
        let config: FileConfig = toml::from_str("[usage]\ncurrency = \"eur\"\n").unwrap();
        let usage = config.usage.config();
        assert_eq!(
            usage.settings.currency.map(|currency| currency.to_string()),
            Some("EUR".to_owned())
        );
        assert_eq!(FileConfig::default().usage.config().settings.currency, None);
        for refused in [
            "[usage]\ncurrency = \"euro\"\n",
            "[usage]\ncurrency = \"€\"\n",
            "[usage]\ncurency = \"EUR\"\n",
        ] {
            assert!(toml::from_str::<FileConfig>(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_password("postgres://envstore:hunter2@db:5432/envstore"),
            "postgres://envstore:redacted@db:5432/envstore"
        );
    }
}

//! The command line of the API's resources: `envstore env`, `builds`,
//! `namespaces`, `tokens` and `whoami`. Each takes the server and token of
//! every client command (`ENVSTORE_URL`, `ENVSTORE_TOKEN`) and `--json`.

use std::path::PathBuf;

use clap::Subcommand;
use envstore_core::{Grant, NamespacePattern, Role};

use super::ServerArgs;

/// What every resource command takes: where the server is, and how to print.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// Print the server's JSON (pretty) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Subcommand)]
pub enum EnvCommand {
    /// List the environments of NAMESPACE (of every namespace you may see
    /// without it) with their current and latest builds.
    #[command(visible_alias = "ls")]
    List {
        namespace: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show NAMESPACE/NAME: its current build, prefix and every build with
    /// its status, time and who submitted it.
    Show {
        /// NAMESPACE/NAME
        environment: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make an older (or newer) succeeded build of NAMESPACE/NAME current;
    /// a build whose prefix was collected is rebuilt from its lock first.
    Rollback {
        /// NAMESPACE/NAME
        environment: String,
        build_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete NAMESPACE/NAME (namespace admins): hidden at once, its builds
    /// stopped, cleaned by the next garbage collection.
    #[command(visible_alias = "rm")]
    Delete {
        /// NAMESPACE/NAME
        environment: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The package changes between two builds (FROM_BUILD TO_BUILD), or of
    /// NAMESPACE/NAME's current build against the succeeded build before it.
    Diff {
        /// A build id, or NAMESPACE/NAME.
        from: String,
        /// The build to compare with (omitted with NAMESPACE/NAME).
        to: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the spec NAMESPACE/NAME's current build (or --build) was
    /// submitted with, as sent; with --json, the canonical spec it hashed.
    Spec {
        /// NAMESPACE/NAME
        environment: String,
        /// This build of the environment instead of the current one.
        #[arg(long)]
        build: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum BuildsCommand {
    /// A build's status, phases with timings, reuse, packages and error.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a build's log; with --follow, as it is written until the build
    /// ends (then non-zero unless it succeeded).
    Log {
        id: String,
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a queued build, or stop a running one (its unfinished prefix
    /// is removed).
    Cancel {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Whether anonymous readers may see a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VisibilityArg {
    Public,
    Private,
}

/// A quota limit as given: a value, or `default` for the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<T> {
    Default,
    Value(T),
}

#[derive(Subcommand)]
pub enum NamespacesCommand {
    /// The namespaces you may see.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a namespace (server admins).
    Create {
        name: String,
        /// Anyone, without a token, may read it.
        #[arg(long)]
        public: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a namespace (server admins): hidden at once with its
    /// environments, cleaned by the next garbage collection.
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a namespace's members; --set and --remove change them first
    /// (namespace admins).
    Members {
        name: String,
        /// Give SUBJECT the role (viewer, developer or admin); repeatable.
        #[arg(long = "set", value_name = "SUBJECT=ROLE", value_parser = parse_member)]
        set: Vec<(String, Role)>,
        /// Take SUBJECT's role away; repeatable.
        #[arg(long = "remove", value_name = "SUBJECT")]
        remove: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a namespace's policy and the one in effect; --set replaces it
    /// with FILE's (YAML or JSON).
    Policy {
        name: String,
        #[arg(long, value_name = "FILE")]
        set: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show whether a namespace is public; with public or private, set it
    /// (namespace admins).
    Visibility {
        name: String,
        #[arg(value_enum)]
        visibility: Option<VisibilityArg>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a namespace's quota, the server's default and the limits in
    /// effect; --disk and --builds set it (server admins), `default` for
    /// the server's default.
    Quota {
        name: String,
        /// Disk its prefixes may take, e.g. `50GiB`.
        #[arg(long, value_name = "SIZE|default", value_parser = parse_disk)]
        disk: Option<Limit<bytesize::ByteSize>>,
        /// Builds queued or running at once.
        #[arg(long, value_name = "N|default", value_parser = parse_builds)]
        builds: Option<Limit<i64>>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Mint a token: its value goes to standard output, once.
    Create {
        /// What it is for, e.g. `ci`.
        name: String,
        /// For another subject (server admins), e.g. a robot.
        #[arg(long)]
        subject: Option<String>,
        /// 1 to 366 [default: 90, or less to stay within your token's life].
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=366))]
        expires_in_days: Option<i64>,
        /// Narrow it to a role in a namespace (or a glob such as `team-*`);
        /// repeatable [default: the subject's own roles].
        #[arg(long = "scope", value_name = "NAMESPACE=ROLE", value_parser = parse_scope)]
        scopes: Vec<Grant>,
        /// Server admin power (server admins only).
        #[arg(long)]
        server_admin: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Your tokens (never their values); a scoped token sees itself and
    /// the tokens minted from it.
    #[command(visible_alias = "ls")]
    List {
        /// Server admins: the tokens of every subject.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token (and the tokens minted with it).
    Revoke {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn parse_member(text: &str) -> Result<(String, Role), String> {
    let (subject, role) = text
        .rsplit_once('=')
        .filter(|(subject, _)| !subject.is_empty())
        .ok_or_else(|| format!("'{text}' is not SUBJECT=ROLE"))?;
    let role = role.parse::<Role>().map_err(|error| error.to_string())?;
    Ok((subject.to_owned(), role))
}

fn parse_scope(text: &str) -> Result<Grant, String> {
    let (namespace, role) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not NAMESPACE=ROLE"))?;
    Ok(Grant {
        namespace: namespace
            .parse::<NamespacePattern>()
            .map_err(|error| error.to_string())?,
        role: role.parse::<Role>().map_err(|error| error.to_string())?,
    })
}

fn parse_disk(text: &str) -> Result<Limit<bytesize::ByteSize>, String> {
    if text == "default" {
        return Ok(Limit::Default);
    }
    text.parse::<bytesize::ByteSize>()
        .map(Limit::Value)
        .map_err(|error| format!("'{text}' is not a size such as 50GiB, or `default`: {error}"))
}

fn parse_builds(text: &str) -> Result<Limit<i64>, String> {
    if text == "default" {
        return Ok(Limit::Default);
    }
    match text.parse::<i64>() {
        Ok(builds) if builds >= 1 => Ok(Limit::Value(builds)),
        _ => Err(format!(
            "'{text}' is not a number of builds (1 or more), or `default`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_scopes_and_limits_parse() {
        assert_eq!(
            parse_member("user:alice=developer").unwrap(),
            ("user:alice".to_owned(), Role::Developer)
        );
        assert!(parse_member("alice").is_err());
        assert!(
            parse_member("alice=owner")
                .unwrap_err()
                .contains("unknown role")
        );
        let scope = parse_scope("team-*=viewer").unwrap();
        assert_eq!(scope.namespace.as_str(), "team-*");
        assert_eq!(scope.role, Role::Viewer);
        assert!(parse_scope("team viewer").is_err());
        assert_eq!(parse_disk("default").unwrap(), Limit::Default);
        assert_eq!(
            parse_disk("2GiB").unwrap(),
            Limit::Value(bytesize::ByteSize::gib(2))
        );
        assert!(parse_disk("lots").is_err());
        assert_eq!(parse_builds("3").unwrap(), Limit::Value(3));
        assert!(parse_builds("0").is_err());
    }
}

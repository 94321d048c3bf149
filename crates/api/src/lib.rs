//! The HTTP API of envstore (v1): axum routes, the admin token check and
//! problem+json errors. Handlers only talk to the database and the object
//! store; builds run in workers, which this crate reaches through
//! [`BuildEvents`].

mod audit_denied;
mod auth;
mod error;
mod extract;
mod http_cache;
mod idempotency;
mod lockfile_format;
mod log_stream;
mod observe;
pub mod oidc;
pub mod openapi;
mod paging;
pub mod prometheus;
mod quota;
pub mod readiness;
mod routes;
mod submission;
mod views;

use std::path::PathBuf;
use std::sync::Arc;

use envstore_core::{ChannelAllowlist, Policy};
use envstore_db::Database;
use envstore_store::ArtifactStore;
use rattler_conda_types::Subdir;

pub use auth::{AdminToken, AdminTokenError, BOOTSTRAP_SUBJECT, Caller, MIN_ADMIN_TOKEN_CHARS};
pub use error::{ApiError, DATABASE_RETRY_AFTER_SECONDS};
pub use idempotency::{IDEMPOTENCY_KEY_HEADER, MAX_KEY_BYTES, REPLAYED_HEADER};
pub use log_stream::{EventStreamLimits, EventStreams};
pub use observe::REQUEST_ID_HEADER;
pub use routes::{
    KERNEL_PACKAGE, LOCK_HASH_HEADER, UsageFigures, UsageSettings, kernel_id, router, routes,
};

/// What the API tells the build side, and asks of it.
pub trait BuildEvents: Send + Sync {
    /// A build was queued: wake a worker.
    fn submitted(&self);
    /// The log so far of a build running in this process.
    fn live_log(&self, build_id: &str) -> Option<String>;
    /// The typed events of a build running in this process from number
    /// `from` on, so a follower reads only what is new; None when it does
    /// not run here (or this side keeps no events: then `live_log`).
    fn live_events(
        &self,
        _build_id: &str,
        _from: u64,
    ) -> Option<Vec<envstore_core::ProgressRecord>> {
        None
    }
}

/// Shared state of every handler.
pub struct App {
    pub db: Database,
    pub store: ArtifactStore,
    pub allowlist: ChannelAllowlist,
    /// The platform a spec is locked for when it names none.
    pub default_platform: Subdir,
    pub admin_token: AdminToken,
    /// The server's policy; each namespace's can only tighten it.
    pub default_policy: Policy,
    pub events: Arc<dyn BuildEvents>,
    /// Verifies OIDC bearer tokens, when an identity provider is configured.
    pub oidc: Option<oidc::OidcVerifier>,
    /// Where this node's prefixes live, to show a build's prefix path.
    pub prefixes_root: PathBuf,
    /// The node's data folder, which `/ready` checks can be written.
    pub data_dir: PathBuf,
    /// Where this node's environment links live (`<root>/<ns>/<name>`), so
    /// a rollback can point the link at the older prefix.
    pub environments_root: PathBuf,
    /// Solves specs for `POST …/solve` (no build). Shares its repodata and
    /// solve caches with this node's workers.
    pub solver: envstore_solve::EnvironmentSolver,
    /// How `…/solve` reaches PyPI indexes (uv's cache, trust roots,
    /// timeout): the node's workers' settings, so both lock the same wheels.
    pub pypi_index: envstore_pypi::IndexSettings,
    /// Solves running at once for `…/solve`: the API must keep answering
    /// while clients ask for solves.
    pub solve_permits: Arc<tokio::sync::Semaphore>,
    /// Prices for cost estimates and the default quota of namespaces.
    pub usage: UsageSettings,
    /// Build event streams open here, with their limits.
    pub event_streams: EventStreams,
}

pub type AppState = Arc<App>;

impl App {
    /// Records an action in the audit log, under the caller's subject.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        let subject = caller.subject.as_deref().unwrap_or("anonymous");
        self.db
            .record_audit(subject, action, target, &detail)
            .await?;
        Ok(())
    }
}

//! What a worker needs to run builds; the build steps are functions over it.

use std::time::Duration;

use envstore_core::ChannelAllowlist;
use envstore_db::Database;
use envstore_link::PrefixBuilder;
use envstore_solve::EnvironmentSolver;
use envstore_store::ArtifactStore;
use rattler_conda_types::Subdir;

use crate::layout::Layout;
use crate::log::BuildLogs;
use crate::pause::TestPause;

/// Everything a worker needs to run builds.
pub struct BuildContext {
    pub db: Database,
    pub store: ArtifactStore,
    pub solver: EnvironmentSolver,
    pub prefixes: PrefixBuilder,
    pub layout: Layout,
    /// The platform whose prefixes this node builds; other platforms are
    /// locked only.
    pub native_platform: Subdir,
    pub allowlist: ChannelAllowlist,
    pub logs: BuildLogs,
    /// How long a job or prefix lease holds without renewal.
    pub lease: Duration,
    /// Whether built prefixes are packed and published for other nodes to
    /// materialise; a single node with a local store has no use for them.
    pub publish_packed_prefixes: bool,
    /// Fault tests only: where to stop for good (only in a build with the
    /// `test-hooks` feature; downloading and linking pauses are the prefix
    /// builder's).
    pub test_pause: Option<TestPause>,
    /// How long one attempt of a build may take in all; past it the build
    /// fails, its lease is no longer renewed and its unfinished prefix is
    /// removed. A graceful shutdown waits no longer than this.
    pub build_timeout: Duration,
    /// How PyPI packages are resolved, fetched and installed.
    pub pypi: crate::pypi::PypiContext,
}

//! The build pipeline and the worker pool: claim a job under a lease, solve,
//! lock, build the prefix, publish the artifacts, point the environment.
//!
//! Modules, each depending only on those above it:
//! `layout`, `task`, `backoff`, `urls`, `prefix_size`, `log`, `pause`,
//! `lease` (leaves); `materialize` (layout, urls, prefix_size); `error`
//! (materialize, urls); `phases` (log); `context` (layout, log, pause);
//! the build steps `publish`, `solve`, `pack`, `prefix` (context, error,
//! log, phases, …); `pipeline` (the steps in order); `job` (a claimed job
//! to its end); `pool` (job); `gc` (layout, prefix_size).

mod backoff;
mod context;
mod disk_usage;
mod error;
mod gc;
mod job;
mod layout;
mod lease;
mod log;
mod materialize;
mod pack;
mod pause;
mod phases;
mod pipeline;
mod pool;
mod prefix;
mod prefix_size;
mod publish;
mod pypi;
mod solve;
mod task;
mod urls;

pub use context::BuildContext;
pub use disk_usage::watch_disk_usage;
pub use gc::{CollectedPrefix, GcError, GcOptions, GcReport, collect_garbage};
pub use job::{close_at_limit, run_job};
pub use layout::Layout;
pub use log::{BuildLog, BuildLogs};
pub use materialize::{MaterializeError, materialize_environment, materialize_from_server};
pub use pause::{TestPause, pause_line};
pub use pool::{WorkerPool, WorkerPoolConfig};
pub use pypi::PypiContext;
pub use urls::UrlNotAllowed;

pub use envstore_core::error_chain;

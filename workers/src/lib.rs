//! The build pipeline and the worker pool: claim a job under a lease, solve,
//! lock, build the prefix, publish the artifacts, point the environment.

mod log;
mod materialize;
mod pipeline;
mod pool;
mod prefix_step;

pub use log::{BuildLog, BuildLogs};
pub use materialize::{MaterializeError, materialize_environment};
pub use pipeline::{BuildContext, Layout};
pub use pool::{WorkerPool, WorkerPoolConfig};

pub use envstore_core::error_chain;

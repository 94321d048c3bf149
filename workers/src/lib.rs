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

/// A background task that stops when its guard is dropped, so a lease is
/// never renewed by a build that was abandoned half-way (its future dropped
/// because the job's lease was lost or the build was cancelled).
pub(crate) struct TaskGuard(tokio::task::JoinHandle<()>);

impl TaskGuard {
    pub(crate) fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

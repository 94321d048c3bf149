//! The first build step: the lock a build installs, solved from its spec
//! or taken as submitted, checked against the build's channels and
//! recorded.

use envstore_core::{BuildPhase, CanonicalSpec, ContentHash};
use envstore_db::BuildRecord;
use envstore_link::ProgressSink;
use envstore_solve::Lock;
use envstore_store::{artifact, keys};

use crate::context::BuildContext;
use crate::error::BuildError;
use crate::log::BuildLog;
use crate::pause::{TestPause, pause_for_test};
use crate::phases::PhaseRecorder;
use crate::urls::check_lock_urls;

/// A lock the build installs, as recorded.
pub(crate) struct Locked {
    pub lock: Lock,
    pub hash: ContentHash,
    /// Whether the lock was known already (another build made it).
    pub reused: bool,
}

/// Solves the spec (or takes the lock it was submitted with), checks that
/// every package comes from the build's channels, and records the lock.
/// `on_lock` hears the lock's hash as soon as it is known, so a build
/// stopped later can remove what it left of its prefix.
pub(crate) async fn solve(
    ctx: &BuildContext,
    build: &BuildRecord,
    spec: &CanonicalSpec,
    log: &BuildLog,
    recorder: &PhaseRecorder,
    on_lock: impl FnOnce(ContentHash),
) -> Result<Locked, BuildError> {
    let lock = match spec.from_lock {
        Some(expected) => submitted_lock(ctx, expected, spec, log).await?,
        None => {
            recorder
                .enter(&ctx.db, &build.id, BuildPhase::Solving)
                .await?;
            pause_for_test(ctx.test_pause, TestPause::Solving, log).await;
            log.line(format!(
                "solving [{}] for {} from {}",
                spec.dependencies.join(", "),
                spec.platforms.join(", "),
                spec.channels.join(", ")
            ));
            // The target machines' virtual packages, as declared or defaulted
            // by policy: never those of this worker.
            for (platform, requirements) in &spec.system_requirements {
                let listed: Vec<String> = requirements
                    .iter()
                    .map(|(key, version)| format!("{key} {version}"))
                    .collect();
                log.line(format!(
                    "target system requirements for {platform}: {}",
                    listed.join(", ")
                ));
            }
            let solved = ctx.solver.solve(spec).await?;
            let wheels = match &spec.pip {
                Some(pip) => crate::pypi::resolve(ctx, spec, pip, &solved, log).await?,
                None => Default::default(),
            };
            if solved.cached_platforms > 0 {
                log.line(format!(
                    "answered {} of {} platforms from the solve cache (repodata unchanged)",
                    solved.cached_platforms,
                    solved.platforms.len()
                ));
            }
            Lock::new(solved)
                .with_pypi(wheels)
                .with_variables(spec.variables.clone())
                .for_namespace(&build.namespace)
        }
    };
    check_lock_urls(&ctx.allowlist, &lock, &spec.channels)?;
    let hash = lock.hash();
    on_lock(hash);
    let packages = lock.packages();
    let count: usize = packages.values().map(Vec::len).sum();
    let platforms: Vec<String> = lock.platforms().map(str::to_owned).collect();
    let reused = !ctx
        .db
        .insert_lock(
            &hash,
            &platforms,
            &serde_json::to_value(&packages).unwrap_or_default(),
            lock.variables(),
        )
        .await?;
    log.line(format!(
        "locked {count} packages for {}: lock {hash}{}",
        platforms.join(", "),
        if reused { " (already known)" } else { "" }
    ));
    recorder.end(Some(format!("{count} packages")));
    Ok(Locked { lock, hash, reused })
}

/// The lock a build installs as is, from the `pixi.lock` stored under its
/// hash (by the API when the lockfile was submitted, or by the build that
/// first made the lock). It must read back to the hash it was asked for.
async fn submitted_lock(
    ctx: &BuildContext,
    expected: ContentHash,
    spec: &CanonicalSpec,
    log: &BuildLog,
) -> Result<Lock, BuildError> {
    log.line(format!(
        "installing lock {expected} as it is: nothing to solve"
    ));
    let text = ctx
        .store
        .get(&keys::lock_artifact(&expected, artifact::PIXI_LOCK))
        .await?;
    let lock = Lock::parse_lockfile(&String::from_utf8_lossy(&text))?
        .with_variables(spec.variables.clone());
    if lock.hash() != expected {
        return Err(BuildError::LockMismatch {
            expected,
            found: lock.hash(),
        });
    }
    Ok(lock)
}

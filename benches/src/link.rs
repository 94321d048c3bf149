//! The link workload: an environment of about a hundred packages and thirty
//! thousand files, installed from a warm package cache into a fresh prefix,
//! next to `cp -al` of the finished prefix (the physical floor: one hard link
//! per file, no metadata to read or write).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use envstore_core::{ContentHash, NamedChannel};
use envstore_fixtures::{MirrorOptions, write_mirror_channel};
use envstore_link::{PrefixBuilder, TransferCounts, fetch_packages};
use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::{RepoDataRecord, Subdir};
use url::Url;

use crate::Quiet;
use crate::cases::{SolveCase, fresh_solver, spec_for};

/// The case whose environment is linked: python 3.8 and seven packages on
/// linux-aarch64, 123 packages. Its mirror is retargeted to linux-64 so the
/// service can install it on this machine.
pub const LINK_CASE: &str = "aarch64-py38-eight";

/// The platform the mirror's records are written under.
pub const LINK_PLATFORM: Subdir = Subdir::Linux64;

/// Files per package, so the environment has about 30,000 files.
pub const FILES_PER_PACKAGE: usize = 244;

/// Files per package that contain the prefix placeholder and so are copied
/// and rewritten rather than hard-linked, as in real packages.
pub const PLACEHOLDER_FILES_PER_PACKAGE: usize = 2;

/// A mirror channel of the case's repodata with real archives, the solved
/// records pointing into it, and a package cache holding all of them.
pub struct LinkFixture {
    pub channel: NamedChannel,
    pub platform: Subdir,
    pub records: Vec<RepoDataRecord>,
    pub package_cache: PackageCache,
    pub package_cache_dir: PathBuf,
    /// Where prefixes are linked; emptied by [`LinkFixture::prefix_root`].
    pub work: PathBuf,
}

/// Writes (or reuses) the mirror channel under `data/`, solves the case on
/// it and fills the package cache.
pub async fn prepare(root: &Path, data: &Path, case: &SolveCase) -> anyhow::Result<LinkFixture> {
    let platform = LINK_PLATFORM;
    let real = fresh_solver(&data.join("solve-cache"))
        .solve(&case.canonical_spec(root)?)
        .await
        .context("solving the link case on the real repodata")?;
    let names: BTreeSet<String> = real.platforms[&case.platform]
        .iter()
        .map(|record| record.package_record.name.as_normalized().to_owned())
        .collect();

    let mirror = data.join(format!("mirror-{}-{FILES_PER_PACKAGE}", case.name));
    let finished = mirror.join(".envstore-bench-complete");
    if !finished.exists() {
        let inputs: Vec<PathBuf> = case
            .channels
            .iter()
            .map(|channel| root.join(channel))
            .collect();
        let options = MirrorOptions {
            files_per_package: FILES_PER_PACKAGE,
            file_size: 512,
            placeholder_files: PLACEHOLDER_FILES_PER_PACKAGE,
            payload_only_for: Some(names),
            retarget_subdir: Some(platform.to_string()),
            ..MirrorOptions::default()
        };
        let out = mirror.clone();
        let report =
            tokio::task::spawn_blocking(move || write_mirror_channel(&inputs, &out, &options))
                .await??;
        eprintln!(
            "wrote the mirror channel {} ({} archives) in {:.1?}",
            report.dir.display(),
            report.archives,
            report.elapsed
        );
        fs_err::write(&finished, b"")?;
    }
    let channel = NamedChannel {
        name: "mirror".to_owned(),
        url: Url::from_directory_path(&mirror)
            .map_err(|()| anyhow::anyhow!("the mirror path is not absolute"))?,
    };
    let spec = spec_for(&case.specs, platform.as_str(), vec![channel.clone()])?;
    let solved = fresh_solver(&data.join("solve-cache")).solve(&spec).await?;
    let records = solved.platforms[platform.as_str()].as_ref().clone();
    if records.len() != real.platforms[&case.platform].len() {
        bail!(
            "the mirror solve has {} packages, the real one {}",
            records.len(),
            real.platforms[&case.platform].len()
        );
    }
    let package_cache_dir = data.join("pkgs");
    let package_cache = PackageCache::new(&package_cache_dir);
    fetch_packages(
        &package_cache,
        &Default::default(),
        &records,
        Arc::new(Quiet),
        Arc::new(TransferCounts::default()),
    )
    .await?;
    Ok(LinkFixture {
        channel,
        platform,
        records,
        package_cache,
        package_cache_dir,
        work: data.join("link-work"),
    })
}

/// What the link and end-to-end criterion benches start from: the real
/// repodata's link case, its fixture prepared. None, after saying so, where
/// the repodata is absent.
pub async fn prepare_for_bench() -> anyhow::Result<Option<(SolveCase, LinkFixture)>> {
    let Some(root) = crate::repodata_root() else {
        eprintln!("skipped: ../shared/fixtures/repodata is absent (set ENVSTORE_REPODATA)");
        return Ok(None);
    };
    let case = crate::Cases::load()?.get(LINK_CASE)?.clone();
    let fixture = prepare(&root, &crate::bench_data_dir()?, &case).await?;
    Ok(Some((case, fixture)))
}

impl LinkFixture {
    /// An empty folder to link prefixes into.
    pub fn prefix_root(&self, name: &str) -> anyhow::Result<PathBuf> {
        let root = self.work.join(name);
        remove_tree(&root)?;
        fs_err::create_dir_all(&root)?;
        Ok(root)
    }

    /// Links the environment into a new prefix under `root` through the
    /// service's own prefix builder (validation, installer, marker) and
    /// returns how long that took and where.
    pub async fn link_once(
        &self,
        root: &Path,
        iteration: usize,
    ) -> anyhow::Result<(Duration, PathBuf)> {
        let builder = PrefixBuilder::new(root.to_owned(), self.package_cache.clone());
        let lock = ContentHash::of(format!("link-bench-{iteration}").as_bytes());
        let started = Instant::now();
        let report = builder
            .build(
                &lock,
                self.platform,
                &self.records,
                &Default::default(),
                Arc::new(Quiet),
                || {},
            )
            .await?;
        let elapsed = started.elapsed();
        if report.downloaded != 0 {
            bail!(
                "the package cache was not warm: {} packages downloaded",
                report.downloaded
            );
        }
        Ok((elapsed, report.path))
    }
}

/// The phases of one cold build, as [`LinkFixture::cold_build_once`] times them.
#[derive(Debug, Clone, Copy)]
pub struct ColdBuildTimes {
    /// From the start until linking began: every archive fetched, checked
    /// and extracted into the package cache.
    pub fetch: Duration,
    /// From then until the prefix was complete (linked, checked, marked).
    pub link: Duration,
    pub total: Duration,
}

impl LinkFixture {
    /// The mirror channel's folder.
    pub fn mirror_dir(&self) -> anyhow::Result<PathBuf> {
        self.channel
            .url
            .to_file_path()
            .map_err(|()| anyhow::anyhow!("the mirror channel is not a local folder"))
    }

    /// The records, their archives fetched from `server` (the mirror folder
    /// served over HTTP) instead of read from the folder.
    pub fn records_served_from(&self, server: &Url) -> anyhow::Result<Vec<RepoDataRecord>> {
        let base = self.channel.url.as_str();
        self.records
            .iter()
            .map(|record| {
                let relative = record
                    .url
                    .as_str()
                    .strip_prefix(base)
                    .with_context(|| format!("{} is not in the mirror", record.url))?;
                let mut served = record.clone();
                served.url = server.join(relative)?;
                Ok(served)
            })
            .collect()
    }

    /// A cold build of the environment through the service's own prefix
    /// builder: `records` fetched into an empty package cache under `work`
    /// (checked and extracted by the package gate), then linked into a new
    /// prefix there.
    pub async fn cold_build_once(
        &self,
        records: &[RepoDataRecord],
        work: &Path,
        iteration: usize,
    ) -> anyhow::Result<ColdBuildTimes> {
        let cache = PackageCache::new(work.join("pkgs"));
        let builder = PrefixBuilder::new(work.join("envs"), cache);
        let lock = ContentHash::of(format!("cold-build-bench-{iteration}").as_bytes());
        let linking = std::sync::OnceLock::new();
        let started = Instant::now();
        let report = builder
            .build(
                &lock,
                self.platform,
                records,
                &Default::default(),
                Arc::new(Quiet),
                || {
                    let _ = linking.set(Instant::now());
                },
            )
            .await?;
        let total = started.elapsed();
        if report.downloaded != records.len() {
            bail!(
                "a cold build downloaded {} of {} packages",
                report.downloaded,
                records.len()
            );
        }
        let fetch = linking
            .get()
            .map_or(total, |linking| linking.duration_since(started));
        Ok(ColdBuildTimes {
            fetch,
            link: total.saturating_sub(fetch),
            total,
        })
    }
}

/// `cp -al source target`: the floor of any installer that hard-links.
pub fn copy_hardlinks(source: &Path, target: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new("cp")
        .arg("-al")
        .arg(source)
        .arg(target)
        .status()?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("cp -al failed: {status}");
    }
    Ok(elapsed)
}

/// CPU time (user + system) used so far by this process and by its waited-for
/// children, from `/proc/self/stat`, at the kernel's tick resolution (10 ms).
/// On a shared machine it says more than wall time: another process taking a
/// core slows the wall clock, not the CPU time.
pub fn cpu_time() -> Option<(Duration, Duration)> {
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = fs_err::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let tick = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
    };
    // utime, stime, cutime and cstime are fields 14 to 17 of proc(5); here
    // 11 to 14, counted from the state field.
    let own = tick(11)? + tick(12)?;
    let children = tick(13)? + tick(14)?;
    Some((
        Duration::from_secs_f64(own / TICKS_PER_SECOND),
        Duration::from_secs_f64(children / TICKS_PER_SECOND),
    ))
}

/// Files (not folders) under `path`, symlinks included.
pub fn count_files(path: &Path) -> std::io::Result<usize> {
    let mut count = 0;
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs_err::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                count += 1;
            }
        }
    }
    Ok(count)
}

pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match fs_err::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

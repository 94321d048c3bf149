//! `envstore-bench`: runs one workload and prints one JSON line per result,
//! for `benches/compare.sh` to set beside its peers. Figures are medians of
//! `--repeat` runs, in milliseconds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use envstore_benches::build::BuildBench;
use envstore_benches::cases::{BareRattler, fresh_solver};
use envstore_benches::forge::{self, ForgeSolve, forge_dir, write_forge};
use envstore_benches::link::{self, LINK_CASE, copy_hardlinks, count_files, cpu_time, remove_tree};
use envstore_benches::pypi::{
    PYPI_REQUIREMENT, Pins, PypiIndex, UV_PYTHON_PLATFORM, UvCompile, default_wheels_dir,
    differences, python_target, resolve_envstore,
};
use envstore_benches::scale::{peak_memory_mib, write_synthetic_channels};
use envstore_benches::{Cases, bench_data_dir, repodata_root};
use envstore_solve::{Lock, SolvedEnvironment};
use serde_json::json;

#[derive(Parser)]
#[command(about = "envstore's benchmark workloads, one JSON line per result")]
struct Cli {
    /// Runs per figure; the median is printed.
    #[arg(long, default_value_t = 5, global = true)]
    repeat: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Solve the cases of benches/cases.json: cold (repodata read), warm
    /// (repodata in memory) and cached (the solve cache answers).
    Solve {
        /// Only these cases (default: all).
        #[arg(long)]
        case: Vec<String>,
    },
    /// Solve one case `iterations` times with one solver (the first solve
    /// reads the repodata), for instruction counts under callgrind: the
    /// difference between two iteration counts is the cost of warm solves.
    SolveOnce {
        #[arg(long)]
        case: String,
        /// `envstore` (the service's solver, solve cache off) or `rattler`.
        #[arg(long)]
        solver: String,
        #[arg(long, default_value_t = 1)]
        iterations: usize,
    },
    /// Link the ~30,000-file environment from a warm cache, and `cp -al` it.
    Link {
        /// Also write its pixi.lock and package cache location here, for
        /// py-rattler's install.
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// Submit → succeeded through a real server: a new lock, a built lock.
    Build,
    /// Builds per minute through a real server with each number of workers:
    /// a queue of `builds` distinct environments (the link environment plus
    /// one other package each) submitted at once, sharing every other
    /// package, all in the package cache.
    Throughput {
        #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 16)]
        builds: usize,
    },
    /// The cold build of the link environment (its archives served over
    /// loopback HTTP, an empty package cache) against its floor with
    /// ordinary tools (benches/floor.sh: curl, unzip/tar, `cp -al`) on the
    /// same server: the ratio, and where envstore's time goes.
    ColdBuild,
    /// Solve on a synthetic channel of `factor` × the 2018 osx-64 channels,
    /// and report the peak memory. The channel is written by a child process
    /// first, so writing it does not count.
    Scale {
        #[arg(long)]
        factor: usize,
    },
    /// Write the synthetic channel of `scale` only.
    ScaleGenerate {
        #[arg(long)]
        factor: usize,
    },
    /// The first solve of a data-science spec on a channel of conda-forge's
    /// size (the 2018 base grown by `clusters` renamed copies of `versions`
    /// versions each) and on the base alone, served over loopback HTTP
    /// sharded and monolithic, cold and warm: time, bytes fetched and peak
    /// memory, each solve in a child process.
    Forge {
        #[arg(long, default_value_t = 16)]
        clusters: usize,
        #[arg(long, default_value_t = 3)]
        versions: usize,
    },
    /// Write the channels of `forge` only.
    ForgeGenerate {
        #[arg(long)]
        clusters: usize,
        #[arg(long)]
        versions: usize,
    },
    /// One solve of `forge`, in this process: prints its time and memory.
    ForgeSolve {
        #[arg(long)]
        channel: url::Url,
        #[arg(long)]
        cache: PathBuf,
    },
    /// Resolve `ipykernel` from its real wheels served on loopback, for
    /// CPython 3.11 linux-64 (manylinux_2_28): envstore-pypi in-process and
    /// `uv pip compile` (the CLI), each cold (empty uv cache) and warm (cache
    /// kept). Fails when the two resolutions differ. Needs no repodata.
    Pypi {
        /// The wheels `pip download` wrote [default: target/test-wheels/ipykernel].
        #[arg(long)]
        wheels: Option<PathBuf>,
        /// The `uv` executable of the peer.
        #[arg(long)]
        uv: PathBuf,
        /// The interpreter `uv pip compile` is given (`--python`): the CLI
        /// always looks for one, even with `--python-version`.
        #[arg(long)]
        uv_python: PathBuf,
    },
}

/// The case solved on the synthetic channels.
const SCALE_CASE: &str = "osx2018-py36";

/// The median of figures that are not durations (bytes, MiB).
fn median_of(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map_or(f64::NAN, |middle| middle.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let repeat = cli.repeat.max(1);
    if let Command::Pypi {
        wheels,
        uv,
        uv_python,
    } = &cli.command
    {
        let wheels = wheels.clone().unwrap_or_else(default_wheels_dir);
        return pypi(repeat, &wheels, uv, uv_python).await;
    }
    let Some(root) = repodata_root() else {
        eprintln!("skipped: ../shared/fixtures/repodata is absent (set ENVSTORE_REPODATA)");
        return Ok(());
    };
    let cases = Cases::load()?;
    let data = bench_data_dir()?;
    match cli.command {
        Command::Solve { case } => {
            for solve_case in cases
                .cases
                .iter()
                .filter(|c| case.is_empty() || case.contains(&c.name))
            {
                let spec = solve_case.canonical_spec(&root)?;
                // envstore and bare rattler take turns going first: whichever
                // runs first after the other's solve pays for cold CPU caches.
                let (mut cold, mut bare_cold) = (Vec::new(), Vec::new());
                let mut packages = 0;
                for iteration in 0..repeat {
                    for ours in [iteration % 2 == 0, iteration % 2 == 1] {
                        let cache = tempfile::tempdir_in(&data)?;
                        if ours {
                            let solver = fresh_solver(cache.path());
                            let started = Instant::now();
                            let solved = solver.solve(&spec).await?;
                            cold.push(started.elapsed());
                            packages = solved.platforms[&solve_case.platform].len();
                        } else {
                            let bare = BareRattler::new(cache.path());
                            let started = Instant::now();
                            bare.solve(solve_case, &root).await?;
                            bare_cold.push(started.elapsed());
                        }
                    }
                }
                let cache = tempfile::tempdir_in(&data)?;
                let uncached = fresh_solver(cache.path()).with_solve_cache_capacity(0);
                uncached.solve(&spec).await?;
                let bare = BareRattler::new(cache.path());
                bare.solve(solve_case, &root).await?;
                let (mut warm, mut bare_warm) = (Vec::new(), Vec::new());
                for iteration in 0..repeat {
                    for ours in [iteration % 2 == 0, iteration % 2 == 1] {
                        let started = Instant::now();
                        if ours {
                            uncached.solve(&spec).await?;
                            warm.push(started.elapsed());
                        } else {
                            bare.solve(solve_case, &root).await?;
                            bare_warm.push(started.elapsed());
                        }
                    }
                }
                let cached_solver = fresh_solver(cache.path());
                cached_solver.solve(&spec).await?;
                let mut cached = Vec::new();
                for _ in 0..repeat.max(100) {
                    let started = Instant::now();
                    let solved = cached_solver.solve(&spec).await?;
                    cached.push(started.elapsed());
                    anyhow::ensure!(
                        solved.cached_platforms == 1,
                        "the solve cache did not answer"
                    );
                }
                println!(
                    "{}",
                    json!({
                        "tool": "envstore", "bench": "solve", "case": solve_case.name,
                        "cold_ms": median(cold), "warm_ms": median(warm), "cached_ms": median(cached),
                        "rattler_cold_ms": median(bare_cold), "rattler_warm_ms": median(bare_warm),
                        "packages": packages, "reference_packages": solve_case.reference_packages,
                    })
                );
            }
        }
        Command::SolveOnce {
            case,
            solver,
            iterations,
        } => {
            let case = cases.get(&case)?;
            let cache = tempfile::tempdir_in(&data)?;
            match solver.as_str() {
                "envstore" => {
                    let solver = fresh_solver(cache.path()).with_solve_cache_capacity(0);
                    let spec = case.canonical_spec(&root)?;
                    for _ in 0..iterations {
                        solver.solve(&spec).await?;
                    }
                }
                "rattler" => {
                    let bare = BareRattler::new(cache.path());
                    for _ in 0..iterations {
                        bare.solve(case, &root).await?;
                    }
                }
                other => anyhow::bail!("unknown solver '{other}': envstore or rattler"),
            }
        }
        Command::Link { export } => {
            let fixture = link::prepare(&root, &data, cases.get(LINK_CASE)?).await?;
            let prefixes = fixture.prefix_root("envstore")?;
            let mut linked = Vec::new();
            let mut linked_cpu = Vec::new();
            let mut last: Option<PathBuf> = None;
            for iteration in 0..repeat {
                if let Some(previous) = last.take() {
                    remove_tree(&previous)?;
                }
                let before = cpu_time().context("no CPU times in /proc")?.0;
                let (elapsed, path) = fixture.link_once(&prefixes, iteration).await?;
                linked_cpu.push(
                    cpu_time()
                        .context("no CPU times in /proc")?
                        .0
                        .saturating_sub(before),
                );
                linked.push(elapsed);
                last = Some(path);
            }
            let finished = last.context("no prefix was linked")?;
            let copies = fixture.prefix_root("cp-al")?;
            let mut copied = Vec::new();
            let mut copied_cpu = Vec::new();
            for iteration in 0..repeat {
                let target = copies.join(iteration.to_string());
                let before = cpu_time().context("no CPU times in /proc")?.1;
                copied.push(copy_hardlinks(&finished, &target)?);
                copied_cpu.push(
                    cpu_time()
                        .context("no CPU times in /proc")?
                        .1
                        .saturating_sub(before),
                );
                remove_tree(&target)?;
            }
            if let Some(export) = export {
                fs_err::create_dir_all(&export)?;
                let mut platforms = BTreeMap::new();
                platforms.insert(
                    fixture.platform.to_string(),
                    std::sync::Arc::new(fixture.records.clone()),
                );
                let lock = Lock::new(SolvedEnvironment {
                    channels: vec![fixture.channel.url.clone()],
                    platforms,
                    cached_platforms: 0,
                });
                fs_err::write(export.join("pixi.lock"), lock.render_pixi_lock()?)?;
                fs_err::write(
                    export.join("link.json"),
                    json!({
                        "lock": export.join("pixi.lock"),
                        "package_cache": fixture.package_cache_dir,
                        "platform": fixture.platform.to_string(),
                        "prefix_root": fixture.work,
                        "reference_prefix": finished,
                    })
                    .to_string(),
                )?;
            }
            println!(
                "{}",
                json!({
                    "tool": "envstore", "bench": "link", "packages": fixture.records.len(),
                    "files": count_files(&finished)?, "link_ms": median(linked), "cp_al_ms": median(copied),
                    "link_cpu_ms": median(linked_cpu), "cp_al_cpu_ms": median(copied_cpu),
                })
            );
        }
        Command::Build => {
            let case = cases.get(LINK_CASE)?;
            let fixture = link::prepare(&root, &data, case).await?;
            let mut bench = BuildBench::start(&fixture, case, repeat, 2).await?;
            let mut new_lock = Vec::new();
            for _ in 0..repeat {
                new_lock.push(bench.new_lock().await?);
            }
            let mut built_lock = Vec::new();
            for _ in 0..repeat {
                built_lock.push(bench.built_lock().await?);
            }
            bench.stop().await?;
            println!(
                "{}",
                json!({
                    "tool": "envstore", "bench": "build", "packages": fixture.records.len() + 1,
                    "new_lock_ms": median(new_lock), "built_lock_ms": median(built_lock),
                })
            );
        }
        Command::Throughput { workers, builds } => {
            let case = cases.get(LINK_CASE)?;
            let fixture = link::prepare(&root, &data, case).await?;
            let mut rates = serde_json::Map::new();
            for &count in &workers {
                let mut samples = Vec::new();
                for _ in 0..repeat {
                    let mut bench = BuildBench::start(&fixture, case, builds, count).await?;
                    let (done, took) = bench.drain_variants().await?;
                    bench.stop().await?;
                    samples.push(done as f64 / took.as_secs_f64() * 60.0);
                }
                rates.insert(format!("workers_{count}"), json!(median_of(samples)));
            }
            println!(
                "{}",
                json!({
                    "tool": "envstore", "bench": "throughput", "builds": builds,
                    "packages": fixture.records.len() + 1, "builds_per_minute": rates,
                })
            );
        }
        Command::ColdBuild => {
            let fixture = link::prepare(&root, &data, cases.get(LINK_CASE)?).await?;
            let server = envstore_fixtures::serve_channel(fixture.mirror_dir()?).await?;
            let records = fixture.records_served_from(&server.url)?;
            let urls = data.join("cold-build-urls.txt");
            let list: String = records
                .iter()
                .map(|record| format!("{}\n", record.url))
                .collect();
            fs_err::write(&urls, list)?;
            let floor_script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("floor.sh");
            let (mut ours, mut fetch, mut linking) = (Vec::new(), Vec::new(), Vec::new());
            let mut floors: Vec<serde_json::Value> = Vec::new();
            for iteration in 0..repeat {
                // Each goes first every other time: the page cache holds
                // the archives for whoever comes second.
                for envstore_turn in [iteration % 2 == 0, iteration % 2 == 1] {
                    let work = tempfile::tempdir_in(&data)?;
                    // What the turn before wrote is on disk before this
                    // one starts (floor.sh does the same between its
                    // phases): its writeback would land in this turn.
                    let synced = tokio::process::Command::new("sync").status().await?;
                    anyhow::ensure!(synced.success(), "sync failed: {synced}");
                    if envstore_turn {
                        let times = fixture
                            .cold_build_once(&records, work.path(), iteration)
                            .await?;
                        ours.push(times.total);
                        fetch.push(times.fetch);
                        linking.push(times.link);
                    } else {
                        let output = tokio::process::Command::new("bash")
                            .arg(&floor_script)
                            .arg(&urls)
                            .arg(work.path().join("floor"))
                            .output()
                            .await?;
                        anyhow::ensure!(
                            output.status.success(),
                            "benches/floor.sh failed: {}",
                            String::from_utf8_lossy(&output.stderr)
                        );
                        floors.push(serde_json::from_slice(&output.stdout)?);
                    }
                }
            }
            let floor_median = |key: &str| {
                median_of(
                    floors
                        .iter()
                        .filter_map(|floor| floor[key].as_f64())
                        .collect(),
                )
            };
            let ours_runs: Vec<f64> = ours.iter().map(|run| run.as_secs_f64() * 1000.0).collect();
            let floor_runs: Vec<f64> = floors
                .iter()
                .filter_map(|floor| floor["floor_ms"].as_f64())
                .collect();
            let total = median(ours);
            println!(
                "{}",
                json!({
                    "tool": "envstore", "bench": "cold_build", "packages": records.len(),
                    "total_ms": total, "fetch_ms": median(fetch), "link_ms": median(linking),
                    "floor_ms": floor_median("floor_ms"), "floor_pipelined_ms": floor_median("pipelined_ms"),
                    "floor_fetch_ms": floor_median("fetch_ms"), "floor_extract_ms": floor_median("extract_ms"),
                    "floor_link_ms": floor_median("link_ms"),
                    "floor_files": floors.first().and_then(|floor| floor["files"].as_u64()),
                    "runs_ms": ours_runs, "floor_runs_ms": floor_runs,
                })
            );
        }
        Command::ScaleGenerate { factor } => {
            let case = cases.get(SCALE_CASE)?;
            let records = write_synthetic_channels(
                &root,
                &case.channels,
                factor,
                &data.join(format!("synthetic-x{factor}")),
            )?;
            eprintln!("synthetic channels ×{factor}: {records} records");
        }
        // Answered above, before the repodata is looked for.
        Command::Pypi { .. } => {}
        Command::ForgeGenerate { clusters, versions } => {
            for (clusters, versions) in [(0, 1), (clusters, versions)] {
                let summary = write_forge(&root, &data, clusters, versions)?;
                eprintln!(
                    "forge channel ×{clusters}×{versions}: {} records, {} names",
                    summary.total_records(),
                    summary.total_names()
                );
            }
        }
        Command::ForgeSolve { channel, cache } => {
            let solved = forge::solve_once(&channel, &cache).await?;
            println!("{}", serde_json::to_string(&solved)?);
        }
        Command::Forge { clusters, versions } => {
            forge_bench(repeat, &data, clusters, versions).await?;
        }
        Command::Scale { factor } => {
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(["scale-generate", "--factor", &factor.to_string()])
                .status()?;
            anyhow::ensure!(
                status.success(),
                "writing the synthetic channels failed: {status}"
            );
            let case = cases.get(SCALE_CASE)?;
            let out = data.join(format!("synthetic-x{factor}"));
            let records = write_synthetic_channels(&root, &case.channels, factor, &out)?;
            let spec = case.canonical_spec(&out)?;
            let before = peak_memory_mib();
            let cache = tempfile::tempdir_in(&data)?;
            let solver = fresh_solver(cache.path()).with_solve_cache_capacity(0);
            let started = Instant::now();
            let solved = solver.solve(&spec).await?;
            let cold = started.elapsed();
            let started = Instant::now();
            solver.solve(&spec).await?;
            let warm = started.elapsed();
            println!(
                "{}",
                json!({
                    "tool": "envstore", "bench": "scale", "factor": factor, "records": records,
                    "cold_ms": cold.as_secs_f64() * 1000.0, "warm_ms": warm.as_secs_f64() * 1000.0,
                    "packages": solved.platforms[&case.platform].len(),
                    "peak_mib_before_solve": before, "peak_mib": peak_memory_mib(),
                })
            );
        }
    }
    Ok(())
}

/// One solve of `forge` in a child process.
async fn forge_child(channel: &url::Url, cache: &std::path::Path) -> anyhow::Result<ForgeSolve> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["forge-solve", "--channel", channel.as_str(), "--cache"])
        .arg(cache)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "the solve on {channel} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The `forge` command: the base alone and the grown channel, each served
/// sharded and monolithic; per pair, `repeat` cold solves (a new cache)
/// each followed by a warm one (the cache it left, a new process). The four
/// pairs take turns within each round, in an order reversed every other
/// round, and every solve starts after a `sync`: run pair by pair, the
/// writeback of the monolithic caches (tens of MB) landed in the next
/// pair's cold solve and decided its time.
async fn forge_bench(
    repeat: usize,
    data: &std::path::Path,
    clusters: usize,
    versions: usize,
) -> anyhow::Result<()> {
    let status = tokio::process::Command::new(std::env::current_exe()?)
        .args(["forge-generate", "--clusters", &clusters.to_string()])
        .args(["--versions", &versions.to_string()])
        .status()
        .await?;
    anyhow::ensure!(
        status.success(),
        "writing the forge channels failed: {status}"
    );
    let root = envstore_benches::repodata_root().context("the repodata root")?;
    /// One channel served one way, and what its solves measured.
    struct Pair {
        clusters: usize,
        versions: usize,
        summary: envstore_fixtures::ForgeSummary,
        mode: &'static str,
        server: std::sync::Arc<envstore_fixtures::ForgeServer>,
        cold: Vec<(ForgeSolve, envstore_fixtures::Sent)>,
        warm: Vec<(ForgeSolve, envstore_fixtures::Sent)>,
    }
    let mut pairs = Vec::new();
    for (clusters, versions) in [(0, 1), (clusters, versions)] {
        let summary = write_forge(&root, data, clusters, versions)?;
        let dir = forge_dir(data, clusters, versions);
        let server = std::sync::Arc::new(envstore_fixtures::ForgeServer::start(&dir).await?);
        for mode in ["sharded", "monolithic"] {
            pairs.push(Pair {
                clusters,
                versions,
                summary: summary.clone(),
                mode,
                server: server.clone(),
                cold: Vec::new(),
                warm: Vec::new(),
            });
        }
    }
    let synced = || async {
        let synced = tokio::process::Command::new("sync").status().await?;
        anyhow::ensure!(synced.success(), "sync failed: {synced}");
        anyhow::Ok(())
    };
    for round in 0..repeat {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let pair = &mut pairs[index];
            let url = match pair.mode {
                "sharded" => pair.server.sharded.clone(),
                _ => pair.server.monolithic.clone(),
            };
            let cache = tempfile::tempdir_in(data)?;
            synced().await?;
            pair.server.take_sent();
            let first = forge_child(&url, cache.path()).await?;
            let first_sent = pair.server.take_sent();
            synced().await?;
            let again = forge_child(&url, cache.path()).await?;
            let again_sent = pair.server.take_sent();
            pair.cold.push((first, first_sent));
            pair.warm.push((again, again_sent));
        }
    }
    let figures = |runs: &[(ForgeSolve, envstore_fixtures::Sent)]| {
        json!({
            "ms": median_of(runs.iter().map(|(solve, _)| solve.ms).collect()),
            "runs_ms": runs.iter().map(|(solve, _)| solve.ms.round()).collect::<Vec<_>>(),
            "peak_mib": median_of(runs.iter().map(|(solve, _)| solve.peak_mib).collect()),
            "peak_mib_before": median_of(runs.iter().map(|(solve, _)| solve.peak_mib_before).collect()),
            "bytes": median_of(runs.iter().map(|(_, sent)| sent.bytes as f64).collect()),
            "requests": median_of(runs.iter().map(|(_, sent)| sent.requests as f64).collect()),
        })
    };
    for pair in &pairs {
        println!(
            "{}",
            json!({
                "tool": "envstore", "bench": "forge", "mode": pair.mode,
                "clusters": pair.clusters, "versions": pair.versions,
                "records": pair.summary.total_records(), "names": pair.summary.total_names(),
                "packages": pair.cold.first().map_or(0, |(solve, _)| solve.packages),
                "cold": figures(&pair.cold), "warm": figures(&pair.warm),
            })
        );
    }
    Ok(())
}

/// Checks that a run pinned what the first run of either tool pinned.
fn same_as_first(
    first: &mut Option<(&'static str, Pins)>,
    tool: &'static str,
    pins: Pins,
) -> anyhow::Result<()> {
    match first {
        None => *first = Some((tool, pins)),
        Some((first_tool, expected)) => {
            if let Some(difference) = differences(expected, &pins) {
                anyhow::bail!(
                    "the resolutions of {PYPI_REQUIREMENT} differ ({first_tool}'s first run against this run of {tool}):\n{difference}"
                );
            }
        }
    }
    Ok(())
}

/// The `pypi` command: envstore and uv take turns going first, cold then
/// warm, on one index served by this process.
async fn pypi(
    repeat: usize,
    wheels: &std::path::Path,
    uv: &std::path::Path,
    uv_python: &std::path::Path,
) -> anyhow::Result<()> {
    let data = bench_data_dir()?;
    let index = PypiIndex::serve(wheels, &data).await?;
    let target = python_target()?;
    let work = tempfile::tempdir_in(&data)?;
    let compile = UvCompile::new(uv, uv_python, work.path(), &index)?;
    let uv_version = compile.version()?;
    let mut first = None;
    let (mut cold, mut uv_cold) = (Vec::new(), Vec::new());
    for iteration in 0..repeat {
        for ours in [iteration % 2 == 0, iteration % 2 == 1] {
            let cache = tempfile::tempdir_in(work.path())?;
            if ours {
                let (elapsed, pins) = resolve_envstore(&index, &target, cache.path()).await?;
                cold.push(elapsed);
                same_as_first(&mut first, "envstore", pins)?;
            } else {
                let (elapsed, pins) = tokio::task::block_in_place(|| compile.run(cache.path()))?;
                uv_cold.push(elapsed);
                same_as_first(&mut first, "uv", pins)?;
            }
        }
    }
    let (ours_cache, uv_cache) = (
        work.path().join("envstore-warm"),
        work.path().join("uv-warm"),
    );
    resolve_envstore(&index, &target, &ours_cache).await?;
    tokio::task::block_in_place(|| compile.run(&uv_cache))?;
    let (mut warm, mut uv_warm) = (Vec::new(), Vec::new());
    for iteration in 0..repeat {
        for ours in [iteration % 2 == 0, iteration % 2 == 1] {
            if ours {
                let (elapsed, pins) = resolve_envstore(&index, &target, &ours_cache).await?;
                warm.push(elapsed);
                same_as_first(&mut first, "envstore", pins)?;
            } else {
                let (elapsed, pins) = tokio::task::block_in_place(|| compile.run(&uv_cache))?;
                uv_warm.push(elapsed);
                same_as_first(&mut first, "uv", pins)?;
            }
        }
    }
    let packages = first.map_or(0, |(_, pins)| pins.len());
    println!(
        "{}",
        json!({
            "tool": "envstore", "bench": "pypi", "case": PYPI_REQUIREMENT,
            "python": "3.11", "platform": UV_PYTHON_PLATFORM,
            "packages": packages, "index_wheels": index.wheels,
            "cold_ms": median(cold), "warm_ms": median(warm),
            "uv_cold_ms": median(uv_cold), "uv_warm_ms": median(uv_warm),
            "uv_version": uv_version,
        })
    );
    index.shutdown().await
}

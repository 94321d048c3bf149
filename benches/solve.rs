//! Solve benchmarks on the real repodata: every case of `benches/cases.json`
//! cold (a new solver: repodata read and parsed), warm (repodata in memory,
//! solve cache off) and cached (the solve cache answers).

use criterion::{Criterion, criterion_group, criterion_main};
use envstore_benches::cases::fresh_solver;
use envstore_benches::{Cases, bench_data_dir, repodata_root};

fn solve(c: &mut Criterion) {
    let Some(root) = repodata_root() else {
        eprintln!("skipped: ../shared/fixtures/repodata is absent (set ENVSTORE_REPODATA)");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let cases = Cases::load().expect("benches/cases.json");
    let data = bench_data_dir().expect("the bench data folder");
    let mut group = c.benchmark_group("solve");
    group.sample_size(10);
    for case in &cases.cases {
        let spec = case.canonical_spec(&root).expect("the case's spec");
        group.bench_function(format!("{}/cold", case.name), |b| {
            b.to_async(&runtime).iter_batched(
                || {
                    let cache = tempfile::tempdir_in(&data).expect("a cache folder");
                    let solver = fresh_solver(cache.path());
                    (cache, solver)
                },
                |(_cache, solver)| {
                    let spec = &spec;
                    async move { solver.solve(spec).await.expect("the case solves") }
                },
                criterion::BatchSize::PerIteration,
            );
        });
        let cache = tempfile::tempdir_in(&data).expect("a cache folder");
        let warm = fresh_solver(cache.path()).with_solve_cache_capacity(0);
        runtime
            .block_on(warm.solve(&spec))
            .expect("the case solves");
        group.bench_function(format!("{}/warm", case.name), |b| {
            b.to_async(&runtime).iter(|| warm.solve(&spec));
        });
        let cached = fresh_solver(cache.path());
        runtime
            .block_on(cached.solve(&spec))
            .expect("the case solves");
        group.bench_function(format!("{}/cached", case.name), |b| {
            b.to_async(&runtime).iter(|| cached.solve(&spec));
        });
    }
    group.finish();
}

criterion_group!(benches, solve);
criterion_main!(benches);

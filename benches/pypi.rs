//! PyPI resolution benchmarks: `ipykernel` from its real wheels (in
//! `target/test-wheels/ipykernel`, see `benches/compare.sh`) served on
//! loopback, resolved by envstore-pypi for CPython 3.11 linux-64, cold
//! (empty uv cache) and warm (cache kept). The peer, `uv pip compile`, is
//! in `envstore-bench pypi`.

use criterion::{Criterion, criterion_group, criterion_main};
use envstore_benches::bench_data_dir;
use envstore_benches::pypi::{PypiIndex, default_wheels_dir, python_target, resolve_envstore};

fn pypi(c: &mut Criterion) {
    let wheels = default_wheels_dir();
    if !wheels.is_dir() {
        eprintln!(
            "skipped: no wheels at {} (benches/compare.sh pypi downloads them)",
            wheels.display()
        );
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let data = bench_data_dir().expect("the bench data folder");
    let index = runtime
        .block_on(PypiIndex::serve(&wheels, &data))
        .expect("the index is served");
    let target = python_target().expect("the python target");
    let mut group = c.benchmark_group("pypi");
    group.sample_size(10);
    group.bench_function("ipykernel/cold", |b| {
        b.to_async(&runtime).iter_batched(
            || tempfile::tempdir_in(&data).expect("a cache folder"),
            |cache| {
                let (index, target) = (&index, &target);
                async move {
                    let resolved = resolve_envstore(index, target, cache.path())
                        .await
                        .expect("ipykernel resolves");
                    // Returned, so the cache is removed outside the timing.
                    (cache, resolved)
                }
            },
            criterion::BatchSize::PerIteration,
        );
    });
    let cache = tempfile::tempdir_in(&data).expect("a cache folder");
    runtime
        .block_on(resolve_envstore(&index, &target, cache.path()))
        .expect("ipykernel resolves");
    group.bench_function("ipykernel/warm", |b| {
        b.to_async(&runtime)
            .iter(|| resolve_envstore(&index, &target, cache.path()));
    });
    group.finish();
    runtime.block_on(index.shutdown()).expect("the index stops");
}

criterion_group!(benches, pypi);
criterion_main!(benches);

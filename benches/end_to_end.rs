//! End-to-end benchmark: submit → succeeded through a real server for a new
//! lock of the 124-package environment (every package already cached) and for
//! a lock that is already built.

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use envstore_benches::build::BuildBench;
use envstore_benches::link;

/// New locks the bench can submit: flat sampling asks for one per sample
/// plus a few for warm-up.
const VARIANTS: usize = 40;

fn end_to_end(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let Some((case, fixture)) = runtime
        .block_on(link::prepare_for_bench())
        .expect("the link fixture")
    else {
        return;
    };
    let bench = runtime
        .block_on(BuildBench::start(&fixture, &case, VARIANTS, 2))
        .expect("the server starts");
    let bench = tokio::sync::Mutex::new(bench);
    let mut group = c.benchmark_group("submit-to-succeeded");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(std::time::Duration::from_millis(1));
    for (name, new_lock) in [("new-lock", true), ("built-lock", false)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter_custom(|iterations| {
                let bench = &bench;
                async move {
                    let mut bench = bench.lock().await;
                    let mut total = std::time::Duration::ZERO;
                    for _ in 0..iterations {
                        let took = if new_lock {
                            bench.new_lock().await
                        } else {
                            bench.built_lock().await
                        };
                        total += took.expect("the build succeeds");
                    }
                    total
                }
            });
        });
    }
    group.finish();
    runtime
        .block_on(bench.into_inner().stop())
        .expect("the server stops");
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);

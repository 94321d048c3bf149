//! Link benchmark: the ~30,000-file environment (123 packages) installed from
//! a warm package cache into a fresh prefix by the service's prefix builder,
//! against `cp -al` of the finished prefix, the physical floor.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use envstore_benches::link::{self, copy_hardlinks, remove_tree};

fn link(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let Some((_, fixture)) = runtime
        .block_on(link::prepare_for_bench())
        .expect("the link fixture")
    else {
        return;
    };
    let prefixes = fixture
        .prefix_root("criterion-link")
        .expect("a prefix folder");
    let mut group = c.benchmark_group("link");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let iteration = Cell::new(0);
    let finished = RefCell::new(None);
    group.bench_function("envstore", |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let (fixture, prefixes, iteration, finished) =
                (&fixture, &prefixes, &iteration, &finished);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let (elapsed, path) = fixture
                        .link_once(prefixes, iteration.get())
                        .await
                        .expect("the link");
                    iteration.set(iteration.get() + 1);
                    total += elapsed;
                    if let Some(previous) = finished.borrow_mut().replace(path) {
                        remove_tree(&previous).expect("the old prefix is removed");
                    }
                }
                total
            }
        });
    });
    let finished = finished.into_inner().expect("a linked prefix");
    let copies = fixture
        .prefix_root("criterion-cp-al")
        .expect("a copy folder");
    group.bench_function("cp-al", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for copy in 0..iterations {
                let target = copies.join(copy.to_string());
                total += copy_hardlinks(&finished, &target).expect("cp -al");
                remove_tree(&target).expect("the copy is removed");
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, link);
criterion_main!(benches);

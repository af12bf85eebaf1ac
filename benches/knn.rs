//! Criterion: exact top-20 k-NN search (the runtime's chunked GEMM + heaps)
//! over a 50,000 x 512 L2-normalised gallery, 64 and 256 queries per call.
//!
//! `cargo bench --bench knn` (under a minute).
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use pretext_runtime::knn::{exact_topk, l2_normalize_rows};
use rand::{Rng, SeedableRng};

fn random_rows(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut a = Array2::from_shape_fn((n, d), |_| rng.random::<f32>() - 0.5);
    l2_normalize_rows(&mut a);
    a
}

fn bench(c: &mut Criterion) {
    let gallery = random_rows(50_000, 512, 0);
    let mut g = c.benchmark_group("knn-exact-50000x512-top20");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for nq in [64usize, 256] {
        let q = random_rows(nq, 512, 1);
        g.throughput(Throughput::Elements(nq as u64));
        g.bench_with_input(BenchmarkId::from_parameter(nq), &q, |b, q| b.iter(|| exact_topk(gallery.view(), q.view(), 20)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Exact k-NN search speed, 50,000 x 512 gallery (the figure compared with faiss
//! `IndexFlatIP` by `knn_vs_faiss.py`, which runs this example):
//!
//! ```text
//! cargo run -p pretext-runtime --example knn_bench -- <dir> [queries] [k]
//! ```
//! Writes `<dir>/gallery.npy`, `<dir>/queries.npy` (seeded random, rows normalized) and
//! `<dir>/topk.npy` (indices as f32), and prints the search time.
use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array2;
use pretext_runtime::knn::{exact_topk, l2_normalize_rows};
use pretext_runtime::cpu::process_cpu_seconds as cpu_seconds;
use pretext_runtime::npy;
use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.first().map(String::as_str).unwrap_or("/tmp/knn_bench"));
    let nq: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let k: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut g = Array2::from_shape_fn((50_000, 512), |_| rng.random::<f32>() - 0.5);
    let mut q = Array2::from_shape_fn((nq, 512), |_| rng.random::<f32>() - 0.5);
    l2_normalize_rows(&mut g);
    l2_normalize_rows(&mut q);
    npy::write_f32(&dir.join("gallery.npy"), &[50_000, 512], g.as_slice().unwrap()).unwrap();
    npy::write_f32(&dir.join("queries.npy"), &[nq, 512], q.as_slice().unwrap()).unwrap();
    exact_topk(g.view(), q.slice(ndarray::s![..64, ..]), k); // warm up
    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    let mut out = vec![];
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_seconds());
        out = exact_topk(g.view(), q.view(), k);
        best = best.min(t.elapsed().as_secs_f64());
        best_cpu = best_cpu.min(cpu_seconds() - c);
    }
    let idx: Vec<f32> = out.iter().flat_map(|r| r.iter().map(|n| n.index as f32)).collect();
    npy::write_f32(&dir.join("topk.npy"), &[nq, k], &idx).unwrap();
    println!(
        "pretext exact_topk: {nq} queries x 50000 x 512, k={k}: {best:.3}s wall, {best_cpu:.2}s CPU (best of 3, {} rayon threads)",
        rayon::current_num_threads()
    );
}

//! tract's multithreaded matmul executor under the extractor's rayon use: batched
//! extraction and extraction from inside rayon jobs must finish (a watchdog fails
//! the test instead of hanging) and give the single-threaded features.
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ndarray::Array2;
use pretext_runtime::{BackendKind, Extractor, TractOptions};
use rayon::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Runs `f` on its own thread; panics if it does not finish within `secs`.
fn with_watchdog<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result after {secs} s (deadlock?)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the worker thread panicked"),
    }
}

fn extractor(threads: usize) -> Extractor {
    Extractor::builder(fixture("tiny_cnn.onnx"))
        .backend(BackendKind::TractWith(TractOptions { threads: Some(threads), ..Default::default() }))
        .build()
        .unwrap()
}

/// 13 deterministic CHW images of the fixture's 32 x 32 input.
fn image(i: usize) -> Vec<f32> {
    (0..3 * 32 * 32).map(|j| (((i * 7919 + j * 104729) % 1000) as f32 / 500.0) - 1.0).collect()
}

fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn multithreaded_tract_extracts_many_batches_without_deadlock() {
    // Thread every matrix product, however small, so the tiny fixture exercises the pool.
    tract_linalg::multithread::set_threading_panel_threshold(0);
    let serial = extractor(1).extract_many(13, 2, |i| Ok(image(i)), &|_| {}).unwrap();
    let (parallel, done) = with_watchdog(120, "extract_many with 3 tract threads", || {
        let e = extractor(3);
        assert_eq!(e.backend().name(), "tract");
        let done = std::sync::atomic::AtomicUsize::new(0);
        // Batch sizes 2 and 1 (the last): two plans built while batches are in flight.
        let f = e.extract_many(13, 2, |i| Ok(image(i)), &|k| {
            done.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
        });
        (f.unwrap(), done.into_inner())
    });
    assert_eq!(done, 13);
    assert!(max_diff(&serial, &parallel) < 1e-5, "{}", max_diff(&serial, &parallel));
}

#[test]
fn multithreaded_tract_runs_inside_rayon_jobs() {
    // Callers may run the extractor from their own rayon jobs (one batch per job):
    // each job then waits on tract's pool from a rayon worker, and the first uses of
    // every batch size race to build plans.
    tract_linalg::multithread::set_threading_panel_threshold(0);
    let serial = extractor(1);
    let want: Vec<Array2<f32>> =
        (1..=6).map(|b| serial.features_from_chw(&(0..b).map(image).collect::<Vec<_>>()).unwrap()).collect();
    let got = with_watchdog(120, "features_from_chw from 24 rayon jobs", || {
        let e = extractor(2);
        (0..24)
            .into_par_iter()
            .map(|j| e.features_from_chw(&(0..1 + j % 6).map(image).collect::<Vec<_>>()).unwrap())
            .collect::<Vec<_>>()
    });
    for (j, g) in got.iter().enumerate() {
        assert!(max_diff(g, &want[j % 6]) < 1e-5, "job {j}");
    }
}

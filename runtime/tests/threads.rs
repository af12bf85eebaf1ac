//! tract's multithreaded matmul executor under the extractor's rayon use: batched
//! extraction and extraction from inside rayon jobs must finish (a watchdog fails
//! the test instead of hanging) and give the single-threaded features; and batches
//! split over threads (automatic with more than one) give the whole batch's outputs.
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ndarray::{Array2, ArrayD, Axis};
use pretext_runtime::compare::tol;
use pretext_runtime::{Backend, BackendKind, Extractor, TractOptions};
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
    pretext_runtime::compare::max_abs_diff(a, b) as f32
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
    assert!(max_diff(&serial, &parallel) < tol::F32_OP, "{}", max_diff(&serial, &parallel));
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
        assert!(max_diff(g, &want[j % 6]) < tol::F32_OP, "job {j}");
    }
}

/// tract on `threads` threads: with more than one, batches are split (when the outputs
/// have the batch as first axis); with one, every batch runs whole.
fn tract(model: &str, threads: usize) -> Box<dyn Backend> {
    pretext_runtime::open_tract_with(&fixture(model), &TractOptions { threads: Some(threads), ..Default::default() }).unwrap()
}

fn batch(n: usize, hw: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(vec![n, 3, hw, hw], |ix| (((ix[0] * 7919 + ix[1] * 104729 + ix[2] * 31 + ix[3]) % 1000) as f32 / 500.0) - 1.0)
}

fn max_diff_d(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    pretext_runtime::compare::max_abs_diff(a, b) as f32
}

#[test]
fn split_batches_give_the_whole_batch_features() {
    // The batch's images spread over 3 threads (7 images: uneven shares), against
    // one single-threaded run of the whole batch, for every batch size up to 7.
    let serial = tract("tiny_cnn.onnx", 1);
    let split = tract("tiny_cnn.onnx", 3);
    for n in 1..=7 {
        let x = batch(n, 32);
        let (want, got) = (serial.run(x.clone()).unwrap(), split.run(x).unwrap());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].shape(), [n, 12]);
        assert!(max_diff_d(&got[0], &want[0]) < tol::F32_OP, "batch {n}: {}", max_diff_d(&got[0], &want[0]));
    }
    // Rows are in input order: image 4 alone gives row 4.
    let x = batch(7, 32);
    let all = split.run(x.clone()).unwrap().remove(0);
    let row = serial.run(x.slice_axis(Axis(0), ndarray::Slice::from(4..5)).to_owned()).unwrap().remove(0);
    assert!(max_diff_d(&all.slice_axis(Axis(0), ndarray::Slice::from(4..5)).to_owned(), &row) < tol::F32_OP);
}

#[test]
fn split_batches_inside_rayon_jobs_finish() {
    // From rayon workers the backend runs the whole batch single-threaded (see the
    // module doc of tract_backend): no nested pool, no deadlock.
    let want = tract("tiny_cnn.onnx", 1).run(batch(5, 32)).unwrap().remove(0);
    let got = with_watchdog(120, "split-mode runs from 8 rayon jobs", || {
        let b = tract("tiny_cnn.onnx", 2);
        (0..8).into_par_iter().map(|_| b.run(batch(5, 32)).unwrap().remove(0)).collect::<Vec<_>>()
    });
    for g in &got {
        assert!(max_diff_d(g, &want) < tol::F32_OP);
    }
}

#[test]
fn graphs_without_a_batch_axis_are_not_split() {
    // batch_mean.onnx averages over the batch (output [3]): splitting it would stack
    // per-image means. It must run whole and give the batch mean.
    let x = batch(6, 8);
    let b = tract("batch_mean.onnx", 2);
    let got = b.run(x.clone()).unwrap().remove(0);
    assert_eq!(got.shape(), [3]);
    let want = x.mean_axis(Axis(3)).unwrap().mean_axis(Axis(2)).unwrap().mean_axis(Axis(0)).unwrap();
    assert!(max_diff_d(&got, &want) < tol::F32_OP, "{got} vs {want}");
}

//! Backend numerics against PyTorch fixtures (see fixtures/gen.py) and bad-model errors.
use std::path::{Path, PathBuf};

use ndarray::{s, ArrayD, Axis};
use pretext_runtime::compare::tol;
use pretext_runtime::{npy, open_tract, open_tract_with, Backend, RuntimeError, TractOptions};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    pretext_runtime::compare::max_abs_diff(a, b) as f32
}

fn check_against_torch(b: &dyn Backend) {
    let x = npy::read_f32(&fixture("tiny_input.npy")).unwrap();
    let want = npy::read_f32(&fixture("tiny_expected.npy")).unwrap();
    let got = b.run(x.clone()).unwrap();
    assert_eq!(got.len(), 1);
    let d = max_abs_diff(&got[0], &want);
    assert!(d < tol::F32, "{}: max |diff| vs PyTorch = {d}", b.name());
    // Dynamic batch: 1 and 3 rows give the same rows.
    for n in [1usize, 3] {
        let part = b.run(x.slice(s![..n, .., .., ..]).to_owned().into_dyn()).unwrap();
        let d = max_abs_diff(&part[0], &want.slice(s![..n, ..]).to_owned().into_dyn());
        assert!(d < tol::F32, "{} batch {n}: {d}", b.name());
    }
}

#[test]
fn tract_matches_pytorch_for_any_batch() {
    let b = open_tract(&fixture("tiny_cnn.onnx")).unwrap();
    assert_eq!(b.output_names(), ["features"]);
    assert_eq!(b.input_shape(), [None, Some(3), Some(32), Some(32)]);
    check_against_torch(b.as_ref());
}

#[test]
fn one_plan_is_shared_across_threads() {
    let b = open_tract(&fixture("tiny_cnn.onnx")).unwrap();
    let x = npy::read_f32(&fixture("tiny_input.npy")).unwrap();
    let want = b.run(x.clone()).unwrap().remove(0);
    std::thread::scope(|sc| {
        for i in 0..4 {
            let (b, x, want) = (&b, &x, &want);
            sc.spawn(move || {
                let row = x.index_axis(Axis(0), i).insert_axis(Axis(0)).to_owned();
                let got = b.run(row).unwrap().remove(0);
                assert!(max_abs_diff(&got, &want.slice(s![i..i + 1, ..]).to_owned().into_dyn()) < 1e-6);
            });
        }
    });
}

#[test]
fn truncated_onnx_is_a_load_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("tiny_cnn.onnx")).unwrap();
    let p = dir.path().join("truncated.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = open_tract(&p).err().expect("truncated model must not load");
    assert!(matches!(e, RuntimeError::Load { .. }), "{e:?}");
    assert!(e.to_string().contains("truncated.onnx"), "{e}");
    let missing = open_tract(&dir.path().join("absent.onnx")).err().unwrap();
    assert!(matches!(missing, RuntimeError::Io { .. }) && missing.to_string().contains("absent.onnx"), "{missing}");
}

#[test]
fn wrong_input_rank_is_rejected() {
    let e = open_tract(&fixture("rank3.onnx")).err().expect("rank-3 input must be rejected");
    match &e {
        RuntimeError::InputRank { rank, input, .. } => assert_eq!((*rank, input.as_str()), (3, "images")),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(e.to_string().contains("rank 3"), "{e}");
}

#[test]
fn wrong_batch_shape_is_an_error_not_a_panic() {
    let b = open_tract(&fixture("tiny_cnn.onnx")).unwrap();
    let e = b.run(ArrayD::zeros(vec![2, 3, 16, 16])).unwrap_err();
    assert!(matches!(e, RuntimeError::InputShape { .. }), "{e:?}");
    assert!(e.to_string().contains("[2, 3, 16, 16]"), "{e}");
}

#[cfg(feature = "ort")]
mod ort {
    use super::*;
    use pretext_runtime::{open_ort, ExecutionProvider, GraphOptLevel, OrtOptions};

    #[test]
    fn ort_cpu_matches_pytorch_and_tract() {
        for level in [GraphOptLevel::Disable, GraphOptLevel::All] {
            let o = open_ort(&fixture("tiny_cnn.onnx"), &OrtOptions { opt_level: level, intra_threads: Some(1), ..Default::default() }).unwrap();
            assert_eq!(o.name(), "ort[cpu]");
            check_against_torch(o.as_ref());
        }
        let o = open_ort(&fixture("tiny_cnn.onnx"), &OrtOptions::default()).unwrap();
        let t = open_tract(&fixture("tiny_cnn.onnx")).unwrap();
        let x = npy::read_f32(&fixture("tiny_input.npy")).unwrap();
        let d = max_abs_diff(&o.run(x.clone()).unwrap()[0], &t.run(x).unwrap()[0]);
        assert!(d < tol::F32, "tract vs ort: {d}");
    }

    #[test]
    fn ort_rejects_bad_models_like_tract() {
        let e = open_ort(&fixture("rank3.onnx"), &OrtOptions::default()).err().unwrap();
        assert!(matches!(e, RuntimeError::InputRank { .. }), "{e:?}");
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixture("tiny_cnn.onnx")).unwrap();
        let p = dir.path().join("cut.onnx");
        std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
        let e = open_ort(&p, &OrtOptions::default()).err().unwrap();
        assert!(e.to_string().contains("cut.onnx"), "{e}");
    }

    /// The CPU-only ONNX Runtime wheel has no CUDA/TensorRT provider: asking for
    /// one must fail, not fall back to CPU. Skipped when the library does have them.
    #[test]
    fn unavailable_provider_is_an_error_not_a_cpu_fallback() {
        if pretext_runtime::ort_backend::provider_compiled_in(&ExecutionProvider::Cuda).unwrap() {
            eprintln!("CUDA provider present; the no-fallback path is exercised by the GPU check instead");
            return;
        }
        for p in [ExecutionProvider::Cuda, ExecutionProvider::TensorRt] {
            let e = open_ort(&fixture("tiny_cnn.onnx"), &OrtOptions { provider: p, trt_fp16: true, ..Default::default() }).err().expect("must not fall back to CPU");
            assert!(matches!(e, RuntimeError::Provider { .. }), "{e:?}");
        }
    }
}

#[test]
fn channel_last_plans_match_pytorch_on_strided_depthwise_convolutions() {
    // Depthwise 3x3 and 5x5 at stride 2 on odd widths (19 x 23 input) and at stride 1,
    // in the channel-last plan: whole batches (1 thread) and split ones (2), against PyTorch.
    let x = npy::read_f32(&fixture("depthwise_input.npy")).unwrap();
    let want = npy::read_f32(&fixture("depthwise_expected.npy")).unwrap();
    for threads in [1, 2] {
        let b = open_tract_with(&fixture("depthwise.onnx"), &TractOptions { threads: Some(threads), ..Default::default() }).unwrap();
        for n in [1usize, 3] {
            let got = b.run(x.slice(s![..n, .., .., ..]).to_owned().into_dyn()).unwrap().remove(0);
            let d = max_abs_diff(&got, &want.slice(s![..n, ..]).to_owned().into_dyn());
            assert!(d < tol::F32_OP, "{threads} threads, batch {n}: max |diff| vs PyTorch = {d}");
        }
    }
}

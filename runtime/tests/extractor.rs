//! Self-configuration from metadata, foreign models, batched extraction, bad images.
use std::path::{Path, PathBuf};

use pretext_runtime::{npy, open_tract, Extractor, RuntimeError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn metadata_configures_the_extractor() {
    let e = Extractor::open(fixture("tiny_cnn.onnx")).unwrap();
    let info = e.info();
    assert_eq!((info.transform.crop, info.transform.resize, info.embed_dim), (32, 32, Some(12)));
    assert_eq!(info.transform.mean, [0.4914, 0.4822, 0.4465]);
    assert_eq!(info.output, "features");
    assert_eq!(info.sha256, pretext_runtime::file_sha256(&fixture("tiny_cnn.onnx")).unwrap());
    assert_eq!(info.sha256.len(), 64);
}

#[test]
fn foreign_model_needs_explicit_options_and_then_agrees() {
    let e = Extractor::open(fixture("tiny_cnn_foreign.onnx")).err().expect("no metadata, no options");
    assert!(matches!(e, RuntimeError::MissingMetadata { key: "pretext.input_size", .. }), "{e:?}");
    assert!(e.to_string().contains("--input-size"), "{e}");
    let e = Extractor::builder(fixture("tiny_cnn_foreign.onnx")).input_size(32).build().err().unwrap();
    assert!(e.to_string().contains("pretext.resize"), "{e}");
    let foreign = Extractor::builder(fixture("tiny_cnn_foreign.onnx"))
        .input_size(32)
        .resize(32)
        .mean([0.4914, 0.4822, 0.4465])
        .std([0.247, 0.243, 0.261])
        .build()
        .unwrap();
    let native = Extractor::open(fixture("tiny_cnn.onnx")).unwrap();
    let img = pretext_data::preprocess::decode_file(&fixture("raccoon-151.jpg")).unwrap();
    let small = image::imageops::resize(&img, 32, 32, image::imageops::FilterType::Triangle);
    let a = foreign.features(&[(&small, "a")]).unwrap();
    let b = native.features(&[(&small, "a")]).unwrap();
    assert_eq!(a, b);
    // A wrong output name is an error listing the real ones.
    let e = Extractor::builder(fixture("tiny_cnn.onnx")).output("logits").build().err().unwrap();
    assert!(e.to_string().contains("logits") && e.to_string().contains("features"), "{e}");
}

#[test]
fn features_equal_backend_on_the_preprocessed_batch() {
    // The extractor's features are the backend's output on exactly the transform's tensor.
    let e = Extractor::builder(fixture("tiny_cnn.onnx")).resize(40).build().unwrap();
    let files: Vec<PathBuf> = ["raccoon-150.jpg", "raccoon-151.jpg", "raccoon-39.jpg"].iter().map(|f| fixture(f)).collect();
    for bs in [1, 2, 8] {
        let f = e.extract_files(&files, bs, &|_| {}).unwrap();
        assert_eq!(f.dim(), (3, 12));
        let b = open_tract(&fixture("tiny_cnn.onnx")).unwrap();
        for (i, p) in files.iter().enumerate() {
            let x = e.transform().apply_file(p).unwrap();
            let x = ndarray::ArrayD::from_shape_vec(vec![1, 3, 32, 32], x).unwrap();
            let want = b.run(x).unwrap().remove(0);
            let d = pretext_runtime::compare::max_abs_diff(f.row(i), want.iter());
            assert!(d < pretext_runtime::compare::tol::F32_OP as f64, "batch size {bs}, image {i}: {d}");
        }
    }
}

#[test]
fn undecodable_image_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cat.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 definitely not a jpeg").unwrap();
    let e = Extractor::open(fixture("tiny_cnn.onnx")).unwrap();
    let err = e.extract_files(&[fixture("raccoon-39.jpg"), bad.clone()], 4, &|_| {}).unwrap_err();
    assert!(matches!(err, RuntimeError::Preprocess(_)), "{err:?}");
    assert!(err.to_string().contains("cat.jpg"), "{err}");
    // A truncated real JPEG as well.
    let bytes = std::fs::read(fixture("raccoon-39.jpg")).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..200]).unwrap();
    let err = e.features_file(&cut).unwrap_err();
    assert!(err.to_string().contains("cut.jpg"), "{err}");
}

#[test]
fn npy_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.npy");
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
    npy::write_f32(&p, &[2, 3, 4], &data).unwrap();
    let a = npy::read_f32(&p).unwrap();
    assert_eq!(a.shape(), [2, 3, 4]);
    assert_eq!(a.iter().copied().collect::<Vec<_>>(), data);
}

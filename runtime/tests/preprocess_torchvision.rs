//! The eval transform (pretext_data::preprocess) against torchvision on real photos:
//! `Resize(40, bilinear, antialias=True) + CenterCrop(32) + ToTensor()` computed by
//! fixtures/gen.py on PIL-decoded raccoon images.
//!
//! Tolerances (pixel values in 0..1):
//! - From PIL's own decode (lossless PNG copy): every value within 1/255 (one 8-bit
//!   level) and at least 99% exactly equal; measured: all exactly equal.
//! - From the JPEG through our decoder (`image` crate, not libjpeg-turbo): decoders
//!   may differ by a level on some pixels; every value within 1/255 and mean |diff|
//!   below 1e-4 (measured 0.8e-5 to 2.4e-5).
use std::path::{Path, PathBuf};

use pretext_data::preprocess::{decode_file, EvalTransform};
use pretext_runtime::npy;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

const T: EvalTransform = EvalTransform { resize: 40, crop: 32, mean: [0.0; 3], std: [1.0; 3] };

#[test]
fn resampler_matches_torchvision_on_pil_decoded_pixels() {
    for name in ["raccoon-150", "raccoon-151", "raccoon-39"] {
        let want = npy::read_f32(&fixture(&format!("{name}.resize40crop32.npy"))).unwrap();
        let img = decode_file(&fixture(&format!("{name}.rgb.png"))).unwrap();
        let got = T.apply(&img, name).unwrap();
        assert_eq!(got.len(), want.len());
        let diffs: Vec<f32> = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).collect();
        let max = pretext_runtime::compare::max_abs_diff(got.iter(), want.iter());
        let exact = diffs.iter().filter(|d| **d < 1e-6).count() as f64 / diffs.len() as f64;
        eprintln!("{name}: max |diff| {max:.6}, exactly equal {:.4}", exact);
        assert!(max <= 1.0 / 255.0 + 1e-6, "{name}: max diff {max}");
        assert!(exact >= 0.99, "{name}: only {exact} exactly equal");
    }
}

#[test]
fn jpeg_path_is_close_to_torchvision() {
    for name in ["raccoon-150", "raccoon-151", "raccoon-39"] {
        let want = npy::read_f32(&fixture(&format!("{name}.resize40crop32.npy"))).unwrap();
        let got = T.apply_file(&fixture(&format!("{name}.jpg"))).unwrap();
        let mean = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).sum::<f32>() / got.len() as f32;
        let max = pretext_runtime::compare::max_abs_diff(got.iter(), want.iter());
        eprintln!("{name}.jpg: mean |diff| {mean:.6}, max {max:.6}");
        assert!(max <= 1.0 / 255.0 + 1e-6 && mean < pretext_runtime::compare::tol::F32, "{name}: max {max}, mean {mean}");
    }
}

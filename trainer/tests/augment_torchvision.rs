//! The augmentation ops of `pretext_data::augment` against torchvision's
//! functional ops on float images (fixture from scripts/gen_method_fixtures.py).

use std::collections::HashMap;

use pretext_data::augment::{self, FImage};
use pretext_runtime::compare::tol;

fn fixture() -> HashMap<String, (Vec<usize>, Vec<u8>, safetensors::Dtype)> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/augment_ops.safetensors");
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec(), v.dtype()))).collect()
}

/// A CHW f32 tensor from the fixture as an HWC image.
fn chw(fx: &HashMap<String, (Vec<usize>, Vec<u8>, safetensors::Dtype)>, k: &str) -> FImage {
    let (shape, data, _) = &fx[k];
    let v: Vec<f32> = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let (h, w) = (shape[1], shape[2]);
    let mut out = vec![0f32; h * w * 3];
    for c in 0..3 {
        for i in 0..h * w {
            out[i * 3 + c] = v[c * h * w + i];
        }
    }
    FImage { h, w, data: out }
}

fn assert_close(name: &str, got: &FImage, want: &FImage, tol: f32) {
    assert_eq!((got.h, got.w), (want.h, want.w), "{name}: size");
    // +inf on a NaN on either side, which `fold(0, f32::max)` would drop.
    let max = pretext_runtime::compare::max_abs_diff(&got.data, &want.data);
    assert!(max <= tol as f64, "{name}: max |diff| {max} > {tol}");
}

#[test]
fn ops_match_torchvision() {
    let fx = fixture();
    let (shape, img, _) = &fx["image_hwc_u8"];
    let (h, w) = (shape[0], shape[1]);
    let x = FImage { h, w, data: img.iter().map(|&v| v as f32 / 255.0).collect() };
    // Resized crops: antialiased when shrinking, plain bilinear when enlarging.
    let down = augment::crop_resize_rect(img, h, w, 3, 5, 12, 15, 8, 8);
    assert_close("crop_down", &down, &chw(&fx, "crop_down"), tol::F32_OP);
    let up = augment::crop_resize_rect(img, h, w, 3, 5, 12, 15, 24, 24);
    assert_close("crop_up", &up, &chw(&fx, "crop_up"), tol::F32_OP);
    let mut y = x.clone();
    augment::adjust_brightness(&mut y, 1.3);
    assert_close("brightness", &y, &chw(&fx, "brightness"), 1e-6);
    let mut y = x.clone();
    augment::adjust_contrast(&mut y, 0.6);
    assert_close("contrast", &y, &chw(&fx, "contrast"), tol::F32_OP);
    let mut y = x.clone();
    augment::adjust_saturation(&mut y, 1.7);
    assert_close("saturation", &y, &chw(&fx, "saturation"), tol::F32_OP);
    for (k, f) in [("hue", 0.23), ("hue_neg", -0.4)] {
        let mut y = x.clone();
        augment::adjust_hue(&mut y, f);
        assert_close(k, &y, &chw(&fx, k), tol::F32_OP);
    }
    let mut y = x.clone();
    augment::grayscale(&mut y);
    assert_close("gray", &y, &chw(&fx, "gray"), 1e-6);
    assert_close("blur", &augment::gaussian_blur(&x, 5, 1.3), &chw(&fx, "blur"), tol::F32_OP);
    let mut y = x.clone();
    augment::solarize(&mut y, 0.5);
    assert_close("solarize", &y, &chw(&fx, "solarize"), 0.0);
}

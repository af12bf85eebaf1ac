//! Evaluation-time preprocessing: decode, resize shorter side, center crop, normalize.
//!
//! This is the one implementation of the eval transform: the trainer's k-NN/linear
//! evaluation and the runtime both call [`EvalTransform::apply`], so their inputs are
//! equal by construction. It reproduces torchvision's
//! `Resize(s, bilinear, antialias=True) + CenterCrop(c) + ToTensor() + Normalize(mean, std)`
//! on PIL images: the resampler is PIL's separable, antialiased triangle filter
//! (support scaled by the downscale factor), horizontal pass first, with the 8-bit
//! rounding and 22-bit fixed-point coefficients PIL uses. Measured against torchvision
//! on three real photos (`runtime/tests/preprocess_torchvision.rs`): bit-identical
//! from PIL-decoded pixels; from the JPEG files, where our decoder (`image`) and
//! libjpeg-turbo differ, every value within one 8-bit level (1/255).
//!
//! When the image already has the crop size (CIFAR 32x32 at 32), resize and crop are
//! the identity and only the normalization remains.
use std::path::Path;

use image::RgbImage;

/// Errors of decoding and preprocessing; each names the file (or source) involved.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot read image {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot decode image {path} (JPEG/PNG expected): {reason}")]
    Decode { path: String, reason: String },
    #[error("image {path} is {width}x{height}; after resizing the shorter side to {resize} it is smaller than the {crop}x{crop} crop")]
    TooSmall { path: String, width: u32, height: u32, resize: u32, crop: u32 },
    #[error("invalid eval transform: {0}")]
    Config(String),
}

/// Decodes a JPEG/PNG file to 8-bit RGB (grayscale and alpha are converted like PIL's `convert("RGB")`).
pub fn decode_file(path: &Path) -> Result<RgbImage, PreprocessError> {
    let bytes = std::fs::read(path).map_err(|source| PreprocessError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode_bytes(&bytes, &path.display().to_string())
}

/// Decodes an in-memory JPEG/PNG; `name` is only used in error messages.
/// A truncated or corrupt file is an error (see [`crate::decode`]).
pub fn decode_bytes(bytes: &[u8], name: &str) -> Result<RgbImage, PreprocessError> {
    let img = crate::decode::decode(bytes).map_err(|reason| PreprocessError::Decode { path: name.to_string(), reason })?;
    Ok(img.to_rgb8())
}

/// The deterministic evaluation transform.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    /// The shorter side is resized to this (torchvision `Resize(int)`).
    pub resize: u32,
    /// Square center crop size; the model's input size.
    pub crop: u32,
    /// Per-channel mean for pixel values in 0..1 (RGB order).
    pub mean: [f32; 3],
    /// Per-channel std for pixel values in 0..1 (RGB order).
    pub std: [f32; 3],
}

impl EvalTransform {
    /// Checks sizes and that every std is positive and finite.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.crop == 0 || self.resize == 0 {
            return Err(PreprocessError::Config(format!(
                "resize ({}) and crop ({}) must be positive",
                self.resize, self.crop
            )));
        }
        if self.resize < self.crop {
            return Err(PreprocessError::Config(format!(
                "resize ({}) is smaller than the crop ({})",
                self.resize, self.crop
            )));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(PreprocessError::Config(format!("bad mean {:?} / std {:?}", self.mean, self.std)));
        }
        Ok(())
    }

    /// Number of f32 values produced per image (`3 * crop * crop`).
    pub fn output_len(&self) -> usize {
        3 * (self.crop as usize) * (self.crop as usize)
    }

    /// Resize, crop and normalize an RGB image into a CHW f32 vector.
    ///
    /// # Shapes
    /// `img`: H x W x 3 u8 -> returns `[3, crop, crop]` flattened (CHW).
    pub fn apply(&self, img: &RgbImage, name: &str) -> Result<Vec<f32>, PreprocessError> {
        self.validate()?;
        let resized = resize_shorter(img, self.resize);
        let (w, h) = resized.dimensions();
        if w < self.crop || h < self.crop {
            return Err(PreprocessError::TooSmall {
                path: name.to_string(),
                width: img.width(),
                height: img.height(),
                resize: self.resize,
                crop: self.crop,
            });
        }
        let cropped = center_crop(&resized, self.crop);
        Ok(normalize_chw(&cropped, self.mean, self.std))
    }

    /// Decode a file and apply the transform.
    pub fn apply_file(&self, path: &Path) -> Result<Vec<f32>, PreprocessError> {
        let img = decode_file(path)?;
        self.apply(&img, &path.display().to_string())
    }

    /// Decode in-memory bytes and apply the transform; `name` appears in errors.
    pub fn apply_bytes(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>, PreprocessError> {
        let img = decode_bytes(bytes, name)?;
        self.apply(&img, name)
    }
}

/// Output size of torchvision `Resize(size)` for an image of `w x h`: the shorter
/// side becomes `size`, the longer `floor(size * long / short)`.
pub fn shorter_side_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    if w <= h {
        let nh = ((size as u64 * h as u64) / w.max(1) as u64) as u32;
        (size, nh)
    } else {
        let nw = ((size as u64 * w as u64) / h.max(1) as u64) as u32;
        (nw, size)
    }
}

/// Resizes so that the shorter side is `size` with PIL's antialiased bilinear filter.
/// Identity (a copy) when the size does not change.
pub fn resize_shorter(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = shorter_side_size(w, h, size);
    resize_bilinear_aa(img, nw, nh)
}

/// PIL-compatible antialiased bilinear resize (`Image.resize(..., BILINEAR)`).
pub fn resize_bilinear_aa(img: &RgbImage, nw: u32, nh: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut cur = img.clone();
    if nw != w {
        cur = resample_axis(&cur, nw, true);
    }
    if nh != h {
        cur = resample_axis(&cur, nh, false);
    }
    cur
}

/// Per output index: first input index and normalized weights (PIL's `precompute_coeffs`).
fn coeffs(in_size: u32, out_size: u32) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale; // bilinear (triangle) support is 1
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|x| {
            let center = (x as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5).floor() as i64).max(0) as usize;
            let xmax = ((center + support + 0.5).floor() as i64).min(in_size as i64) as usize;
            let mut ws: Vec<f64> = (xmin..xmax)
                .map(|j| {
                    let t = ((j as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = ws.iter().sum();
            if total != 0.0 {
                ws.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, ws)
        })
        .collect()
}

/// PIL's 8-bit path: fixed-point coefficients with 22 fractional bits, round half up, clip.
fn resample_axis(img: &RgbImage, out: u32, horizontal: bool) -> RgbImage {
    const PRECISION_BITS: u32 = 32 - 8 - 2;
    let (w, h) = img.dimensions();
    let in_size = if horizontal { w } else { h };
    let cs: Vec<(usize, Vec<i64>)> = coeffs(in_size, out)
        .into_iter()
        .map(|(x0, ws)| {
            let fixed = ws
                .iter()
                .map(|v| {
                    let s = v * (1i64 << PRECISION_BITS) as f64;
                    // PIL: (int)(v < 0 ? v - 0.5 : v + 0.5)
                    if s < 0.0 {
                        (s - 0.5).trunc() as i64
                    } else {
                        (s + 0.5).trunc() as i64
                    }
                })
                .collect();
            (x0, fixed)
        })
        .collect();
    let (ow, oh) = if horizontal { (out, h) } else { (w, out) };
    let src = img.as_raw();
    let mut dst = vec![0u8; (ow * oh * 3) as usize];
    let init = 1i64 << (PRECISION_BITS - 1);
    for y in 0..oh as usize {
        for x in 0..ow as usize {
            let (x0, ws) = if horizontal { &cs[x] } else { &cs[y] };
            for c in 0..3 {
                let mut acc = init;
                for (k, wk) in ws.iter().enumerate() {
                    let (sx, sy) = if horizontal { (x0 + k, y) } else { (x, x0 + k) };
                    acc += src[(sy * w as usize + sx) * 3 + c] as i64 * wk;
                }
                dst[(y * ow as usize + x) * 3 + c] = (acc >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
    RgbImage::from_raw(ow, oh, dst).expect("buffer sized from dimensions")
}

/// Python's `round` (half to even), as used by torchvision's `CenterCrop`.
fn round_half_even(v: f64) -> i64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - v.signum()) as i64
    } else {
        r as i64
    }
}

/// torchvision `CenterCrop(size)` offsets: `round((H - size) / 2)`, `round((W - size) / 2)`.
pub fn center_crop_offsets(w: u32, h: u32, size: u32) -> (u32, u32) {
    let top = round_half_even((h as f64 - size as f64) / 2.0).max(0) as u32;
    let left = round_half_even((w as f64 - size as f64) / 2.0).max(0) as u32;
    (left, top)
}

/// Square center crop; the image must be at least `size` on both sides.
pub fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return img.clone();
    }
    let (left, top) = center_crop_offsets(w, h, size);
    image::imageops::crop_imm(img, left, top, size, size).to_image()
}

/// `ToTensor` + `Normalize`: HWC u8 -> CHW f32, `(p / 255 - mean) / std`.
pub fn normalize_chw(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let n = (w * h) as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = (p.0[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// CIE L* (D65) of an sRGB pixel, in [0, 100]: sRGB gamma, the luminance row
/// of the sRGB->XYZ matrix, `116 f(Y) - 16` with skimage's `rgb2lab` constants.
pub fn srgb_lightness(p: [u8; 3]) -> f32 {
    let lin = |v: u8| {
        let c = v as f64 / 255.0;
        if c > 0.04045 {
            ((c + 0.055) / 1.055).powf(2.4)
        } else {
            c / 12.92
        }
    };
    let y = 0.212671 * lin(p[0]) + 0.715160 * lin(p[1]) + 0.072169 * lin(p[2]);
    let f = if y > 0.008856 { y.cbrt() } else { 7.787 * y + 16.0 / 116.0 };
    (116.0 * f - 16.0) as f32
}

/// One channel of `L* / 100` normalised with `mean`/`std` (the input of a
/// colorization backbone, metadata channel order `L`).
///
/// # Shapes
/// (H, W) RGB -> (1, H, W) values
pub fn lightness_chw(img: &RgbImage, mean: f32, std: f32) -> Vec<f32> {
    img.pixels().map(|p| (srgb_lightness(p.0) / 100.0 - mean) / std).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// White is L* 100, black 0, sRGB red 53.2408 and green 87.7347 (published D65 values).
    #[test]
    fn lightness_matches_published_values() {
        for (p, want) in [([255, 255, 255], 100.0), ([0, 0, 0], 0.0), ([255, 0, 0], 53.2408), ([0, 255, 0], 87.7347)] {
            assert!((srgb_lightness(p) - want).abs() < 0.01, "{p:?}: {} vs {want}", srgb_lightness(p));
        }
    }

    #[test]
    fn identity_when_already_input_size() {
        let img = RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 7, y as u8 * 5, (x ^ y) as u8]));
        let t = EvalTransform { resize: 32, crop: 32, mean: [0.0; 3], std: [1.0; 3] };
        let v = t.apply(&img, "mem").unwrap();
        for (i, p) in img.pixels().enumerate() {
            assert_eq!(v[i], p.0[0] as f32 / 255.0);
            assert_eq!(v[1024 + i], p.0[1] as f32 / 255.0);
            assert_eq!(v[2048 + i], p.0[2] as f32 / 255.0);
        }
    }

    #[test]
    fn resize_sizes_and_crop_offsets_follow_torchvision() {
        assert_eq!(shorter_side_size(640, 480, 256), (341, 256));
        assert_eq!(shorter_side_size(100, 300, 50), (50, 150));
        // round(1.5) = 2, round(0.5) = 0 in Python.
        assert_eq!(center_crop_offsets(35, 33, 32), (2, 0));
        assert_eq!(center_crop_offsets(37, 32, 32), (2, 0));
    }

    #[test]
    fn constant_image_stays_constant_after_resize() {
        let img = RgbImage::from_pixel(97, 61, image::Rgb([10, 200, 77]));
        let r = resize_shorter(&img, 24);
        assert_eq!(r.dimensions(), (38, 24));
        assert!(r.pixels().all(|p| p.0 == [10, 200, 77]));
    }

    #[test]
    fn undecodable_bytes_name_the_file() {
        let t = EvalTransform { resize: 32, crop: 32, mean: [0.0; 3], std: [1.0; 3] };
        let e = t.apply_bytes(b"not an image", "broken.jpg").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("broken.jpg"), "{msg}");
    }

    #[test]
    fn too_small_is_an_error() {
        let t = EvalTransform { resize: 16, crop: 32, mean: [0.0; 3], std: [1.0; 3] };
        assert!(t.validate().is_err());
    }
}

//! Training-time augmentation: the stochastic views of self-supervised methods.
//!
//! Transforms follow torchvision's semantics on float tensors (values in 0..1):
//! `RandomResizedCrop` (area/aspect sampling with 10 tries and the centre-crop
//! fallback, bilinear resize, antialiased when shrinking), horizontal flip,
//! `ColorJitter` (brightness, contrast, saturation, hue in a random order,
//! applied with a probability), `RandomGrayscale`, `GaussianBlur` (reflect
//! padding) and `RandomSolarize` (threshold 0.5). A [`ViewSpec`] chains them and
//! ends with `Normalize`; a [`Pipeline`] is the list of views one method needs
//! (two for SimCLR, asymmetric ones for BYOL, 2 global + N local for DINO).
//!
//! Randomness is per sample: the generator of image `index` in `epoch` is
//! seeded from `(seed, epoch, index)`, so a batch is identical whatever the
//! number of threads and whichever order rayon runs the samples in.
//!
//! # Shapes
//! Input images are u8 HWC (RGB); every view is f32 CHW, normalized.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// ImageNet statistics, the normalization lightly and torchvision use by default.
pub use pretext_models::{IMAGENET_MEAN, IMAGENET_STD};

/// Errors of augmentation configs and inputs.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    #[error("image {index}: buffer holds {len} bytes, expected {h}x{w}x3 = {expected}")]
    BadImage { index: usize, len: usize, h: usize, w: usize, expected: usize },
    #[error("invalid augmentation: {0}")]
    Config(String),
}

/// torchvision `ColorJitter` strengths (factor ranges `[max(0, 1-s), 1+s]`, hue `[-h, h]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

/// One view: crop, flip, color, blur, solarize, normalize.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewSpec {
    /// Output side in pixels.
    pub size: usize,
    /// `RandomResizedCrop` area fraction range.
    pub scale: (f32, f32),
    /// `RandomResizedCrop` aspect ratio range.
    pub ratio: (f32, f32),
    pub hflip_p: f32,
    pub jitter: Option<ColorJitter>,
    pub jitter_p: f32,
    pub gray_p: f32,
    /// Probability of a Gaussian blur with sigma uniform in `blur_sigma`.
    pub blur_p: f32,
    pub blur_sigma: (f32, f32),
    /// Kernel side of the blur (odd); torchvision-style `0.1 * size` rounded to odd.
    pub blur_kernel: usize,
    pub solarize_p: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl ViewSpec {
    /// Crop + flip only (MAE's view, and the base of the others).
    pub fn crop_flip(size: usize, scale: (f32, f32)) -> Self {
        let k = ((size as f32 * 0.1) as usize) | 1;
        Self {
            size,
            scale,
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip_p: 0.5,
            jitter: None,
            jitter_p: 0.0,
            gray_p: 0.0,
            blur_p: 0.0,
            blur_sigma: (0.1, 2.0),
            blur_kernel: k.max(3),
            solarize_p: 0.0,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    fn with_color(mut self, j: ColorJitter, jitter_p: f32, gray_p: f32, blur_p: f32, solarize_p: f32) -> Self {
        self.jitter = Some(j);
        self.jitter_p = jitter_p;
        self.gray_p = gray_p;
        self.blur_p = blur_p;
        self.solarize_p = solarize_p;
        self
    }

    pub fn validate(&self) -> Result<(), AugmentError> {
        let bad = |m: String| Err(AugmentError::Config(m));
        if self.size == 0 {
            return bad("view size must be positive".into());
        }
        if !(self.scale.0 > 0.0 && self.scale.0 <= self.scale.1 && self.scale.1 <= 1.0) {
            return bad(format!("scale {:?} must satisfy 0 < min <= max <= 1", self.scale));
        }
        if !(self.ratio.0 > 0.0 && self.ratio.0 <= self.ratio.1) {
            return bad(format!("ratio {:?} must satisfy 0 < min <= max", self.ratio));
        }
        if self.blur_kernel % 2 == 0 {
            return bad(format!("blur kernel {} must be odd", self.blur_kernel));
        }
        if self.std.iter().any(|s| !(*s > 0.0)) {
            return bad(format!("std {:?} must be positive", self.std));
        }
        Ok(())
    }

    /// Output length of one view (`3 * size * size`).
    pub fn len(&self) -> usize {
        3 * self.size * self.size
    }
}

/// The views one method draws from each image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub views: Vec<ViewSpec>,
}

/// Whether presets target 32-px CIFAR-like images (no blur, small crops) or 224-px ImageNet-like ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Cifar,
    Imagenet,
}

/// A blur probability, or 0 at CIFAR resolution.
fn blur(res: Resolution, p: f32) -> f32 {
    if res == Resolution::Cifar {
        0.0
    } else {
        p
    }
}

/// The papers' augmentations (lightly's transform defaults), or their CIFAR
/// variant: `size` px views, no Gaussian blur at 32 px. Each method chooses its
/// pipeline in its own file (`trainer/src/methods/<method>.rs`).
impl Pipeline {
    /// Chen et al. 2020 (SimCLR): s = 1 jitter (0.8, 0.8, 0.8, 0.2) w.p. 0.8, grayscale 0.2, blur 0.5.
    pub fn simclr(res: Resolution, size: usize) -> Self {
        let j = ColorJitter { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2 };
        let a = ViewSpec::crop_flip(size, (0.08, 1.0)).with_color(j, 0.8, 0.2, blur(res, 0.5), 0.0);
        Self { views: vec![a.clone(), a] }
    }

    /// Chen et al. 2020 (MoCo v2; SimSiam uses it too): crop from 0.2, jitter (0.4, 0.4, 0.4, 0.1) w.p. 0.8, gray 0.2, blur 0.5.
    pub fn moco_v2(res: Resolution, size: usize) -> Self {
        let j = ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1 };
        let a = ViewSpec::crop_flip(size, (0.2, 1.0)).with_color(j, 0.8, 0.2, blur(res, 0.5), 0.0);
        Self { views: vec![a.clone(), a] }
    }

    /// Grill et al. 2020 (BYOL), table 6: jitter (0.4, 0.4, 0.2, 0.1) w.p. 0.8; blur 1.0 / 0.1; solarize 0 / 0.2.
    pub fn byol(res: Resolution, size: usize) -> Self {
        let j = ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };
        let v = || ViewSpec::crop_flip(size, (0.08, 1.0));
        Self { views: vec![v().with_color(j, 0.8, 0.2, blur(res, 1.0), 0.0), v().with_color(j, 0.8, 0.2, blur(res, 0.1), 0.2)] }
    }

    /// Caron et al. 2021 (DINO multi-crop): 2 global crops (0.4, 1) with BYOL's
    /// asymmetric blur/solarize, `n_local` local crops (0.05, 0.4) at 96/224 of
    /// the size (half the size at CIFAR resolution) with blur 0.5.
    pub fn dino(res: Resolution, size: usize, n_local: usize) -> Self {
        let j = ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };
        let local = if res == Resolution::Cifar { size / 2 } else { (size * 96 / 224).max(8) };
        let g1 = ViewSpec::crop_flip(size, (0.4, 1.0)).with_color(j, 0.8, 0.2, blur(res, 1.0), 0.0);
        let g2 = ViewSpec::crop_flip(size, (0.4, 1.0)).with_color(j, 0.8, 0.2, blur(res, 0.1), 0.2);
        let mut l = ViewSpec::crop_flip(local, (0.05, 0.4)).with_color(j, 0.8, 0.2, blur(res, 0.5), 0.0);
        l.blur_kernel = ((local as f32 * 0.1) as usize | 1).max(3);
        let mut views = vec![g1, g2];
        views.extend(std::iter::repeat_n(l, n_local));
        Self { views }
    }

    /// He et al. 2021 (MAE): RandomResizedCrop(0.2, 1) + flip only.
    pub fn mae(_res: Resolution, size: usize) -> Self {
        Self { views: vec![ViewSpec::crop_flip(size, (0.2, 1.0))] }
    }

    /// Checks every view (sizes, ranges), as [`Pipeline::batch`] does.
    pub fn validate(&self) -> Result<(), AugmentError> {
        self.views.iter().try_for_each(ViewSpec::validate)
    }

    /// Augments one image into every view.
    pub fn apply(&self, img: &[u8], h: usize, w: usize, rng: &mut impl Rng) -> Vec<Vec<f32>> {
        self.views.iter().map(|v| augment_view(img, h, w, v, rng)).collect()
    }

    /// Augments a batch in parallel. `images[i]` is HWC u8 of `h x w`, and its
    /// generator is seeded from `(seed, epoch, indices[i])`. Returns one
    /// NCHW-flattened buffer per view.
    pub fn batch(&self, images: &[&[u8]], h: usize, w: usize, seed: u64, epoch: u64, indices: &[u64]) -> Result<Vec<Vec<f32>>, AugmentError> {
        for v in &self.views {
            v.validate()?;
        }
        for (i, im) in images.iter().enumerate() {
            if im.len() != h * w * 3 {
                return Err(AugmentError::BadImage { index: i, len: im.len(), h, w, expected: h * w * 3 });
            }
        }
        let per: Vec<Vec<Vec<f32>>> = images
            .par_iter()
            .zip(indices.par_iter())
            .map(|(im, &idx)| {
                let mut rng = sample_rng(seed, epoch, idx);
                self.apply(im, h, w, &mut rng)
            })
            .collect();
        Ok(self
            .views
            .iter()
            .enumerate()
            .map(|(vi, v)| {
                let mut out = Vec::with_capacity(v.len() * images.len());
                for p in &per {
                    out.extend_from_slice(&p[vi]);
                }
                out
            })
            .collect())
    }
}

/// The generator of sample `index` in `epoch`, independent of threads and order.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut z = seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch.wrapping_add(1)) ^ 0xD1B5_4A32_D192_ED03u64.wrapping_mul(index.wrapping_add(1));
    // splitmix64 finalizer
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// A float HWC image in 0..1.
#[derive(Debug, Clone, PartialEq)]
pub struct FImage {
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

/// One view of one image.
pub fn augment_view(img: &[u8], h: usize, w: usize, v: &ViewSpec, rng: &mut impl Rng) -> Vec<f32> {
    let (top, left, ch, cw) = resized_crop_params(h, w, v.scale, v.ratio, rng);
    let mut x = crop_resize(img, h, w, top, left, ch, cw, v.size);
    if rng.random::<f32>() < v.hflip_p {
        hflip(&mut x);
    }
    if let Some(j) = v.jitter {
        if rng.random::<f32>() < v.jitter_p {
            color_jitter(&mut x, &j, rng);
        }
    }
    if rng.random::<f32>() < v.gray_p {
        grayscale(&mut x);
    }
    if v.blur_p > 0.0 && rng.random::<f32>() < v.blur_p {
        let sigma = rng.random_range(v.blur_sigma.0..=v.blur_sigma.1);
        x = gaussian_blur(&x, v.blur_kernel, sigma);
    }
    if v.solarize_p > 0.0 && rng.random::<f32>() < v.solarize_p {
        solarize(&mut x, 0.5);
    }
    normalize_chw(&x, v.mean, v.std)
}

/// torchvision `RandomResizedCrop.get_params`: `(top, left, height, width)`.
pub fn resized_crop_params(h: usize, w: usize, scale: (f32, f32), ratio: (f32, f32), rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let (lr0, lr1) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0 as f64..=scale.1 as f64);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return (top, left, ch, cw);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 as f64 {
        (w, ((w as f64 / ratio.0 as f64).round() as usize).min(h))
    } else if in_ratio > ratio.1 as f64 {
        (((h as f64 * ratio.1 as f64).round() as usize).min(w), h)
    } else {
        (w, h)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// Separable resampling weights of one axis, as `interpolate(mode="bilinear",
/// align_corners=False, antialias=True)`: a triangle filter whose support grows
/// with the downscale factor (plain bilinear when enlarging).
fn axis_weights(offset: usize, crop: usize, out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = crop as f64 / out as f64;
    let support = scale.max(1.0);
    (0..out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(crop);
            let mut ws: Vec<f32> = (lo..hi)
                .map(|j| {
                    let d = ((j as f64 + 0.5 - center) / support).abs();
                    (1.0 - d).max(0.0) as f32
                })
                .collect();
            let s: f32 = ws.iter().sum();
            if s > 0.0 {
                ws.iter_mut().for_each(|x| *x /= s);
            }
            (offset + lo, ws)
        })
        .collect()
}

/// Crops `(top, left, ch, cw)` from a u8 HWC image and resizes it to `size x size`.
#[allow(clippy::too_many_arguments)]
pub fn crop_resize(img: &[u8], h: usize, w: usize, top: usize, left: usize, ch: usize, cw: usize, size: usize) -> FImage {
    crop_resize_rect(img, h, w, top, left, ch, cw, size, size)
}

/// Crops `(top, left, ch, cw)` and resizes it to `out_h x out_w`
/// (torchvision `resized_crop`, bilinear, antialias=True).
#[allow(clippy::too_many_arguments)]
pub fn crop_resize_rect(img: &[u8], h: usize, w: usize, top: usize, left: usize, ch: usize, cw: usize, out_h: usize, out_w: usize) -> FImage {
    debug_assert!(top + ch <= h && left + cw <= w);
    let size = out_w;
    let wx = axis_weights(left, cw, out_w);
    let wy = axis_weights(top, ch, out_h);
    // Horizontal pass over the needed rows.
    let mut tmp = vec![0f32; ch * size * 3];
    for r in 0..ch {
        let row = &img[(top + r) * w * 3..(top + r + 1) * w * 3];
        for (o, (start, ws)) in wx.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, &wt) in ws.iter().enumerate() {
                let p = (start + k) * 3;
                acc[0] += wt * row[p] as f32;
                acc[1] += wt * row[p + 1] as f32;
                acc[2] += wt * row[p + 2] as f32;
            }
            let t = (r * size + o) * 3;
            tmp[t..t + 3].copy_from_slice(&acc);
        }
    }
    let mut data = vec![0f32; out_h * size * 3];
    for (o, (start, ws)) in wy.iter().enumerate() {
        let dst = &mut data[o * size * 3..(o + 1) * size * 3];
        for (k, &wt) in ws.iter().enumerate() {
            let r = start + k - top;
            let src = &tmp[r * size * 3..(r + 1) * size * 3];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += wt * s;
            }
        }
        dst.iter_mut().for_each(|d| *d = (*d / 255.0).clamp(0.0, 1.0));
    }
    FImage { h: out_h, w: out_w, data }
}

pub fn hflip(x: &mut FImage) {
    for r in 0..x.h {
        let row = &mut x.data[r * x.w * 3..(r + 1) * x.w * 3];
        for c in 0..x.w / 2 {
            for k in 0..3 {
                row.swap(c * 3 + k, (x.w - 1 - c) * 3 + k);
            }
        }
    }
}

/// ITU-R 601-2 luma, torchvision's `rgb_to_grayscale`.
#[inline]
fn luma(p: &[f32]) -> f32 {
    0.2989 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

pub fn grayscale(x: &mut FImage) {
    for p in x.data.chunks_exact_mut(3) {
        let g = luma(p);
        p.fill(g);
    }
}

pub fn adjust_brightness(x: &mut FImage, f: f32) {
    x.data.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
}

/// Blends with the mean of the grayscale image.
pub fn adjust_contrast(x: &mut FImage, f: f32) {
    let n = (x.h * x.w) as f32;
    let mean = x.data.chunks_exact(3).map(luma).sum::<f32>() / n;
    let b = (1.0 - f) * mean;
    x.data.iter_mut().for_each(|v| *v = (f * *v + b).clamp(0.0, 1.0));
}

/// Blends each pixel with its grayscale value.
pub fn adjust_saturation(x: &mut FImage, f: f32) {
    for p in x.data.chunks_exact_mut(3) {
        let g = (1.0 - f) * luma(p);
        for v in p.iter_mut() {
            *v = (f * *v + g).clamp(0.0, 1.0);
        }
    }
}

/// Rotates the hue by `f` turns (`f` in -0.5..0.5), through HSV as torchvision does.
pub fn adjust_hue(x: &mut FImage, f: f32) {
    for p in x.data.chunks_exact_mut(3) {
        let (r, g, b) = (p[0], p[1], p[2]);
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let v = maxc;
        let cr = maxc - minc;
        let s = if maxc > 0.0 { cr / maxc } else { 0.0 };
        let mut h = if cr == 0.0 {
            0.0
        } else {
            let rc = (maxc - r) / cr;
            let gc = (maxc - g) / cr;
            let bc = (maxc - b) / cr;
            let hh = if maxc == r {
                bc - gc
            } else if maxc == g {
                2.0 + rc - bc
            } else {
                4.0 + gc - rc
            };
            (hh / 6.0 + 1.0).rem_euclid(1.0)
        };
        h = (h + f).rem_euclid(1.0);
        // hsv -> rgb
        let i = (h * 6.0).floor();
        let fr = h * 6.0 - i;
        let pp = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * fr)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - fr))).clamp(0.0, 1.0);
        let (nr, ng, nb) = match (i as i32).rem_euclid(6) {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
        p[0] = nr;
        p[1] = ng;
        p[2] = nb;
    }
}

/// torchvision `ColorJitter`: the four adjustments in a random order with random factors.
pub fn color_jitter(x: &mut FImage, j: &ColorJitter, rng: &mut impl Rng) {
    let mut order = [0usize, 1, 2, 3];
    // Fisher-Yates, like torch.randperm.
    for i in (1..4).rev() {
        let k = rng.random_range(0..=i);
        order.swap(i, k);
    }
    let factor = |s: f32, rng: &mut dyn rand::RngCore| if s > 0.0 { rng.random_range((1.0 - s).max(0.0)..=1.0 + s) } else { 1.0 };
    let b = factor(j.brightness, rng);
    let c = factor(j.contrast, rng);
    let s = factor(j.saturation, rng);
    let hue = if j.hue > 0.0 { rng.random_range(-j.hue..=j.hue) } else { 0.0 };
    for o in order {
        match o {
            0 if j.brightness > 0.0 => adjust_brightness(x, b),
            1 if j.contrast > 0.0 => adjust_contrast(x, c),
            2 if j.saturation > 0.0 => adjust_saturation(x, s),
            3 if j.hue > 0.0 => adjust_hue(x, hue),
            _ => {}
        }
    }
}

/// Separable Gaussian blur with reflect padding (torchvision `gaussian_blur`).
pub fn gaussian_blur(x: &FImage, kernel: usize, sigma: f32) -> FImage {
    let half = (kernel / 2) as isize;
    let mut k: Vec<f32> = (-half..=half).map(|i| (-0.5 * (i as f32 / sigma).powi(2)).exp()).collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        if n == 1 {
            return 0;
        }
        let mut i = i;
        while i < 0 || i >= n {
            i = if i < 0 { -i } else { 2 * (n - 1) - i };
        }
        i as usize
    };
    let (h, w) = (x.h, x.w);
    let mut tmp = vec![0f32; h * w * 3];
    for r in 0..h {
        for c in 0..w {
            let mut acc = [0f32; 3];
            for (t, &kv) in k.iter().enumerate() {
                let cc = reflect(c as isize + t as isize - half, w);
                let p = (r * w + cc) * 3;
                for ch in 0..3 {
                    acc[ch] += kv * x.data[p + ch];
                }
            }
            tmp[(r * w + c) * 3..(r * w + c) * 3 + 3].copy_from_slice(&acc);
        }
    }
    let mut data = vec![0f32; h * w * 3];
    for r in 0..h {
        for c in 0..w {
            let mut acc = [0f32; 3];
            for (t, &kv) in k.iter().enumerate() {
                let rr = reflect(r as isize + t as isize - half, h);
                let p = (rr * w + c) * 3;
                for ch in 0..3 {
                    acc[ch] += kv * tmp[p + ch];
                }
            }
            data[(r * w + c) * 3..(r * w + c) * 3 + 3].copy_from_slice(&acc);
        }
    }
    FImage { h, w, data }
}

/// Inverts every value at or above `threshold`.
pub fn solarize(x: &mut FImage, threshold: f32) {
    x.data.iter_mut().for_each(|v| {
        if *v >= threshold {
            *v = 1.0 - *v
        }
    });
}

/// HWC 0..1 -> CHW `(x - mean) / std`.
pub fn normalize_chw(x: &FImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let n = x.h * x.w;
    let mut out = vec![0f32; 3 * n];
    for (i, p) in x.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (p[c] - mean[c]) / std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_image(h: usize, w: usize) -> Vec<u8> {
        (0..h * w * 3).map(|i| ((i * 37 + (i / 3) * 11) % 256) as u8).collect()
    }

    #[test]
    fn full_crop_at_same_size_is_identity() {
        let img = test_image(8, 8);
        let x = crop_resize(&img, 8, 8, 0, 0, 8, 8, 8);
        for (a, b) in x.data.iter().zip(&img) {
            assert!((a - *b as f32 / 255.0).abs() < 1e-6);
        }
    }

    #[test]
    fn upscale_two_x_matches_bilinear_half_pixel() {
        // 1x2 -> 2x4 along width: torch bilinear align_corners=False gives
        // [a, 0.75a+0.25b, 0.25a+0.75b, b] for a row [a, b].
        let img = vec![0, 0, 0, 200, 200, 200];
        let x = crop_resize(&img, 1, 2, 0, 0, 1, 2, 4);
        let row: Vec<f32> = x.data[..12].chunks(3).map(|p| p[0] * 255.0).collect();
        let want = [0.0, 50.0, 150.0, 200.0];
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-3, "{row:?}");
        }
    }

    #[test]
    fn crop_params_stay_inside_and_follow_scale() {
        let mut rng = sample_rng(0, 0, 0);
        for _ in 0..1000 {
            let (t, l, h, w) = resized_crop_params(32, 40, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(t + h <= 32 && l + w <= 40 && h > 0 && w > 0);
        }
        // Fallback: an impossible ratio falls back to the centre crop clamped to the ratio range.
        let (t, l, h, w) = resized_crop_params(10, 100, (0.99, 1.0), (1.0, 1.0), &mut rng);
        assert_eq!((t, l, h, w), (0, 45, 10, 10));
    }

    #[test]
    fn color_ops_match_torchvision_closed_forms() {
        let mut x = FImage { h: 1, w: 2, data: vec![0.2, 0.4, 0.6, 1.0, 0.0, 0.5] };
        let g0 = 0.2989 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6;
        let mut y = x.clone();
        grayscale(&mut y);
        assert!((y.data[0] - g0).abs() < 1e-6 && (y.data[2] - g0).abs() < 1e-6);
        let mut y = x.clone();
        adjust_brightness(&mut y, 2.0);
        assert_eq!(y.data, vec![0.4, 0.8, 1.0, 1.0, 0.0, 1.0]);
        let mut y = x.clone();
        adjust_saturation(&mut y, 0.0);
        assert!((y.data[1] - g0).abs() < 1e-6);
        // Hue by a full turn is the identity, half a turn of pure red is cyan.
        let mut y = x.clone();
        adjust_hue(&mut y, 0.0);
        for (a, b) in y.data.iter().zip(&x.data) {
            assert!((a - b).abs() < 1e-5);
        }
        let mut red = FImage { h: 1, w: 1, data: vec![1.0, 0.0, 0.0] };
        adjust_hue(&mut red, 0.5);
        assert_eq!(red.data, vec![0.0, 1.0, 1.0]);
        // Contrast 0 leaves the mean luma everywhere.
        adjust_contrast(&mut x, 0.0);
        let m = (g0 + 0.2989 + 0.114 * 0.5) / 2.0;
        assert!(x.data.iter().all(|v| (v - m).abs() < 1e-6));
    }

    #[test]
    fn blur_keeps_constant_images_and_solarize_inverts_bright() {
        let x = FImage { h: 5, w: 7, data: vec![0.3; 105] };
        let y = gaussian_blur(&x, 5, 1.3);
        assert!(y.data.iter().all(|v| (v - 0.3).abs() < 1e-6));
        let mut z = FImage { h: 1, w: 1, data: vec![0.2, 0.5, 0.9] };
        solarize(&mut z, 0.5);
        assert_eq!(z.data, vec![0.2, 0.5, 1.0 - 0.9]);
    }

    #[test]
    fn batches_are_reproducible_regardless_of_threads() {
        let imgs: Vec<Vec<u8>> = (0..16).map(|i| test_image(32, 32).iter().map(|v| v.wrapping_add(i)).collect()).collect();
        let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
        let idx: Vec<u64> = (0..16).collect();
        let p = Pipeline::simclr(Resolution::Cifar, 32);
        let a = p.batch(&refs, 32, 32, 7, 3, &idx).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let b = pool.install(|| p.batch(&refs, 32, 32, 7, 3, &idx).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].len(), 16 * 3 * 32 * 32);
        assert_ne!(a[0], a[1], "two views must differ");
        let c = p.batch(&refs, 32, 32, 7, 4, &idx).unwrap();
        assert_ne!(a[0], c[0], "another epoch must draw other views");
        // The same sample alone gives the same view as inside the batch.
        let one = p.batch(&refs[5..6], 32, 32, 7, 3, &idx[5..6]).unwrap();
        assert_eq!(&one[0][..], &a[0][5 * 3072..6 * 3072]);
    }

    #[test]
    fn dino_multi_crop_shapes_and_bad_input() {
        let p = Pipeline::dino(Resolution::Cifar, 32, 4);
        assert_eq!(p.views.len(), 6);
        assert_eq!(p.views[2].size, 16);
        let img = test_image(32, 32);
        let out = p.batch(&[&img], 32, 32, 0, 0, &[0]).unwrap();
        assert_eq!(out[0].len(), 3 * 32 * 32);
        assert_eq!(out[5].len(), 3 * 16 * 16);
        let e = p.batch(&[&img[..10]], 32, 32, 0, 0, &[0]).unwrap_err().to_string();
        assert!(e.contains("10 bytes"), "{e}");
        let all = [Pipeline::simclr(Resolution::Cifar, 32), Pipeline::moco_v2(Resolution::Cifar, 32), Pipeline::byol(Resolution::Cifar, 32), Pipeline::dino(Resolution::Cifar, 32, 6), Pipeline::mae(Resolution::Cifar, 32)];
        for (m, p) in all.into_iter().enumerate() {
            for v in p.views {
                assert_eq!(v.blur_p, 0.0, "{m}: no blur at 32 px");
            }
        }
    }
}

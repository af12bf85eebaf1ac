//! `pretext colorize`: colour pictures with a colorization run (Zhang et al.
//! 2016 sec. 2.3): the run's backbone and head (`decoder.*`) predict the ab
//! bin distribution of the L channel at 1/4 of the side; the annealed mean
//! (the run's `decode_temperature`, 0.38 by default) gives ab, upsampled
//! bilinearly to the image and joined to the input's own L.

use std::path::{Path, PathBuf};

use image::RgbImage;
use pretext_data::preprocess;
use pretext_models::Backbone;
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::color;
use crate::methods::colorization::{self, Colorization};
use crate::methods::Method;
use crate::train::TrainConfig;

#[derive(Debug, thiserror::Error)]
pub enum ColorizeError {
    #[error("{path}: {reason}")]
    Run { path: PathBuf, reason: String },
    #[error(transparent)]
    Image(#[from] preprocess::PreprocessError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: image::ImageError },
}

/// A colorization run's network in eval mode.
pub struct Colorizer {
    m: Colorization,
    temperature: f64,
    /// Side of the images it colours (the backbone's input size).
    pub size: i64,
}

impl Colorizer {
    /// From a run directory (its `checkpoint.safetensors`) or a checkpoint file.
    pub fn load(run: &Path) -> Result<Self, ColorizeError> {
        let path = if run.is_dir() { run.join("checkpoint.safetensors") } else { run.to_path_buf() };
        let bad = |reason: String| ColorizeError::Run { path: path.clone(), reason };
        let ck = checkpoint::load(&path).map_err(|e| bad(e.to_string()))?;
        let cfg: TrainConfig = serde_json::from_str(ck.meta_str("config").map_err(|e| bad(e.to_string()))?).map_err(|e| bad(format!("metadata 'config': {e}")))?;
        let Some(c) = cfg.method.get::<colorization::Config>() else {
            return Err(bad(format!("a {} run, not a colorization run", cfg.method.name())));
        };
        let bc = cfg.backbone_config().map_err(|e| bad(e.to_string()))?;
        let m = Colorization::new(c, Backbone::new(&bc), Device::Cpu).map_err(|e| bad(e.to_string()))?;
        for (prefix, params) in m.students() {
            for (s, t) in params.all() {
                ck.copy_into(&format!("student.{prefix}{}", s.name), t).map_err(|e| bad(e.to_string()))?;
            }
        }
        Ok(Self { temperature: c.decode_temperature, size: bc.default_image_size(), m })
    }

    /// Colourised sRGB from the L of `rgb` (pixels in [0, 1]).
    ///
    /// # Shapes
    /// (B, 3, S, S) -> (B, 3, S, S)
    pub fn colorize(&self, rgb: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let logits = self.m.logits(rgb, false);
            let ab = color::annealed_mean(&logits, &self.m.bins, self.temperature);
            let ab = ab.upsample_bilinear2d(rgb.size()[2..].to_vec(), false, None, None);
            let l = color::rgb_to_lab(rgb).narrow(1, 0, 1);
            color::lab_to_rgb(&Tensor::cat(&[l, ab], 1))
        })
    }

    /// One strip: the input's L as gray | colourised | the original, each
    /// `size` px scaled up by `zoom` (nearest).
    pub fn strip(&self, img: &RgbImage, zoom: u32) -> RgbImage {
        let s = self.size as u32;
        let img = preprocess::resize_bilinear_aa(img, s, s);
        let x = to_tensor(&img);
        let l = color::rgb_to_lab(&x).narrow(1, 0, 1);
        let zeros = Tensor::zeros_like(&l);
        let gray = color::lab_to_rgb(&Tensor::cat(&[&l, &zeros, &zeros], 1));
        let panels = Tensor::cat(&[gray, self.colorize(&x), x], 3);
        let panels = if zoom > 1 { panels.upsample_nearest2d([(s * zoom) as i64, (3 * s * zoom) as i64], None, None) } else { panels };
        from_tensor(&panels)
    }
}

fn to_tensor(img: &RgbImage) -> Tensor {
    let (w, h) = img.dimensions();
    Tensor::from_slice(img.as_raw()).reshape([h as i64, w as i64, 3]).permute([2, 0, 1]).unsqueeze(0).to_kind(Kind::Float) / 255.0
}

fn from_tensor(x: &Tensor) -> RgbImage {
    let (h, w) = (x.size()[2], x.size()[3]);
    let v = Vec::<u8>::try_from((x.squeeze_dim(0).permute([1, 2, 0]) * 255.0).round().clamp(0.0, 255.0).to_kind(Kind::Uint8).contiguous().flatten(0, -1)).expect("u8 pixels");
    RgbImage::from_raw(w as u32, h as u32, v).expect("h x w x 3 values")
}

/// Writes `<out>/<stem>.png` (gray | colourised | original) for each image; returns the files written.
pub fn colorize_files(run: &Path, images: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>, ColorizeError> {
    let c = Colorizer::load(run)?;
    std::fs::create_dir_all(out).map_err(|source| ColorizeError::Io { path: out.to_path_buf(), source })?;
    let zoom = (128 / c.size.max(1) as u32).max(1);
    let mut written = Vec::new();
    for p in images {
        let img = preprocess::decode_file(p)?;
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let dst = out.join(format!("{stem}.png"));
        c.strip(&img, zoom).save(&dst).map_err(|source| ColorizeError::Write { path: dst.clone(), source })?;
        written.push(dst);
    }
    Ok(written)
}

//! Numerical verification of an exported graph: real images in, the tch
//! forward (eval mode) of the same checkpoint as reference, the ONNX graph in
//! tract and in ONNX Runtime, max abs error and cosine per output and backend.
//!
//! Shared by `pretext export --verify` and the parity tests (which include
//! this file by path).
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use pretext_exporter::{Checkpoint, ExportOptions, Resolved};
use pretext_models::BackboneConfig;
use pretext_runtime::compare;
use pretext_trainer::{Params, TchOps};

/// Decodes up to `n` JPEG/PNG images from a `.tar.gz` archive or a folder
/// (recursively, in sorted order, every `stride`-th file) and returns them
/// resized to `size`x`size` and normalised with `mean`/`std`.
///
/// # Shapes
/// -> (n, 3, size, size)
pub fn load_images(src: &Path, n: usize, stride: usize, size: u32, mean: [f32; 3], std: [f32; 3]) -> Result<ArrayD<f32>> {
    let is_img = |p: &str| {
        let l = p.to_lowercase();
        l.ends_with(".jpg") || l.ends_with(".jpeg") || l.ends_with(".png")
    };
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let name = src.to_string_lossy();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let f = std::fs::File::open(src).with_context(|| format!("open {}", src.display()))?;
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut seen = 0usize;
        for e in ar.entries().with_context(|| format!("read {}", src.display()))? {
            let mut e = e?;
            let p = e.path()?.to_string_lossy().to_string();
            // CIFAR archives: only the test split.
            if !is_img(&p) || (p.contains("train/") && name.contains("cifar")) {
                continue;
            }
            seen += 1;
            if (seen - 1) % stride != 0 {
                continue;
            }
            let mut b = Vec::new();
            e.read_to_end(&mut b)?;
            blobs.push((p, b));
            if blobs.len() == n {
                break;
            }
        }
    } else {
        let mut files = Vec::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if is_img(&p.to_string_lossy()) {
                    files.push(p);
                }
            }
        }
        files.sort();
        for p in files.into_iter().step_by(stride.max(1)).take(n) {
            blobs.push((p.display().to_string(), std::fs::read(&p)?));
        }
    }
    if blobs.is_empty() {
        bail!("no images found in {}", src.display());
    }
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[blobs.len(), 3, size as usize, size as usize]));
    for (i, (p, b)) in blobs.iter().enumerate() {
        let img = image::load_from_memory(b).with_context(|| format!("decode {p}"))?.to_rgb8();
        let img = image::imageops::resize(&img, size, size, image::imageops::FilterType::Triangle);
        for (xx, yy, px) in img.enumerate_pixels() {
            for c in 0..3 {
                x[[i, c, yy as usize, xx as usize]] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
            }
        }
    }
    Ok(x)
}

fn to_tensor(x: &ArrayD<f32>) -> tch::Tensor {
    let shape: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    tch::Tensor::from_slice(x.as_standard_layout().as_slice().expect("standard layout")).reshape(&shape)
}

fn from_tensor(t: &tch::Tensor) -> Result<ArrayD<f32>> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let v: Vec<f32> = Vec::try_from(t.to_kind(tch::Kind::Float).contiguous().flatten(0, -1))?;
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), v)?)
}

/// The tch forward (eval mode) of what the exporter exports: features, then
/// each head's output, in the exporter's output order.
pub fn tch_forward(ckpt_path: &Path, config: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>) -> Result<Vec<(String, ArrayD<f32>)>> {
    let ckpt = Checkpoint::load(ckpt_path)?;
    let Resolved { backbone, heads, .. } = pretext_exporter::resolve(config, &ckpt, opts)?;
    let bp = Params::new(backbone.params(), tch::Device::Cpu);
    bp.load_safetensors(ckpt_path, &opts.prefix, false)?;
    let xt = to_tensor(x);
    let mut outs = Vec::new();
    tch::no_grad(|| -> Result<()> {
        let f = backbone.forward_features(&mut TchOps::new(&bp, false), &xt);
        outs.push((pretext_exporter::FEATURES_OUTPUT.to_string(), from_tensor(&f)?));
        for (name, h) in &heads {
            let hp = Params::new(h.params(), tch::Device::Cpu);
            hp.load_safetensors(ckpt_path, "", false)?;
            let y = h.forward(&mut TchOps::new(&hp, false), &f.shallow_clone());
            outs.push((name.clone(), from_tensor(&y)?));
        }
        Ok(())
    })?;
    Ok(outs)
}

/// Runs an ONNX file in tract and in ONNX Runtime; returns (backend, outputs).
pub fn run_onnx(model: &Path, x: &ArrayD<f32>) -> Result<Vec<(&'static str, Vec<ArrayD<f32>>)>> {
    let tract = pretext_runtime::open_tract(model)?;
    let ort = pretext_runtime::open_ort(model, &pretext_runtime::OrtOptions::default())?;
    Ok(vec![("tract", tract.run(x.clone())?), ("onnxruntime", ort.run(x.clone())?)])
}

/// max |a - b|; +inf when either side holds a NaN or infinity (see `pretext_runtime::compare`).
pub fn max_abs(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    compare::max_abs_diff(a, b) as f32
}

/// The smallest per-row cosine similarity between two (N, ...) arrays (rows are the
/// leading axis); -inf when either side holds a NaN or infinity.
pub fn min_cosine(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    let row = a.len() / a.shape().first().copied().unwrap_or(1).max(1);
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    match (a.as_slice(), b.as_slice()) {
        (Some(a), Some(b)) => compare::min_cosine(a, b, row) as f32,
        _ => f32::NEG_INFINITY,
    }
}

/// One comparison row.
#[derive(Debug, Clone)]
pub struct Row {
    pub output: String,
    pub backend: &'static str,
    pub max_abs: f32,
    pub cosine: f32,
    /// Largest |value| of the reference, to read `max_abs` against.
    pub ref_max: f32,
}

/// Compares every backend's outputs with the reference, by position.
pub fn compare(reference: &[(String, ArrayD<f32>)], runs: &[(&'static str, Vec<ArrayD<f32>>)]) -> Result<Vec<Row>> {
    let mut non_finite = Vec::new();
    for (name, r) in reference {
        let k = compare::count_non_finite(r);
        if k > 0 {
            non_finite.push(format!("output `{name}` from tch (the reference): {k} of {} values", r.len()));
        }
    }
    for (backend, outs) in runs {
        for ((name, _), o) in reference.iter().zip(outs) {
            let k = compare::count_non_finite(o);
            if k > 0 {
                non_finite.push(format!("output `{name}` from {backend}: {k} of {} values", o.len()));
            }
        }
    }
    if !non_finite.is_empty() {
        bail!("non-finite (NaN or infinite) values fail verification: {}", non_finite.join("; "));
    }
    let mut rows = Vec::new();
    for (backend, outs) in runs {
        if outs.len() != reference.len() {
            bail!("{backend} returned {} outputs, the tch forward {}", outs.len(), reference.len());
        }
        for ((name, r), o) in reference.iter().zip(outs) {
            if r.shape() != o.shape() {
                bail!("{backend}: output {name} has shape {:?}, the tch forward {:?}", o.shape(), r.shape());
            }
            rows.push(Row { output: name.clone(), backend, max_abs: max_abs(r, o), cosine: min_cosine(r, o), ref_max: compare::max_abs(r) as f32 });
        }
    }
    Ok(rows)
}

pub fn format_table(rows: &[Row]) -> String {
    let mut s = format!("{:<16} {:<12} {:>12} {:>10} {:>10}\n", "output", "backend", "max|err|", "cosine", "max|ref|");
    for r in rows {
        s += &format!("{:<16} {:<12} {:>12.3e} {:>10.6} {:>10.3}\n", r.output, r.backend, r.max_abs, r.cosine, r.ref_max);
    }
    s
}

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
use pretext_exporter::{Checkpoint, ExportOptions, Head, Resolved};
use pretext_models::{Backbone, BackboneConfig, HeadSpec};
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

/// A fixed MAE mask for a batch, the graph inputs `ids_keep` (B, K) and
/// `ids_restore` (B, N) of an exported MAE decoder.
#[derive(Debug, Clone)]
pub struct Mask {
    pub keep: ArrayD<i64>,
    pub restore: ArrayD<i64>,
}

/// A seeded random shuffle per image, as MAE's `random_masking` draws one:
/// the first `keep` patches of the shuffle are visible, `restore` inverts it.
pub fn fixed_mask(batch: usize, n: usize, keep: usize, seed: u64) -> Mask {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut k, mut r) = (ArrayD::<i64>::zeros(IxDyn(&[batch, keep])), ArrayD::<i64>::zeros(IxDyn(&[batch, n])));
    for b in 0..batch {
        let mut shuffle: Vec<usize> = (0..n).collect();
        shuffle.shuffle(&mut rng);
        for (i, &p) in shuffle.iter().enumerate() {
            if i < keep {
                k[[b, i]] = p as i64;
            }
            r[[b, p]] = i as i64;
        }
    }
    Mask { keep: k, restore: r }
}

/// The mask `--verify` feeds when the export has an MAE decoder head, else `None`.
pub fn mask_for(resolved: &Resolved, batch: usize) -> Option<Mask> {
    resolved.heads.iter().find_map(|(_, h)| match h {
        Head::Spec(HeadSpec::MaeDecoder(d)) => Some(fixed_mask(batch, d.num_patches() as usize, d.visible() as usize, 97)),
        _ => None,
    })
}

fn ids_tensor(a: &ArrayD<i64>) -> tch::Tensor {
    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    tch::Tensor::from_slice(a.as_standard_layout().as_slice().expect("standard layout")).reshape(&shape)
}

/// The tch forward (eval mode) of what the exporter exports: features, then
/// each head's output, in the exporter's output order. An MAE decoder head
/// runs on the fixed mask of [`mask_for`].
pub fn tch_forward(ckpt_path: &Path, config: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>) -> Result<Vec<(String, ArrayD<f32>)>> {
    let ckpt = Checkpoint::load(ckpt_path)?;
    let resolved = pretext_exporter::resolve(config, &ckpt, opts)?;
    drop(ckpt);
    let mask = mask_for(&resolved, x.shape()[0]);
    let Resolved { backbone, heads, prefix, .. } = resolved;
    let mut specs = backbone.params();
    specs.extend(heads.iter().flat_map(|(_, h)| h.params()));
    let p = Params::new(specs, tch::Device::Cpu);
    p.load_safetensors(ckpt_path, &prefix, false)?;
    let xt = to_tensor(x);
    let mut outs = Vec::new();
    tch::no_grad(|| -> Result<()> {
        let mut o = TchOps::new(&p, false);
        let f = backbone.forward_features(&mut o, &xt);
        outs.push((pretext_exporter::FEATURES_OUTPUT.to_string(), from_tensor(&f)?));
        for (name, h) in &heads {
            let y = match (h, &backbone, &mask) {
                (Head::Classifier(l), _, _) => l.forward(&mut o, &f),
                (Head::Spec(HeadSpec::Mlp(m)), _, _) => m.forward(&mut o, &f),
                (Head::Spec(HeadSpec::MaeDecoder(d)), Backbone::Vit(v), Some(m)) => d.forward(&mut o, v, &xt, &ids_tensor(&m.keep), &ids_tensor(&m.restore)),
                (Head::Spec(HeadSpec::MaeDecoder(_)), ..) => bail!("head {name}: an MAE decoder needs a ViT backbone"),
            };
            outs.push((name.clone(), from_tensor(&y)?));
        }
        Ok(())
    })?;
    Ok(outs)
}

/// Runs a single-input ONNX file in tract and in ONNX Runtime; returns (backend, outputs).
pub fn run_onnx(model: &Path, x: &ArrayD<f32>) -> Result<Vec<(&'static str, Vec<ArrayD<f32>>)>> {
    let tract = pretext_runtime::open_tract(model)?;
    let ort = pretext_runtime::open_ort(model, &pretext_runtime::OrtOptions::default())?;
    Ok(vec![("tract", tract.run(x.clone())?), ("onnxruntime", ort.run(x.clone())?)])
}

/// Runs an ONNX file in tract and in ONNX Runtime; returns (backend, outputs).
/// With a mask, the graph's inputs are the image, `ids_keep` and `ids_restore`.
pub fn run_onnx_masked(model: &Path, x: &ArrayD<f32>, mask: Option<&Mask>) -> Result<Vec<(&'static str, Vec<ArrayD<f32>>)>> {
    let Some(m) = mask else { return run_onnx(model, x) };
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx()
        .model_for_path(model)
        .and_then(|g| g.with_input_fact(0, f32::fact(x.shape()).into()))
        .and_then(|g| g.with_input_fact(1, i64::fact(m.keep.shape()).into()))
        .and_then(|g| g.with_input_fact(2, i64::fact(m.restore.shape()).into()))
        .and_then(|g| g.into_optimized())
        .and_then(|g| g.into_runnable())
        .map_err(|e| anyhow::anyhow!("tract: {}: {e:#}", model.display()))?;
    let ins: TVec<TValue> = tvec![x.clone().into_tensor().into(), m.keep.clone().into_tensor().into(), m.restore.clone().into_tensor().into()];
    let tract_outs = plan.run(ins).map_err(|e| anyhow::anyhow!("tract: {}: {e:#}", model.display()))?;
    let tract_outs = tract_outs.iter().map(|t| Ok(t.to_plain_array_view::<f32>()?.to_owned())).collect::<Result<Vec<_>>>()?;

    let ort_err = |e: ort::Error| anyhow::anyhow!("onnxruntime: {}: {e}", model.display());
    let mut session = ort::session::Session::builder(pretext_runtime::ort_environment()?).map_err(ort_err)?.commit_from_file(model).map_err(ort_err)?;
    let (xs, ks, rs) = (x.as_standard_layout().into_owned(), m.keep.as_standard_layout().into_owned(), m.restore.as_standard_layout().into_owned());
    let ins = ort::inputs![
        ort::value::TensorRef::from_array_view(&xs).map_err(ort_err)?,
        ort::value::TensorRef::from_array_view(&ks).map_err(ort_err)?,
        ort::value::TensorRef::from_array_view(&rs).map_err(ort_err)?
    ];
    let outputs = session.run(ins).map_err(ort_err)?;
    let ort_outs = outputs.iter().map(|(_, v)| Ok(v.try_extract_array::<f32>().map_err(ort_err)?.to_owned())).collect::<Result<Vec<_>>>()?;
    Ok(vec![("tract", tract_outs), ("onnxruntime", ort_outs)])
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

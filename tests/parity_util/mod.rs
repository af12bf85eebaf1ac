//! Shared helpers of the parity tests: random and briefly trained
//! checkpoints (tch), real images, export + tch/tract/ORT comparison, and
//! `onnx.checker.check_model(full_check=True)` through the venv python.
#![allow(dead_code)]

/// `pretext export --verify` as libraries, under one name: tract and ORT runs
/// and comparisons (`pretext_runtime::verify`), the tch reference
/// (`pretext_trainer::reference`).
pub mod verify {
    pub use pretext_runtime::verify::*;
    pub use pretext_trainer::reference::tch_forward;
}

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use pretext_exporter::{ExportOptions, CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD};
use pretext_models::{Backbone, BackboneConfig, MlpHead, ParamKind};
use pretext_trainer::{Params, TchOps};
use tch::{nn::OptimizerConfig, Device, Kind, Tensor};

/// The named tolerance levels (`tol::F32`, `tol::F16_COS`, `tol::FLOOR_FACTOR`, ...).
pub use pretext_runtime::compare::tol;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(name)
}

/// CIFAR-10 test images (every 97th, so several classes), normalised with CIFAR statistics.
pub fn cifar(n: usize, size: u32) -> ArrayD<f32> {
    verify::load_images(&data("cifar10-jpg.tar.gz"), n, 97, size, CIFAR_MEAN, CIFAR_STD).expect("CIFAR-10 test images")
}

/// Raccoon photos (natural images, 178-2000 px) resized to `size`, ImageNet statistics.
pub fn photos(n: usize, size: u32) -> ArrayD<f32> {
    verify::load_images(&data("raccoon-voc.tar.gz"), n, 7, size, IMAGENET_MEAN, IMAGENET_STD).expect("raccoon photos")
}

fn randomise_norms(p: &Params) {
    tch::no_grad(|| {
        for (s, t) in p.all() {
            let mut t = t.shallow_clone();
            let n = t.size();
            if s.name.ends_with("running_mean") {
                t.copy_(&(Tensor::randn(&n, (Kind::Float, Device::Cpu)) * 0.2));
            } else if s.name.ends_with("running_var") {
                t.copy_(&(Tensor::rand(&n, (Kind::Float, Device::Cpu)) + 0.5));
            } else if s.kind == ParamKind::NoDecay && n.len() == 1 && !s.name.contains("cls") {
                // Norm affine parameters and biases: away from the trivial 1/0 init.
                let base = if s.name.ends_with("weight") { 1.0 } else { 0.0 };
                t.copy_(&(Tensor::randn(&n, (Kind::Float, Device::Cpu)) * 0.2 + base));
            }
        }
    });
}

/// Wraps [`TchOps`] to calibrate BatchNorm: a train-mode pass with
/// momentum 1 sets every running mean/var to the batch's statistics, as a
/// trained network's would be (random statistics let activations grow
/// without bound with depth, which no real checkpoint has).
struct Calibrate<'a>(TchOps<'a>);

impl pretext_models::Ops for Calibrate<'_> {
    type T = Tensor;
    fn share(&mut self, x: &Tensor) -> Tensor { self.0.share(x) }
    fn is_training(&self) -> bool { true }
    fn param(&mut self, p: &str) -> Tensor { self.0.param(p) }
    fn conv2d(&mut self, n: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: pretext_models::ConvArgs) -> Tensor { self.0.conv2d(n, x, w, b, a) }
    fn batch_norm(&mut self, n: &str, x: &Tensor, w: &Tensor, b: &Tensor, m: &Tensor, v: &Tensor, _: f64, eps: f64) -> Tensor {
        self.0.batch_norm(n, x, w, b, m, v, 1.0, eps)
    }
    fn linear(&mut self, n: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor { self.0.linear(n, x, w, b) }
    fn layer_norm(&mut self, n: &str, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor { self.0.layer_norm(n, x, w, b, eps) }
    fn relu(&mut self, n: &str, x: &Tensor) -> Tensor { self.0.relu(n, x) }
    fn relu6(&mut self, n: &str, x: &Tensor) -> Tensor { self.0.relu6(n, x) }
    fn gelu(&mut self, n: &str, x: &Tensor) -> Tensor { self.0.gelu(n, x) }
    fn add(&mut self, n: &str, a: &Tensor, b: &Tensor) -> Tensor { self.0.add(n, a, b) }
    fn mul_scalar(&mut self, n: &str, x: &Tensor, s: f64) -> Tensor { self.0.mul_scalar(n, x, s) }
    fn max_pool2d(&mut self, n: &str, x: &Tensor, k: i64, s: i64, p: i64) -> Tensor { self.0.max_pool2d(n, x, k, s, p) }
    fn global_avg_pool(&mut self, n: &str, x: &Tensor) -> Tensor { self.0.global_avg_pool(n, x) }
    fn reshape(&mut self, n: &str, x: &Tensor, s: &[i64]) -> Tensor { self.0.reshape(n, x, s) }
    fn permute(&mut self, n: &str, x: &Tensor, p: &[i64]) -> Tensor { self.0.permute(n, x, p) }
    fn matmul(&mut self, n: &str, a: &Tensor, b: &Tensor) -> Tensor { self.0.matmul(n, a, b) }
    fn softmax(&mut self, n: &str, x: &Tensor, d: i64) -> Tensor { self.0.softmax(n, x, d) }
    fn concat(&mut self, n: &str, xs: &[Tensor], d: i64) -> Tensor { self.0.concat(n, xs, d) }
    fn slice(&mut self, n: &str, x: &Tensor, d: i64, s: i64, e: i64) -> Tensor { self.0.slice(n, x, d, s, e) }
    fn expand_batch(&mut self, n: &str, x: &Tensor, l: &Tensor) -> Tensor { self.0.expand_batch(n, x, l) }
    fn bicubic_resize(&mut self, n: &str, x: &Tensor, hw: [i64; 2]) -> Tensor { self.0.bicubic_resize(n, x, hw) }
    fn l2_normalize(&mut self, n: &str, x: &Tensor, eps: f64) -> Tensor { self.0.l2_normalize(n, x, eps) }
    fn batch_norm_plain(&mut self, n: &str, x: &Tensor, m: &Tensor, v: &Tensor, _: f64, eps: f64) -> Tensor { self.0.batch_norm_plain(n, x, m, v, 1.0, eps) }
    fn batch_norm_batch_stats(&mut self, n: &str, x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Tensor { self.0.batch_norm_batch_stats(n, x, w, b, eps) }
    fn gather_tokens(&mut self, n: &str, x: &Tensor, ids: &Tensor) -> Tensor { self.0.gather_tokens(n, x, ids) }
    fn masked_blend(&mut self, n: &str, m: &Tensor, x: &Tensor, t: &Tensor) -> Tensor { self.0.masked_blend(n, m, x, t) }
    fn upsample(&mut self, n: &str, x: &Tensor, s: i64, m: pretext_models::UpsampleMode) -> Tensor { self.0.upsample(n, x, s, m) }
    fn conv_transpose2d(&mut self, n: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: pretext_models::ConvTransposeArgs) -> Tensor { self.0.conv_transpose2d(n, x, w, b, a) }
}

fn to_tensor(x: &ArrayD<f32>) -> Tensor {
    Tensor::from_slice(x.as_slice().unwrap()).reshape(x.shape().iter().map(|&d| d as i64).collect::<Vec<_>>())
}

/// A checkpoint of `cfg` (plus optional heads) with random weights,
/// randomised norm affine parameters and BatchNorm statistics calibrated on
/// CIFAR images at `size` px; `train_steps` > 0 then runs that many SGD
/// steps in train mode (BatchNorm statistics update with momentum 0.1), so
/// parity is also checked on weights that went through the trainer's ops.
pub fn make_checkpoint(path: &Path, cfg: &BackboneConfig, heads: &[MlpHead], seed: i64, train_steps: usize) {
    make_checkpoint_at(path, cfg, heads, seed, train_steps, cfg.default_image_size() as u32)
}

pub fn make_checkpoint_at(path: &Path, cfg: &BackboneConfig, heads: &[MlpHead], seed: i64, train_steps: usize, size: u32) {
    tch::manual_seed(seed);
    let b = Backbone::new(cfg);
    let bp = Params::new(b.params(), Device::Cpu);
    randomise_norms(&bp);
    let hps: Vec<Params> = heads.iter().map(|h| Params::new(h.params(), Device::Cpu)).collect();
    hps.iter().for_each(randomise_norms);
    // Calibrate on both image sources the tests feed, then floor the
    // variances: random weights leave some channels nearly constant, and a
    // BN that divides by sqrt(1e-5) multiplies fp32 rounding noise by ~300,
    // which trained networks (small gamma on dead channels) do not do.
    let (c, p) = (cifar(4, size), photos(4, size));
    let xt = to_tensor(&ndarray::concatenate(ndarray::Axis(0), &[c.view(), p.view()]).unwrap());
    let _ = tch::no_grad(|| b.forward_features(&mut Calibrate(TchOps::new(&bp, true)), &xt));
    tch::no_grad(|| {
        for (s, t) in bp.all() {
            if s.name.ends_with("running_var") {
                let _ = t.shallow_clone().clamp_min_(1e-2);
            }
        }
    });
    if train_steps > 0 {
        let mut opt = tch::nn::Sgd { momentum: 0.9, ..Default::default() }.build(&bp.vs, 0.01).unwrap();
        for _ in 0..train_steps {
            let f = b.forward_features(&mut TchOps::new(&bp, true), &xt);
            let loss = (f - 0.5).pow_tensor_scalar(2).mean(Kind::Float);
            opt.backward_step(&loss);
        }
    }
    let mut blobs: BTreeMap<String, pretext_models::tensorfile::HostTensor> = bp.to_named_blobs("");
    for hp in &hps {
        blobs.extend(hp.to_named_blobs(""));
    }
    let listed: BTreeMap<&str, pretext_models::HeadSpec> = heads.iter().map(|h| (h.path.as_str(), pretext_models::HeadSpec::Mlp(h.clone()))).collect();
    let meta = HashMap::from([
        ("pretext.arch".to_string(), serde_json::to_string(cfg).unwrap()),
        (pretext_models::HEADS_KEY.to_string(), serde_json::to_string(&listed).unwrap()),
    ]);
    pretext_trainer::backend::write_safetensors(path, &blobs, Some(meta)).unwrap();
}

/// One parity row, for the failure message.
#[derive(Debug)]
pub struct Outcome {
    pub rows: Vec<verify::Row>,
    pub file: PathBuf,
}

/// Exports `ckpt` with `opts` into `dir`, runs tract and ORT on `x`, and
/// compares with the tch forward. Panics with the table when over tolerance.
pub fn check_parity(tag: &str, ckpt: &Path, cfg: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>, dir: &Path) -> Outcome {
    check_parity_cos(tag, ckpt, cfg, opts, x, dir, tol::F16_COS)
}

/// [`check_parity`] with an explicit fp16 cosine bound. fp32: max abs error
/// <= [`tol::F32`] (absolute) between tch and each backend.
pub fn check_parity_cos(tag: &str, ckpt: &Path, cfg: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>, dir: &Path, min_cos: f32) -> Outcome {
    let (rows, file, table) = export_and_compare(tag, ckpt, cfg, opts, x, dir);
    for r in &rows {
        if opts.fp16 {
            assert!(r.cosine >= min_cos, "{tag}: fp16 cosine below {min_cos}\n{table}");
        } else {
            assert!(r.max_abs <= tol::F32, "{tag}: fp32 max abs error above {:e}\n{table}", tol::F32);
        }
    }
    Outcome { rows, file }
}

fn export_and_compare(tag: &str, ckpt: &Path, cfg: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>, dir: &Path) -> (Vec<verify::Row>, PathBuf, String) {
    let file = dir.join(format!("{tag}{}.onnx", if opts.fp16 { "_fp16" } else { "" }));
    let ck = pretext_exporter::Checkpoint::load(ckpt).unwrap();
    let (model, _) = pretext_exporter::export(cfg, &ck, opts).unwrap();
    model.write(&file, opts.external_data_threshold).unwrap();
    let reference = verify::tch_forward(ckpt, cfg, opts, x).unwrap();
    let runs = verify::run_onnx(&file, x).unwrap();
    let rows = verify::compare(&reference, &runs).unwrap();
    let table = verify::format_table(&rows);
    eprintln!("{tag} (fp16={}):\n{table}", opts.fp16);
    for k in 0..runs[0].1.len() {
        eprintln!("  tract vs onnxruntime, output {k}: max abs {:.3e}", verify::max_abs(&runs[0].1[k], &runs[1].1[k]));
    }
    (rows, file, table)
}

/// Parity for networks whose own arithmetic is too ill-conditioned for the
/// fixed bounds (the random-init ResNet-50: `tests/parity_backbones.rs`
/// explains the measurement). Everything is measured against the network
/// evaluated in f64 ([`tch_features`]), the function every implementation
/// approximates:
/// - fp32: each backend's max abs error to the f64 features <= [`tol::F32`], or
///   where tch's own fp32 forward is already further than that from them,
///   <= [`tol::FLOOR_FACTOR`] x tch's error (as exact as the training framework).
/// - fp16: each backend's `1 - cosine` to the tch fp32 features <= `1 -`
///   [`tol::F16_COS`], or where rounding the weights alone to fp16 (f64
///   compute) already costs more, <= [`tol::FLOOR_FACTOR`] x that cost.
///
/// Backbone features only (no heads).
pub fn check_parity_vs_floor(tag: &str, ckpt: &Path, cfg: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>, dir: &Path) -> Outcome {
    assert!(opts.heads.is_empty(), "features only");
    let (rows, file, table) = export_and_compare(tag, ckpt, cfg, opts, x, dir);
    let runs = verify::run_onnx(&file, x).unwrap();
    let tch32 = verify::tch_forward(ckpt, cfg, opts, x).unwrap().remove(0).1;
    if opts.fp16 {
        let floor = 1.0 - min_cosine_f64(&tch32, &tch_features(ckpt, cfg, opts, x, Kind::Double, true));
        assert!(floor.is_finite(), "{tag}: the fp16-weights f64 forward is not finite (1 - cosine {floor})");
        let bound = (1.0 - tol::F16_COS as f64).max(tol::FLOOR_FACTOR * floor);
        eprintln!("  fp16 weights alone (f64 compute): 1 - cosine {floor:.3e}; bound on 1 - cosine {bound:.3e}");
        for r in &rows {
            assert!(1.0 - r.cosine as f64 <= bound, "{tag}: {} fp16 1 - cosine {:.3e} above {bound:.3e}\n{table}", r.backend, 1.0 - r.cosine);
        }
    } else {
        let exact = tch_features(ckpt, cfg, opts, x, Kind::Double, false);
        let e_tch = max_abs_f64(&tch32, &exact);
        assert!(e_tch.is_finite(), "{tag}: tch fp32 vs its f64 forward: max abs error {e_tch} (a non-finite value)");
        let bound = (tol::F32 as f64).max(tol::FLOOR_FACTOR * e_tch);
        let errs: Vec<(&str, f64)> = runs.iter().map(|(b, o)| (*b, max_abs_f64(&o[0], &exact))).collect();
        let list: Vec<String> = errs.iter().map(|(b, e)| format!("{b} {e:.3e}")).collect();
        eprintln!("  max abs error to the f64 forward: tch fp32 {e_tch:.3e}, {}; bound {bound:.3e}", list.join(", "));
        for (b, e) in errs {
            assert!(e <= bound, "{tag}: {b} fp32 max abs error to the f64 forward {e:.3e} above {bound:.3e} (tch fp32: {e_tch:.3e})\n{table}");
        }
    }
    Outcome { rows, file }
}

/// fp32 and fp16 parity on one input; returns the exported files.
pub fn check_both(tag: &str, ckpt: &Path, cfg: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>, dir: &Path) -> Vec<PathBuf> {
    let a = check_parity(tag, ckpt, cfg, opts, x, dir);
    let b = check_parity(tag, ckpt, cfg, &ExportOptions { fp16: true, ..opts.clone() }, x, dir);
    vec![a.file, b.file]
}

/// `onnx.checker.check_model(onnx.load(f), full_check=True)` for every file.
/// Fails (never skips) when PRETEXT_PYTHON is unset or python fails.
pub fn onnx_check(files: &[PathBuf]) {
    let py = std::env::var("PRETEXT_PYTHON").expect("PRETEXT_PYTHON must point at the venv python (set by .cargo/config.toml from scripts/setup.sh)");
    let script = "import sys, onnx\nfor f in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(f), full_check=True)\n    print('ok', f)\n";
    let out = std::process::Command::new(&py).arg("-c").arg(script).args(files).output().unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    assert!(out.status.success(), "onnx.checker failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("ok ")).count(), files.len());
}

/// The tch forward (eval) of the backbone features with every op in `kind`
/// (`Kind::Double`: the function every fp32 implementation (tch, tract, ORT)
/// approximates, with ~1e-16 relative rounding instead of ~6e-8, so each one's
/// own fp32 error can be measured). `f16_weights`: every float parameter and
/// buffer rounded to fp16 first (what an fp16 file stores, before any fp16
/// arithmetic).
///
/// # Shapes
/// `x`: (N, 3, H, W) -> (N, D)
pub fn tch_features(ckpt: &Path, cfg: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>, kind: Kind, f16_weights: bool) -> ndarray::ArrayD<f64> {
    let ck = pretext_exporter::Checkpoint::load(ckpt).unwrap();
    let r = pretext_exporter::resolve(cfg, &ck, opts).unwrap();
    let mut bp = Params::new(r.backbone.params(), Device::Cpu);
    bp.load_safetensors(ckpt, &opts.prefix, false).unwrap();
    if f16_weights {
        tch::no_grad(|| {
            for (_, t) in bp.all() {
                if t.kind() == Kind::Float {
                    t.shallow_clone().copy_(&t.to_kind(Kind::Half).to_kind(Kind::Float));
                }
            }
        });
    }
    bp.vs.set_kind(kind);
    let xt = to_tensor(x).to_kind(kind);
    let f = tch::no_grad(|| r.backbone.forward_features(&mut TchOps::new(&bp, false), &xt));
    assert_eq!(f.kind(), kind, "every op ran in {kind:?}");
    let shape: Vec<usize> = f.size().iter().map(|&d| d as usize).collect();
    let v: Vec<f64> = Vec::try_from(f.to_kind(Kind::Double).contiguous().flatten(0, -1)).unwrap();
    ndarray::ArrayD::from_shape_vec(shape, v).unwrap()
}

/// max |a - b| with `a` in f32 and `b` in f64; +inf on a non-finite value.
pub fn max_abs_f64(a: &ArrayD<f32>, b: &ndarray::ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    pretext_runtime::compare::max_abs_diff(a, b)
}

/// The smallest per-row cosine between an f32 and an f64 (N, D) array; -inf on a non-finite value.
pub fn min_cosine_f64(a: &ArrayD<f32>, b: &ndarray::ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let row = a.len() / a.shape()[0].max(1);
    pretext_runtime::compare::min_cosine(a.as_slice().unwrap(), b.as_slice().unwrap(), row)
}

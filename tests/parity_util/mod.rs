//! Shared helpers of the parity tests: random and briefly trained
//! checkpoints (tch), real images, export + tch/tract/ORT comparison, and
//! `onnx.checker.check_model(full_check=True)` through the venv python.
#![allow(dead_code)]

#[path = "../../src/cmd_export/verify.rs"]
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use pretext_exporter::{ExportOptions, CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD};
use pretext_models::{Backbone, BackboneConfig, MlpHead, ParamKind};
use pretext_trainer::{Params, TchOps};
use tch::{nn::OptimizerConfig, Device, Kind, Tensor};

/// fp32 tolerance: max abs error between tch and each ONNX backend.
pub const TOL_F32: f32 = 1e-4;
/// fp16 tolerance: minimum per-sample cosine.
pub const MIN_COS_F16: f32 = 0.999;

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
    let mut blobs: BTreeMap<String, pretext_trainer::backend::Blob> = bp.to_named_blobs("");
    for hp in &hps {
        blobs.extend(hp.to_named_blobs(""));
    }
    let meta = HashMap::from([("pretext.arch".to_string(), serde_json::to_string(cfg).unwrap())]);
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
    check_parity_cos(tag, ckpt, cfg, opts, x, dir, MIN_COS_F16)
}

/// [`check_parity`] with an explicit fp16 cosine bound. fp32: max abs error
/// <= 1e-4 x max(1, max |reference|): outputs of deep random-init networks
/// reach |3..20|, where fp32 kernels (tract vs ORT alike) already differ by
/// up to ~3e-4.
pub fn check_parity_cos(tag: &str, ckpt: &Path, cfg: &BackboneConfig, opts: &ExportOptions, x: &ArrayD<f32>, dir: &Path, min_cos: f32) -> Outcome {
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
    for r in &rows {
        if opts.fp16 {
            assert!(r.cosine >= min_cos, "{tag}: fp16 cosine below {min_cos}\n{table}");
        } else {
            let tol = TOL_F32 * r.ref_max.max(1.0);
            assert!(r.max_abs <= tol, "{tag}: fp32 max abs error above {tol:e}\n{table}");
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

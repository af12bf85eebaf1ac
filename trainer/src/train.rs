//! The training loop: data order and augmentations seeded per (seed, epoch,
//! index), schedules as functions of the step, non-finite loss as an error
//! that leaves the last good checkpoint, atomic checkpoints, JSON-lines
//! metrics, k-NN curves, PNG plots, and exact `--resume`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pretext_data::augment::Resolution;
use pretext_data::preprocess::EvalTransform;
use pretext_models::{Backbone, BackboneConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use pretext_models::tensorfile::{PretextMeta, TensorFileError};
use crate::eval::{self, ImageSet};
use crate::methods::{self, ConfigError, Method, MethodConfig, MethodError, Range, StepCtx};
use crate::optim::{Optimizer, OptimizerKind, Slot};
use crate::schedule;

/// Everything a run depends on; saved as `config.toml` in the run dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub method: MethodConfig,
    /// CLI backbone name (`resnet18-cifar`), with optional width override.
    pub backbone: String,
    pub width: Option<i64>,
    /// ViT depth override (blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    pub data: PathBuf,
    pub out: PathBuf,
    pub epochs: u64,
    pub batch_size: usize,
    /// Peak learning rate (already scaled for the batch size).
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub final_weight_decay: f64,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    /// Max global gradient norm; 0 = off.
    pub clip_grad: f64,
    pub seed: u64,
    pub device: String,
    /// Stop (with a checkpoint) after this many minutes; 0 = no limit.
    pub max_minutes: f64,
    /// k-NN every this many epochs (fractional allowed); 0 = only at start and end; negative = never.
    pub knn_every: f64,
    /// Training images used for the k-NN gallery (0 = all).
    pub knn_train: usize,
    /// Use the first N training images only (0 = all).
    pub limit: usize,
    /// Checkpoint every N steps (0 = each epoch end only).
    pub checkpoint_every: u64,
    /// Stop after this many steps in this invocation (0 = no limit); for tests.
    pub stop_after: u64,
    pub threads: i32,
    /// Student weights (backbone + heads, by parameter name) loaded over the
    /// random init of a fresh run; the teacher is then copied from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_weights: Option<PathBuf>,
    /// Truncated or corrupt image files in `data`: `error` (stop, naming them) or
    /// `skip` (train without them, listing them on stderr).
    #[serde(default)]
    pub on_bad_image: pretext_data::OnBadImage,
}

impl TrainConfig {
    /// The method's defaults (its config, optimizer, lr and weight decay, from
    /// its registry entry) and the run's, for `backbone` at its preset size.
    pub fn defaults(method: &str, backbone: &str) -> Result<Self, TrainError> {
        let bc = BackboneConfig::from_name(backbone).map_err(|_| ConfigError::new("backbone", backbone, format!("one of {}", pretext_models::BACKBONE_NAMES.join(", "))))?;
        let b = Backbone::new(&bc);
        let m = MethodConfig::defaults(method, b.embed_dim())?;
        let o = m.spec().optimizer;
        let (opt, lr, wd) = (o.kind, o.lr, o.weight_decay);
        Ok(Self {
            method: m,
            backbone: backbone.into(),
            width: None,
            depth: None,
            data: PathBuf::new(),
            out: PathBuf::from("runs/default"),
            epochs: 10,
            batch_size: 256,
            lr,
            min_lr: 0.0,
            warmup_epochs: 0.0,
            weight_decay: wd,
            final_weight_decay: wd,
            optimizer: opt,
            momentum: 0.9,
            clip_grad: 0.0,
            seed: 0,
            device: "cpu".into(),
            max_minutes: 0.0,
            knn_every: 0.0,
            knn_train: 0,
            limit: 0,
            checkpoint_every: 0,
            stop_after: 0,
            threads: 0,
            init_weights: None,
            on_bad_image: pretext_data::OnBadImage::Error,
        })
    }

    /// Sets the ResNet width (`None`: the preset's) and sizes the method's
    /// heads for the backbone's embed dim at that width, by the preset's rule
    /// (the method's defaults that depend on the embed dim); explicit head sizes are set after this.
    pub fn with_width(mut self, width: Option<i64>) -> Result<Self, TrainError> {
        self.width = width;
        let d = Backbone::new(&self.backbone_config()?).embed_dim();
        self.method.resize_heads(d);
        Ok(self)
    }

    pub fn backbone_config(&self) -> Result<BackboneConfig, TrainError> {
        let mut c = BackboneConfig::from_name(&self.backbone).map_err(|_| ConfigError::new("backbone", &self.backbone, format!("one of {}", pretext_models::BACKBONE_NAMES.join(", "))))?;
        match (self.width, &mut c) {
            (Some(w), BackboneConfig::Resnet(r)) if w >= 1 && w <= 4096 => r.width = w,
            (Some(w), BackboneConfig::Resnet(_)) => return Err(ConfigError::new("width", w, "an integer in [1, 4096]").into()),
            (Some(w), _) => return Err(ConfigError::new("width", w, format!("no width: it applies to ResNets only, not {}", self.backbone)).into()),
            (None, _) => {}
        }
        match (self.depth, &mut c) {
            (Some(d), BackboneConfig::Vit(_)) if d == 0 || d > 64 => return Err(ConfigError::new("depth", d, "an integer in [1, 64]").into()),
            (Some(d), BackboneConfig::Vit(v)) => *v = v.clone().with_depth(d),
            (Some(d), _) => return Err(ConfigError::new("depth", d, format!("no depth: it applies to ViTs only, not {}", self.backbone)).into()),
            (None, _) => {}
        }
        Ok(c)
    }

    /// Refuses every nonsensical setting, naming the field, its value and the
    /// allowed range, before libtorch sees any of them. The batch size against
    /// the data is checked by [`train`] once the data is open.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bc = self.backbone_config()?;
        self.method.validate(&Backbone::new(&bc))?;
        let num = |field: &str, v: f64, r: Range| r.check(field, v, false);
        let int = |field: &str, v: f64, r: Range| r.check(field, v, true);
        int("epochs", self.epochs as f64, Range::at_least(1.0))?;
        int("batch_size", self.batch_size as f64, Range::at_least(1.0))?;
        num("lr", self.lr, Range::at_least(0.0))?;
        num("min_lr", self.min_lr, Range::at_least(0.0))?;
        num("warmup_epochs", self.warmup_epochs, Range::closed(0.0, self.epochs as f64))?;
        num("weight_decay", self.weight_decay, Range::at_least(0.0))?;
        num("final_weight_decay", self.final_weight_decay, Range::at_least(0.0))?;
        num("momentum", self.momentum, Range::closed(0.0, 1.0))?;
        num("clip_grad", self.clip_grad, Range::at_least(0.0))?;
        num("max_minutes", self.max_minutes, Range::at_least(0.0))?;
        if !self.knn_every.is_finite() {
            return Err(ConfigError::new("knn_every", self.knn_every, "a finite number of epochs (0: at the start and end only, negative: never)").into());
        }
        int("threads", self.threads as f64, Range::at_least(0.0))?;
        if self.data.as_os_str().is_empty() {
            return Err(ConfigError::new("data", "(empty)", "a dataset path (e.g. ../shared/data/cifar10-jpg.tar.gz)").into());
        }
        self.device()?;
        Ok(())
    }

    pub fn device(&self) -> Result<Device, TrainError> {
        crate::device::parse_device(&self.device)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Setting(#[from] ConfigError),
    #[error(transparent)]
    Method(#[from] MethodError),
    #[error(transparent)]
    Checkpoint(#[from] TensorFileError),
    #[error("data: {0}")]
    Data(String),
    #[error("non-finite loss {loss} at step {step} (epoch {epoch}); stopped. The last good checkpoint is {checkpoint}")]
    NonFinite { loss: f64, step: u64, epoch: u64, checkpoint: String },
    #[error("--init-weights: {0}")]
    InitWeights(TensorFileError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The learning-rate and weight-decay schedules and the gradient clipping of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSchedule {
    /// Peak learning rate, after `warmup_steps` of linear warmup, cosine to `min_lr`.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    /// Weight decay, cosine from `weight_decay` to `final_weight_decay`.
    pub weight_decay: f64,
    pub final_weight_decay: f64,
    /// Max global gradient norm; 0 = off.
    pub clip_grad: f64,
}

impl StepSchedule {
    /// Constant lr and weight decay, no clipping.
    pub fn constant(lr: f64, weight_decay: f64) -> Self {
        Self { lr, min_lr: lr, warmup_steps: 0, weight_decay, final_weight_decay: weight_decay, clip_grad: 0.0 }
    }
    pub fn lr(&self, ctx: &StepCtx) -> f64 {
        schedule::warmup_cosine(ctx.step, ctx.total_steps, self.warmup_steps, self.lr, self.min_lr)
    }
    pub fn weight_decay(&self, ctx: &StepCtx) -> f64 {
        schedule::cosine(ctx.step, ctx.total_steps, self.weight_decay, self.final_weight_decay)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Method(#[from] MethodError),
    #[error("non-finite loss {0}")]
    NonFinite(f64),
}

/// A method, its optimizer (over every student tensor) and its schedules:
/// the one training step of `pretext train`, `pretext bench`, the examples
/// and the step-equivalence tests.
pub struct Trainer {
    pub method: Box<dyn Method>,
    pub opt: Optimizer,
    pub schedule: StepSchedule,
}

impl Trainer {
    pub fn new(method: Box<dyn Method>, kind: OptimizerKind, momentum: f64, schedule: StepSchedule) -> Self {
        let mut slots = Vec::new();
        for (prefix, p) in method.students() {
            for (s, t) in p.trainable() {
                slots.push(Slot::new(format!("{prefix}{}", s.name), t.shallow_clone(), s.kind));
            }
        }
        let mut opt = Optimizer::new(kind, slots);
        opt.momentum = momentum;
        Self { method, opt, schedule }
    }

    /// zero_grad, momentum updates due before the loss, loss, non-finite
    /// check, backward, clipping, freezing, optimizer step, momentum updates
    /// due after it, then the method's `after_step`. Returns the loss. The
    /// gradients stay on the tensors until the next step.
    pub fn step(&mut self, views: &[Tensor], ctx: &StepCtx) -> Result<f64, StepError> {
        let (lr, wd) = (self.schedule.lr(ctx), self.schedule.weight_decay(ctx));
        self.opt.zero_grad();
        for m in self.method.momentum().iter().filter(|m| m.before_loss) {
            methods::ema_update(m.teacher, m.student, m.tau_at(ctx));
        }
        let loss = self.method.loss(views, ctx)?;
        let lv = loss.double_value(&[]);
        if !lv.is_finite() {
            return Err(StepError::NonFinite(lv));
        }
        loss.backward();
        if self.schedule.clip_grad > 0.0 {
            self.opt.clip_grad_norm(self.schedule.clip_grad);
        }
        self.opt.freeze(&self.method.frozen(ctx));
        self.opt.step(lr, wd);
        for m in self.method.momentum().iter().filter(|m| !m.before_loss) {
            methods::ema_update(m.teacher, m.student, m.tau_at(ctx));
        }
        self.method.after_step(ctx);
        Ok(lv)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.into(), source }
}

/// A labelled image set in memory.
pub struct Split {
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl Split {
    pub fn images(&self) -> ImageSet<'_> {
        ImageSet { pixels: &self.pixels, n: self.n, h: self.h, w: self.w }
    }

    /// `k` images evenly strided over the split (class-balanced when the
    /// split is sorted by class, as image folders are); all when `k` is 0 or too big.
    pub fn subset(&self, k: usize) -> Split {
        if k == 0 || k >= self.n {
            return Split { pixels: self.pixels.clone(), labels: self.labels.clone(), n: self.n, h: self.h, w: self.w };
        }
        let s = self.h * self.w * 3;
        let idx: Vec<usize> = (0..k).map(|i| i * self.n / k).collect();
        let pixels = idx.iter().flat_map(|&i| self.pixels[i * s..(i + 1) * s].iter().copied()).collect();
        let labels = if self.labels.is_empty() { vec![] } else { idx.iter().map(|&i| self.labels[i]).collect() };
        Split { pixels, labels, n: k, h: self.h, w: self.w }
    }
}

/// Loads `train` and `test` splits through the data crate. Image files that
/// do not decode fail the load, naming them, or with
/// [`OnBadImage::Skip`](pretext_data::OnBadImage) are left out and listed on stderr.
pub fn load_splits(path: &Path, on_bad_image: pretext_data::OnBadImage) -> Result<(Split, Option<Split>, String), TrainError> {
    let bar = pretext_data::progress::Progress::new("decode", 0);
    let opts = pretext_data::OpenOptions { progress: Some(bar.callback()), on_bad_image, ..Default::default() };
    let ds = pretext_data::Dataset::open(path, &opts).map_err(|e| TrainError::Data(e.to_string()))?;
    bar.finish_and_clear();
    let bad = ds.unreadable();
    if !bad.is_empty() {
        const SHOWN: usize = 100;
        eprintln!("skipping {} image file{} of {} that do{} not decode:", bad.len(), if bad.len() == 1 { "" } else { "s" }, path.display(), if bad.len() == 1 { "es" } else { "" });
        for u in bad.iter().take(SHOWN) {
            eprintln!("  {}: {}", u.file, u.reason);
        }
        if bad.len() > SHOWN {
            eprintln!("  ... and {} more (`pretext data inspect` lists them all)", bad.len() - SHOWN);
        }
    }
    let get = |name: &str| -> Result<Option<Split>, TrainError> {
        let Some(s) = ds.split(name) else { return Ok(None) };
        let (px, [n, h, w, _]) = s.images_nhwc().ok_or_else(|| TrainError::Data(format!("{}: split '{name}' has images of different sizes", path.display())))?;
        Ok(Some(Split { pixels: px.to_vec(), labels: s.labels(), n, h, w }))
    };
    let train = match get("train")? {
        Some(t) => t,
        None => get("all")?.ok_or_else(|| TrainError::Data(format!("{}: no 'train' split (found {:?})", path.display(), ds.split_names())))?,
    };
    Ok((train, get("test")?, ds.name().to_string()))
}

/// The eval transform for a backbone at its input size (for 32-px CIFAR: normalize only).
pub fn eval_transform(size: i64) -> EvalTransform {
    let s = size as u32;
    let resize = if s <= 32 { s } else { (s as f64 / 0.875).round() as u32 };
    EvalTransform { resize, crop: s, mean: pretext_data::augment::IMAGENET_MEAN, std: pretext_data::augment::IMAGENET_STD }
}

/// One line of metrics.jsonl.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub step: u64,
    pub epoch: f64,
    pub minutes: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn20: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn200: Option<f64>,
}

/// Outcome of [`train`].
pub struct Summary {
    pub steps: u64,
    pub finished: bool,
    pub last_knn: Option<(f64, f64)>,
    pub images_per_s: f64,
}

fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<u64> {
    let mut idx: Vec<u64> = (0..n as u64).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch));
    idx.shuffle(&mut rng);
    idx
}

/// Trains (or resumes) the run described by `cfg`.
pub fn train(cfg: &TrainConfig, resume: bool, progress: bool) -> Result<Summary, TrainError> {
    cfg.validate()?;
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads);
    }
    let device = cfg.device()?;
    let out = &cfg.out;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let toml = toml::to_string(cfg).map_err(|e| TrainError::Config(e.to_string()))?;
    crate::backend::atomic_write(&out.join("config.toml"), toml.as_bytes()).map_err(io(out))?;

    let (full_train, test_split, dataset_name) = load_splits(&cfg.data, cfg.on_bad_image)?;
    let train_split = full_train.subset(cfg.limit);
    let gallery = full_train.subset(cfg.knn_train);
    drop(full_train);
    let n = train_split.n;
    if n < cfg.batch_size {
        let what = if cfg.limit > 0 { format!("at most the {n} training images kept by limit = {}", cfg.limit) } else { format!("at most the {n} training images of {}", cfg.data.display()) };
        return Err(ConfigError::new("batch_size", cfg.batch_size, format!("an integer in [1, {n}]: {what}")).into());
    }
    let bc = cfg.backbone_config()?;
    let size = bc.default_image_size() as usize;
    let res = if size <= 64 { Resolution::Cifar } else { Resolution::Imagenet };
    let pipeline = cfg.method.pipeline(res, size);
    pipeline.validate().map_err(|e| TrainError::Config(format!("{} augmentation: {e}", cfg.method.name())))?;

    tch::manual_seed(cfg.seed as i64);
    // A memory bank of size 0 (NPID's default) holds one row per training image.
    let mut method_cfg = cfg.method.clone();
    if method_cfg.value("bank_size") == Some(0.0) {
        method_cfg.set("bank_size", &n.to_string())?;
    }
    let method = methods::build(&method_cfg, Backbone::new(&bc), device)?;
    if let Some(path) = &cfg.init_weights {
        load_init_weights(method.as_ref(), path).map_err(TrainError::InitWeights)?;
    }
    let steps_per_epoch = (n / cfg.batch_size) as u64;
    let total = steps_per_epoch * cfg.epochs;
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f64) as u64;
    let schedule = StepSchedule { lr: cfg.lr, min_lr: cfg.min_lr, warmup_steps: warmup, weight_decay: cfg.weight_decay, final_weight_decay: cfg.final_weight_decay, clip_grad: cfg.clip_grad };
    let mut trainer = Trainer::new(method, cfg.optimizer, cfg.momentum, schedule);
    let (method, opt) = (&mut trainer.method, &mut trainer.opt);
    let ckpt_path = out.join("checkpoint.safetensors");
    let mut start = 0u64;
    let mut minutes_before = 0.0;
    if resume && ckpt_path.exists() {
        let ck = checkpoint::load(&ckpt_path)?;
        for (name, t) in checkpoint_tensors(method.as_ref(), &opt) {
            ck.copy_into(&name, &t)?;
        }
        for (k, t) in &ck.tensors {
            if let Some(key) = k.strip_prefix("optim.") {
                opt.state.insert(key.to_string(), t.to_device(device));
            }
        }
        let step = ck.meta_str("step")?;
        start = step.parse().map_err(|e| TensorFileError::Meta { path: ckpt_path.clone(), key: "step".into(), value: step.into(), reason: format!("{e}") })?;
        opt.steps = ck.meta_str("optim_steps")?.parse().unwrap_or(start as i64);
        minutes_before = ck.meta_str("minutes").ok().and_then(|m| m.parse().ok()).unwrap_or(0.0);
        eprintln!("resuming {} at step {start} (epoch {})", out.display(), start / steps_per_epoch);
    } else if !resume {
        // A fresh run truncates old metrics.
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
    }

    let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(out.join("metrics.jsonl")).map_err(io(out))?;
    let t0 = Instant::now();
    // Training minutes: wall time minus the time spent in k-NN evaluations.
    let eval_secs = std::cell::Cell::new(0.0f64);
    let minutes = |t0: &Instant| minutes_before + (t0.elapsed().as_secs_f64() - eval_secs.get()) / 60.0;
    let run_knn = |method: &dyn methods::Method| -> Result<Option<(f64, f64)>, TrainError> {
        let Some(test) = &test_split else { return Ok(None) };
        let te = Instant::now();
        let t = eval_transform(size as i64);
        let p = method.students()[0].1;
        let ftr = eval::features(method.backbone(), p, gallery.images(), &t, 512, device).map_err(|e| TrainError::Data(e.to_string()))?;
        let fte = eval::features(method.backbone(), p, test.images(), &t, 512, device).map_err(|e| TrainError::Data(e.to_string()))?;
        let acc = eval::knn_accuracy(&ftr, &gallery.labels, &fte, &test.labels, &eval::KNN_SETTINGS, 1000);
        eval_secs.set(eval_secs.get() + te.elapsed().as_secs_f64());
        Ok(Some((acc[0], acc[1])))
    };
    let mut last_knn = None;
    let log = |m: &Metric, f: &mut std::fs::File| -> Result<(), TrainError> {
        let line = serde_json::to_string(m).map_err(|e| TrainError::Data(format!("metrics line: {e}")))?;
        writeln!(f, "{line}").map_err(io(out))
    };
    if start == 0 && cfg.knn_every >= 0.0 && test_split.is_some() {
        let k = run_knn(method.as_ref())?;
        if let Some((a, b)) = k {
            log(&Metric { step: 0, epoch: 0.0, minutes: minutes(&t0), loss: None, lr: None, images_per_s: None, knn20: Some(a), knn200: Some(b) }, &mut metrics)?;
            last_knn = k;
        }
    }
    let knn_period = if cfg.knn_every > 0.0 { ((cfg.knn_every * steps_per_epoch as f64) as u64).max(1) } else { u64::MAX };
    let bar = if progress { pretext_data::progress::Progress::new("train", total) } else { pretext_data::progress::Progress::hidden() };
    bar.set_position(start);

    // Augmentation runs one batch ahead on a producer thread.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Result<Vec<Vec<f32>>, pretext_data::augment::AugmentError>, Vec<i64>)>(2);
    let producer = {
        let pipeline = pipeline.clone();
        let pixels = train_split.pixels.clone();
        let (h, w, bs, seed) = (train_split.h, train_split.w, cfg.batch_size, cfg.seed);
        std::thread::spawn(move || {
            let mut order_epoch = u64::MAX;
            let mut order = Vec::new();
            for step in start..total {
                let epoch = step / steps_per_epoch;
                if epoch != order_epoch {
                    order = epoch_order(n, seed, epoch);
                    order_epoch = epoch;
                }
                let i = (step % steps_per_epoch) as usize;
                let idx = &order[i * bs..(i + 1) * bs];
                let imgs: Vec<&[u8]> = idx.iter().map(|&j| &pixels[j as usize * h * w * 3..(j as usize + 1) * h * w * 3]).collect();
                let views = pipeline.batch(&imgs, h, w, seed, epoch, idx);
                let failed = views.is_err();
                if tx.send((step, views, idx.iter().map(|&j| j as i64).collect())).is_err() || failed {
                    return;
                }
            }
        })
    };

    let mut images = 0usize;
    let t_train = Instant::now();
    let eval_at_start = eval_secs.get();
    let train_secs = || (t_train.elapsed().as_secs_f64() - (eval_secs.get() - eval_at_start)).max(1e-9);
    let mut step = start;
    let mut finished = true;
    let mut loss_acc = (0.0, 0usize);
    while step < total {
        let (s, views, indices) = rx.recv().map_err(|_| TrainError::Data("augmentation thread stopped".into()))?;
        let views = views.map_err(|e| TrainError::Data(format!("augmenting step {s}: {e}")))?;
        debug_assert_eq!(s, step);
        let xs: Vec<Tensor> = views
            .iter()
            .zip(&pipeline.views)
            .map(|(v, spec)| Tensor::from_slice(v).reshape([cfg.batch_size as i64, 3, spec.size as i64, spec.size as i64]).to_device(device))
            .collect();
        tch::manual_seed((cfg.seed.wrapping_mul(1_000_000_007).wrapping_add(step)) as i64);
        let ctx = StepCtx { step, total_steps: total, epoch: step / steps_per_epoch };
        trainer.method.set_batch_indices(Tensor::from_slice(&indices).to_device(device));
        let lr = trainer.schedule.lr(&ctx);
        let lv = match trainer.step(&xs, &ctx) {
            Ok(l) => l,
            Err(StepError::NonFinite(loss)) => {
                bar.abandon();
                return Err(TrainError::NonFinite { loss, step, epoch: step / steps_per_epoch, checkpoint: if ckpt_path.exists() { ckpt_path.display().to_string() } else { "none (no checkpoint was written yet)".into() } });
            }
            Err(StepError::Method(e)) => return Err(e.into()),
        };
        let (method, opt) = (&trainer.method, &trainer.opt);
        step += 1;
        images += cfg.batch_size;
        loss_acc.0 += lv;
        loss_acc.1 += 1;
        let ips = images as f64 / train_secs();
        bar.set_position(step);
        bar.set_message(format!("loss {lv:.4} lr {lr:.4} {ips:.0} img/s"));
        let epoch_end = step.is_multiple_of(steps_per_epoch);
        let out_of_time = cfg.max_minutes > 0.0 && minutes(&t0) >= cfg.max_minutes;
        let stop_now = cfg.stop_after > 0 && step - start >= cfg.stop_after;
        if step.is_multiple_of(20) || epoch_end || step == total || out_of_time || stop_now {
            let m = Metric { step, epoch: step as f64 / steps_per_epoch as f64, minutes: minutes(&t0), loss: Some(loss_acc.0 / loss_acc.1.max(1) as f64), lr: Some(lr), images_per_s: Some(ips), knn20: None, knn200: None };
            loss_acc = (0.0, 0);
            log(&m, &mut metrics)?;
        }
        if cfg.knn_every >= 0.0 && (step.is_multiple_of(knn_period) || step == total || out_of_time) {
            if let Some((a, b)) = run_knn(method.as_ref())? {
                let m = Metric { step, epoch: step as f64 / steps_per_epoch as f64, minutes: minutes(&t0), loss: None, lr: None, images_per_s: None, knn20: Some(a), knn200: Some(b) };
                log(&m, &mut metrics)?;
                last_knn = Some((a, b));
            }
        }
        let ck_due = (cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every)) || epoch_end || step == total || out_of_time || stop_now;
        if ck_due {
            // A step can leave finite loss but overflowed weights: never checkpoint those.
            let bad = opt.slots.iter().find(|s| s.param.isfinite().all().int64_value(&[]) == 0).map(|s| s.name.clone());
            if let Some(name) = bad {
                bar.abandon();
                return Err(TrainError::NonFinite { loss: f64::NAN, step, epoch: step / steps_per_epoch, checkpoint: format!("{} (weights '{name}' became non-finite)", if ckpt_path.exists() { ckpt_path.display().to_string() } else { "none".into() }) });
            }
            save_checkpoint(cfg, method.as_ref(), &opt, step, minutes(&t0), &dataset_name)?;
        }
        if out_of_time || stop_now {
            finished = step == total;
            break;
        }
    }
    drop(rx);
    let _ = producer.join();
    bar.finish();
    plot_metrics(out)?;
    Ok(Summary { steps: step, finished, last_knn, images_per_s: images as f64 / train_secs() })
}

/// Loads every student store (each under its checkpoint prefix, e.g.
/// `decoder.` for MAE) from `path` by name, then re-copies the teacher from the
/// student. Missing tensors, wrong shapes and tensors no store has are errors.
pub fn load_init_weights(method: &dyn methods::Method, path: &Path) -> Result<(), TensorFileError> {
    let students = method.students();
    let known: std::collections::HashSet<String> = students.iter().flat_map(|(prefix, p)| p.specs.iter().map(move |s| format!("{prefix}{}", s.name))).collect();
    let mut unknown = std::collections::BTreeSet::new();
    for (prefix, p) in &students {
        unknown.extend(p.load_safetensors(path, prefix, false)?.into_iter().filter(|k| !known.contains(k)));
    }
    if !unknown.is_empty() {
        return Err(TensorFileError::Unexpected { path: path.into(), n: unknown.len(), examples: unknown.into_iter().take(5).collect() });
    }
    if let Some(t) = method.teacher() {
        t.copy_from(students[0].1);
    }
    Ok(())
}

/// Every tensor that a checkpoint holds, by checkpoint name.
fn checkpoint_tensors(method: &dyn methods::Method, _opt: &Optimizer) -> Vec<(String, Tensor)> {
    let mut v = Vec::new();
    for (prefix, p) in method.students() {
        v.extend(checkpoint::named(&format!("student.{prefix}"), p));
    }
    if let Some(t) = method.teacher() {
        v.extend(checkpoint::named("teacher.", t));
    }
    for (k, t) in method.state() {
        v.push((format!("state.{k}"), t));
    }
    v
}

/// Writes `checkpoint.safetensors` (+ `.json`) and `backbone.safetensors`.
pub fn save_checkpoint(cfg: &TrainConfig, method: &dyn methods::Method, opt: &Optimizer, step: u64, minutes: f64, dataset: &str) -> Result<(), TrainError> {
    let mut tensors = checkpoint_tensors(method, opt);
    for (k, t) in &opt.state {
        tensors.push((format!("optim.{k}"), t.shallow_clone()));
    }
    let cfg_json = serde_json::to_string(cfg).expect("config serialises");
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), step.to_string());
    meta.insert("optim_steps".to_string(), opt.steps.to_string());
    meta.insert("minutes".to_string(), format!("{minutes}"));
    meta.insert("config".to_string(), cfg_json);
    meta.insert("rng".to_string(), format!("{{\"seed\":{},\"next_step\":{step}}}", cfg.seed));
    // The exportable backbone: plain torchvision/timm names, arch in the metadata.
    let p = method.students()[0].1;
    let names: std::collections::HashSet<String> = method.backbone().params().into_iter().map(|s| s.name).collect();
    let bt: Vec<(String, Tensor)> = p.all().into_iter().filter(|(s, _)| names.contains(&s.name)).map(|(s, t)| (s.name.clone(), t.shallow_clone())).collect();
    // The eval preprocessing this run's k-NN used, so `pretext export` records it for the runtime.
    let size = method.backbone().config().default_image_size();
    let et = eval_transform(size);
    let mut pm = PretextMeta {
        arch: serde_json::to_value(method.backbone().config()).ok(),
        method: Some(method.name().to_string()),
        dataset: Some(dataset.to_string()),
        step: Some(step),
        input_size: Some(size as u32),
        resize: Some(et.resize),
        mean: Some(et.mean),
        std: Some(et.std),
        ..Default::default()
    };
    // Both files export without --arch or --prefix: the checkpoint holds the
    // student (backbone and heads) under `student.`, the backbone file only
    // the backbone, so it lists no heads.
    let backbone_meta = PretextMeta { heads: Some(Default::default()), ..pm.clone() }.to_map();
    pm.heads = Some(method.heads().into_iter().map(|(k, h)| (k, serde_json::to_value(h).unwrap_or_default())).collect());
    pm.prefix = Some("student.".to_string());
    let mut ck_meta = meta;
    ck_meta.extend(pm.to_map());
    checkpoint::save(&cfg.out.join("checkpoint.safetensors"), &tensors, ck_meta)?;
    let json = serde_json::json!({ "step": step, "optim_steps": opt.steps, "minutes": minutes, "seed": cfg.seed, "parts": ["student", "teacher", "optim", "state"], "config": cfg });
    crate::backend::atomic_write(&cfg.out.join("checkpoint.json"), serde_json::to_string_pretty(&json).expect("json").as_bytes()).map_err(io(&cfg.out))?;
    checkpoint::save(&cfg.out.join("backbone.safetensors"), &bt, backbone_meta)?;
    Ok(())
}

/// `loss.png` and `knn.png` from `metrics.jsonl`; `knn.png` draws the
/// step-0 (random-init) accuracies as dashed baselines.
pub fn plot_metrics(out: &Path) -> Result<(), TrainError> {
    use crate::plot::{line_plot, LineChart, Reference, Series};
    let path = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let ms: Vec<Metric> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let loss = [Series { name: "training loss (mean over up to 20 steps)", points: ms.iter().filter_map(|m| m.loss.map(|l| (m.step as f64, l))).collect() }];
    let chart = LineChart { title: "Training loss", x_label: "step", y_label: "loss", series: &loss, references: &[] };
    line_plot(&out.join("loss.png"), &chart, 720, 400).map_err(io(out))?;
    let knn = [
        Series { name: "k=20, T=0.07", points: ms.iter().filter_map(|m| m.knn20.map(|a| (m.minutes, a))).collect() },
        Series { name: "k=200, T=0.1", points: ms.iter().filter_map(|m| m.knn200.map(|a| (m.minutes, a))).collect() },
    ];
    let init = ms.iter().find(|m| m.step == 0 && m.knn20.is_some());
    let refs: Vec<Reference> = init.map(|m| vec![Reference { name: "random init, k=20", y: m.knn20.unwrap_or(f64::NAN) }, Reference { name: "random init, k=200", y: m.knn200.unwrap_or(f64::NAN) }]).unwrap_or_default();
    let chart = LineChart { title: "k-NN top-1 accuracy on the test split", x_label: "training time (minutes, k-NN evaluations excluded)", y_label: "top-1 accuracy (%)", series: &knn, references: &refs };
    line_plot(&out.join("knn.png"), &chart, 720, 400).map_err(io(out))?;
    Ok(())
}

/// Mean of a tensor as f64, for logs.
pub fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

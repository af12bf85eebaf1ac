//! Self-supervised methods behind one [`Method`] trait and one registry
//! ([`build`]). A method is a small composition: a backbone, heads, a loss
//! from [`crate::loss`], optionally a momentum teacher ([`ema_update`]) and
//! state the loss owns (a queue, a center), which is checkpointed.
//!
//! Parameter names: the backbone keeps its plain torchvision/timm names,
//! heads live under `projection_head.*`/`prediction_head.*` (lightly's names),
//! so the backbone can be exported without remapping.
//!
//! The reference each method's step follows (checked one step at a time by
//! `tests/step_equivalence.rs` against `scripts/gen_method_fixtures.py`):
//!
//! | method | heads, loss | step order |
//! |---|---|---|
//! | SimCLR | lightly `SimCLRProjectionHead`, `NTXentLoss` | - |
//! | MoCo v2 | MoCo repo `builder.py` (v2 MLP head, queue) | key encoder EMA *before* the keys (repo, lightly) |
//! | BYOL | lightly BYOL heads, `NegativeCosineSimilarity` | target EMA *after* the step (paper alg. 1) |
//! | SimSiam | lightly `SimSiamProjectionHead` (output BN `affine=False`) | no EMA |
//! | DINO | DINO repo `DINOHead` (weight-normalised last layer), lightly `DINOLoss` | per-epoch teacher temperature, last layer frozen in the first `freeze_last_layer` epochs, EMA and center after the step (repo) |
//! | MAE | MAE repo `models_mae.py` (masking by noise argsort, normalised pixels) | no EMA |

/// The accessors of a method with one student store: `name`, `backbone`
/// (`self.backbone`) and `students` (`self.params`, no prefix); with
/// `teacher`, also `teacher` (`self.teacher`). Expands inside `impl Method`.
macro_rules! student_accessors {
    ($name:literal) => {
        fn name(&self) -> &'static str {
            $name
        }
        fn backbone(&self) -> &pretext_models::Backbone {
            &self.backbone
        }
        fn students(&self) -> Vec<(&'static str, &$crate::backend::Params)> {
            vec![("", &self.params)]
        }
    };
    ($name:literal, teacher) => {
        $crate::methods::student_accessors!($name);
        fn teacher(&self) -> Option<&$crate::backend::Params> {
            Some(&self.teacher)
        }
    };
}
pub(crate) use student_accessors;

pub mod byol;
pub mod dino;
pub mod mae;
pub mod moco;
pub mod simclr;
pub mod simsiam;

use pretext_models::{Backbone, HeadSpec, MlpHead, ParamKind, ParamSpec};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::backend::{Params, TchOps};

/// Method names the registry knows, in CLI spelling.
pub const METHOD_NAMES: &[&str] = &["simclr", "moco_v2", "byol", "simsiam", "dino", "mae"];

/// Where in training a step is; schedules are pure functions of it.
#[derive(Debug, Clone, Copy)]
pub struct StepCtx {
    pub step: u64,
    pub total_steps: u64,
    /// `step / steps_per_epoch`: DINO's teacher temperature and last-layer freeze are per epoch.
    pub epoch: u64,
}

/// Hyper-parameters of the method (heads, temperatures, EMA, queue, masking).
/// Saved in the run's config.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodConfig {
    pub name: String,
    pub proj_hidden: i64,
    pub proj_out: i64,
    pub pred_hidden: i64,
    /// NT-Xent / InfoNCE temperature.
    pub temperature: f64,
    /// MoCo queue length.
    pub queue_size: i64,
    /// EMA tau at step 0; a cosine schedule takes it to 1 at the last step.
    pub tau: f64,
    /// DINO: local crops, output dim, temperatures, center momentum.
    pub n_local: usize,
    pub dino_out: i64,
    pub dino_bottleneck: i64,
    pub teacher_temp: f64,
    /// DINO: the teacher temperature goes linearly from `warmup_teacher_temp`
    /// to `teacher_temp` over the first `warmup_teacher_epochs` epochs
    /// (`np.linspace` per epoch, as in the DINO repo and lightly's `DINOLoss`).
    pub warmup_teacher_temp: f64,
    #[serde(default = "default_warmup_teacher_epochs")]
    pub warmup_teacher_epochs: u64,
    pub student_temp: f64,
    pub center_momentum: f64,
    /// DINO: the head's last layer is not updated during the first N epochs.
    #[serde(default = "default_freeze_last_layer")]
    pub freeze_last_layer: u64,
    /// MAE: masked fraction and decoder size.
    pub mask_ratio: f64,
    pub decoder_dim: i64,
    pub decoder_depth: usize,
    pub decoder_heads: i64,
}

// Defaults for configs saved before these fields existed.
fn default_warmup_teacher_epochs() -> u64 {
    30
}
fn default_freeze_last_layer() -> u64 {
    1
}

impl MethodConfig {
    /// Paper defaults, with head sizes scaled to the backbone width.
    pub fn preset(name: &str, embed_dim: i64) -> Result<Self, MethodError> {
        let name = canonical(name)?;
        let h = (embed_dim * 4).clamp(64, 2048);
        let mut c = Self {
            name: name.to_string(),
            proj_hidden: embed_dim.max(32),
            proj_out: 128,
            pred_hidden: h,
            temperature: 0.5,
            queue_size: 4096,
            tau: 0.996,
            n_local: 6,
            dino_out: 2048,
            dino_bottleneck: 256,
            teacher_temp: 0.07,
            warmup_teacher_temp: 0.04,
            warmup_teacher_epochs: default_warmup_teacher_epochs(),
            student_temp: 0.1,
            center_momentum: 0.9,
            freeze_last_layer: default_freeze_last_layer(),
            mask_ratio: 0.75,
            decoder_dim: 128,
            decoder_depth: 2,
            decoder_heads: 4,
        };
        match name {
            "moco_v2" => {
                c.temperature = 0.2;
                c.tau = 0.99;
            }
            "byol" => {
                c.proj_hidden = h;
                c.proj_out = 256.min(h);
            }
            "simsiam" => {
                c.proj_hidden = h;
                c.proj_out = h;
                c.pred_hidden = (h / 4).max(16);
            }
            _ => {}
        }
        Ok(c)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    #[error("unknown method '{0}': expected one of {list}", list = METHOD_NAMES.join(", "))]
    Unknown(String),
    #[error("{method} needs a {need} backbone")]
    Backbone { method: String, need: &'static str },
    #[error("{method} expects {expected} views, got {got}")]
    Views { method: String, expected: usize, got: usize },
}

/// The CLI name of a method, accepting common aliases.
pub fn canonical(name: &str) -> Result<&'static str, MethodError> {
    Ok(match name.to_ascii_lowercase().replace('-', "_").as_str() {
        "simclr" => "simclr",
        "moco" | "mocov2" | "moco_v2" => "moco_v2",
        "byol" => "byol",
        "simsiam" => "simsiam",
        "dino" => "dino",
        "mae" => "mae",
        _ => return Err(MethodError::Unknown(name.into())),
    })
}

/// One self-supervised method.
pub trait Method {
    fn name(&self) -> &'static str;
    fn backbone(&self) -> &Backbone;
    /// Trainable stores with the prefix their tensors carry in checkpoints.
    /// The first holds the backbone under its plain names.
    fn students(&self) -> Vec<(&'static str, &Params)>;
    /// The student's heads by export name, which is also their tensors'
    /// prefix in the student store (`projection_head`, `decoder`). Written to
    /// every checkpoint's `pretext.heads`; `pretext export --with-head NAME`
    /// rebuilds a head from it, so every head the method trains is listed.
    fn heads(&self) -> Vec<(String, HeadSpec)>;
    /// The momentum teacher, if any (same names as the student's).
    fn teacher(&self) -> Option<&Params> {
        None
    }
    /// Forward all views in train mode and return the loss.
    fn loss(&mut self, views: &[Tensor], ctx: &StepCtx) -> Result<Tensor, MethodError>;
    /// Trainable tensors (checkpoint names) the optimizer must leave alone
    /// this step, as if they had no gradient (DINO's `cancel_gradients_last_layer`).
    fn frozen(&self, _ctx: &StepCtx) -> Vec<String> {
        vec![]
    }
    /// After the optimizer step: EMA teacher, queue, center.
    fn after_step(&mut self, _ctx: &StepCtx) {}
    /// Fixes the random masking of the next step (MAE; a no-op elsewhere). For step-equivalence tests.
    fn set_mask_noise(&mut self, _noise: Tensor) {}
    /// Loss state (queue, center): live handles, restored by copying into them.
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![]
    }
}

/// Builds a method by name over a backbone, initialising weights from the
/// current tch seed.
pub fn build(config: &MethodConfig, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
    Ok(match canonical(&config.name)? {
        "simclr" => Box::new(simclr::SimClr::new(config, backbone, device)),
        "moco_v2" => Box::new(moco::MocoV2::new(config, backbone, device)),
        "byol" => Box::new(byol::Byol::new(config, backbone, device)),
        "simsiam" => Box::new(simsiam::SimSiam::new(config, backbone, device)),
        "dino" => Box::new(dino::Dino::new(config, backbone, device)),
        "mae" => Box::new(mae::Mae::new(config, backbone, device)?),
        _ => unreachable!("canonical returned an unlisted name"),
    })
}

/// Number of views a method consumes per image.
pub fn num_views(config: &MethodConfig) -> usize {
    match config.name.as_str() {
        "mae" => 1,
        "dino" => 2 + config.n_local,
        _ => 2,
    }
}

pub(crate) fn specs(backbone: &Backbone, heads: &[&MlpHead]) -> Vec<ParamSpec> {
    let mut s = backbone.params();
    for h in heads {
        s.extend(h.params());
    }
    s
}

pub(crate) fn check_views(method: &str, views: &[Tensor], expected: usize) -> Result<(), MethodError> {
    if views.len() < expected {
        return Err(MethodError::Views { method: method.into(), expected, got: views.len() });
    }
    Ok(())
}

/// Backbone features then a head, in train mode.
pub(crate) fn embed(backbone: &Backbone, head: &MlpHead, params: &Params, x: &Tensor) -> Tensor {
    let mut o = TchOps::new(params, true);
    let f = backbone.forward_features(&mut o, x);
    head.forward(&mut o, &f)
}

/// `teacher <- tau * teacher + (1 - tau) * student` over the teacher's
/// trainable tensors (solo-learn's `MomentumUpdater`); BatchNorm buffers of the
/// teacher follow its own forward passes, as in lightly's `update_momentum`.
pub fn ema_update(teacher: &Params, student: &Params, tau: f64) {
    tch::no_grad(|| {
        for (spec, t) in teacher.all() {
            if !matches!(spec.kind, ParamKind::Weight | ParamKind::NoDecay) {
                continue;
            }
            let s = student.get(&spec.name).unwrap_or_else(|| panic!("student lacks teacher tensor '{}'", spec.name));
            let mut t = t.shallow_clone();
            let _ = t.g_mul_scalar_(tau);
            let _ = t.g_add_(&(s * (1.0 - tau)));
        }
    });
}

/// A frozen copy of the student's tensors named in `specs`.
pub(crate) fn momentum_copy(student: &Params, specs: Vec<ParamSpec>, device: Device) -> Params {
    let t = Params::new(specs, device);
    // Channels-last like the students (`copy_` keeps the destination's layout).
    t.use_channels_last();
    tch::no_grad(|| {
        for (s, dst) in t.all() {
            let mut dst = dst.shallow_clone();
            dst.copy_(student.get(&s.name).expect("teacher spec missing in student"));
        }
    });
    t
}

/// A FIFO of keys (MoCo's queue, a memory bank).
pub struct Queue {
    pub keys: Tensor,
    pub ptr: Tensor,
}

impl Queue {
    /// Random unit rows, as in MoCo's initialisation.
    pub fn new(size: i64, dim: i64, device: Device) -> Self {
        let keys = crate::loss::l2_normalize(&Tensor::randn([size, dim], (tch::Kind::Float, device)));
        Self { keys, ptr: Tensor::zeros([1], (tch::Kind::Int64, device)) }
    }

    /// Replaces the oldest rows with `k` (wrapping around).
    pub fn push(&mut self, k: &Tensor) {
        let n = self.keys.size()[0];
        let b = k.size()[0];
        let p = self.ptr.int64_value(&[0]);
        tch::no_grad(|| {
            let idx = (Tensor::arange(b, (tch::Kind::Int64, k.device())) + p).remainder(n);
            let _ = self.keys.index_copy_(0, &idx, &k.detach());
            let _ = self.ptr.fill_((p + b) % n);
        });
    }
}

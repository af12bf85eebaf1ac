//! DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
//! Transformers"): a student matches the centered, sharpened output of an EMA
//! teacher across views; the teacher sees the 2 global crops, the student all
//! crops (multi-crop). Works on ViTs and ResNets.
//!
//! Reference: the DINO repo's `main_dino.py` (`DINOHead`, `DINOLoss`,
//! `cancel_gradients_last_layer`) and lightly's `DINOLoss`: teacher
//! temperature warmed up per epoch, last layer frozen for the first
//! `freeze_last_layer` epochs, EMA teacher and center updated after the step.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Kind, Tensor};

use super::{at_side, check_views, momentum_copy, multi_crop, specs, Method, MethodError, Momentum, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::{loss, schedule};

super::method! {
    name: "dino", aliases: [],
    summary: "DINO: a student matches the centered, sharpened output of an EMA teacher across multi-crop views (Caron et al. 2021)",
    reference: "DINO repo `main_dino.py` (`DINOHead` with weight-normalised last layer, `cancel_gradients_last_layer`), lightly `DINOLoss`; per-epoch teacher temperature, EMA and center after the step",
    optimizer: OptimizerDefaults::ADAMW,
    config(d) {
        /// Hidden width of the head's MLP (at least dino_bottleneck).
        proj_hidden: i64 = d.max(32), Range::at_least(1.0);
        /// Bottleneck dim before the weight-normalised last layer.
        dino_bottleneck: i64 = 256, Range::at_least(1.0);
        /// Output dim (prototypes) of the head.
        dino_out: i64 = 2048, Range::at_least(1.0);
        /// Teacher EMA momentum at step 0, cosine-scheduled to 1.
        tau: f64 = 0.996, Range::closed(0.0, 1.0);
        /// Local crops per image, besides the 2 global crops.
        n_local: usize = 6, Range::closed(0.0, 32.0);
        /// Teacher temperature after the warmup.
        teacher_temp: f64 = 0.07, Range::positive();
        /// Teacher temperature at epoch 0, linear to teacher_temp over warmup_teacher_epochs.
        warmup_teacher_temp: f64 = 0.04, Range::positive();
        /// Epochs of teacher-temperature warmup.
        warmup_teacher_epochs: u64 = 30, Range::at_least(0.0);
        /// Student temperature.
        student_temp: f64 = 0.1, Range::positive();
        /// Momentum of the center of the teacher outputs.
        center_momentum: f64 = 0.9, Range::closed(0.0, 1.0);
        /// Epochs during which the head's last layer is frozen.
        freeze_last_layer: u64 = 1, Range::at_least(0.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        Pipeline::dino(res, size, self.n_local)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Dino::new(self, backbone, device)))
    }
}

/// The checkpoint name of the head's weight-normalised last layer (frozen in the first epochs).
const LAST_LAYER: &str = "projection_head.last_layer.weight";

pub struct Dino {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    teacher: Params,
    pub center: Tensor,
    pending: Vec<Tensor>,
    c: Config,
}

impl Dino {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let head = MlpHead::dino("projection_head", backbone.embed_dim(), c.proj_hidden.max(c.dino_bottleneck), c.dino_bottleneck, c.dino_out);
        let s = specs(&backbone, &[&head]);
        let params = Params::new(s.clone(), device);
        params.use_channels_last();
        let teacher = momentum_copy(&params, s, device);
        let center = Tensor::zeros([1, c.dino_out], (Kind::Float, device));
        Self { backbone, head, params, teacher, center, pending: vec![], c: c.clone() }
    }

    fn forward(&self, params: &Params, views: &[Tensor]) -> Vec<Tensor> {
        // Views of one size go through the backbone together (DINO's MultiCropWrapper);
        // a ViT runs local crops at their resolution with resampled position embeddings.
        multi_crop(views, |x| {
            let mut o = TchOps::new(params, true);
            let f = at_side(&self.backbone, x.size()[3]).forward_features(&mut o, x);
            self.head.forward(&mut o, &f)
        })
    }
}

impl Method for Dino {
    super::student_accessors!("dino", teacher);
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], ctx: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("dino", views, 2)?;
        let t = tch::no_grad(|| self.forward(&self.teacher, &views[..2]));
        let s = self.forward(&self.params, views);
        let tt = schedule::linspace_warmup(ctx.epoch, self.c.warmup_teacher_epochs, self.c.warmup_teacher_temp, self.c.teacher_temp);
        let l = loss::dino(&t, &s, &self.center, tt, self.c.student_temp);
        self.pending = t;
        Ok(l)
    }
    fn frozen(&self, ctx: &StepCtx) -> Vec<String> {
        // The DINO repo keeps the output layer fixed during the first epoch(s) (`--freeze_last_layer`,
        // `cancel_gradients_last_layer`): its help text says that doing so typically helps training.
        if ctx.epoch < self.c.freeze_last_layer {
            vec![LAST_LAYER.to_string()]
        } else {
            vec![]
        }
    }
    fn momentum(&self) -> Vec<Momentum<'_>> {
        // After the optimizer step, as in DINO's `main_dino.py`.
        vec![Momentum { teacher: &self.teacher, student: &self.params, tau: self.c.tau, before_loss: false }]
    }
    fn after_step(&mut self, _: &StepCtx) {
        if !self.pending.is_empty() {
            let c = tch::no_grad(|| loss::dino_center(&self.pending, &self.center, self.c.center_momentum));
            tch::no_grad(|| self.center.copy_(&c));
            self.pending.clear();
        }
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("center".into(), self.center.shallow_clone())]
    }
}

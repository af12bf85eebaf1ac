//! DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
//! Transformers"): a student matches the centered, sharpened output of an EMA
//! teacher across views; the teacher sees the 2 global crops, the student all
//! crops (multi-crop). Works on ViTs and ResNets.
//!
//! Reference: the DINO repo's `main_dino.py` (`DINOHead`, `DINOLoss`,
//! `cancel_gradients_last_layer`) and lightly's `DINOLoss`: teacher
//! temperature warmed up per epoch, last layer frozen for the first
//! `freeze_last_layer` epochs, EMA teacher and center updated after the step.

use pretext_models::{Backbone, HeadSpec, MlpHead, Vit};
use tch::{Device, Kind, Tensor};

use super::{check_views, ema_update, momentum_copy, specs, Method, MethodConfig, MethodError, StepCtx};
use crate::backend::{Params, TchOps};
use crate::{loss, schedule};

/// The checkpoint name of the head's weight-normalised last layer (frozen in the first epochs).
const LAST_LAYER: &str = "projection_head.last_layer.weight";

pub struct Dino {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    teacher: Params,
    pub center: Tensor,
    pending: Vec<Tensor>,
    c: MethodConfig,
}

impl Dino {
    pub fn new(c: &MethodConfig, backbone: Backbone, device: Device) -> Self {
        let head = MlpHead::dino("projection_head", backbone.embed_dim(), c.proj_hidden.max(c.dino_bottleneck), c.dino_bottleneck, c.dino_out);
        let s = specs(&backbone, &[&head]);
        let params = Params::new(s.clone(), device);
        params.use_channels_last();
        let teacher = momentum_copy(&params, s, device);
        let center = Tensor::zeros([1, c.dino_out], (Kind::Float, device));
        Self { backbone, head, params, teacher, center, pending: vec![], c: c.clone() }
    }

    fn forward(&self, params: &Params, views: &[Tensor]) -> Vec<Tensor> {
        // Views of one size go through the backbone together (DINO's MultiCropWrapper).
        let mut out = Vec::new();
        let mut i = 0;
        while i < views.len() {
            let mut j = i + 1;
            while j < views.len() && views[j].size() == views[i].size() {
                j += 1;
            }
            let x = Tensor::cat(&views[i..j], 0);
            let side = x.size()[3];
            // A ViT runs local crops at their resolution with resampled position embeddings.
            let resized;
            let bb = match &self.backbone {
                Backbone::Vit(v) if v.config.img_size != side => {
                    resized = Backbone::Vit(Vit::new(v.config.clone().at_resolution(side)));
                    &resized
                }
                b => b,
            };
            let mut o = TchOps::new(params, true);
            let f = bb.forward_features(&mut o, &x);
            let y = self.head.forward(&mut o, &f);
            out.extend(y.chunk((j - i) as i64, 0));
            i = j;
        }
        out
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
    fn after_step(&mut self, ctx: &StepCtx) {
        // After the optimizer step, as in DINO's `main_dino.py`.
        ema_update(&self.teacher, &self.params, schedule::cosine(ctx.step, ctx.total_steps, self.c.tau, 1.0));
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

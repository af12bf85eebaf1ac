//! DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
//! Transformers"): a student matches the centered, sharpened output of an EMA
//! teacher across views; the teacher sees the 2 global crops, the student all
//! crops (multi-crop). Works on ViTs and ResNets.
//!
//! Reference: the DINO repo's `main_dino.py` (`DINOHead`, `DINOLoss`,
//! `cancel_gradients_last_layer`) and lightly's `DINOLoss`: teacher
//! temperature warmed up per epoch, last layer frozen for the first
//! `freeze_last_layer` epochs, EMA teacher and center updated after the step.

use pretext_models::{Act, Backbone, HeadBlock, Init, MlpHead, ParamKind, ParamSpec, Vit};
use tch::{Device, Kind, Tensor};

use super::{check_views, ema_update, momentum_copy, Method, MethodConfig, MethodError, StepCtx};
use crate::backend::{Params, TchOps};
use crate::{loss, schedule};

/// The DINO head: 3-layer MLP (GELU) to a bottleneck, L2 normalisation, then a
/// weight-normalised linear layer with its norm fixed to 1 (`norm_last_layer=True`).
pub struct DinoHead {
    pub mlp: MlpHead,
    pub last: String,
    pub out_dim: i64,
    pub bottleneck: i64,
}

impl DinoHead {
    pub fn new(path: &str, input: i64, hidden: i64, bottleneck: i64, out_dim: i64) -> Self {
        let mlp = MlpHead::new(path, vec![
            HeadBlock::new(input, hidden, None, Some(Act::Gelu)),
            HeadBlock::new(hidden, hidden, None, Some(Act::Gelu)),
            HeadBlock::new(hidden, bottleneck, None, None),
        ]);
        Self { mlp, last: format!("{path}.last_layer.weight"), out_dim, bottleneck }
    }
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut p = self.mlp.params();
        p.push(ParamSpec::new(&self.last, &[self.out_dim, self.bottleneck], Init::UniformFanIn { fan_in: self.bottleneck }, ParamKind::Weight));
        p
    }
    /// # Shapes
    /// (N, input) -> (N, out_dim)
    pub fn forward(&self, params: &Params, x: &Tensor) -> Tensor {
        let h = self.mlp.forward(&mut TchOps::new(params, true), x);
        let h = loss::l2_normalize(&h);
        let w = params.get(&self.last).expect("DINO last layer");
        h.linear::<Tensor>(&loss::l2_normalize(w), None)
    }
}

pub struct Dino {
    backbone: Backbone,
    head: DinoHead,
    params: Params,
    teacher: Params,
    pub center: Tensor,
    pending: Vec<Tensor>,
    c: MethodConfig,
}

impl Dino {
    pub fn new(c: &MethodConfig, backbone: Backbone, device: Device) -> Self {
        let head = DinoHead::new("projection_head", backbone.embed_dim(), c.proj_hidden.max(c.dino_bottleneck), c.dino_bottleneck, c.dino_out);
        let mut s = backbone.params();
        s.extend(head.params());
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
            let f = bb.forward_features(&mut TchOps::new(params, true), &x);
            let y = self.head.forward(params, &f);
            out.extend(y.chunk((j - i) as i64, 0));
            i = j;
        }
        out
    }
}

impl Method for Dino {
    super::student_accessors!("dino", teacher);
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
            vec![self.head.last.clone()]
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

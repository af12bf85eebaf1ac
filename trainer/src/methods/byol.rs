//! BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): an online network
//! with a predictor regresses the projection of a momentum target network;
//! the target follows the online weights with tau cosine-scheduled 0.996 -> 1.
//!
//! Reference: lightly's `BYOLProjectionHead`/`BYOLPredictionHead` and
//! `NegativeCosineSimilarity`; the step order is the paper's algorithm 1: the
//! target is updated *after* the online optimizer step (lightly's example
//! updates it before the forward, one step earlier).

use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, ema_update, embed, momentum_copy, specs, Method, MethodConfig, MethodError, StepCtx};
use crate::backend::{Params, TchOps};
use crate::{loss, schedule};

pub struct Byol {
    backbone: Backbone,
    proj: MlpHead,
    pred: MlpHead,
    params: Params,
    teacher: Params,
    tau: f64,
}

impl Byol {
    pub fn new(c: &MethodConfig, backbone: Backbone, device: Device) -> Self {
        // "a multi-layer perceptron with a hidden layer of size 4096 followed by batch
        // normalization, rectified linear units, and a final linear layer" (sec. 3.3).
        let proj = MlpHead::two_layer("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let pred = MlpHead::two_layer("prediction_head", c.proj_out, c.proj_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&proj, &pred]), device);
        params.use_channels_last();
        let teacher = momentum_copy(&params, specs(&backbone, &[&proj]), device);
        Self { backbone, proj, pred, params, teacher, tau: c.tau }
    }
}

impl Method for Byol {
    super::student_accessors!("byol", teacher);
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.proj.clone())), ("prediction_head".into(), HeadSpec::Mlp(self.pred.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("byol", views, 2)?;
        let online = |x: &Tensor| {
            let z = embed(&self.backbone, &self.proj, &self.params, x);
            self.pred.forward(&mut TchOps::new(&self.params, true), &z)
        };
        let p0 = online(&views[0]);
        let p1 = online(&views[1]);
        let (z0, z1) = tch::no_grad(|| (embed(&self.backbone, &self.proj, &self.teacher, &views[0]), embed(&self.backbone, &self.proj, &self.teacher, &views[1])));
        Ok(loss::symmetric_negative_cosine(&p0, &z1, &p1, &z0))
    }
    fn after_step(&mut self, ctx: &StepCtx) {
        ema_update(&self.teacher, &self.params, schedule::cosine(ctx.step, ctx.total_steps, self.tau, 1.0));
    }
}

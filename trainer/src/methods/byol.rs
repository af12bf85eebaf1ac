//! BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): an online network
//! with a predictor regresses the projection of a momentum target network;
//! the target follows the online weights with tau cosine-scheduled 0.996 -> 1.
//!
//! Reference: lightly's `BYOLProjectionHead`/`BYOLPredictionHead` and
//! `NegativeCosineSimilarity`; the step order is the paper's algorithm 1: the
//! target is updated *after* the online optimizer step (lightly's example
//! updates it before the forward, one step earlier).

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, momentum_copy, specs, Method, MethodError, Momentum, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "byol", aliases: [],
    summary: "BYOL: online network with a predictor regresses a momentum target's projection (Grill et al. 2020)",
    reference: "lightly BYOL heads, `NegativeCosineSimilarity`; target EMA *after* the step (paper alg. 1)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projection and prediction heads.
        proj_hidden: i64 = (4 * d).clamp(64, 2048), Range::at_least(1.0);
        /// Output dim of the projection and prediction heads.
        proj_out: i64 = (4 * d).clamp(64, 2048).min(256), Range::at_least(1.0);
        /// Target EMA momentum at step 0, cosine-scheduled to 1.
        tau: f64 = 0.996, Range::closed(0.0, 1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        Pipeline::byol(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Byol::new(self, backbone, device)))
    }
}

pub struct Byol {
    backbone: Backbone,
    proj: MlpHead,
    pred: MlpHead,
    params: Params,
    teacher: Params,
    tau: f64,
}

impl Byol {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
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
        vec![("projection_head".into(), HeadSpec::Mlp(self.proj.clone())), ("prediction_head".into(), HeadSpec::Mlp(MlpHead::chain(&[&self.proj, &self.pred])))]
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
    fn momentum(&self) -> Vec<Momentum<'_>> {
        vec![Momentum { teacher: &self.teacher, student: &self.params, tau: self.tau, before_loss: false }]
    }
}

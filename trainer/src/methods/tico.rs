//! TiCo (Zhu et al. 2022, "TiCo: Transformation Invariance and Covariance
//! Contrast for Self-Supervised Visual Representation Learning"): an online
//! encoder's embedding of one view is pulled to a momentum encoder's embedding
//! of the other (transformation invariance), and pushed away from the
//! directions of a running covariance matrix of past online embeddings
//! (covariance contrast).
//!
//! Reference: lightly's `TiCoLoss` (beta 0.9, rho 8, the covariance updated
//! with the current batch before it is used, zeros at the start) and its TiCo
//! example: `TiCoProjectionHead` (Linear-BN-ReLU, Linear), a momentum copy of
//! backbone and head updated *before* the forward with a cosine momentum,
//! the loss of (online view 0, momentum view 1).

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Kind, Tensor};

use super::{check_views, embed, momentum_copy, specs, Method, MethodError, Momentum, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;

super::method! {
    name: "tico", aliases: [],
    summary: "TiCo: transformation invariance to a momentum encoder plus covariance contrast with a running covariance (Zhu et al. 2022)",
    reference: "lightly `TiCoLoss` (beta 0.9, rho 8), `TiCoProjectionHead`; momentum encoder EMA *before* the forward (lightly's example)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projection head (4096 in the paper).
        proj_hidden: i64 = (4 * d).clamp(64, 4096), Range::at_least(1.0);
        /// Output dim of the projection head and of the covariance matrix (256 in the paper).
        proj_out: i64 = 256, Range::at_least(1.0);
        /// EMA coefficient of the running covariance matrix.
        beta: f64 = 0.9, Range::closed(0.0, 1.0);
        /// Weight of the covariance-contrast term.
        rho: f64 = 8.0, Range::at_least(0.0);
        /// Momentum-encoder EMA momentum at step 0, cosine-scheduled to 1.
        tau: f64 = 0.996, Range::closed(0.0, 1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        // The paper follows BYOL's augmentations.
        Pipeline::byol(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Tico::new(self, backbone, device)))
    }
}

pub struct Tico {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    teacher: Params,
    /// The running covariance `C` of the normalised online embeddings (proj_out x proj_out).
    pub covariance: Tensor,
    pending: Option<Tensor>,
    c: Config,
}

impl Tico {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // "a linear layer with output size 4096 followed by batch normalization, rectified linear units
        // (ReLU), and a final linear layer with output dimension 256."
        let head = MlpHead::two_layer("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        let teacher = momentum_copy(&params, specs(&backbone, &[&head]), device);
        let covariance = Tensor::zeros([c.proj_out, c.proj_out], (Kind::Float, device));
        Self { backbone, head, params, teacher, covariance, pending: None, c: c.clone() }
    }
}

impl Method for Tico {
    super::student_accessors!("tico", teacher);
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("tico", views, 2)?;
        let z0 = embed(&self.backbone, &self.head, &self.params, &views[0]);
        let z1 = tch::no_grad(|| embed(&self.backbone, &self.head, &self.teacher, &views[1]));
        let (l, c) = loss::tico(&z0, &z1, &self.covariance, self.c.beta, self.c.rho);
        self.pending = Some(c);
        Ok(l)
    }
    fn momentum(&self) -> Vec<Momentum<'_>> {
        vec![Momentum { teacher: &self.teacher, student: &self.params, tau: self.c.tau, before_loss: true }]
    }
    fn after_step(&mut self, _: &StepCtx) {
        if let Some(c) = self.pending.take() {
            tch::no_grad(|| self.covariance.copy_(&c));
        }
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("covariance".into(), self.covariance.shallow_clone())]
    }
}

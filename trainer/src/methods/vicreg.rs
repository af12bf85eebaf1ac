//! VICReg (Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance
//! Regularization for Self-Supervised Learning"): two views through one
//! network and an expander; the loss pulls the two embeddings together
//! (invariance), keeps each dimension's std above 1 (variance) and
//! decorrelates the dimensions (covariance). No negatives, no predictor, no
//! momentum encoder.
//!
//! Reference: lightly's `VICRegProjectionHead` (num_layers=3) and `VICRegLoss`
//! (lambda 25, mu 25, nu 1, eps 1e-4, covariance term divided by the dim),
//! which follow facebookresearch/vicreg `main_vicreg.py`.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;

super::method! {
    name: "vicreg", aliases: [],
    summary: "VICReg: invariance, variance and covariance terms on two views' embeddings (Bardes et al. 2022)",
    reference: "lightly `VICRegProjectionHead` (3 layers), `VICRegLoss` (25/25/1, eps 1e-4); facebookresearch/vicreg `main_vicreg.py`",
    // The papers train with LARS at batch 2048; for short CPU runs at batch 64 the other ResNet
    // methods' SGD settings (momentum 0.9, lr 0.06, wd 5e-4).
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projector (8192 for ResNet-50's 2048 in the paper: 4x the embed dim, capped).
        proj_hidden: i64 = (4 * d).clamp(64, 8192), Range::at_least(1.0);
        /// Output dim of the projector.
        proj_out: i64 = (4 * d).clamp(64, 8192), Range::at_least(1.0);
        /// Weight of the invariance (MSE) term.
        lambda: f64 = 25.0, Range::at_least(0.0);
        /// Weight of the variance term.
        mu: f64 = 25.0, Range::at_least(0.0);
        /// Weight of the covariance term.
        nu: f64 = 1.0, Range::at_least(0.0);
        /// Epsilon inside the standard deviation of the variance term.
        eps: f64 = 1e-4, Range::positive();
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        // The paper uses BYOL's augmentations (blur and solarization differ between the two views).
        Pipeline::byol(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Vicreg::new(self, backbone, device)))
    }
}

/// lightly's `VICRegProjectionHead` at num_layers=3 is Barlow Twins' projector: Linear-BN-ReLU,
/// Linear-BN-ReLU, Linear (bias only on the last Linear).
pub use super::barlow_twins::projector;

pub struct Vicreg {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    c: Config,
}

impl Vicreg {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let head = projector("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        Self { backbone, head, params, c: c.clone() }
    }
}

impl Method for Vicreg {
    super::student_accessors!("vicreg");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("vicreg", views, 2)?;
        // One forward per view (lightly's example and the repo): BatchNorm statistics per view.
        let z0 = embed(&self.backbone, &self.head, &self.params, &views[0]);
        let z1 = embed(&self.backbone, &self.head, &self.params, &views[1]);
        Ok(loss::vicreg(&z0, &z1, self.c.lambda, self.c.mu, self.c.nu, self.c.eps))
    }
}

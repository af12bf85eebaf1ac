//! Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning
//! via Redundancy Reduction"): two views through one network and a wide
//! projector; the cross-correlation of the two batches of projections is
//! pushed to the identity. No negatives, no predictor, no momentum encoder.
//!
//! Reference: lightly's `BarlowTwinsProjectionHead` and `BarlowTwinsLoss`
//! (`lambda_param=5e-3`, `gather_distributed=False`), which follow the paper's
//! algorithm 1 and facebookresearch/barlowtwins `main.py`.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Act, Backbone, HeadBlock, HeadSpec, MlpHead, Norm};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;

super::method! {
    name: "barlow_twins", aliases: ["barlowtwins"],
    summary: "Barlow Twins: the cross-correlation of two views' projections is pushed to the identity (Zbontar et al. 2021)",
    reference: "lightly `BarlowTwinsProjectionHead`, `BarlowTwinsLoss` (lambda 5e-3); facebookresearch/barlowtwins `main.py`",
    // The papers train with LARS at batch 2048; for short CPU runs at batch 64 the other ResNet
    // methods' SGD settings (momentum 0.9, lr 0.06, wd 5e-4).
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projector (8192 for ResNet-50's 2048 in the paper: 4x the embed dim, capped).
        proj_hidden: i64 = (4 * d).clamp(64, 8192), Range::at_least(1.0);
        /// Output dim of the projector.
        proj_out: i64 = (4 * d).clamp(64, 8192), Range::at_least(1.0);
        /// Weight of the redundancy-reduction (off-diagonal) term.
        lambda: f64 = 5e-3, Range::at_least(0.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        // The paper uses BYOL's augmentations (blur and solarization differ between the two views).
        Pipeline::byol(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(BarlowTwins::new(self, backbone, device)))
    }
}

/// "The projector network has three linear layers, each with 8192 output units. The first two
/// layers of the projector are followed by a batch normalization layer and rectified linear
/// units." lightly's `BarlowTwinsProjectionHead`: bias only on the last Linear.
pub fn projector(path: &str, input: i64, hidden: i64, out: i64) -> MlpHead {
    MlpHead::new(path, vec![
        HeadBlock::new(input, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
        HeadBlock::new(hidden, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
        HeadBlock::new(hidden, out, None, None),
    ])
}

pub struct BarlowTwins {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    c: Config,
}

impl BarlowTwins {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let head = projector("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        Self { backbone, head, params, c: c.clone() }
    }
}

impl Method for BarlowTwins {
    super::student_accessors!("barlow_twins");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("barlow_twins", views, 2)?;
        // One forward per view (paper alg. 1, lightly's example): BatchNorm statistics per view.
        let z0 = embed(&self.backbone, &self.head, &self.params, &views[0]);
        let z1 = embed(&self.backbone, &self.head, &self.params, &views[1]);
        Ok(loss::barlow_twins(&z0, &z1, self.c.lambda))
    }
}

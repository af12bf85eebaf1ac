//! Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning
//! via Redundancy Reduction"): two views through one network and a wide
//! projector; the cross-correlation of the two batches of projections is
//! pushed to the identity. No negatives, no predictor, no momentum encoder.
//!
//! Reference: lightly's `BarlowTwinsProjectionHead` and `BarlowTwinsLoss`
//! (`lambda_param=5e-3`, `gather_distributed=False`), which follow the paper's
//! algorithm 1 and facebookresearch/barlowtwins `main.py`.

use pretext_models::{Act, Backbone, HeadBlock, MlpHead, Norm};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodConfig, MethodError, StepCtx};
use crate::backend::Params;
use crate::loss;
use crate::optim::OptimizerKind;

/// Weight of the redundancy-reduction (off-diagonal) term: the paper's 5e-3 (lightly's default).
pub const LAMBDA: f64 = 5e-3;
/// Projector width as a multiple of the backbone's embed dim: 8192 for ResNet-50's 2048 in the paper
/// ("three linear layers, each with 8192 output units"), capped there.
pub const PROJ_RATIO: i64 = 4;
pub const PROJ_MAX: i64 = 8192;
/// Augmentations: the paper uses BYOL's parameters (blur and solarization probabilities differ
/// between the two views), so the `byol` preset of `pretext_data::augment::Pipeline`.
pub const AUGMENT_PRESET: &str = "byol";
/// The paper trains with LARS (lr 0.2 for weights, batch 2048, wd 1.5e-6); for short CPU runs at
/// batch 64 we use SGD with the other ResNet methods' settings (momentum 0.9, lr 0.06, wd 5e-4).
pub const OPTIMIZER: OptimizerKind = OptimizerKind::Sgd;
pub const LR: f64 = 0.06;
pub const WEIGHT_DECAY: f64 = 5e-4;

/// The projector width for a backbone of `embed_dim` features.
pub fn proj_dim(embed_dim: i64) -> i64 {
    (embed_dim * PROJ_RATIO).clamp(64, PROJ_MAX)
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
}

impl BarlowTwins {
    pub fn new(c: &MethodConfig, backbone: Backbone, device: Device) -> Self {
        let head = projector("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        Self { backbone, head, params }
    }
}

impl Method for BarlowTwins {
    super::student_accessors!("barlow_twins");
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("barlow_twins", views, 2)?;
        // One forward per view (paper alg. 1, lightly's example): BatchNorm statistics per view.
        let z0 = embed(&self.backbone, &self.head, &self.params, &views[0]);
        let z1 = embed(&self.backbone, &self.head, &self.params, &views[1]);
        Ok(loss::barlow_twins(&z0, &z1, LAMBDA))
    }
}

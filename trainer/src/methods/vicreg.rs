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

use pretext_models::{Act, Backbone, HeadBlock, MlpHead, Norm};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodConfig, MethodError, StepCtx};
use crate::backend::Params;
use crate::loss;
use crate::optim::OptimizerKind;

/// Invariance, variance and covariance weights and the std epsilon: the paper's lambda = mu = 25,
/// nu = 1, eps = 1e-4 (lightly's defaults).
pub const LAMBDA: f64 = 25.0;
pub const MU: f64 = 25.0;
pub const NU: f64 = 1.0;
pub const EPS: f64 = 1e-4;
/// Expander width as a multiple of the backbone's embed dim: 8192 for ResNet-50's 2048 in the
/// paper (two Linear-BN-ReLU layers and a third Linear, all 8192 wide), capped there.
pub const PROJ_RATIO: i64 = 4;
pub const PROJ_MAX: i64 = 8192;
/// Augmentations: the paper follows BYOL's (blur and solarization probabilities differ between
/// the two views), so the `byol` preset of `pretext_data::augment::Pipeline`.
pub const AUGMENT_PRESET: &str = "byol";
/// The paper trains with LARS (base lr 0.2 x batch / 256, wd 1e-6, batch 2048); for short CPU
/// runs at batch 64 we use SGD with the other ResNet methods' settings (momentum 0.9, lr 0.06, wd 5e-4).
pub const OPTIMIZER: OptimizerKind = OptimizerKind::Sgd;
pub const LR: f64 = 0.06;
pub const WEIGHT_DECAY: f64 = 5e-4;

/// The expander width for a backbone of `embed_dim` features.
pub fn proj_dim(embed_dim: i64) -> i64 {
    (embed_dim * PROJ_RATIO).clamp(64, PROJ_MAX)
}

/// lightly's `VICRegProjectionHead` at num_layers=3: Linear-BN-ReLU, Linear-BN-ReLU, Linear
/// (bias only on the last Linear).
pub fn projector(path: &str, input: i64, hidden: i64, out: i64) -> MlpHead {
    MlpHead::new(path, vec![
        HeadBlock::new(input, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
        HeadBlock::new(hidden, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
        HeadBlock::new(hidden, out, None, None),
    ])
}

pub struct Vicreg {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
}

impl Vicreg {
    pub fn new(c: &MethodConfig, backbone: Backbone, device: Device) -> Self {
        let head = projector("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        Self { backbone, head, params }
    }
}

impl Method for Vicreg {
    super::student_accessors!("vicreg");
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("vicreg", views, 2)?;
        // One forward per view, as lightly's example and the repo: BatchNorm statistics per view.
        let z0 = embed(&self.backbone, &self.head, &self.params, &views[0]);
        let z1 = embed(&self.backbone, &self.head, &self.params, &views[1]);
        Ok(loss::vicreg(&z0, &z1, LAMBDA, MU, NU, EPS))
    }
}

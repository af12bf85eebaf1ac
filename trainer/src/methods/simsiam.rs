//! SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation
//! Learning"): BYOL without the momentum encoder; a stop-gradient on the
//! projection side is what prevents collapse.
//!
//! Reference: lightly's `SimSiamProjectionHead` / `SimSiamPredictionHead` and
//! `NegativeCosineSimilarity`, which follow the paper and its code: the
//! projector's output BatchNorm has no affine parameters (`affine=False`).

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "simsiam", aliases: [],
    summary: "SimSiam: BYOL without the momentum encoder; stop-gradient on the projection side (Chen & He 2021)",
    reference: "lightly `SimSiamProjectionHead` (output BN `affine=False`), `SimSiamPredictionHead`, `NegativeCosineSimilarity`; no EMA",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the 3-layer projection head.
        proj_hidden: i64 = (4 * d).clamp(64, 2048), Range::at_least(1.0);
        /// Output dim of the projection head (input and output of the predictor).
        proj_out: i64 = (4 * d).clamp(64, 2048), Range::at_least(1.0);
        /// Hidden width of the prediction head (the paper's bottleneck, proj_out / 4).
        pred_hidden: i64 = ((4 * d).clamp(64, 2048) / 4).max(16), Range::at_least(1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        // Chen & He 2021 use MoCo v2's augmentations.
        Pipeline::moco_v2(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(SimSiam::new(self, backbone, device)))
    }
}

pub struct SimSiam {
    backbone: Backbone,
    proj: MlpHead,
    pred: MlpHead,
    params: Params,
}

impl SimSiam {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // "The projection MLP has BN applied to each fully-connected layer, including its
        // output fc. Its output fc has no ReLU. The hidden fc is 2048-d. This MLP has 3 layers."
        let proj = MlpHead::simsiam_projection("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        // "The prediction MLP has BN applied to its hidden fc layers. Its output fc does not have BN or ReLU."
        let pred = MlpHead::two_layer("prediction_head", c.proj_out, c.pred_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&proj, &pred]), device);
        params.use_channels_last();
        Self { backbone, proj, pred, params }
    }

    fn project(&self, x: &Tensor) -> Tensor {
        embed(&self.backbone, &self.proj, &self.params, x)
    }
}

impl Method for SimSiam {
    super::student_accessors!("simsiam");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.proj.clone())), ("prediction_head".into(), HeadSpec::Mlp(MlpHead::chain(&[&self.proj, &self.pred])))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("simsiam", views, 2)?;
        let z0 = self.project(&views[0]);
        let z1 = self.project(&views[1]);
        let mut o = TchOps::new(&self.params, true);
        let p0 = self.pred.forward(&mut o, &z0);
        let p1 = self.pred.forward(&mut o, &z1);
        Ok(loss::symmetric_negative_cosine(&p0, &z1, &p1, &z0))
    }
}

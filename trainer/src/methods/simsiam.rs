//! SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation
//! Learning"): BYOL without the momentum encoder; a stop-gradient on the
//! projection side is what prevents collapse.
//!
//! Reference: lightly's `SimSiamProjectionHead` / `SimSiamPredictionHead` and
//! `NegativeCosineSimilarity`, which follow the paper and its code: the
//! projector's output BatchNorm has no affine parameters (`affine=False`).

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::layers::Linear;
use pretext_models::{Act, Backbone, HeadBlock, Init, MlpHead, Norm, ParamKind, ParamSpec};
use tch::{Device, Tensor};

use super::{check_views, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
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

/// The 3-layer projector. The first two blocks are an [`MlpHead`]
/// (`layers.0`-`layers.5`); the output fc (`layers.6`, no bias) and its
/// non-affine BatchNorm (`layers.7`: running statistics only) follow, under
/// lightly's parameter names.
pub struct SimSiamProjector {
    hidden: MlpHead,
    out_fc: Linear,
    out_bn: String,
    out_dim: i64,
}

impl SimSiamProjector {
    pub fn new(path: &str, input: i64, hidden: i64, out: i64) -> Self {
        let mlp = MlpHead::new(path, vec![
            HeadBlock::new(input, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(hidden, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
        ]);
        Self { hidden: mlp, out_fc: Linear::new(format!("{path}.layers.6"), hidden, out).no_bias(), out_bn: format!("{path}.layers.7"), out_dim: out }
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let mut p = self.hidden.params();
        self.out_fc.params(&mut p);
        let bn = |n: &str| format!("{}.{n}", self.out_bn);
        p.push(ParamSpec::new(bn("running_mean"), &[self.out_dim], Init::Zeros, ParamKind::Buffer));
        p.push(ParamSpec::new(bn("running_var"), &[self.out_dim], Init::Ones, ParamKind::Buffer));
        p.push(ParamSpec::new(bn("num_batches_tracked"), &[], Init::Zeros, ParamKind::Counter));
        p
    }

    /// # Shapes
    /// (N, input) -> (N, out)
    pub fn forward(&self, params: &Params, x: &Tensor, train: bool) -> Tensor {
        let mut o = TchOps::new(params, train);
        let h = self.hidden.forward(&mut o, x);
        let h = self.out_fc.forward(&mut o, &h);
        let get = |n: &str| params.get(&format!("{}.{n}", self.out_bn)).expect("SimSiam projector BatchNorm buffers");
        h.batch_norm(None::<Tensor>, None::<Tensor>, Some(get("running_mean").shallow_clone()), Some(get("running_var").shallow_clone()), train, 0.1, 1e-5, false)
    }
}

pub struct SimSiam {
    backbone: Backbone,
    proj: SimSiamProjector,
    pred: MlpHead,
    params: Params,
}

impl SimSiam {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // "The projection MLP has BN applied to each fully-connected layer, including its
        // output fc. Its output fc has no ReLU. The hidden fc is 2048-d. This MLP has 3 layers."
        let proj = SimSiamProjector::new("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        // "The prediction MLP has BN applied to its hidden fc layers. Its output fc does not have BN or ReLU."
        let pred = MlpHead::two_layer("prediction_head", c.proj_out, c.pred_hidden, c.proj_out);
        let mut specs = backbone.params();
        specs.extend(proj.params());
        specs.extend(pred.params());
        let params = Params::new(specs, device);
        params.use_channels_last();
        Self { backbone, proj, pred, params }
    }

    fn project(&self, x: &Tensor) -> Tensor {
        let f = self.backbone.forward_features(&mut TchOps::new(&self.params, true), x);
        self.proj.forward(&self.params, &f, true)
    }
}

impl Method for SimSiam {
    super::student_accessors!("simsiam");
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

//! FastSiam (Pototzky et al. 2022, "FastSiam: Resource-Efficient
//! Self-supervised Learning on a Single GPU"): SimSiam over `n_views` views of
//! each image; each view's prediction regresses the mean of the other views'
//! (stop-gradient) projections.
//!
//! Reference: lightly's FastSiam example: SimSiam's heads
//! (`SimSiamProjectionHead`, `SimSiamPredictionHead`), `FastSiamTransform`
//! (4 SimSiam views) and `NegativeCosineSimilarity`, the loss
//! `sum_i D(p_i, mean_{j != i} z_j) / n_views`.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "fastsiam", aliases: [],
    summary: "FastSiam: SimSiam where each view predicts the mean projection of the other views (Pototzky et al. 2022)",
    reference: "lightly FastSiam example: `SimSiamProjectionHead`, `SimSiamPredictionHead`, `FastSiamTransform` (4 views), `NegativeCosineSimilarity`",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the 3-layer projection head.
        proj_hidden: i64 = (4 * d).clamp(64, 2048), Range::at_least(1.0);
        /// Output dim of the projection head (input and output of the predictor).
        proj_out: i64 = (4 * d).clamp(64, 2048), Range::at_least(1.0);
        /// Hidden width of the prediction head (SimSiam's bottleneck, proj_out / 4).
        pred_hidden: i64 = ((4 * d).clamp(64, 2048) / 4).max(16), Range::at_least(1.0);
        /// Views per image (the paper's K target views plus one).
        n_views: usize = 4, Range::closed(2.0, 16.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        // `FastSiamTransform`: `n_views` SimSiam views (MoCo v2's augmentations).
        let v = Pipeline::moco_v2(res, size).views.swap_remove(0);
        Pipeline { views: vec![v; self.n_views] }
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(FastSiam::new(self, backbone, device)))
    }
}

pub struct FastSiam {
    backbone: Backbone,
    proj: MlpHead,
    pred: MlpHead,
    params: Params,
    n_views: usize,
}

impl FastSiam {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let proj = MlpHead::simsiam_projection("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let pred = MlpHead::two_layer("prediction_head", c.proj_out, c.pred_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&proj, &pred]), device);
        params.use_channels_last();
        Self { backbone, proj, pred, params, n_views: c.n_views }
    }
}

impl Method for FastSiam {
    super::student_accessors!("fastsiam");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.proj.clone())), ("prediction_head".into(), HeadSpec::Mlp(MlpHead::chain(&[&self.proj, &self.pred])))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("fastsiam", views, self.n_views)?;
        // One forward per view, as lightly's example: BatchNorm statistics per view.
        let mut zs = Vec::new();
        let mut ps = Vec::new();
        for v in &views[..self.n_views] {
            let z = embed(&self.backbone, &self.proj, &self.params, v);
            ps.push(self.pred.forward(&mut TchOps::new(&self.params, true), &z));
            zs.push(z);
        }
        Ok(loss::fastsiam(&ps, &zs))
    }
}

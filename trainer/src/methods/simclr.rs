//! SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
//! Visual Representations"): two views, a projection MLP, NT-Xent over the
//! `2B` projections of the batch.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;

super::method! {
    name: "simclr", aliases: [],
    summary: "SimCLR: two views, projection MLP, NT-Xent over the 2B projections (Chen et al. 2020)",
    reference: "lightly `SimCLRProjectionHead`, `NTXentLoss`",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projection head.
        proj_hidden: i64 = d.max(32), Range::at_least(1.0);
        /// Output dim of the projection head.
        proj_out: i64 = 128, Range::at_least(1.0);
        /// NT-Xent temperature.
        temperature: f64 = 0.5, Range::positive();
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        Pipeline::simclr(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(SimClr::new(self, backbone, device)))
    }
}

pub struct SimClr {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    temperature: f64,
}

impl SimClr {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // "We use a MLP with one hidden layer to obtain z = g(h) = W2 relu(W1 h)" (sec. 2.1); BN as in lightly.
        let head = MlpHead::simclr("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        Self { backbone, head, params, temperature: c.temperature }
    }
}

impl Method for SimClr {
    super::student_accessors!("simclr");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("simclr", views, 2)?;
        // One forward per view, as lightly's example: BatchNorm statistics per view.
        let z0 = embed(&self.backbone, &self.head, &self.params, &views[0]);
        let z1 = embed(&self.backbone, &self.head, &self.params, &views[1]);
        Ok(loss::nt_xent(&z0, &z1, self.temperature))
    }
}

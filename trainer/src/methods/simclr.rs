//! SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
//! Visual Representations"): two views, a projection MLP, NT-Xent over the
//! `2B` projections of the batch.

use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodConfig, MethodError, StepCtx};
use crate::backend::Params;
use crate::loss;

pub struct SimClr {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    temperature: f64,
}

impl SimClr {
    pub fn new(c: &MethodConfig, backbone: Backbone, device: Device) -> Self {
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

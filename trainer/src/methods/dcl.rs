//! DCL and DCLW (Yeh et al. 2022, "Decoupled Contrastive Learning"): SimCLR
//! with the positive pair removed from the InfoNCE denominator (eq. 6);
//! DCLW also weights the positive term by a negative von Mises-Fisher weight
//! `w = 2 - B softmax(z0 . z1 / sigma)` over the batch.
//!
//! Reference: lightly's `DCLLoss` / `DCLWLoss` (`negative_mises_fisher_weights`,
//! temperature 0.1, sigma 0.5) and its DCL example (`SimCLRProjectionHead`, one
//! forward per view), which follow raminnakhli/Decoupled-Contrastive-Learning.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;

super::method! {
    name: "dcl", aliases: [],
    summary: "DCL: SimCLR without the positive in the InfoNCE denominator (Yeh et al. 2022)",
    reference: "lightly `DCLLoss` (temperature 0.1), `SimCLRProjectionHead`",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projection head.
        proj_hidden: i64 = d.max(32), Range::at_least(1.0);
        /// Output dim of the projection head.
        proj_out: i64 = 128, Range::at_least(1.0);
        /// Temperature of the similarities.
        temperature: f64 = 0.1, Range::positive();
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        Pipeline::simclr(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Dcl::new("dcl", backbone, self.proj_hidden, self.proj_out, self.temperature, None, device)))
    }
}

/// DCLW: the weighted variant, its own registry entry (`--method dclw`).
pub mod weighted {
    use super::*;

    crate::methods::method! {
        name: "dclw", aliases: [],
        summary: "DCLW: DCL with the positive term weighted by a negative von Mises-Fisher weight (Yeh et al. 2022)",
        reference: "lightly `DCLWLoss` (temperature 0.1, sigma 0.5), `SimCLRProjectionHead`",
        optimizer: OptimizerDefaults::SGD,
        config(d) {
            /// Hidden width of the projection head.
            proj_hidden: i64 = d.max(32), Range::at_least(1.0);
            /// Output dim of the projection head.
            proj_out: i64 = 128, Range::at_least(1.0);
            /// Temperature of the similarities.
            temperature: f64 = 0.1, Range::positive();
            /// Inverse scale of the positive similarities in the weight `2 - B softmax(z0 . z1 / sigma)`.
            sigma: f64 = 0.5, Range::positive();
        }
    }

    impl Recipe for Config {
        fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
            Pipeline::simclr(res, size)
        }
        fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
            Ok(Box::new(Dcl::new("dclw", backbone, self.proj_hidden, self.proj_out, self.temperature, Some(self.sigma), device)))
        }
    }
}

pub struct Dcl {
    name: &'static str,
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    temperature: f64,
    /// `Some(sigma)`: DCLW.
    sigma: Option<f64>,
}

impl Dcl {
    fn new(name: &'static str, backbone: Backbone, hidden: i64, out: i64, temperature: f64, sigma: Option<f64>, device: Device) -> Self {
        // lightly's DCL example uses SimCLR's projection head (Linear-BN-ReLU, Linear-BN).
        let head = MlpHead::simclr("projection_head", backbone.embed_dim(), hidden, out);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        Self { name, backbone, head, params, temperature, sigma }
    }
}

impl Method for Dcl {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backbone(&self) -> &Backbone {
        &self.backbone
    }
    fn students(&self) -> Vec<(&'static str, &Params)> {
        vec![("", &self.params)]
    }
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views(self.name, views, 2)?;
        // One forward per view, as lightly's example: BatchNorm statistics per view.
        let z0 = embed(&self.backbone, &self.head, &self.params, &views[0]);
        let z1 = embed(&self.backbone, &self.head, &self.params, &views[1]);
        Ok(loss::dcl(&z0, &z1, self.temperature, self.sigma))
    }
}

//! SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation
//! Learning"): BYOL without the momentum encoder; a stop-gradient on the
//! projection side is what prevents collapse.

use pretext_models::{Act, Backbone, HeadBlock, MlpHead, Norm};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodConfig, MethodError, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

pub struct SimSiam {
    backbone: Backbone,
    proj: MlpHead,
    pred: MlpHead,
    params: Params,
}

impl SimSiam {
    pub fn new(c: &MethodConfig, backbone: Backbone, device: Device) -> Self {
        // "The projection MLP has BN applied to each fully-connected layer, including its
        // output fc. Its output fc has no ReLU. The hidden fc is 2048-d. This MLP has 3 layers."
        let d = backbone.embed_dim();
        let proj = MlpHead::new("projection_head", vec![
            HeadBlock::new(d, c.proj_hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(c.proj_hidden, c.proj_hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(c.proj_hidden, c.proj_out, Some(Norm::BatchNorm), None),
        ]);
        // "The prediction MLP has BN applied to its hidden fc layers. Its output fc does not have BN or ReLU."
        let pred = MlpHead::two_layer("prediction_head", c.proj_out, c.pred_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&proj, &pred]), device);
        Self { backbone, proj, pred, params }
    }
}

impl Method for SimSiam {
    fn name(&self) -> &'static str {
        "simsiam"
    }
    fn backbone(&self) -> &Backbone {
        &self.backbone
    }
    fn students(&self) -> Vec<(&'static str, &Params)> {
        vec![("", &self.params)]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("simsiam", views, 2)?;
        let z0 = embed(&self.backbone, &self.proj, &self.params, &views[0]);
        let z1 = embed(&self.backbone, &self.proj, &self.params, &views[1]);
        let mut o = TchOps::new(&self.params, true);
        let p0 = self.pred.forward(&mut o, &z0);
        let p1 = self.pred.forward(&mut o, &z1);
        Ok(loss::symmetric_negative_cosine(&p0, &z1, &p1, &z0))
    }
}

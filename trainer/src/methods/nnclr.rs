//! NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-
//! Neighbor Contrastive Learning of Visual Representations"): SimCLR whose
//! positive for one view's prediction is the nearest neighbour, in a support
//! set of past projections, of the other view's projection.
//!
//! Reference: lightly's NNCLR example and modules: `NNCLRProjectionHead`
//! (3 layers, all with BN), `NNCLRPredictionHead`, `NNMemoryBankModule`
//! (cosine nearest neighbour, the raw projection returned; both views look up
//! the support set as it was before the step; the second view's projections
//! are enqueued, the oldest first overwritten, a batch that overflows the end
//! truncated) and `NTXentLoss`, symmetrised:
//! `(NTXent(nn(z0), p1) + NTXent(nn(z1), p0)) / 2`.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Act, Backbone, HeadBlock, HeadSpec, MlpHead, Norm};
use tch::{Device, Kind, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Queue, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "nnclr", aliases: [],
    summary: "NNCLR: NT-Xent with the nearest neighbour of the other view in a support set as positive (Dwibedi et al. 2021)",
    reference: "lightly `NNCLRProjectionHead`, `NNCLRPredictionHead`, `NNMemoryBankModule`, `NTXentLoss`",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the 3-layer projection head (2048 in the paper).
        proj_hidden: i64 = (4 * d).clamp(64, 2048), Range::at_least(1.0);
        /// Output dim of the projection head, the predictor and the support set (256 in the paper).
        proj_out: i64 = 256, Range::at_least(1.0);
        /// Hidden width of the prediction head (4096 in the paper).
        pred_hidden: i64 = (8 * d).clamp(64, 4096), Range::at_least(1.0);
        /// NT-Xent temperature.
        temperature: f64 = 0.1, Range::positive();
        /// Projections in the support set (98304 in the paper, 4096 in lightly's CIFAR example).
        support_size: i64 = 4096, Range::at_least(1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        // "We use the same data augmentations as in BYOL".
        Pipeline::byol(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Nnclr::new(self, backbone, device)))
    }
}

/// lightly's `MemoryBankModule._dequeue_and_enqueue`: `k` overwrites the rows
/// from the pointer on; a batch reaching the end is cut there and the pointer
/// returns to 0.
pub(crate) fn bank_push(bank: &mut Queue, k: &Tensor) {
    let n = bank.keys.size()[0];
    let p = bank.ptr.int64_value(&[0]);
    let b = k.size()[0].min(n - p);
    tch::no_grad(|| {
        bank.keys.narrow(0, p, b).copy_(&k.detach().narrow(0, 0, b));
        let _ = bank.ptr.fill_(if p + k.size()[0] >= n { 0 } else { p + b });
    });
}

pub struct Nnclr {
    backbone: Backbone,
    proj: MlpHead,
    pred: MlpHead,
    params: Params,
    pub support: Queue,
    pending: Option<Tensor>,
    temperature: f64,
}

impl Nnclr {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // "3 fully connected layers of sizes [2048, 2048, d] ... All fully-connected layers are followed by
        // batch-normalization. All the batch-norm layers except the last layer are followed by ReLU."
        let proj = MlpHead::new("projection_head", vec![
            HeadBlock::new(backbone.embed_dim(), c.proj_hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(c.proj_hidden, c.proj_hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(c.proj_hidden, c.proj_out, Some(Norm::BatchNorm), None),
        ]);
        // "2 fully-connected layers of size [4096, d]. The hidden layer ... is followed by batch-norm and ReLU."
        let pred = MlpHead::two_layer("prediction_head", c.proj_out, c.pred_hidden, c.proj_out);
        let params = Params::new(specs(&backbone, &[&proj, &pred]), device);
        params.use_channels_last();
        let support = Queue::new(c.support_size, c.proj_out, device);
        Self { backbone, proj, pred, params, support, pending: None, temperature: c.temperature }
    }

    /// The support-set row nearest (cosine) to each row of `z`.
    fn nearest(&self, z: &Tensor) -> Tensor {
        let sim = loss::l2_normalize(z).matmul(&loss::l2_normalize(&self.support.keys).tr());
        self.support.keys.index_select(0, &sim.argmax(1, false))
    }
}

impl Method for Nnclr {
    super::student_accessors!("nnclr");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.proj.clone())), ("prediction_head".into(), HeadSpec::Mlp(MlpHead::chain(&[&self.proj, &self.pred])))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("nnclr", views, 2)?;
        let z0 = embed(&self.backbone, &self.proj, &self.params, &views[0]);
        let z1 = embed(&self.backbone, &self.proj, &self.params, &views[1]);
        let mut o = TchOps::new(&self.params, true);
        let (p0, p1) = (self.pred.forward(&mut o, &z0), self.pred.forward(&mut o, &z1));
        let (n0, n1) = tch::no_grad(|| (self.nearest(&z0.detach()), self.nearest(&z1.detach())));
        self.pending = Some(z1.detach().to_kind(Kind::Float));
        Ok((loss::nt_xent(&n0, &p1, self.temperature) + loss::nt_xent(&n1, &p0, self.temperature)) * 0.5)
    }
    fn after_step(&mut self, _: &StepCtx) {
        if let Some(z) = self.pending.take() {
            bank_push(&mut self.support, &z);
        }
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("support_set".into(), self.support.keys.shallow_clone()), ("support_ptr".into(), self.support.ptr.shallow_clone())]
    }
}

//! SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by
//! Contrasting Cluster Assignments"): the L2-normalised projections of each
//! crop are scored against learnable unit prototypes; the codes of each global
//! crop, computed by Sinkhorn-Knopp (equal partition of the batch over the
//! prototypes), are predicted from every other crop (swapped prediction).
//!
//! Reference: lightly's `SwaVLoss` (`sinkhorn`: 3 iterations, epsilon 0.05;
//! temperature 0.1), `SwaVProjectionHead`, `SwaVPrototypes` and its SwaV
//! example with queues (one `MemoryBankModule` per global crop, filled from
//! the first step, its prototype scores joining the Sinkhorn batch from
//! `queue_start_epoch` on); facebookresearch/swav `main_swav.py` for what
//! lightly leaves to the user: the prototypes are a linear layer *without*
//! bias (lightly's has one), kept on the unit sphere (normalised at the start
//! and after every step, which is the repo's normalisation at the start of
//! the next) and frozen for the first `freeze_prototypes_steps` steps
//! (`freeze_prototypes_niters`); crops of one size go through the backbone
//! together (the repo's multi-crop forward).

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, Layer, MlpHead};
use tch::{Device, Tensor};

use super::nnclr::bank_push;
use super::{at_side, check_views, multi_crop, specs, Method, MethodError, OptimizerDefaults, Queue, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "swav", aliases: [],
    summary: "SwAV: swapped prediction of Sinkhorn-Knopp cluster codes across multi-crop views (Caron et al. 2020)",
    reference: "lightly `SwaVLoss` (Sinkhorn 3 iterations, epsilon 0.05), `SwaVProjectionHead`, `SwaVPrototypes`, queue per global crop; facebookresearch/swav `main_swav.py` (prototypes without bias, normalised each step, frozen first iterations)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projection head (2048 in the paper).
        proj_hidden: i64 = d.max(32), Range::at_least(1.0);
        /// Output dim of the projection head and of the prototypes (128 in the paper).
        proj_out: i64 = 128, Range::at_least(1.0);
        /// Number of prototypes (3000 in the paper for ImageNet, 512 in lightly's CIFAR example).
        n_prototypes: i64 = 512, Range::at_least(1.0);
        /// Temperature of the prototype scores in the cross entropy.
        temperature: f64 = 0.1, Range::positive();
        /// Sinkhorn-Knopp iterations.
        sinkhorn_iterations: u64 = 3, Range::closed(1.0, 100.0);
        /// Sinkhorn-Knopp epsilon (the codes are exp(scores / epsilon) before balancing).
        sinkhorn_epsilon: f64 = 0.05, Range::positive();
        /// Local crops per image, besides the 2 global crops.
        n_local: usize = 6, Range::closed(0.0, 32.0);
        /// Projections queued per global crop for the codes (0: no queue; the repo's 3840 for small batches).
        queue_length: i64 = 3840, Range::at_least(0.0);
        /// Epoch from which the queued projections join the Sinkhorn batch (the repo's 15).
        queue_start_epoch: u64 = 15, Range::at_least(0.0);
        /// Steps during which the prototypes are frozen (the repo's 313).
        freeze_prototypes_steps: u64 = 313, Range::at_least(0.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        // The repo's multi-crop: SimCLR's color distortion, global crops (0.14, 1), local crops
        // (0.05, 0.14) at 96/224 of the size (half the size at CIFAR resolution, as DINO's here).
        let mut g = Pipeline::simclr(res, size).views.swap_remove(0);
        g.scale = (0.14, 1.0);
        let local = if res == Resolution::Cifar { size / 2 } else { (size * 96 / 224).max(8) };
        let mut l = Pipeline::simclr(res, local).views.swap_remove(0);
        l.scale = (0.05, 0.14);
        let mut views = vec![g.clone(), g];
        views.extend(std::iter::repeat_n(l, self.n_local));
        Pipeline { views }
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Swav::new(self, backbone, device)))
    }
}

/// The prototypes' weight, `n_prototypes x proj_out` (lightly's name).
const PROTOTYPES: &str = "prototypes.heads.0.weight";

pub struct Swav {
    backbone: Backbone,
    proj: MlpHead,
    /// L2 normalisation then the bias-free prototypes layer (`prototypes.heads.0`).
    protos: MlpHead,
    params: Params,
    /// One queue of normalised projections per global crop (none when `queue_length` is 0).
    pub queues: Vec<Queue>,
    pending: Vec<Tensor>,
    c: Config,
}

impl Swav {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // lightly's `SwaVProjectionHead`: Linear-BN-ReLU, Linear.
        let proj = MlpHead::two_layer("projection_head", backbone.embed_dim(), c.proj_hidden, c.proj_out);
        let protos = MlpHead {
            path: "prototypes".into(),
            layers: vec![Layer::L2Normalize { name: "l2_normalize".into() }, Layer::Linear { name: "heads.0".into(), in_dim: c.proj_out, out_dim: c.n_prototypes, bias: false }],
        };
        let params = Params::new(specs(&backbone, &[&proj, &protos]), device);
        params.use_channels_last();
        let queues = if c.queue_length > 0 { (0..2).map(|_| Queue::new(c.queue_length, c.proj_out, device)).collect() } else { vec![] };
        let s = Self { backbone, proj, protos, params, queues, pending: vec![], c: c.clone() };
        s.normalize_prototypes();
        s
    }

    /// Each prototype to unit L2 norm (lightly's `SwaVPrototypes.normalize`).
    fn normalize_prototypes(&self) {
        if let Some(w) = self.params.get(PROTOTYPES) {
            tch::no_grad(|| w.shallow_clone().copy_(&(w / w.norm_scalaropt_dim(2.0, [1i64].as_slice(), true))));
        }
    }
}

impl Method for Swav {
    super::student_accessors!("swav");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.proj.clone())), ("prototypes".into(), HeadSpec::Mlp(MlpHead::chain(&[&self.proj, &self.protos])))]
    }
    fn loss(&mut self, views: &[Tensor], ctx: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("swav", views, 2)?;
        let d = self.c.proj_out;
        // Per crop: the projection and its prototype scores, side by side.
        let out = multi_crop(views, |x| {
            let mut o = TchOps::new(&self.params, true);
            let f = at_side(&self.backbone, x.size()[3]).forward_features(&mut o, x);
            let z = self.proj.forward(&mut o, &f);
            let s = self.protos.forward(&mut o, &z);
            Tensor::cat(&[z, s], 1)
        });
        let scores: Vec<Tensor> = out.iter().map(|t| t.narrow(1, d, self.c.n_prototypes)).collect();
        // The queues as they were before this batch (lightly's `MemoryBankModule` returns its bank, then enqueues).
        let queued = (!self.queues.is_empty() && ctx.epoch >= self.c.queue_start_epoch).then(|| {
            tch::no_grad(|| self.queues.iter().map(|q| self.protos.forward(&mut TchOps::new(&self.params, true), &q.keys)).collect::<Vec<_>>())
        });
        self.pending = out[..self.queues.len()].iter().map(|t| loss::l2_normalize(&t.narrow(1, 0, d)).detach()).collect();
        Ok(loss::swav(&scores[..2], &scores[2..], queued.as_deref(), self.c.temperature, self.c.sinkhorn_iterations, self.c.sinkhorn_epsilon))
    }
    fn frozen(&self, ctx: &StepCtx) -> Vec<String> {
        if ctx.step < self.c.freeze_prototypes_steps {
            vec![PROTOTYPES.to_string()]
        } else {
            vec![]
        }
    }
    fn after_step(&mut self, _: &StepCtx) {
        for (q, z) in self.queues.iter_mut().zip(std::mem::take(&mut self.pending)) {
            bank_push(q, &z);
        }
        self.normalize_prototypes();
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.queues.iter().enumerate().flat_map(|(i, q)| [(format!("queue{i}"), q.keys.shallow_clone()), (format!("queue{i}_ptr"), q.ptr.shallow_clone())]).collect()
    }
}

//! MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved
//! Baselines with Momentum Contrastive Learning"): queries from the encoder,
//! keys from its momentum copy, negatives from a queue of past keys; MLP
//! projection head, temperature 0.2.
//!
//! Reference for the step order: the MoCo repo's `MoCo.forward`
//! (`moco/builder.py`) and lightly's MoCo example both update the key encoder
//! *before* computing the keys, from the query encoder's weights before this
//! step's optimizer update; the new keys are enqueued after the loss. The
//! momentum follows lightly's cosine schedule `tau -> 1` (the repo keeps 0.999).

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Act, Backbone, HeadSpec, HeadBlock, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, momentum_copy, specs, Method, MethodError, Momentum, OptimizerDefaults, Queue, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;

super::method! {
    name: "moco_v2", aliases: ["moco", "mocov2"],
    summary: "MoCo v2: queries vs momentum-encoder keys and a queue of past keys, InfoNCE (He et al. 2020, Chen et al. 2020)",
    reference: "MoCo repo `builder.py` (v2 MLP head, queue); key encoder EMA *before* the keys (repo, lightly)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projection head.
        proj_hidden: i64 = d.max(32), Range::at_least(1.0);
        /// Output dim of the projection head (and of the queued keys).
        proj_out: i64 = 128, Range::at_least(1.0);
        /// InfoNCE temperature.
        temperature: f64 = 0.2, Range::positive();
        /// Keys in the queue of negatives.
        queue_size: i64 = 4096, Range::at_least(1.0);
        /// Teacher (key-encoder) EMA momentum at step 0, cosine-scheduled to 1.
        tau: f64 = 0.99, Range::closed(0.0, 1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        Pipeline::moco_v2(res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(MocoV2::new(self, backbone, device)))
    }
}

pub struct MocoV2 {
    backbone: Backbone,
    proj: MlpHead,
    params: Params,
    teacher: Params,
    pub queue: Queue,
    pending: Option<Tensor>,
    tau: f64,
    temperature: f64,
}

impl MocoV2 {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // MoCo v2: "replace the fc head in MoCo with a 2-layer MLP head (hidden layer 2048-d, with ReLU)".
        let proj = MlpHead::new("projection_head", vec![
            HeadBlock::new(backbone.embed_dim(), c.proj_hidden, None, Some(Act::Relu)),
            HeadBlock::new(c.proj_hidden, c.proj_out, None, None),
        ]);
        let params = Params::new(specs(&backbone, &[&proj]), device);
        params.use_channels_last();
        let teacher = momentum_copy(&params, specs(&backbone, &[&proj]), device);
        let queue = Queue::new(c.queue_size, c.proj_out, device);
        Self { backbone, proj, params, teacher, queue, pending: None, tau: c.tau, temperature: c.temperature }
    }
}

impl Method for MocoV2 {
    super::student_accessors!("moco_v2", teacher);
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.proj.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("moco_v2", views, 2)?;
        let q = embed(&self.backbone, &self.proj, &self.params, &views[0]);
        let k = tch::no_grad(|| embed(&self.backbone, &self.proj, &self.teacher, &views[1]));
        let l = loss::info_nce_queue(&q, &k, &self.queue.keys, self.temperature);
        self.pending = Some(loss::l2_normalize(&k));
        Ok(l)
    }
    fn momentum(&self) -> Vec<Momentum<'_>> {
        vec![Momentum { teacher: &self.teacher, student: &self.params, tau: self.tau, before_loss: true }]
    }
    fn after_step(&mut self, _: &StepCtx) {
        if let Some(k) = self.pending.take() {
            self.queue.push(&k);
        }
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("queue".into(), self.queue.keys.shallow_clone()), ("queue_ptr".into(), self.queue.ptr.shallow_clone())]
    }
}

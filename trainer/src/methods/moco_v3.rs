//! MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training
//! Self-Supervised Vision Transformers"): no queue; the query encoder with a
//! projector and a predictor against the keys of its momentum copy (backbone
//! and projector), symmetric InfoNCE over the batch scaled by `2T`; every MLP
//! layer has BatchNorm, the projector's last one without affine parameters.
//!
//! Reference: facebookresearch/moco-v3 `moco/builder.py` (`_build_mlp`,
//! `MoCo_ResNet`: 2-layer projector, predictor without the last BN;
//! `MoCo_ViT`: 3-layer projector, predictor with it; `contrastive_loss`) and
//! `main_moco.py`: the momentum encoder moves *before* the keys are computed,
//! its momentum cosine-scheduled to 1 (`--moco-m-cos`; here lightly's
//! per-step `cosine_schedule`, as MoCo v2). `stop_grad_conv1` (the frozen
//! random patch projection of sec. 4.2) is `frozen_patch_embed = 1` on a ViT;
//! the repo's own patch-projection init is not reproduced. Defaults follow
//! solo-learn's CIFAR recipe (temperature 0.2, tau 0.99).

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Act, Backbone, HeadBlock, HeadSpec, Layer, MlpHead, Norm};
use tch::{Device, Tensor};

use super::{check_views, embed, momentum_copy, specs, ConfigError, Method, MethodError, Momentum, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "moco_v3", aliases: ["mocov3"],
    summary: "MoCo v3: predictor on the query encoder vs momentum-encoder keys, symmetric InfoNCE x 2T, no queue (Chen et al. 2021)",
    reference: "facebookresearch/moco-v3 `builder.py` (`_build_mlp`, last BN without affine, `contrastive_loss` x 2T), `main_moco.py` (EMA before the keys, cosine momentum)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the projector and the predictor (4096 in the paper).
        proj_hidden: i64 = (4 * d).clamp(64, 4096), Range::at_least(1.0);
        /// Output dim of the projector and the predictor (256 in the paper).
        proj_out: i64 = 256, Range::at_least(1.0);
        /// InfoNCE temperature (the repo: 1.0 for ResNet-50, 0.2 for ViTs; solo-learn's CIFAR recipe 0.2).
        temperature: f64 = 0.2, Range::positive();
        /// Momentum-encoder EMA momentum at step 0, cosine-scheduled to 1.
        tau: f64 = 0.99, Range::closed(0.0, 1.0);
        /// 1: a ViT's patch projection stays at its random init (the repo's `--stop-grad-conv1`); ViTs only.
        frozen_patch_embed: u64 = 0, Range::closed(0.0, 1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        // The paper uses BYOL's augmentations.
        Pipeline::byol(res, size)
    }
    fn check(&self, backbone: &Backbone) -> Result<(), ConfigError> {
        if self.frozen_patch_embed == 1 && !matches!(backbone, Backbone::Vit(_)) {
            return Err(ConfigError::new("method.frozen_patch_embed", 1, "0 on a ResNet (the frozen random patch projection is a ViT's)"));
        }
        Ok(())
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(MocoV3::new(self, backbone, device)))
    }
}

/// The repo's `_build_mlp`: `layers` Linear layers without bias, each but the
/// last followed by BN and ReLU, the last by a BN without affine when `last_bn`.
pub fn mlp(path: &str, layers: usize, input: i64, hidden: i64, out: i64, last_bn: bool) -> MlpHead {
    let blocks = (0..layers)
        .map(|l| {
            let (i, o) = (if l == 0 { input } else { hidden }, if l + 1 == layers { out } else { hidden });
            if l + 1 < layers {
                HeadBlock::new(i, o, Some(Norm::BatchNorm), Some(Act::Relu))
            } else {
                HeadBlock::new(i, o, last_bn.then_some(Norm::BatchNormNoAffine), None)
            }
        })
        .collect();
    let mut head = MlpHead::new(path, blocks);
    for l in &mut head.layers {
        if let Layer::Linear { bias, .. } = l {
            *bias = false;
        }
    }
    head
}

/// The ViT tensors `--stop-grad-conv1` freezes.
const PATCH_EMBED: [&str; 2] = ["patch_embed.proj.weight", "patch_embed.proj.bias"];

pub struct MocoV3 {
    backbone: Backbone,
    proj: MlpHead,
    pred: MlpHead,
    params: Params,
    teacher: Params,
    c: Config,
}

impl MocoV3 {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // "The projection head is a 3-layer MLP [ViT; 2 for ResNet]. The prediction head is a 2-layer MLP.
        // The hidden layers of both MLPs are 4096-d and are with ReLU; the output layers of both MLPs are
        // 256-d, without ReLU. In MoCo v3, all layers in both MLPs have BN" (sec. 3; the repo keeps the
        // ResNet predictor's output without BN).
        let vit = matches!(backbone, Backbone::Vit(_));
        let proj = mlp("projection_head", if vit { 3 } else { 2 }, backbone.embed_dim(), c.proj_hidden, c.proj_out, true);
        let pred = mlp("prediction_head", 2, c.proj_out, c.proj_hidden, c.proj_out, vit);
        let params = Params::new(specs(&backbone, &[&proj, &pred]), device);
        params.use_channels_last();
        let teacher = momentum_copy(&params, specs(&backbone, &[&proj]), device);
        Self { backbone, proj, pred, params, teacher, c: c.clone() }
    }
}

impl Method for MocoV3 {
    super::student_accessors!("moco_v3", teacher);
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.proj.clone())), ("prediction_head".into(), HeadSpec::Mlp(MlpHead::chain(&[&self.proj, &self.pred])))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("moco_v3", views, 2)?;
        let query = |x: &Tensor| {
            let z = embed(&self.backbone, &self.proj, &self.params, x);
            self.pred.forward(&mut TchOps::new(&self.params, true), &z)
        };
        let (q1, q2) = (query(&views[0]), query(&views[1]));
        let (k1, k2) = tch::no_grad(|| (embed(&self.backbone, &self.proj, &self.teacher, &views[0]), embed(&self.backbone, &self.proj, &self.teacher, &views[1])));
        Ok(loss::moco_v3(&q1, &q2, &k1, &k2, self.c.temperature))
    }
    fn momentum(&self) -> Vec<Momentum<'_>> {
        // `MoCo.forward`: `_update_momentum_encoder(m)` before the keys.
        vec![Momentum { teacher: &self.teacher, student: &self.params, tau: self.c.tau, before_loss: true }]
    }
    fn frozen(&self, _: &StepCtx) -> Vec<String> {
        if self.c.frozen_patch_embed == 1 {
            PATCH_EMBED.iter().map(|s| s.to_string()).collect()
        } else {
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::{build, MethodConfig};
    use pretext_models::BackboneConfig;

    /// The frozen patch projection is a ViT's: refused on a ResNet naming the field; on a ViT the
    /// two patch-embedding tensors are frozen every step and the heads follow the repo's `MoCo_ViT`.
    #[test]
    fn frozen_patch_embed_is_for_vits() {
        let resnet = Backbone::new(&BackboneConfig::from_name("resnet18-cifar").unwrap());
        let mut c = MethodConfig::defaults("moco_v3", resnet.embed_dim()).unwrap();
        c.set("frozen_patch_embed", "1").unwrap();
        let e = c.validate(&resnet).unwrap_err().to_string();
        assert!(e.contains("method.frozen_patch_embed = 1") && e.contains("ResNet"), "{e}");
        let vit = Backbone::new(&BackboneConfig::from_name("vit-tiny-cifar").unwrap());
        let m = build(&c, vit, Device::Cpu).unwrap();
        let ctx = StepCtx { step: 5, total_steps: 10, epoch: 1 };
        assert_eq!(m.frozen(&ctx), PATCH_EMBED.map(String::from).to_vec());
        for name in PATCH_EMBED {
            assert!(m.students()[0].1.get(name).is_some(), "{name} is a ViT tensor");
        }
        let heads = m.heads();
        let HeadSpec::Mlp(proj) = &heads[0].1 else { panic!("an MLP") };
        assert_eq!(proj.layers.iter().filter(|l| matches!(l, Layer::Linear { bias: false, .. })).count(), 3, "3 bias-free layers on a ViT");
        assert!(matches!(proj.layers.last(), Some(Layer::Norm { norm: Norm::BatchNormNoAffine, .. })));
    }
}

//! RotNet (Gidaris, Singh and Komodakis 2018, "Unsupervised Representation
//! Learning by Predicting Image Rotations"): every image of the batch is
//! rotated by 0, 90, 180 and 270 degrees and the network classifies which
//! rotation it sees (4-way cross entropy).
//!
//! Reference: the paper's sec. 2.2 and its code (`FeatureLearningRotNet`:
//! the four rotations of each image go through the network in one batch, so
//! BatchNorm sees all of them together); the head is VISSL's
//! `pretext_rotnet` head, one Linear layer over the pooled features
//! (`head_hidden = 0`), or an MLP with one hidden layer. The rotations are
//! `torch.rot90(x, k, (2, 3))` (counter-clockwise), label `k`. The transform
//! is deterministic: no random choice to fix.

use pretext_data::augment::{Pipeline, Resolution, ViewSpec};
use pretext_models::{Act, Backbone, HeadBlock, HeadSpec, MlpHead, Norm};
use tch::{Device, Kind, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;

super::method! {
    name: "rotation", aliases: ["rotnet"],
    summary: "RotNet: each image rotated by 0/90/180/270 degrees, 4-way rotation classification (Gidaris et al. 2018)",
    reference: "RotNet paper sec. 2.2 and repo (all 4 rotations in one batch); VISSL `pretext_rotnet` linear head",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Hidden width of the classifier over the features; 0: one Linear layer (VISSL's RotNet head).
        head_hidden: i64 = 0, Range::at_least(0.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        // Crop and flip only: colour cues do not tell a rotation, and flips keep "up" up.
        Pipeline { views: vec![ViewSpec::crop_flip(size, (0.2, 1.0))] }
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Rotation::new(self, backbone, device)))
    }
}

/// The rotations, in label order.
pub const ROTATIONS: i64 = 4;

/// A classifier over the features: one Linear, or Linear-BN-ReLU-Linear when `hidden > 0`.
pub fn classifier(path: &str, input: i64, hidden: i64, classes: i64) -> MlpHead {
    if hidden == 0 {
        return MlpHead::new(path, vec![HeadBlock::new(input, classes, None, None)]);
    }
    MlpHead::new(path, vec![HeadBlock::new(input, hidden, Some(Norm::BatchNorm), Some(Act::Relu)), HeadBlock::new(hidden, classes, None, None)])
}

/// The batch rotated by 0, 90, 180, 270 degrees, concatenated in that order, and the labels.
///
/// # Shapes
/// x: (B, C, H, H) -> ((4B, C, H, H), (4B,) int64)
pub fn rotate_batch(x: &Tensor) -> (Tensor, Tensor) {
    let b = x.size()[0];
    let rotated: Vec<Tensor> = (0..ROTATIONS).map(|k| x.rot90(k, [2, 3])).collect();
    let labels = Tensor::arange(ROTATIONS, (Kind::Int64, x.device())).repeat_interleave_self_int(b, 0, None);
    (Tensor::cat(&rotated, 0), labels)
}

pub struct Rotation {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
}

impl Rotation {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let head = classifier("projection_head", backbone.embed_dim(), c.head_hidden, ROTATIONS);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        Self { backbone, head, params }
    }
}

impl Method for Rotation {
    super::student_accessors!("rotation");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("rotation", views, 1)?;
        let (x, labels) = rotate_batch(&views[0]);
        let logits = embed(&self.backbone, &self.head, &self.params, &x);
        Ok(loss::cross_entropy(&logits, &labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotation 1 is counter-clockwise (`torch.rot90`): the top-right pixel goes to the top-left.
    #[test]
    fn rotations_are_counter_clockwise_and_labelled_in_order() {
        let x = Tensor::arange(4, (Kind::Float, Device::Cpu)).reshape([1, 1, 2, 2]);
        let (r, l) = rotate_batch(&x);
        assert_eq!(Vec::<f32>::try_from(r.flatten(0, -1)).unwrap(), vec![0., 1., 2., 3., 1., 3., 0., 2., 3., 2., 1., 0., 2., 0., 3., 1.]);
        assert_eq!(Vec::<i64>::try_from(l).unwrap(), vec![0, 1, 2, 3]);
    }
}

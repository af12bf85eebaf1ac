//! Context prediction (Doersch, Gupta and Efros 2015, "Unsupervised Visual
//! Representation Learning by Context Prediction"): from a 3x3 grid of
//! patches with gaps and jitter, the centre patch and one of its 8
//! neighbours go through a shared backbone and a shared fc6; the two fc6
//! outputs, concatenated (centre first), are classified into the neighbour's
//! position.
//!
//! Reference: the paper (sec. 3: patches in a 3x3 grid separated by gaps,
//! each jittered; late fusion of the two patch representations; sec. 3.1:
//! chromatic-aberration countermeasure "projection": shift green and magenta
//! toward gray by projecting out the green-magenta colour axis, here
//! `(-1, 2, -1) / sqrt(6)` in RGB, on the un-normalised pixels). The grid
//! geometry is the jigsaw's (`jigsaw::cell_and_tile`): cells of `size / 3`
//! px, patches of `64/75` of a cell at a random offset inside it (8-px
//! patches in 10-px cells for 32-px CIFAR views; use a larger
//! `--image-size` for larger patches). Position labels are the neighbours in
//! row-major order, cells 0, 1, 2, 3, 5, 6, 7, 8. Heads: `projection_head`
//! is fc6 over one patch's features (exported); the pair classifier
//! `prediction_head` takes two patches and is trained but not listed.

use pretext_data::augment::{Pipeline, Resolution, ViewSpec, IMAGENET_MEAN, IMAGENET_STD};
use pretext_models::{Act, Backbone, HeadBlock, HeadSpec, MlpHead, Norm};
use tch::{Device, Kind, Tensor};

use super::jigsaw::{cell_and_tile, GRID};
use super::{check_views, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "context_prediction", aliases: ["context", "relative_position"],
    summary: "Context prediction: classify which of 8 neighbours a patch is, relative to the centre patch (Doersch et al. 2015)",
    reference: "Doersch et al. 2015 sec. 3 (grid with gaps and jitter, late fusion) and 3.1 (green-magenta projection)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Output width of fc6, applied to each patch's features.
        proj_out: i64 = 128, Range::at_least(1.0);
        /// Hidden width of fc7 over the two concatenated fc6 outputs.
        head_hidden: i64 = d.max(32), Range::at_least(1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        Pipeline { views: vec![ViewSpec::crop_flip(size, (0.2, 1.0))] }
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(ContextPrediction::new(self, backbone, device)))
    }
}

/// The 8 neighbours of the centre cell, in label order.
pub const NEIGHBOURS: [i64; 8] = [0, 1, 2, 3, 5, 6, 7, 8];
/// Random numbers per image: the position, then (dy, dx) of the centre patch and of the neighbour.
pub const NOISE_PER_IMAGE: i64 = 5;

/// Projects out the green-magenta axis of ImageNet-normalised images (on their RGB values).
///
/// # Shapes
/// x: (N, 3, H, W) -> (N, 3, H, W)
pub fn project_green_magenta(x: &Tensor) -> Tensor {
    let mean = Tensor::from_slice(&IMAGENET_MEAN).to_device(x.device()).reshape([1, 3, 1, 1]);
    let std = Tensor::from_slice(&IMAGENET_STD).to_device(x.device()).reshape([1, 3, 1, 1]);
    let a = (Tensor::from_slice(&[-1.0f32, 2.0, -1.0]) / 6f64.sqrt()).to_device(x.device()).reshape([1, 3, 1, 1]);
    let rgb = x * &std + &mean;
    let along = (&rgb * &a).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    (rgb - along * a - mean) / std
}

/// Centre and neighbour patches of a batch and the neighbours' labels.
///
/// # Shapes
/// x: (B, C, S, S); noise: (B, 5) uniform in [0, 1) -> ((2B, C, T, T), centres first; (B,) int64)
pub fn pairs(x: &Tensor, noise: &Tensor) -> (Tensor, Tensor) {
    let s = x.size();
    let (b, size) = (s[0], s[2]);
    let (cell, tile) = cell_and_tile(size);
    let labels = (noise.select(1, 0) * 8.0).floor().to_kind(Kind::Int64).clamp(0, 7);
    let offsets = (noise.narrow(1, 1, 4) * (cell - tile + 1) as f64).floor().to_kind(Kind::Int64).clamp(0, cell - tile);
    let lab = Vec::<i64>::try_from(labels.to_device(Device::Cpu)).unwrap_or_default();
    let off = Vec::<i64>::try_from(offsets.flatten(0, -1).to_device(Device::Cpu)).unwrap_or_default();
    let patch = |i: i64, cell_id: i64, dy: i64, dx: i64| x.get(i).narrow(1, (cell_id / GRID) * cell + dy, tile).narrow(2, (cell_id % GRID) * cell + dx, tile);
    let mut rows = Vec::with_capacity(2 * b as usize);
    for i in 0..b {
        let o = &off[(4 * i) as usize..(4 * i + 4) as usize];
        rows.push(patch(i, 4, o[0], o[1]));
    }
    for i in 0..b {
        let o = &off[(4 * i) as usize..(4 * i + 4) as usize];
        rows.push(patch(i, NEIGHBOURS[lab[i as usize] as usize], o[2], o[3]));
    }
    (project_green_magenta(&Tensor::stack(&rows, 0)), labels)
}

pub struct ContextPrediction {
    /// Fixed transform noise for the next step (step-equivalence tests); consumed by `loss`.
    pub next_noise: Option<Tensor>,
    backbone: Backbone,
    fc6: MlpHead,
    classifier: MlpHead,
    params: Params,
}

impl ContextPrediction {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let fc6 = MlpHead::new("projection_head", vec![HeadBlock::new(backbone.embed_dim(), c.proj_out, Some(Norm::BatchNorm), Some(Act::Relu))]);
        let classifier = MlpHead::new("prediction_head", vec![
            HeadBlock::new(2 * c.proj_out, c.head_hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(c.head_hidden, NEIGHBOURS.len() as i64, None, None),
        ]);
        let params = Params::new(specs(&backbone, &[&fc6, &classifier]), device);
        params.use_channels_last();
        Self { next_noise: None, backbone, fc6, classifier, params }
    }
}

impl Method for ContextPrediction {
    super::student_accessors!("context_prediction");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.fc6.clone()))]
    }
    fn set_mask_noise(&mut self, noise: Tensor) {
        self.next_noise = Some(noise);
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("context_prediction", views, 1)?;
        let x = &views[0];
        let b = x.size()[0];
        let noise = self.next_noise.take().unwrap_or_else(|| Tensor::rand([b, NOISE_PER_IMAGE], (Kind::Float, x.device())));
        let (patches, labels) = pairs(x, &noise);
        let mut o = TchOps::new(&self.params, true);
        let f = self.backbone.forward_features(&mut o, &patches);
        let h = self.fc6.forward(&mut o, &f).reshape([2, b, -1]).permute([1, 0, 2]).reshape([b, -1]);
        Ok(loss::cross_entropy(&self.classifier.forward(&mut o, &h), &labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gray pixels stay; the green-magenta component is removed, so the result has none.
    #[test]
    fn projection_keeps_gray_and_removes_green_magenta() {
        let mean = Tensor::from_slice(&IMAGENET_MEAN).reshape([1, 3, 1, 1]);
        let std = Tensor::from_slice(&IMAGENET_STD).reshape([1, 3, 1, 1]);
        let norm = |rgb: [f32; 3]| (Tensor::from_slice(&rgb).reshape([1, 3, 1, 1]) - &mean) / &std;
        let gray = norm([0.3, 0.3, 0.3]);
        assert!(project_green_magenta(&gray).allclose(&gray, 1e-5, 1e-5, false));
        // Pure green (0, 1, 0) -> (1/3, 1/3, 1/3): green minus its component along (-1, 2, -1)/sqrt(6).
        let g = project_green_magenta(&norm([0.0, 1.0, 0.0]));
        assert!(g.allclose(&norm([1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]), 1e-5, 1e-5, false));
    }
}

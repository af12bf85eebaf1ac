//! Counting visual primitives (Noroozi, Pirsiavash and Favaro 2017,
//! "Representation Learning by Learning to Count"): the counting vector of
//! the image downsampled by 2 must equal the sum of the counting vectors of
//! its four quadrant tiles, and a contrastive term keeps the counting vector
//! of another image away from that sum, so the features cannot collapse to 0.
//!
//! Reference: the paper's eq. 5,
//! `l = |phi(D x) - sum_j phi(T_j x)|^2 + max(0, M - |phi(D y) - sum_j phi(T_j x)|^2)`,
//! averaged over the batch, with `phi` the backbone followed by a Linear and a
//! ReLU (counts are non-negative; the paper's 1000-d fc), `T_j` the four
//! quadrants and `D` a 2x downsampling. Differences: `D` is a 2x2 box filter
//! (the paper picks among bilinear, bicubic, Lanczos and box at random, so
//! that no one filter's artefacts can be used); `y` is the next image of the
//! batch (`roll(1)`); the 5B half-size images go through the backbone in one
//! batch. No random choice to fix.

use pretext_data::augment::{Pipeline, Resolution, ViewSpec};
use pretext_models::{Act, Backbone, HeadBlock, HeadSpec, MlpHead};
use tch::{Device, Tensor};

use super::{check_views, embed, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;
use crate::optim::OptimizerKind;

super::method! {
    name: "counting", aliases: [],
    summary: "Counting: the counting vector of the 2x-downsampled image equals the sum over its 4 tiles, contrasted with another image (Noroozi et al. 2017)",
    reference: "Noroozi et al. 2017 eq. 5 (counting + contrastive term with margin M)",
    // The loss sums squared differences over `proj_out` counts: at the other methods' lr 0.06, two
    // steps on 16 images take the features to ~5e9; at 1e-4 they stay O(1) (SGD, momentum 0.9).
    optimizer: OptimizerDefaults { kind: OptimizerKind::Sgd, lr: 1e-4, weight_decay: 5e-4 },
    config(d) {
        /// Dimension of the counting vector (a Linear and a ReLU over the features; the paper's 1000).
        proj_out: i64 = 1000, Range::at_least(1.0);
        /// Margin M of the contrastive term on the squared distance.
        margin: f64 = 10.0, Range::at_least(0.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        Pipeline { views: vec![ViewSpec::crop_flip(size, (0.2, 1.0))] }
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Counting::new(self, backbone, device)))
    }
}

/// The 2x-downsampled images then the 4 quadrant tiles (row-major), each a block of B rows.
///
/// # Shapes
/// x: (B, C, S, S), S even -> (5B, C, S/2, S/2)
pub fn downsampled_and_tiles(x: &Tensor) -> Tensor {
    let h = x.size()[2] / 2;
    let x = x.narrow(2, 0, 2 * h).narrow(3, 0, 2 * h);
    let mut rows = vec![x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)];
    for j in 0..4 {
        rows.push(x.narrow(2, (j / 2) * h, h).narrow(3, (j % 2) * h, h));
    }
    Tensor::cat(&rows, 0)
}

pub struct Counting {
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    margin: f64,
}

impl Counting {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let head = MlpHead::new("projection_head", vec![HeadBlock::new(backbone.embed_dim(), c.proj_out, None, Some(Act::Relu))]);
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        Self { backbone, head, params, margin: c.margin }
    }
}

impl Method for Counting {
    super::student_accessors!("counting");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("counting", views, 1)?;
        let phi = embed(&self.backbone, &self.head, &self.params, &downsampled_and_tiles(&views[0])).chunk(5, 0);
        let tiles = &phi[1] + &phi[2] + &phi[3] + &phi[4];
        let other = phi[0].roll([1i64].as_slice(), [0i64].as_slice());
        Ok(loss::counting(&phi[0], &tiles, &other, self.margin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn downsampling_is_the_box_filter_and_tiles_are_quadrants() {
        let x = Tensor::arange(16, (Kind::Float, Device::Cpu)).reshape([1, 1, 4, 4]);
        let y = downsampled_and_tiles(&x);
        assert_eq!(y.size(), vec![5, 1, 2, 2]);
        assert_eq!(Vec::<f32>::try_from(y.get(0).flatten(0, -1)).unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
        assert_eq!(Vec::<f32>::try_from(y.get(2).flatten(0, -1)).unwrap(), vec![2., 3., 6., 7.]);
        assert_eq!(Vec::<f32>::try_from(y.get(3).flatten(0, -1)).unwrap(), vec![8., 9., 12., 13.]);
    }
}

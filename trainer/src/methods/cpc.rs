//! CPC v2 (Hénaff et al. 2019, "Data-Efficient Image Recognition with
//! Contrastive Predictive Coding"; van den Oord et al. 2018 for CPC): the image
//! is cut into a grid of overlapping patches, each encoded by the backbone; a
//! context network that sees only the rows above (and the current row)
//! summarises them, and linear predictions `k = 1..steps` rows ahead are
//! scored against every patch of every image in the batch (InfoNCE).
//!
//! Reference: Hénaff et al. sec. 3 (patches of half-overlap on a grid,
//! `z_{i,j} = f(x_{i,j})`, `c_{i,j} = g(z_{u,v} : u <= i)` by a masked
//! convolutional network, `z^_{i+k,j} = W_k c_{i,j}`, the loss
//! `-log exp(z^ . z) / sum_l exp(z^ . z_l)` with negatives `z_l` from the
//! other patches of this and the other images). Differences: the context
//! network is `context_layers` masked 3x3 convolutions with ReLU (PixelCNN's
//! mask: the kernel's bottom row is zero, so row `i` sees rows `<= i`; the
//! paper uses a deeper PixelCNN-style network), the loss is the mean over
//! `k` of each step's mean cross entropy, and the encoder keeps the ResNet's
//! BatchNorm (the paper swaps in layer norm so that statistics do not leak
//! across patches); no per-patch augmentation. Patches are `patch_size` px
//! with stride `patch_size / 2` (8-px patches, a 7x7 grid on 32-px CIFAR
//! views); `patch_size` and `steps` are checked against the backbone's view
//! size before training. The context network and predictions
//! (`prediction_head.*`) are trained and checkpointed, not exported. No random
//! choice.

use pretext_data::augment::{Pipeline, Resolution, ViewSpec};
use pretext_models::{Backbone, HeadSpec, Init, ParamKind, ParamSpec};
use tch::{Device, Kind, Tensor};

use super::{check_views, ConfigError, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "cpc_v2", aliases: ["cpc"],
    summary: "CPC v2: overlapping patches encoded, a masked-convolution context over each row and the rows above, InfoNCE on predictions rows ahead (Hénaff et al. 2019)",
    reference: "Hénaff et al. 2019 sec. 3 (patch grid, masked-conv context, W_k predictions, InfoNCE over all patches of the batch)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Side of a patch in px; patches overlap by half.
        patch_size: i64 = 8, Range::at_least(2.0);
        /// Rows ahead predicted (k = 1..steps); fewer than the rows of the patch grid.
        steps: i64 = 3, Range::at_least(1.0);
        /// Masked 3x3 convolutions (with ReLU) of the context network.
        context_layers: i64 = 2, Range::at_least(1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        Pipeline { views: vec![ViewSpec::crop_flip(size, (0.2, 1.0))] }
    }
    fn check(&self, backbone: &Backbone) -> Result<(), ConfigError> {
        check_grid(self, backbone.config().default_image_size())
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Cpc::new(self, backbone, device)))
    }
}

/// Rows (and columns) of `p`-px patches at stride `p / 2` on `size`-px views.
pub fn grid(size: i64, p: i64) -> i64 {
    if p <= size {
        (size - p) / (p / 2).max(1) + 1
    } else {
        0
    }
}

/// The patch fits the views and the grid has a row more than the rows predicted ahead.
fn check_grid(c: &Config, size: i64) -> Result<(), ConfigError> {
    let (p, g) = (c.patch_size, grid(size, c.patch_size));
    if g == 0 {
        return Err(ConfigError::new("method.patch_size", p, format!("at most the views' {size} px")));
    }
    if g <= c.steps {
        return Err(ConfigError::new("method.steps", c.steps, format!("at most {}: fewer than the {g} rows of {p}-px patches on {size}-px views", g - 1)));
    }
    Ok(())
}

/// Overlapping patches, row-major per image.
///
/// # Shapes
/// x: (B, C, S, S) -> (B * G * G, C, P, P), G = (S - P) / (P / 2) + 1
pub fn patches(x: &Tensor, p: i64) -> Tensor {
    let s = x.size();
    let st = (p / 2).max(1);
    let u = x.unfold(2, p, st).unfold(3, p, st);
    let g = u.size()[2];
    u.permute([0, 2, 3, 1, 4, 5]).reshape([s[0] * g * g, s[1], p, p])
}

pub struct Cpc {
    backbone: Backbone,
    params: Params,
    c: Config,
}

impl Cpc {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let d = backbone.embed_dim();
        let mut specs = backbone.params();
        for l in 0..c.context_layers {
            specs.push(ParamSpec::new(format!("prediction_head.context.{l}.weight"), &[d, d, 3, 3], Init::UniformFanIn { fan_in: d * 9 }, ParamKind::Weight));
            specs.push(ParamSpec::new(format!("prediction_head.context.{l}.bias"), &[d], Init::UniformFanIn { fan_in: d * 9 }, ParamKind::NoDecay));
        }
        for k in 0..c.steps {
            specs.push(ParamSpec::new(format!("prediction_head.steps.{k}.weight"), &[d, d, 1, 1], Init::UniformFanIn { fan_in: d }, ParamKind::Weight));
        }
        let params = Params::new(specs, device);
        params.use_channels_last();
        Self { backbone, params, c: c.clone() }
    }

    fn param(&self, name: &str) -> Result<&Tensor, MethodError> {
        self.params.get(name).ok_or_else(|| MethodError::Config(ConfigError::new("method", name, "a tensor of the CPC context network")))
    }
}

impl Method for Cpc {
    super::student_accessors!("cpc_v2");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("cpc_v2", views, 1)?;
        let x = &views[0];
        let (b, size, p) = (x.size()[0], x.size()[2], self.c.patch_size);
        check_grid(&self.c, size).map_err(MethodError::Config)?;
        let g = grid(size, p);
        let f = self.backbone.forward_features(&mut TchOps::new(&self.params, true), &patches(x, p));
        let d = f.size()[1];
        let z = f.reshape([b, g, g, d]).permute([0, 3, 1, 2]);
        // Masked 3x3 convolutions: the kernel's bottom row is 0, so row i sees rows <= i.
        let mask = Tensor::ones([1, 1, 3, 3], (Kind::Float, x.device()));
        let _ = mask.narrow(2, 2, 1).fill_(0.0);
        let mut c = z.shallow_clone();
        for l in 0..self.c.context_layers {
            let w = self.param(&format!("prediction_head.context.{l}.weight"))? * &mask;
            let bias = self.param(&format!("prediction_head.context.{l}.bias"))?;
            c = c.conv2d(&w, Some(bias), [1, 1], [1, 1], [1, 1], 1).relu();
        }
        let targets = f;
        let mut per_step = Vec::new();
        for k in 1..=self.c.steps {
            let w = self.param(&format!("prediction_head.steps.{}.weight", k - 1))?;
            // Predictions from rows 0..g-k for rows k..g.
            let pred = c.narrow(2, 0, g - k).conv2d(w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
            let pred = pred.permute([0, 2, 3, 1]).reshape([-1, d]);
            let rows = Tensor::arange(b * (g - k) * g, (Kind::Int64, x.device()));
            let per_image = (g - k) * g;
            let (img, rest) = (rows.divide_scalar_mode(per_image, "floor"), rows.remainder(per_image));
            let labels = img * (g * g) + rest + k * g;
            per_step.push(loss::cross_entropy(&pred.matmul(&targets.tr()), &labels));
        }
        Ok(Tensor::stack(&per_step, 0).mean(Kind::Float))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_overlap_by_half_in_row_major_order() {
        let x = Tensor::arange(36, (Kind::Float, Device::Cpu)).reshape([1, 1, 6, 6]);
        let p = patches(&x, 4);
        assert_eq!(p.size(), vec![4, 1, 4, 4]);
        // Patch (0, 1) starts at column 2; patch (1, 0) at row 2.
        assert_eq!(p.get(1).double_value(&[0, 0, 0]), 2.0);
        assert_eq!(p.get(2).double_value(&[0, 0, 0]), 12.0);
    }

    #[test]
    fn grid_needs_a_row_beyond_the_steps() {
        assert_eq!(grid(32, 8), 7);
        assert_eq!(grid(16, 8), 3);
        assert_eq!(grid(32, 5), 14);
        assert_eq!(grid(8, 16), 0);
        let c = |patch_size, steps| Config { patch_size, steps, context_layers: 1 };
        assert!(check_grid(&c(8, 6), 32).is_ok());
        assert_eq!(check_grid(&c(8, 7), 32).unwrap_err().field, "method.steps");
        assert_eq!(check_grid(&c(40, 1), 32).unwrap_err().field, "method.patch_size");
    }
}

//! Colorization (Zhang, Isola and Efros 2016, "Colorful Image Colorization"):
//! the network sees the L channel of a CIE Lab image and predicts, at each
//! location of a map at 1/4 of the image's resolution, a distribution over the
//! quantised ab bins; multinomial cross-entropy against soft-encoded targets,
//! weighted by class rebalancing.
//!
//! Reference: the paper's sec. 2.1 (eq. 2: `L = -sum_hw v(Z_hw) sum_q Z_hwq log Z^_hwq`;
//! `Z` the soft-encoding of the true ab over its 5 nearest bins with a Gaussian
//! kernel, sigma = 5), sec. 2.2 (`v(Z_hw) = w_q*`, `q* = argmax_q Z_hwq`,
//! `w ∝ ((1 - lambda) p~ + lambda / Q)^-1`, `E_p~[w] = 1`, `p~` the empirical bin
//! distribution smoothed by a Gaussian sigma = 5, lambda = 1/2) and sec. 2.3
//! (annealed mean, T = 0.38, used by `pretext colorize`). Colour maths and
//! bins: [`crate::color`] (261 in-gamut bins, not 313: see there).
//!
//! Choices of this implementation:
//! - Backbone: a ResNet rebuilt for one input channel, `(L - 50) / 50`
//!   (`in_channels = 1` in its config, so checkpoints and the exported ONNX
//!   take (N, 1, H, W)).
//! - Head (`decoder.*`, trained and checkpointed, not exported): the last
//!   stage's map bilinearly upsampled to 1/4 of the image side, a 3x3
//!   convolution (BN, ReLU) and a 1x1 convolution with bias to the Q logits;
//!   a small stand-in for the paper's dilated fully convolutional net.
//! - Targets: the image's ab averaged over 4x4 blocks (the paper subsamples).
//! - Prior: the paper takes it from all of ImageNet before training; here it
//!   is the running count of each pixel's nearest bin over every batch seen
//!   so far, this one included (loss state `prior_counts`, checkpointed).
//! - The loss is averaged over pixels and images (the paper sums).

use pretext_data::augment::{Pipeline, Resolution, ViewSpec};
use pretext_models::layers::{BatchNorm, Conv2d};
use pretext_models::ops::join;
use pretext_models::{Backbone, BackboneConfig, HeadSpec, Ops, ParamSpec, ResNet, Stem, UpsampleMode};
use tch::{Device, Kind, Tensor};

use super::{check_views, ConfigError, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::color;

super::method! {
    name: "colorization", aliases: ["colorful"],
    summary: "Colorization: predict the quantised ab colours of the L channel, rebalanced soft-encoded cross-entropy (Zhang et al. 2016; ResNet only, 1 input channel)",
    reference: "Zhang, Isola, Efros 2016 sec. 2.1 (soft-encoding, eq. 2), 2.2 (class rebalancing), 2.3 (annealed mean)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Channels of the head's 3x3 convolution.
        head_hidden: i64 = 128, Range::at_least(1.0);
        /// Weight of the uniform distribution mixed into the prior (the paper's lambda).
        rebalance_lambda: f64 = 0.5, Range { lo: 0.0, lo_open: true, hi: 1.0, hi_open: false };
        /// Width (in ab units) of the Gaussian kernels of the soft-encoding and of the prior's smoothing.
        sigma: f64 = 5.0, Range::positive();
        /// Temperature of the annealed-mean decoding of `pretext colorize`.
        decode_temperature: f64 = 0.38, Range::positive();
    }
}

/// Nearest bins each pixel's target spreads over (the paper's 5).
pub const SOFT_NEIGHBOURS: i64 = 5;
/// The head predicts at 1/OUT_STRIDE of the image side.
pub const OUT_STRIDE: i64 = 4;

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        // Pixels in [0, 1] (no normalisation): the method converts them to Lab.
        let v = ViewSpec { mean: [0.0; 3], std: [1.0; 3], ..ViewSpec::crop_flip(size, (0.5, 1.0)) };
        Pipeline { views: vec![v] }
    }
    fn check(&self, backbone: &Backbone) -> Result<(), ConfigError> {
        if !matches!(backbone, Backbone::Resnet(_)) {
            return Err(ConfigError::new("backbone", if matches!(backbone, Backbone::Vit(_)) { "a ViT" } else { "a MobileNetV2" }, "a ResNet for colorization: its stem takes the 1-channel L input and the head reads the last stage's map"));
        }
        Ok(())
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Colorization::new(self, backbone, device)?))
    }
}

/// The head: bilinear upsampling by `up`, 3x3 conv (BN, ReLU), 1x1 conv with bias to `classes` logits.
#[derive(Debug, Clone)]
pub struct ColorHead {
    pub path: String,
    pub in_ch: i64,
    pub hidden: i64,
    pub classes: i64,
    pub up: i64,
}

impl ColorHead {
    fn conv(&self) -> Conv2d {
        Conv2d::new(join(&self.path, "conv"), self.in_ch, self.hidden, 3, 1, 1)
    }
    fn bn(&self) -> BatchNorm {
        BatchNorm::new(join(&self.path, "bn"), self.hidden)
    }
    fn logits(&self) -> Conv2d {
        Conv2d::new(join(&self.path, "logits"), self.hidden, self.classes, 1, 1, 0).with_bias().default_init()
    }
    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        self.conv().params(&mut out);
        self.bn().params(&mut out);
        self.logits().params(&mut out);
        out
    }

    /// # Shapes
    /// (B, in_ch, s, s) -> (B, classes, s * up, s * up)
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let h = if self.up > 1 { o.upsample(&join(&self.path, "upsample"), x, self.up, UpsampleMode::Bilinear) } else { o.share(x) };
        let h = self.conv().forward(o, &h);
        let h = self.bn().forward(o, &h);
        let h = o.relu(&join(&self.path, "relu"), &h);
        self.logits().forward(o, &h)
    }
}

/// The backbone of a colorization run: the same ResNet over one input channel.
pub fn gray_backbone(backbone: &Backbone) -> Result<ResNet, MethodError> {
    match backbone.config() {
        BackboneConfig::Resnet(c) => Ok(ResNet::new(c.with_in_channels(1))),
        _ => Err(MethodError::Backbone { method: "colorization".into(), need: "ResNet" }),
    }
}

pub struct Colorization {
    backbone: Backbone,
    resnet: ResNet,
    pub head: ColorHead,
    params: Params,
    pub bins: Tensor,
    prior_counts: Tensor,
    config: Config,
}

impl Colorization {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Result<Self, MethodError> {
        let resnet = gray_backbone(&backbone)?;
        // The last map is at 1/8 of the side (CIFAR stem) or 1/32 (ImageNet stem).
        let stride = if resnet.config.stem == Stem::Cifar { 8 } else { 32 };
        let bins = color::ab_bins(device);
        let head = ColorHead { path: "decoder".into(), in_ch: resnet.config.embed_dim(), hidden: c.head_hidden, classes: bins.size()[0], up: stride / OUT_STRIDE };
        let backbone = Backbone::Resnet(resnet.clone());
        let mut specs = backbone.params();
        specs.extend(head.params());
        let params = Params::new(specs, device);
        params.use_channels_last();
        let prior_counts = Tensor::zeros([head.classes], (Kind::Int64, device));
        Ok(Self { backbone, resnet, head, params, bins, prior_counts, config: c.clone() })
    }

    /// The head's logits for sRGB pixels in [0, 1] (eval or train mode).
    ///
    /// # Shapes
    /// (B, 3, S, S) -> (B, Q, S/4, S/4)
    pub fn logits(&self, rgb: &Tensor, train: bool) -> Tensor {
        logits(&self.resnet, &self.head, &self.params, rgb, train)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// The head over the gray backbone's last map, for sRGB pixels in [0, 1].
pub fn logits(resnet: &ResNet, head: &ColorHead, params: &Params, rgb: &Tensor, train: bool) -> Tensor {
    let mut o = TchOps::new(params, train);
    let map = resnet.forward_stages(&mut o, &color::lightness_input(rgb)).pop().expect("four stages");
    head.forward(&mut o, &map)
}

/// The image's ab averaged over `OUT_STRIDE` x `OUT_STRIDE` blocks.
///
/// # Shapes
/// (B, 3, S, S) -> (B, 2, S/4, S/4)
pub fn target_ab(rgb: &Tensor) -> Tensor {
    color::rgb_to_lab(rgb).narrow(1, 1, 2).avg_pool2d([OUT_STRIDE, OUT_STRIDE], [OUT_STRIDE, OUT_STRIDE], [0, 0], false, true, None::<i64>)
}

impl Method for Colorization {
    super::student_accessors!("colorization");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("colorization", views, 1)?;
        let x = &views[0];
        let s = x.size();
        if s[1] != 3 || s[2] % OUT_STRIDE != 0 || s[3] != s[2] {
            return Err(MethodError::Config(ConfigError::new("view shape", format!("{s:?}"), format!("(B, 3, S, S) sRGB pixels with S a multiple of {OUT_STRIDE}"))));
        }
        let logits = self.logits(x, true);
        let ab = tch::no_grad(|| target_ab(x));
        if logits.size()[2..] != ab.size()[2..] {
            return Err(MethodError::Config(ConfigError::new("image size", s[2], format!("a side whose last ResNet map upsamples to 1/{OUT_STRIDE} of it: logits {:?}, targets {:?}", logits.size(), ab.size()))));
        }
        let (z, v) = tch::no_grad(|| {
            let z = color::soft_encode(&ab, &self.bins, SOFT_NEIGHBOURS, self.config.sigma);
            let nearest = color::nearest_bin(&ab, &self.bins);
            let batch_counts = nearest.flatten(0, -1).bincount::<Tensor>(None, self.head.classes);
            let _ = self.prior_counts.g_add_(&batch_counts);
            let w = color::rebalance_weights(&self.prior_counts, &self.bins, self.config.sigma, self.config.rebalance_lambda);
            (z, w.index_select(0, &nearest.flatten(0, -1)).reshape_as(&nearest))
        });
        let ce = -(z * logits.log_softmax(1, Kind::Float)).sum_dim_intlist(1, false, Kind::Float);
        Ok((ce * v).mean(Kind::Float))
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("prior_counts".into(), self.prior_counts.shallow_clone())]
    }
}

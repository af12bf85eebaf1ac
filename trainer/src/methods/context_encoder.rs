//! Context encoders (Pathak, Krähenbühl, Donahue, Darrell and Efros 2016,
//! "Context Encoders: Feature Learning by Inpainting"): the central region of
//! the image is dropped, an encoder maps the rest to a feature map, a
//! channel-wise fully connected layer spreads information over the map, and
//! a decoder of transposed convolutions paints the hole; L2 loss on the hole.
//!
//! Reference: the paper's sec. 3 (encoder, "channel-wise fully-connected
//! layer" of `m` independent `n^2 x n^2` matrices "followed by a stride 1
//! convolution to propagate information across channels", up-convolutions
//! with BN and ReLU) and sec. 3.2 (`L_rec = ||M (x - F((1 - M) x))||^2`,
//! central region mask). Differences: the encoder is the ResNet (its last
//! stage's map), the hole (half the side, centred) is filled with 0 (the
//! normalised mean), the loss is the mean squared error over the hole's
//! pixels, without the paper's 10x weight on a 4-px overlap band and
//! without the optional adversarial term; the decoder's last layer is
//! linear (targets are normalised pixels, not tanh range). No random choice.
//! The decoder (`decoder.*`) is trained and checkpointed, not exported.

use pretext_data::augment::{Pipeline, Resolution, ViewSpec};
use pretext_models::layers::{BatchNorm, Conv2d};
use pretext_models::ops::join;
use pretext_models::{Backbone, ConvTransposeArgs, HeadSpec, Init, Ops, ParamKind, ParamSpec, Stem};
use tch::{Device, Kind, Tensor};

use super::{check_views, ConfigError, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "context_encoder", aliases: ["inpainting"],
    summary: "Context encoders: inpaint the dropped centre of the image from its context, L2 on the hole (Pathak et al. 2016; ResNet only)",
    reference: "Pathak et al. 2016 sec. 3 (channel-wise FC, up-convolutions) and 3.2 (central mask, L2 reconstruction)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Channels of the decoder's up-convolutions.
        decoder_channels: i64 = 64, Range::at_least(1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        Pipeline { views: vec![ViewSpec::crop_flip(size, (0.2, 1.0))] }
    }
    fn check(&self, backbone: &Backbone) -> Result<(), ConfigError> {
        if !matches!(backbone, Backbone::Resnet(_)) {
            return Err(ConfigError::new("backbone", if matches!(backbone, Backbone::Vit(_)) { "a ViT" } else { "a MobileNetV2" }, "a ResNet for context_encoder: the decoder paints from the last stage's feature map"));
        }
        Ok(())
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(ContextEncoder::new(self, backbone, device)?))
    }
}

/// The decoder: channel-wise FC over the `side x side` map, a 1x1 convolution, then
/// 4x4 stride-2 up-convolutions (BN, ReLU) to the hole, the last to 3 channels with a bias.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub path: String,
    /// Channels of the encoder's map.
    pub in_ch: i64,
    /// Side of the encoder's map.
    pub side: i64,
    pub width: i64,
    /// Up-convolutions (each doubles the side).
    pub ups: i64,
}

impl Decoder {
    fn up_out(&self, i: i64) -> i64 {
        if i == self.ups - 1 {
            3
        } else {
            self.width
        }
    }
    fn up_in(&self, i: i64) -> i64 {
        if i == 0 {
            self.in_ch
        } else {
            self.width
        }
    }
    pub fn params(&self) -> Vec<ParamSpec> {
        let n = self.side * self.side;
        let mut out = vec![ParamSpec::new(join(&self.path, "channel_fc.weight"), &[self.in_ch, n, n], Init::UniformFanIn { fan_in: n }, ParamKind::Weight)];
        Conv2d::new(join(&self.path, "conv1x1"), self.in_ch, self.in_ch, 1, 1, 0).with_bias().default_init().params(&mut out);
        for i in 0..self.ups {
            let p = join(&self.path, &format!("up.{i}"));
            let (cin, cout) = (self.up_in(i), self.up_out(i));
            out.push(ParamSpec::new(join(&p, "conv.weight"), &[cin, cout, 4, 4], Init::UniformFanIn { fan_in: cout * 16 }, ParamKind::Weight));
            if i == self.ups - 1 {
                out.push(ParamSpec::new(join(&p, "conv.bias"), &[cout], Init::UniformFanIn { fan_in: cout * 16 }, ParamKind::NoDecay));
            } else {
                BatchNorm::new(join(&p, "bn"), cout).params(&mut out);
            }
        }
        out
    }

    /// # Shapes
    /// (B, C, s, s) -> (B, 3, s * 2^ups, s * 2^ups)
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let n = self.side * self.side;
        let h = o.reshape(&join(&self.path, "flatten"), x, &[-1, self.in_ch, n]);
        let h = o.permute(&join(&self.path, "to_channels"), &h, &[1, 0, 2]);
        let w = o.param(&join(&self.path, "channel_fc.weight"));
        let h = o.matmul(&join(&self.path, "channel_fc"), &h, &w);
        let h = o.permute(&join(&self.path, "from_channels"), &h, &[1, 0, 2]);
        let h = o.reshape(&join(&self.path, "unflatten"), &h, &[-1, self.in_ch, self.side, self.side]);
        let h = Conv2d::new(join(&self.path, "conv1x1"), self.in_ch, self.in_ch, 1, 1, 0).with_bias().forward(o, &h);
        let mut h = o.relu(&join(&self.path, "relu"), &h);
        let args = ConvTransposeArgs { stride: 2, padding: 1, output_padding: 0, dilation: 1, groups: 1 };
        for i in 0..self.ups {
            let p = join(&self.path, &format!("up.{i}"));
            let w = o.param(&join(&p, "conv.weight"));
            if i == self.ups - 1 {
                let b = o.param(&join(&p, "conv.bias"));
                h = o.conv_transpose2d(&join(&p, "conv"), &h, &w, Some(&b), args);
            } else {
                h = o.conv_transpose2d(&join(&p, "conv"), &h, &w, None, args);
                h = BatchNorm::new(join(&p, "bn"), self.up_out(i)).forward(o, &h);
                h = o.relu(&join(&p, "relu"), &h);
            }
        }
        h
    }
}

pub struct ContextEncoder {
    backbone: Backbone,
    decoder: Decoder,
    params: Params,
}

impl ContextEncoder {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Result<Self, MethodError> {
        let Backbone::Resnet(r) = &backbone else {
            return Err(MethodError::Backbone { method: "context_encoder".into(), need: "ResNet" });
        };
        // The map of the backbone's default image size: 1/8 of it (CIFAR stem), 1/32 (ImageNet stem);
        // the hole is half the image, so the decoder upsamples by stride / 2.
        let stride = if r.config.stem == Stem::Cifar { 8 } else { 32 };
        let size = backbone.config().default_image_size();
        let decoder = Decoder { path: "decoder".into(), in_ch: backbone.embed_dim(), side: size / stride, width: c.decoder_channels, ups: (stride / 2).ilog2() as i64 };
        let mut specs = backbone.params();
        specs.extend(decoder.params());
        let params = Params::new(specs, device);
        params.use_channels_last();
        Ok(Self { backbone, decoder, params })
    }
}

/// The image with its centred hole (half the side) set to 0, and the hole's pixels.
///
/// # Shapes
/// x: (B, C, S, S) -> ((B, C, S, S), (B, C, S/2, S/2))
pub fn drop_centre(x: &Tensor) -> (Tensor, Tensor) {
    let s = x.size()[2];
    let (top, hole) = (s / 4, s / 2);
    let target = x.narrow(2, top, hole).narrow(3, top, hole);
    let mask = Tensor::ones([1, 1, s, s], (Kind::Float, x.device()));
    let _ = mask.narrow(2, top, hole).narrow(3, top, hole).fill_(0.0);
    (x * mask, target)
}

impl Method for ContextEncoder {
    super::student_accessors!("context_encoder");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![]
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("context_encoder", views, 1)?;
        let Backbone::Resnet(r) = &self.backbone else {
            return Err(MethodError::Backbone { method: "context_encoder".into(), need: "ResNet" });
        };
        let (input, target) = drop_centre(&views[0]);
        let mut o = TchOps::new(&self.params, true);
        let Some(map) = r.forward_stages(&mut o, &input).pop() else {
            return Err(MethodError::Backbone { method: "context_encoder".into(), need: "ResNet with stages" });
        };
        let side = map.size()[2];
        if side != self.decoder.side {
            let s = views[0].size()[2];
            return Err(MethodError::Config(ConfigError::new("image size", s, format!("{} px, the backbone's default: the decoder's channel-wise FC is built for a {} x {} map", self.backbone.config().default_image_size(), self.decoder.side, self.decoder.side))));
        }
        let pred = self.decoder.forward(&mut o, &map);
        Ok(loss::mse(&pred, &target))
    }
}

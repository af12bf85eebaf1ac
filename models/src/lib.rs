//! pretext models: backbones and heads written once against the [`Ops`]
//! trait. The trainer runs them on tch tensors with autograd; the exporter
//! runs the same code to record ONNX nodes. Parameter paths match
//! torchvision/timm state-dict keys.

pub mod flops;
pub mod heads;
pub mod io;
pub mod knn;
pub mod layers;
pub mod mobilenet;
pub mod ops;
pub mod resnet;
pub mod scoped;
pub mod tensorfile;
pub mod vit;

pub use heads::{Act, HeadBlock, HeadSpec, Layer, MaeDecoder, MlpHead, Norm, HEADS_KEY, PREFIX_KEY};
pub use mobilenet::{MobileNetV2, MobileNetV2Config};
pub use ops::{ConvArgs, ConvTransposeArgs, Init, Ops, ParamKind, ParamSpec, UpsampleMode};
pub use resnet::{ResNet, ResNetConfig, Stem};
pub use vit::{Vit, VitConfig};

use serde::{Deserialize, Serialize};

/// ImageNet channel statistics for 0..1 pixels, the normalisation torchvision,
/// timm and lightly use by default (augmentation, export metadata, eval transform).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Channel statistics of CIFAR-10's training set for 0..1 pixels.
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// Which backbone, with its full configuration. Serialised into checkpoints
/// and ONNX metadata, so a model can be rebuilt from either.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum BackboneConfig {
    Resnet(ResNetConfig),
    Vit(VitConfig),
    MobilenetV2(MobileNetV2Config),
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown backbone '{0}': expected one of {1}")]
    UnknownBackbone(String, String),
}

pub const BACKBONE_NAMES: &[&str] = &[
    "resnet18", "resnet34", "resnet50", "resnet18-cifar", "resnet34-cifar", "resnet50-cifar",
    "vit-tiny", "vit-small", "vit-base", "vit-tiny-cifar", "vit-small-cifar", "mobilenet_v2",
];

impl BackboneConfig {
    /// Parse a CLI name. `-cifar` selects the CIFAR stem (ResNet) or 4-px
    /// patches at 32 px (ViT); ViTs default to 16-px patches at 224 px.
    pub fn from_name(name: &str) -> Result<Self, ModelError> {
        let c = match name {
            "resnet18" => Self::Resnet(ResNetConfig::resnet18()),
            "resnet34" => Self::Resnet(ResNetConfig::resnet34()),
            "resnet50" => Self::Resnet(ResNetConfig::resnet50()),
            "resnet18-cifar" => Self::Resnet(ResNetConfig::resnet18_cifar()),
            "resnet34-cifar" => Self::Resnet(ResNetConfig { stem: Stem::Cifar, ..ResNetConfig::resnet34() }),
            "resnet50-cifar" => Self::Resnet(ResNetConfig { stem: Stem::Cifar, ..ResNetConfig::resnet50() }),
            "vit-tiny" => Self::Vit(VitConfig::vit_tiny_patch16_224()),
            "vit-small" => Self::Vit(VitConfig::vit_small_patch16_224()),
            "vit-base" => Self::Vit(VitConfig::vit_base_patch16_224()),
            "vit-tiny-cifar" => Self::Vit(VitConfig::vit_tiny_patch16_224().with_patch_and_size(4, 32)),
            "vit-small-cifar" => Self::Vit(VitConfig::vit_small_patch16_224().with_patch_and_size(4, 32)),
            "mobilenet_v2" | "mobilenet-v2" => Self::MobilenetV2(MobileNetV2Config::mobilenet_v2()),
            _ => return Err(ModelError::UnknownBackbone(name.into(), BACKBONE_NAMES.join(", "))),
        };
        Ok(c)
    }

    /// Channels of the input image (3 but for a ResNet built for one L channel).
    pub fn in_channels(&self) -> i64 {
        match self {
            Self::Resnet(c) => c.in_channels,
            _ => 3,
        }
    }

    /// The input resolution the model is meant for.
    pub fn default_image_size(&self) -> i64 {
        match self {
            Self::Resnet(c) if c.stem == Stem::Cifar => 32,
            Self::Vit(c) => c.img_size,
            _ => 224,
        }
    }
}

/// A built backbone.
#[derive(Debug, Clone)]
pub enum Backbone {
    Resnet(ResNet),
    Vit(Vit),
    MobilenetV2(MobileNetV2),
}

impl Backbone {
    pub fn new(config: &BackboneConfig) -> Self {
        match config {
            BackboneConfig::Resnet(c) => Self::Resnet(ResNet::new(c.clone())),
            BackboneConfig::Vit(c) => Self::Vit(Vit::new(c.clone())),
            BackboneConfig::MobilenetV2(c) => Self::MobilenetV2(MobileNetV2::new(c.clone())),
        }
    }
    pub fn config(&self) -> BackboneConfig {
        match self {
            Self::Resnet(m) => BackboneConfig::Resnet(m.config.clone()),
            Self::Vit(m) => BackboneConfig::Vit(m.config.clone()),
            Self::MobilenetV2(m) => BackboneConfig::MobilenetV2(m.config.clone()),
        }
    }
    pub fn params(&self) -> Vec<ParamSpec> {
        match self {
            Self::Resnet(m) => m.params(),
            Self::Vit(m) => m.params(),
            Self::MobilenetV2(m) => m.params(),
        }
    }
    /// Dimension of [`Backbone::forward_features`].
    pub fn embed_dim(&self) -> i64 {
        match self {
            Self::Resnet(m) => m.config.embed_dim(),
            Self::Vit(m) => m.config.embed_dim,
            Self::MobilenetV2(m) => m.embed_dim(),
        }
    }
    /// Pooled features (N, embed_dim), never a classifier.
    pub fn forward_features<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        match self {
            Self::Resnet(m) => m.forward_features(o, x),
            Self::Vit(m) => m.forward_features(o, x),
            Self::MobilenetV2(m) => m.forward_features(o, x),
        }
    }
    /// Features, or logits when the config has a classifier.
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        match self {
            Self::Resnet(m) => m.forward(o, x),
            Self::Vit(m) => m.forward(o, x),
            Self::MobilenetV2(m) => m.forward(o, x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(c: BackboneConfig) -> i64 {
        Backbone::new(&c).params().iter().filter(|p| matches!(p.kind, ParamKind::Weight | ParamKind::NoDecay)).map(|p| p.numel()).sum()
    }

    /// Trainable parameter counts equal torchvision/timm's (`sum(p.numel() for p in m.parameters())`).
    #[test]
    fn parameter_counts_match_torchvision_and_timm() {
        assert_eq!(count(BackboneConfig::Resnet(ResNetConfig::resnet18().with_classes(1000))), 11_689_512);
        assert_eq!(count(BackboneConfig::Resnet(ResNetConfig::resnet34().with_classes(1000))), 21_797_672);
        assert_eq!(count(BackboneConfig::Resnet(ResNetConfig::resnet50().with_classes(1000))), 25_557_032);
        assert_eq!(count(BackboneConfig::MobilenetV2(MobileNetV2Config { width_mult: 1.0, num_classes: Some(1000) })), 3_504_872);
        assert_eq!(count(BackboneConfig::Vit(VitConfig { num_classes: Some(1000), ..VitConfig::vit_small_patch16_224() })), 22_050_664);
        assert_eq!(count(BackboneConfig::Vit(VitConfig { num_classes: Some(1000), ..VitConfig::vit_base_patch16_224() })), 86_567_656);
        assert_eq!(count(BackboneConfig::Vit(VitConfig { num_classes: Some(1000), ..VitConfig::vit_tiny_patch16_224() })), 5_717_416);
    }

    #[test]
    fn names_are_unique_and_torchvision_shaped() {
        for n in BACKBONE_NAMES {
            let b = Backbone::new(&BackboneConfig::from_name(n).unwrap());
            let ps = b.params();
            let mut names: Vec<_> = ps.iter().map(|p| p.name.clone()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), ps.len(), "{n}: duplicate parameter names");
        }
        let r = Backbone::new(&BackboneConfig::from_name("resnet50").unwrap());
        let names: Vec<_> = r.params().into_iter().map(|p| p.name).collect();
        assert!(names.contains(&"layer1.0.downsample.0.weight".to_string()));
        assert!(names.contains(&"layer4.2.bn3.running_var".to_string()));
        let m = Backbone::new(&BackboneConfig::from_name("mobilenet_v2").unwrap());
        let names: Vec<_> = m.params().into_iter().map(|p| p.name).collect();
        for k in ["features.1.conv.0.0.weight", "features.1.conv.1.weight", "features.1.conv.2.running_mean", "features.2.conv.3.weight", "features.18.1.bias"] {
            assert!(names.contains(&k.to_string()), "{k} missing");
        }
    }
}

//! ResNet-18/34/50 (He et al., "Deep Residual Learning for Image
//! Recognition", 2016), torchvision parameter names.
//!
//! Two stems: ImageNet (7x7 stride-2 conv + 3x3 max-pool) and CIFAR (3x3
//! stride-1 conv, no max-pool), as used by SimCLR/solo-learn on 32 px images.

use serde::{Deserialize, Serialize};

use crate::layers::{BatchNorm, Conv2d, Linear};
use crate::ops::{join, Ops, ParamSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    Imagenet,
    Cifar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub block: BlockKind,
    pub layers: [usize; 4],
    pub stem: Stem,
    /// Channels of the first stage (64 in torchvision).
    pub width: i64,
    /// Classifier head (`fc`), None for a headless feature extractor.
    pub num_classes: Option<i64>,
    /// Channels of the input image: 3 (RGB), 1 for colorization's L channel.
    /// Absent in configs written before it existed: 3.
    #[serde(default = "three")]
    pub in_channels: i64,
}

fn three() -> i64 {
    3
}

impl ResNetConfig {
    pub fn resnet18() -> Self {
        Self { block: BlockKind::Basic, layers: [2, 2, 2, 2], stem: Stem::Imagenet, width: 64, num_classes: None, in_channels: 3 }
    }
    pub fn resnet34() -> Self {
        Self { layers: [3, 4, 6, 3], ..Self::resnet18() }
    }
    pub fn resnet50() -> Self {
        Self { block: BlockKind::Bottleneck, layers: [3, 4, 6, 3], ..Self::resnet18() }
    }
    pub fn resnet18_cifar() -> Self {
        Self { stem: Stem::Cifar, ..Self::resnet18() }
    }
    pub fn with_width(mut self, width: i64) -> Self {
        self.width = width;
        self
    }
    /// The same network over `c`-channel inputs (only `conv1` changes).
    pub fn with_in_channels(mut self, c: i64) -> Self {
        self.in_channels = c;
        self
    }
    pub fn with_classes(mut self, n: i64) -> Self {
        self.num_classes = Some(n);
        self
    }
    fn expansion(&self) -> i64 {
        match self.block {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
    /// Channels of C5, the pooled feature dimension.
    pub fn embed_dim(&self) -> i64 {
        self.width * 8 * self.expansion()
    }
    /// Channels of C2..C5.
    pub fn stage_channels(&self) -> [i64; 4] {
        let e = self.expansion();
        [self.width * e, self.width * 2 * e, self.width * 4 * e, self.width * 8 * e]
    }
}

#[derive(Debug, Clone)]
struct Block {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Option<(Conv2d, BatchNorm)>,
    downsample: Option<(Conv2d, BatchNorm)>,
    path: String,
}

impl Block {
    fn params(&self, out: &mut Vec<ParamSpec>) {
        self.conv1.params(out);
        self.bn1.params(out);
        self.conv2.params(out);
        self.bn2.params(out);
        if let Some((c, b)) = &self.conv3 {
            c.params(out);
            b.params(out);
        }
        if let Some((c, b)) = &self.downsample {
            c.params(out);
            b.params(out);
        }
    }
    fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let mut h = self.conv1.forward(o, x);
        h = self.bn1.forward(o, &h);
        h = o.relu(&join(&self.path, "relu1"), &h);
        h = self.conv2.forward(o, &h);
        h = self.bn2.forward(o, &h);
        if let Some((c, b)) = &self.conv3 {
            h = o.relu(&join(&self.path, "relu2"), &h);
            h = c.forward(o, &h);
            h = b.forward(o, &h);
        }
        let identity = match &self.downsample {
            Some((c, b)) => {
                let s = c.forward(o, x);
                b.forward(o, &s)
            }
            None => o.share(x),
        };
        let y = o.add(&join(&self.path, "add"), &h, &identity);
        o.relu(&join(&self.path, "relu"), &y)
    }
}

#[derive(Debug, Clone)]
pub struct ResNet {
    pub config: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm,
    stages: Vec<Vec<Block>>,
    fc: Option<Linear>,
}

impl ResNet {
    pub fn new(config: ResNetConfig) -> Self {
        let conv1 = match config.stem {
            Stem::Imagenet => Conv2d::new("conv1", config.in_channels, config.width, 7, 2, 3),
            Stem::Cifar => Conv2d::new("conv1", config.in_channels, config.width, 3, 1, 1),
        };
        let bn1 = BatchNorm::new("bn1", config.width);
        let e = config.expansion();
        let mut in_ch = config.width;
        let mut stages = Vec::new();
        for (si, &n) in config.layers.iter().enumerate() {
            let planes = config.width << si;
            let stride = if si == 0 { 1 } else { 2 };
            let mut blocks = Vec::new();
            for bi in 0..n {
                let p = format!("layer{}.{}", si + 1, bi);
                let s = if bi == 0 { stride } else { 1 };
                let out_ch = planes * e;
                let downsample = (bi == 0 && (s != 1 || in_ch != out_ch)).then(|| {
                    (Conv2d::new(format!("{p}.downsample.0"), in_ch, out_ch, 1, s, 0), BatchNorm::new(format!("{p}.downsample.1"), out_ch))
                });
                let block = match config.block {
                    BlockKind::Basic => Block {
                        conv1: Conv2d::new(format!("{p}.conv1"), in_ch, planes, 3, s, 1),
                        bn1: BatchNorm::new(format!("{p}.bn1"), planes),
                        conv2: Conv2d::new(format!("{p}.conv2"), planes, planes, 3, 1, 1),
                        bn2: BatchNorm::new(format!("{p}.bn2"), planes),
                        conv3: None,
                        downsample,
                        path: p,
                    },
                    // torchvision v1.5: the stride sits on the 3x3 conv.
                    BlockKind::Bottleneck => Block {
                        conv1: Conv2d::new(format!("{p}.conv1"), in_ch, planes, 1, 1, 0),
                        bn1: BatchNorm::new(format!("{p}.bn1"), planes),
                        conv2: Conv2d::new(format!("{p}.conv2"), planes, planes, 3, s, 1),
                        bn2: BatchNorm::new(format!("{p}.bn2"), planes),
                        conv3: Some((Conv2d::new(format!("{p}.conv3"), planes, out_ch, 1, 1, 0), BatchNorm::new(format!("{p}.bn3"), out_ch))),
                        downsample,
                        path: p,
                    },
                };
                blocks.push(block);
                in_ch = out_ch;
            }
            stages.push(blocks);
        }
        let fc = config.num_classes.map(|n| Linear::new("fc", config.embed_dim(), n));
        Self { config, conv1, bn1, stages, fc }
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        self.conv1.params(&mut out);
        self.bn1.params(&mut out);
        for b in self.stages.iter().flatten() {
            b.params(&mut out);
        }
        if let Some(fc) = &self.fc {
            fc.params(&mut out);
        }
        out
    }

    /// The feature maps C2..C5 (after layer1..layer4), for detection heads.
    ///
    /// # Shapes
    /// (N, in_channels, H, W) -> [(N, w, H/4, W/4), ..., (N, 8w·e, H/32, W/32)] for the ImageNet stem
    /// (H/1..H/8 for the CIFAR stem)
    pub fn forward_stages<O: Ops>(&self, o: &mut O, x: &O::T) -> Vec<O::T> {
        let mut h = self.conv1.forward(o, x);
        h = self.bn1.forward(o, &h);
        h = o.relu("relu", &h);
        if self.config.stem == Stem::Imagenet {
            h = o.max_pool2d("maxpool", &h, 3, 2, 1);
        }
        let mut outs = Vec::new();
        for stage in &self.stages {
            for b in stage {
                h = b.forward(o, &h);
            }
            outs.push(o.share(&h));
        }
        outs
    }

    /// Pooled features, or logits when the model has a classifier.
    ///
    /// # Shapes
    /// (N, in_channels, H, W) -> (N, embed_dim) or (N, num_classes)
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let c5 = self.forward_stages(o, x).pop().expect("four stages");
        let f = o.global_avg_pool("avgpool", &c5);
        match &self.fc {
            Some(fc) => fc.forward(o, &f),
            None => f,
        }
    }

    /// Pooled features, never the classifier.
    pub fn forward_features<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let c5 = self.forward_stages(o, x).pop().expect("four stages");
        o.global_avg_pool("avgpool", &c5)
    }
}

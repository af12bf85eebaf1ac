//! MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
//! Bottlenecks", 2018), torchvision parameter names (`features.N...`,
//! `classifier.1`).

use serde::{Deserialize, Serialize};

use crate::layers::{BatchNorm, Conv2d, Linear, LinearInit};
use crate::ops::{join, Init, Ops, ParamKind, ParamSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV2Config {
    pub width_mult: f64,
    pub num_classes: Option<i64>,
}

impl MobileNetV2Config {
    pub fn mobilenet_v2() -> Self {
        Self { width_mult: 1.0, num_classes: None }
    }
    pub fn last_channel(&self) -> i64 {
        make_divisible(1280.0 * self.width_mult.max(1.0), 8)
    }
}

/// torchvision `_make_divisible`.
fn make_divisible(v: f64, divisor: i64) -> i64 {
    let d = divisor as f64;
    let mut new_v = ((v + d / 2.0) as i64 / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// Conv + BN (+ ReLU6), torchvision `Conv2dNormActivation`.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    act: bool,
    path: String,
}

impl ConvBn {
    /// `conv_path`/`bn_path` are the full names; `path` names the activation.
    fn new(path: &str, conv_path: String, bn_path: String, i: i64, o: i64, k: i64, s: i64, groups: i64, act: bool) -> Self {
        Self { conv: Conv2d::new(conv_path, i, o, k, s, (k - 1) / 2).groups(groups), bn: BatchNorm::new(bn_path, o), act, path: path.to_string() }
    }
    fn seq(path: &str, i: i64, o: i64, k: i64, s: i64, groups: i64) -> Self {
        Self::new(path, join(path, "0"), join(path, "1"), i, o, k, s, groups, true)
    }
    fn params(&self, out: &mut Vec<ParamSpec>) {
        self.conv.params(out);
        self.bn.params(out);
    }
    fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let h = self.conv.forward(o, x);
        let h = self.bn.forward(o, &h);
        if self.act {
            o.relu6(&join(&self.path, "2"), &h)
        } else {
            h
        }
    }
}

#[derive(Debug, Clone)]
struct InvertedResidual {
    layers: Vec<ConvBn>,
    residual: bool,
    path: String,
}

impl InvertedResidual {
    fn new(path: String, inp: i64, oup: i64, stride: i64, t: i64) -> Self {
        let hidden = inp * t;
        let c = |n: &str| format!("{path}.conv.{n}");
        let mut layers = Vec::new();
        let mut idx = 0;
        if t != 1 {
            layers.push(ConvBn::seq(&c("0"), inp, hidden, 1, 1, 1));
            idx = 1;
        }
        layers.push(ConvBn::seq(&c(&idx.to_string()), hidden, hidden, 3, stride, hidden));
        // Linear bottleneck: 1x1 conv then BN, no activation.
        layers.push(ConvBn::new(&c("pw"), c(&(idx + 1).to_string()), c(&(idx + 2).to_string()), hidden, oup, 1, 1, 1, false));
        Self { layers, residual: stride == 1 && inp == oup, path }
    }
}

#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    pub config: MobileNetV2Config,
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    last: ConvBn,
    classifier: Option<Linear>,
}

impl MobileNetV2 {
    pub fn new(config: MobileNetV2Config) -> Self {
        let w = config.width_mult;
        let mut inp = make_divisible(32.0 * w, 8);
        let stem = ConvBn::seq("features.0", 3, inp, 3, 2, 1);
        let settings: [(i64, f64, usize, i64); 7] =
            [(1, 16., 1, 1), (6, 24., 2, 2), (6, 32., 3, 2), (6, 64., 4, 2), (6, 96., 3, 1), (6, 160., 3, 2), (6, 320., 1, 1)];
        let mut blocks = Vec::new();
        let mut fi = 1;
        for (t, c, n, s) in settings {
            let oup = make_divisible(c * w, 8);
            for i in 0..n {
                blocks.push(InvertedResidual::new(format!("features.{fi}"), inp, oup, if i == 0 { s } else { 1 }, t));
                inp = oup;
                fi += 1;
            }
        }
        let last = ConvBn::seq(&format!("features.{fi}"), inp, config.last_channel(), 1, 1, 1);
        let classifier = config.num_classes.map(|n| Linear::new("classifier.1", config.last_channel(), n).init(LinearInit::TruncNormal(0.01)));
        Self { config, stem, blocks, last, classifier }
    }

    pub fn embed_dim(&self) -> i64 {
        self.config.last_channel()
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        self.stem.params(&mut out);
        for b in &self.blocks {
            for l in &b.layers {
                l.params(&mut out);
            }
        }
        self.last.params(&mut out);
        if let Some(c) = &self.classifier {
            c.params(&mut out);
            // torchvision: normal(0, 0.01) weight, zero bias.
            let w = out.iter_mut().find(|p| p.name == "classifier.1.weight").expect("classifier weight");
            w.init = Init::Normal { std: 0.01 };
            debug_assert_eq!(w.kind, ParamKind::Weight);
        }
        out
    }

    /// # Shapes
    /// (N, 3, H, W) -> (N, 1280)
    pub fn forward_features<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let mut h = self.stem.forward(o, x);
        for b in &self.blocks {
            let mut y = o.share(&h);
            for l in &b.layers {
                y = l.forward(o, &y);
            }
            h = if b.residual { o.add(&join(&b.path, "add"), &h, &y) } else { y };
        }
        h = self.last.forward(o, &h);
        o.global_avg_pool("avgpool", &h)
    }

    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let f = self.forward_features(o, x);
        match &self.classifier {
            Some(c) => c.forward(o, &f),
            None => f,
        }
    }
}

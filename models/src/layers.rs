//! Basic layers: each holds its path and config, lists its parameters, and
//! runs on any [`Ops`] backend.

use crate::ops::{join, ConvArgs, Init, Ops, ParamKind, ParamSpec};

/// `nn.Conv2d` with torchvision naming (`{path}.weight`, `{path}.bias`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub path: String,
    pub in_ch: i64,
    pub out_ch: i64,
    pub kernel: i64,
    pub args: ConvArgs,
    pub bias: bool,
    /// torchvision ResNet/MobileNet use kaiming_normal fan_out; timm patch
    /// embeddings and plain `nn.Conv2d` use the PyTorch default.
    pub kaiming_fan_out: bool,
}

impl Conv2d {
    pub fn new(path: impl Into<String>, in_ch: i64, out_ch: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        Self {
            path: path.into(),
            in_ch,
            out_ch,
            kernel,
            args: ConvArgs { stride, padding, dilation: 1, groups: 1 },
            bias: false,
            kaiming_fan_out: true,
        }
    }
    pub fn groups(mut self, g: i64) -> Self {
        self.args.groups = g;
        self
    }
    pub fn with_bias(mut self) -> Self {
        self.bias = true;
        self
    }
    pub fn default_init(mut self) -> Self {
        self.kaiming_fan_out = false;
        self
    }
    pub fn params(&self, out: &mut Vec<ParamSpec>) {
        let k = self.kernel;
        let fan_in = self.in_ch / self.args.groups * k * k;
        let fan_out = self.out_ch / self.args.groups * k * k;
        let init = if self.kaiming_fan_out { Init::KaimingNormalFanOut { fan_out } } else { Init::UniformFanIn { fan_in } };
        out.push(ParamSpec::new(join(&self.path, "weight"), &[self.out_ch, self.in_ch / self.args.groups, k, k], init, ParamKind::Weight));
        if self.bias {
            let init = if self.kaiming_fan_out { Init::Zeros } else { Init::UniformFanIn { fan_in } };
            out.push(ParamSpec::new(join(&self.path, "bias"), &[self.out_ch], init, ParamKind::NoDecay));
        }
    }
    /// # Shapes
    /// (N, in_ch, H, W) -> (N, out_ch, H', W')
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let w = o.param(&join(&self.path, "weight"));
        let b = self.bias.then(|| o.param(&join(&self.path, "bias")));
        o.conv2d(&self.path, x, &w, b.as_ref(), self.args)
    }
}

/// `nn.BatchNorm1d/2d` (momentum 0.1, eps 1e-5 unless set).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub path: String,
    pub ch: i64,
    pub eps: f64,
    pub momentum: f64,
    /// Initialise gamma to zero (torchvision `zero_init_residual`).
    pub zero_gamma: bool,
}

impl BatchNorm {
    pub fn new(path: impl Into<String>, ch: i64) -> Self {
        Self { path: path.into(), ch, eps: 1e-5, momentum: 0.1, zero_gamma: false }
    }
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    pub fn params(&self, out: &mut Vec<ParamSpec>) {
        let p = |n: &str| join(&self.path, n);
        let gamma = if self.zero_gamma { Init::Zeros } else { Init::Ones };
        out.push(ParamSpec::new(p("weight"), &[self.ch], gamma, ParamKind::NoDecay));
        out.push(ParamSpec::new(p("bias"), &[self.ch], Init::Zeros, ParamKind::NoDecay));
        out.push(ParamSpec::new(p("running_mean"), &[self.ch], Init::Zeros, ParamKind::Buffer));
        out.push(ParamSpec::new(p("running_var"), &[self.ch], Init::Ones, ParamKind::Buffer));
        out.push(ParamSpec::new(p("num_batches_tracked"), &[], Init::Zeros, ParamKind::Counter));
    }
    /// # Shapes
    /// (N, C) or (N, C, H, W), unchanged
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let p = |n: &str| join(&self.path, n);
        let (w, b) = (o.param(&p("weight")), o.param(&p("bias")));
        let (m, v) = (o.param(&p("running_mean")), o.param(&p("running_var")));
        o.batch_norm(&self.path, x, &w, &b, &m, &v, self.momentum, self.eps)
    }
}

/// How a linear layer's weight is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinearInit {
    /// PyTorch `nn.Linear` default.
    Torch,
    /// timm ViT: xavier_uniform weight, zero bias.
    Xavier,
    /// trunc_normal(std) weight, zero bias (timm heads, MAE).
    TruncNormal(f64),
}

/// `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub path: String,
    pub in_f: i64,
    pub out_f: i64,
    pub bias: bool,
    pub init: LinearInit,
}

impl Linear {
    pub fn new(path: impl Into<String>, in_f: i64, out_f: i64) -> Self {
        Self { path: path.into(), in_f, out_f, bias: true, init: LinearInit::Torch }
    }
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
    pub fn init(mut self, init: LinearInit) -> Self {
        self.init = init;
        self
    }
    pub fn params(&self, out: &mut Vec<ParamSpec>) {
        let (wi, bi) = match self.init {
            LinearInit::Torch => (Init::UniformFanIn { fan_in: self.in_f }, Init::UniformFanIn { fan_in: self.in_f }),
            LinearInit::Xavier => (Init::XavierUniform { fan_in: self.in_f, fan_out: self.out_f }, Init::Zeros),
            LinearInit::TruncNormal(std) => (Init::TruncNormal { std }, Init::Zeros),
        };
        out.push(ParamSpec::new(join(&self.path, "weight"), &[self.out_f, self.in_f], wi, ParamKind::Weight));
        if self.bias {
            out.push(ParamSpec::new(join(&self.path, "bias"), &[self.out_f], bi, ParamKind::NoDecay));
        }
    }
    /// # Shapes
    /// (..., in_f) -> (..., out_f)
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let w = o.param(&join(&self.path, "weight"));
        let b = self.bias.then(|| o.param(&join(&self.path, "bias")));
        o.linear(&self.path, x, &w, b.as_ref())
    }
}

/// `nn.LayerNorm` over the last dim.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub path: String,
    pub dim: i64,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(path: impl Into<String>, dim: i64, eps: f64) -> Self {
        Self { path: path.into(), dim, eps }
    }
    pub fn params(&self, out: &mut Vec<ParamSpec>) {
        out.push(ParamSpec::new(join(&self.path, "weight"), &[self.dim], Init::Ones, ParamKind::NoDecay));
        out.push(ParamSpec::new(join(&self.path, "bias"), &[self.dim], Init::Zeros, ParamKind::NoDecay));
    }
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let (w, b) = (o.param(&join(&self.path, "weight")), o.param(&join(&self.path, "bias")));
        o.layer_norm(&self.path, x, &w, &b, self.eps)
    }
}

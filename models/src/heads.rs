//! Heads as data: a list of blocks `(in, out, norm, activation)`, laid out
//! like lightly's `ProjectionHead` (an `nn.Sequential` named `layers`), so
//! parameter names match: `{path}.layers.0.weight`, `{path}.layers.1.running_mean`, ...

use serde::{Deserialize, Serialize};

use crate::layers::{BatchNorm, Linear};
use crate::ops::{join, Ops, ParamSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    BatchNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Relu,
    Gelu,
}

/// One block: Linear (bias only when no norm follows, as in lightly), then
/// an optional norm, then an optional activation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadBlock {
    pub in_dim: i64,
    pub out_dim: i64,
    pub norm: Option<Norm>,
    pub act: Option<Act>,
}

impl HeadBlock {
    pub fn new(in_dim: i64, out_dim: i64, norm: Option<Norm>, act: Option<Act>) -> Self {
        Self { in_dim, out_dim, norm, act }
    }
}

enum Layer {
    Linear(Linear),
    Norm(BatchNorm),
    Act(Act, String),
}

/// An MLP head.
pub struct MlpHead {
    pub path: String,
    pub blocks: Vec<HeadBlock>,
    layers: Vec<Layer>,
}

impl MlpHead {
    pub fn new(path: impl Into<String>, blocks: Vec<HeadBlock>) -> Self {
        let path = path.into();
        let mut layers = Vec::new();
        for b in &blocks {
            let p = |i: usize| join(&path, &format!("layers.{i}"));
            let mut lin = Linear::new(p(layers.len()), b.in_dim, b.out_dim);
            lin.bias = b.norm.is_none();
            layers.push(Layer::Linear(lin));
            if let Some(Norm::BatchNorm) = b.norm {
                layers.push(Layer::Norm(BatchNorm::new(p(layers.len()), b.out_dim)));
            }
            if let Some(a) = b.act {
                layers.push(Layer::Act(a, p(layers.len())));
            }
        }
        Self { path, blocks, layers }
    }

    /// SimCLR v1 projection: Linear-BN-ReLU, Linear-BN (lightly `SimCLRProjectionHead`, num_layers=2).
    pub fn simclr(path: &str, input: i64, hidden: i64, out: i64) -> Self {
        Self::new(path, vec![
            HeadBlock::new(input, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(hidden, out, Some(Norm::BatchNorm), None),
        ])
    }

    /// Linear-BN-ReLU, Linear: BYOL/MoCo-v2 style projection and BYOL/SimSiam prediction.
    pub fn two_layer(path: &str, input: i64, hidden: i64, out: i64) -> Self {
        Self::new(path, vec![
            HeadBlock::new(input, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(hidden, out, None, None),
        ])
    }

    pub fn out_dim(&self) -> i64 {
        self.blocks.last().map(|b| b.out_dim).unwrap_or(0)
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Linear(x) => x.params(&mut out),
                Layer::Norm(x) => x.params(&mut out),
                Layer::Act(..) => {}
            }
        }
        out
    }

    /// # Shapes
    /// (N, in) -> (N, out)
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let mut h = o.share(x);
        for l in &self.layers {
            h = match l {
                Layer::Linear(x) => x.forward(o, &h),
                Layer::Norm(x) => x.forward(o, &h),
                Layer::Act(Act::Relu, n) => o.relu(n, &h),
                Layer::Act(Act::Gelu, n) => o.gelu(n, &h),
            };
        }
        h
    }
}

//! Heads as data. A method's heads are [`HeadSpec`]s: the trainer runs them
//! over `TchOps`, writes them into every checkpoint's `pretext.heads`
//! metadata (a JSON object, export name -> spec), and the exporter reads them
//! back and runs the same code over `OnnxOps`. Nothing is inferred from
//! tensor names.
//!
//! An [`MlpHead`] is a list of named layers laid out like lightly's heads (an
//! `nn.Sequential` named `layers`), so parameter names match:
//! `{path}.layers.0.weight`, `{path}.layers.1.running_mean`, DINO's
//! `{path}.last_layer.weight`. A [`MaeDecoder`] is MAE's decoder with its
//! masking (`forward_decoder` of the MAE repo's `models_mae.py`).

use serde::{Deserialize, Serialize};

use crate::layers::{BatchNorm, Linear, LinearInit};
use crate::ops::{join, Init, Ops, ParamKind, ParamSpec};
use crate::scoped::Scoped;
use crate::vit::{Vit, VitConfig};

/// A BatchNorm's flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// `nn.BatchNorm1d`: affine, running statistics (momentum 0.1, eps 1e-5).
    #[serde(rename = "batchnorm")]
    BatchNorm,
    /// `nn.BatchNorm1d(affine=False)`: running statistics, no weight or bias (SimSiam's projector output).
    BatchNormNoAffine,
    /// `nn.BatchNorm1d(track_running_stats=False)`: batch statistics in training and inference, affine.
    BatchNormBatchStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Relu,
    Gelu,
}

/// One layer of an [`MlpHead`], its tensors under `{head path}.{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Layer {
    /// `nn.Linear` (PyTorch default init).
    Linear { name: String, in_dim: i64, out_dim: i64, bias: bool },
    /// `weight_norm(nn.Linear(in, out, bias=False))` with the norm `g` fixed
    /// to 1 (DINO's `norm_last_layer`): `x @ (v / ||v_row||)^T`. Only `v` is
    /// stored, as `{name}.weight`.
    WeightNormLinear { name: String, in_dim: i64, out_dim: i64 },
    Norm { name: String, dim: i64, norm: Norm },
    Act { name: String, act: Act },
    /// `F.normalize(x, dim=-1)`: x / max(||x||, 1e-12).
    L2Normalize { name: String },
}

/// One lightly block: Linear (bias only when no norm follows, as in
/// lightly), then an optional norm, then an optional activation. A builder
/// of [`Layer`]s.
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// `F.normalize`'s default eps.
const L2_EPS: f64 = 1e-12;

/// A head over pooled features: (N, in) -> (N, out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpHead {
    pub path: String,
    pub layers: Vec<Layer>,
}

impl MlpHead {
    /// lightly's `ProjectionHead` layout: blocks numbered `layers.0`, `layers.1`, ...
    pub fn new(path: impl Into<String>, blocks: Vec<HeadBlock>) -> Self {
        let mut layers = Vec::new();
        for b in &blocks {
            let n = |layers: &Vec<Layer>| format!("layers.{}", layers.len());
            layers.push(Layer::Linear { name: n(&layers), in_dim: b.in_dim, out_dim: b.out_dim, bias: b.norm.is_none() });
            if let Some(norm) = b.norm {
                layers.push(Layer::Norm { name: n(&layers), dim: b.out_dim, norm });
            }
            if let Some(act) = b.act {
                layers.push(Layer::Act { name: n(&layers), act });
            }
        }
        Self { path: path.into(), layers }
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

    /// SimSiam's projector (lightly `SimSiamProjectionHead`): "BN applied to
    /// each fully-connected layer, including its output fc. Its output fc has
    /// no ReLU"; the output BN has no affine parameters.
    pub fn simsiam_projection(path: &str, input: i64, hidden: i64, out: i64) -> Self {
        Self::new(path, vec![
            HeadBlock::new(input, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(hidden, hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(hidden, out, Some(Norm::BatchNormNoAffine), None),
        ])
    }

    /// The DINO head (DINO repo `DINOHead`, `norm_last_layer=True`): a
    /// 3-layer MLP with GELU to a bottleneck, L2 normalisation, then a
    /// weight-normalised linear layer `last_layer` with its norm fixed to 1.
    pub fn dino(path: &str, input: i64, hidden: i64, bottleneck: i64, out: i64) -> Self {
        let mut h = Self::new(path, vec![
            HeadBlock::new(input, hidden, None, Some(Act::Gelu)),
            HeadBlock::new(hidden, hidden, None, Some(Act::Gelu)),
            HeadBlock::new(hidden, bottleneck, None, None),
        ]);
        h.layers.push(Layer::L2Normalize { name: "l2_normalize".into() });
        h.layers.push(Layer::WeightNormLinear { name: "last_layer".into(), in_dim: bottleneck, out_dim: out });
        h
    }

    fn at(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// Heads run one after the other, as one head over the features (BYOL's
    /// and SimSiam's predictor runs on the projector's output): the result has
    /// an empty path and each layer's name carries its own head's path, so
    /// the tensors keep their names.
    pub fn chain(heads: &[&MlpHead]) -> MlpHead {
        let layers = heads
            .iter()
            .flat_map(|h| {
                h.layers.iter().map(move |l| {
                    let mut l = l.clone();
                    match &mut l {
                        Layer::Linear { name, .. } | Layer::WeightNormLinear { name, .. } | Layer::Norm { name, .. } | Layer::Act { name, .. } | Layer::L2Normalize { name } => *name = h.at(name),
                    }
                    l
                })
            })
            .collect();
        MlpHead { path: String::new(), layers }
    }

    pub fn out_dim(&self) -> i64 {
        self.layers
            .iter()
            .rev()
            .find_map(|l| match l {
                Layer::Linear { out_dim, .. } | Layer::WeightNormLinear { out_dim, .. } => Some(*out_dim),
                _ => None,
            })
            .unwrap_or(0)
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Linear { name, in_dim, out_dim, bias } => {
                    let mut lin = Linear::new(self.at(name), *in_dim, *out_dim);
                    lin.bias = *bias;
                    lin.params(&mut out);
                }
                Layer::WeightNormLinear { name, in_dim, out_dim } => {
                    let w = join(&self.at(name), "weight");
                    out.push(ParamSpec::new(w, &[*out_dim, *in_dim], Init::UniformFanIn { fan_in: *in_dim }, ParamKind::Weight));
                }
                Layer::Norm { name, dim, norm } => {
                    let mut all = Vec::new();
                    BatchNorm::new(self.at(name), *dim).params(&mut all);
                    let keep = |leaf: &str| match norm {
                        Norm::BatchNorm => true,
                        Norm::BatchNormNoAffine => !matches!(leaf, "weight" | "bias"),
                        Norm::BatchNormBatchStats => matches!(leaf, "weight" | "bias"),
                    };
                    out.extend(all.into_iter().filter(|p| keep(p.name.rsplit('.').next().unwrap_or(""))));
                }
                Layer::Act { .. } | Layer::L2Normalize { .. } => {}
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
                Layer::Linear { name, in_dim, out_dim, bias } => {
                    let mut lin = Linear::new(self.at(name), *in_dim, *out_dim);
                    lin.bias = *bias;
                    lin.forward(o, &h)
                }
                Layer::WeightNormLinear { name, .. } => {
                    let p = self.at(name);
                    let v = o.param(&join(&p, "weight"));
                    let w = o.l2_normalize(&join(&p, "weight_norm"), &v, L2_EPS);
                    o.linear(&p, &h, &w, None)
                }
                Layer::Norm { name, dim, norm } => {
                    let bn = BatchNorm::new(self.at(name), *dim);
                    let p = |leaf: &str| join(&bn.path, leaf);
                    match norm {
                        Norm::BatchNorm => bn.forward(o, &h),
                        Norm::BatchNormNoAffine => {
                            let (m, v) = (o.param(&p("running_mean")), o.param(&p("running_var")));
                            o.batch_norm_plain(&bn.path, &h, &m, &v, bn.momentum, bn.eps)
                        }
                        Norm::BatchNormBatchStats => {
                            let (w, b) = (o.param(&p("weight")), o.param(&p("bias")));
                            o.batch_norm_batch_stats(&bn.path, &h, Some(&w), Some(&b), bn.eps)
                        }
                    }
                }
                Layer::Act { name, act: Act::Relu } => o.relu(&self.at(name), &h),
                Layer::Act { name, act: Act::Gelu } => o.gelu(&self.at(name), &h),
                Layer::L2Normalize { name } => o.l2_normalize(&self.at(name), &h, L2_EPS),
            };
        }
        h
    }
}

/// MAE's decoder (He et al. 2021, `models_mae.py` `forward_decoder`), with
/// the encoder pass over the visible patches that feeds it. Its tensors sit
/// under `{path}.`: `decoder_embed`, `mask_token`, `decoder_pos_embed`,
/// `blocks.N.*`, `norm`, `decoder_pred`.
///
/// The mask is given as indices, as MAE's `random_masking` returns them:
/// `ids_keep` (B, K) int64, the visible patches in encoder order, and
/// `ids_restore` (B, N) int64, the inverse of the shuffle (token `n` of the
/// image is entry `ids_restore[n]` of `[visible..., masked...]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaeDecoder {
    pub path: String,
    /// The encoder's token width.
    pub in_dim: i64,
    /// The decoder's transformer: `embed_dim`, `depth`, `num_heads`, and the
    /// encoder's patch grid (`patch_size`, `img_size`).
    pub decoder: VitConfig,
    pub mask_ratio: f64,
}

impl MaeDecoder {
    pub fn new(path: &str, encoder: &VitConfig, decoder_dim: i64, depth: usize, num_heads: i64, mask_ratio: f64) -> Self {
        let decoder = VitConfig { embed_dim: decoder_dim, depth, num_heads, num_classes: None, ..encoder.clone() };
        Self { path: path.into(), in_dim: encoder.embed_dim, decoder, mask_ratio }
    }

    /// Patches per image.
    pub fn num_patches(&self) -> i64 {
        self.decoder.grid() * self.decoder.grid()
    }

    /// Visible patches per image: `int(N * (1 - mask_ratio))` as MAE, rounded.
    pub fn visible(&self) -> i64 {
        ((self.num_patches() as f64) * (1.0 - self.mask_ratio)).round() as i64
    }

    /// Values per patch of the prediction: p·p·3.
    pub fn out_dim(&self) -> i64 {
        self.decoder.patch_size * self.decoder.patch_size * 3
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let (d, dd, pp, n) = (self.in_dim, self.decoder.embed_dim, self.out_dim(), self.num_patches());
        let mut ps: Vec<ParamSpec> = Vit::new(self.decoder.clone()).params().into_iter().filter(|s| s.name.starts_with("blocks.") || s.name.starts_with("norm.")).collect();
        ps.push(ParamSpec::new("decoder_embed.weight", &[dd, d], Init::XavierUniform { fan_in: d, fan_out: dd }, ParamKind::Weight));
        ps.push(ParamSpec::new("decoder_embed.bias", &[dd], Init::Zeros, ParamKind::NoDecay));
        ps.push(ParamSpec::new("mask_token", &[1, 1, dd], Init::Normal { std: 0.02 }, ParamKind::NoDecay));
        ps.push(ParamSpec::new("decoder_pos_embed", &[1, n + 1, dd], Init::TruncNormal { std: 0.02 }, ParamKind::NoDecay));
        ps.push(ParamSpec::new("decoder_pred.weight", &[pp, dd], Init::XavierUniform { fan_in: dd, fan_out: pp }, ParamKind::Weight));
        ps.push(ParamSpec::new("decoder_pred.bias", &[pp], Init::Zeros, ParamKind::NoDecay));
        for p in &mut ps {
            p.name = join(&self.path, &p.name);
        }
        ps
    }

    /// The encoder over the visible patches (MAE's `forward_encoder` after `random_masking`).
    ///
    /// # Shapes
    /// x (B, 3, H, W), ids_keep (B, K) -> (B, 1 + K, D)
    pub fn encode<O: Ops>(&self, o: &mut O, encoder: &Vit, x: &O::T, ids_keep: &O::T) -> O::T {
        let tokens = encoder.embed_patches(o, x);
        let vis = o.gather_tokens("mask.keep", &tokens, ids_keep);
        let cls = encoder.cls_token(o, &vis);
        let seq = o.concat("mask.cls_concat", &[cls, vis], 1);
        encoder.forward_blocks(o, &seq)
    }

    /// The decoder: embed, append mask tokens, unshuffle, add positions,
    /// blocks, norm, predict; the class token's prediction is dropped.
    ///
    /// # Shapes
    /// enc (B, 1 + K, D), ids_restore (B, N) -> (B, N, p·p·3)
    pub fn decode<O: Ops>(&self, o: &mut O, enc: &O::T, ids_restore: &O::T) -> O::T {
        let mut s = Scoped::new(o, &self.path);
        let o = &mut s;
        let dd = self.decoder.embed_dim;
        let h = Linear::new("decoder_embed", self.in_dim, dd).forward(o, enc);
        let cls = o.slice("decoder_embed.cls", &h, 1, 0, 1);
        let vis = o.slice("decoder_embed.visible", &h, 1, 1, i64::MAX);
        let token = o.param("mask_token");
        let copies: Vec<O::T> = (0..self.num_patches() - self.visible()).map(|_| o.share(&token)).collect();
        let masked = o.concat("mask_token.repeat", &copies, 1);
        let masked = o.expand_batch("mask_token.expand", &masked, &vis);
        let seq = o.concat("mask_token.concat", &[vis, masked], 1);
        let seq = o.gather_tokens("unshuffle", &seq, ids_restore);
        let seq = o.concat("unshuffle.cls_concat", &[cls, seq], 1);
        let pos = o.param("decoder_pos_embed");
        let seq = o.add("decoder_pos_embed.add", &seq, &pos);
        let seq = Vit::new(self.decoder.clone()).forward_blocks(o, &seq);
        let pred = Linear::new("decoder_pred", dd, self.out_dim()).init(LinearInit::Xavier).forward(o, &seq);
        o.slice("decoder_pred.patches", &pred, 1, 1, i64::MAX)
    }

    /// # Shapes
    /// x (B, 3, H, W), ids_keep (B, K), ids_restore (B, N) -> (B, N, p·p·3)
    pub fn forward<O: Ops>(&self, o: &mut O, encoder: &Vit, x: &O::T, ids_keep: &O::T, ids_restore: &O::T) -> O::T {
        let enc = self.encode(o, encoder, x, ids_keep);
        self.decode(o, &enc, ids_restore)
    }
}

/// A head as the trainer writes it into `pretext.heads` and the exporter reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeadSpec {
    /// Over the backbone's pooled features.
    Mlp(MlpHead),
    /// Over the image and a mask (graph inputs `ids_keep`, `ids_restore`).
    MaeDecoder(MaeDecoder),
}

impl HeadSpec {
    pub fn params(&self) -> Vec<ParamSpec> {
        match self {
            Self::Mlp(h) => h.params(),
            Self::MaeDecoder(h) => h.params(),
        }
    }
    /// The output's shape after the batch axis.
    pub fn out_shape(&self) -> Vec<i64> {
        match self {
            Self::Mlp(h) => vec![h.out_dim()],
            Self::MaeDecoder(h) => vec![h.num_patches(), h.out_dim()],
        }
    }
}

/// Safetensors metadata key of a file's heads: a JSON object, export name ->
/// [`HeadSpec`]; its keys are exactly the names `pretext export --with-head` accepts.
pub const HEADS_KEY: &str = crate::tensorfile::keys::HEADS;
/// Safetensors metadata key of the prefix under which a file stores the
/// exportable network (`student.` in a run's checkpoint, absent when plain).
pub const PREFIX_KEY: &str = crate::tensorfile::keys::PREFIX;

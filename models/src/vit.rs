//! Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words",
//! 2021), timm parameter names: `patch_embed.proj`, `cls_token`,
//! `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
//! `norm`, optional `head`.
//!
//! Token-level entry points ([`Vit::embed_patches`], [`Vit::cls_token`],
//! [`Vit::forward_blocks`]) let MAE/iBOT-style methods drop or mask tokens
//! between the patch embedding and the blocks. When the forward resolution
//! differs from the grid the position embedding was trained on, it is
//! resampled bicubically (as timm's `resample_abs_pos_embed`, without
//! antialias); the exporter folds that into a frozen initializer.

use serde::{Deserialize, Serialize};

use crate::layers::{Conv2d, LayerNorm, Linear, LinearInit};
use crate::ops::{join, Init, Ops, ParamKind, ParamSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub patch_size: i64,
    /// Resolution the model runs at.
    pub img_size: i64,
    /// Side of the patch grid `pos_embed` is stored for (img_size / patch at training).
    pub pos_grid: i64,
    pub embed_dim: i64,
    pub depth: usize,
    pub num_heads: i64,
    pub mlp_ratio: f64,
    pub num_classes: Option<i64>,
}

impl VitConfig {
    fn preset(embed_dim: i64, depth: usize, num_heads: i64, patch_size: i64, img_size: i64) -> Self {
        Self { patch_size, img_size, pos_grid: img_size / patch_size, embed_dim, depth, num_heads, mlp_ratio: 4.0, num_classes: None }
    }
    pub fn vit_tiny_patch16_224() -> Self {
        Self::preset(192, 12, 3, 16, 224)
    }
    pub fn vit_small_patch16_224() -> Self {
        Self::preset(384, 12, 6, 16, 224)
    }
    pub fn vit_base_patch16_224() -> Self {
        Self::preset(768, 12, 12, 16, 224)
    }
    /// Any size: `vit_tiny` at 32 px with 4 px patches, for CIFAR.
    pub fn with_patch_and_size(mut self, patch: i64, img_size: i64) -> Self {
        self.patch_size = patch;
        self.img_size = img_size;
        self.pos_grid = img_size / patch;
        self
    }
    /// Run at another resolution, keeping the stored position-embedding grid.
    pub fn at_resolution(mut self, img_size: i64) -> Self {
        self.img_size = img_size;
        self
    }
    pub fn with_depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }
    pub fn grid(&self) -> i64 {
        self.img_size / self.patch_size
    }
    pub fn head_dim(&self) -> i64 {
        self.embed_dim / self.num_heads
    }
    pub fn mlp_hidden(&self) -> i64 {
        (self.embed_dim as f64 * self.mlp_ratio) as i64
    }
}

#[derive(Debug, Clone)]
struct Block {
    path: String,
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    num_heads: i64,
    head_dim: i64,
}

impl Block {
    fn new(path: String, c: &VitConfig) -> Self {
        let d = c.embed_dim;
        let p = |n: &str| join(&path, n);
        Self {
            norm1: LayerNorm::new(p("norm1"), d, 1e-6),
            qkv: Linear::new(p("attn.qkv"), d, 3 * d).init(LinearInit::Xavier),
            proj: Linear::new(p("attn.proj"), d, d).init(LinearInit::Xavier),
            norm2: LayerNorm::new(p("norm2"), d, 1e-6),
            fc1: Linear::new(p("mlp.fc1"), d, c.mlp_hidden()).init(LinearInit::Xavier),
            fc2: Linear::new(p("mlp.fc2"), c.mlp_hidden(), d).init(LinearInit::Xavier),
            num_heads: c.num_heads,
            head_dim: c.head_dim(),
            path,
        }
    }
    fn params(&self, out: &mut Vec<ParamSpec>) {
        self.norm1.params(out);
        self.qkv.params(out);
        self.proj.params(out);
        self.norm2.params(out);
        self.fc1.params(out);
        self.fc2.params(out);
    }
    /// # Shapes
    /// (B, N, D) -> (B, N, D)
    fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let n = |s: &str| join(&self.path, s);
        let (h, dh) = (self.num_heads, self.head_dim);
        let y = self.norm1.forward(o, x);
        let qkv = self.qkv.forward(o, &y);
        let qkv = o.reshape(&n("attn.reshape_qkv"), &qkv, &[0, 0, 3, h, dh]);
        let part = |o: &mut O, i: i64, tag: &str, perm: &[i64]| {
            let t = o.slice(&n(&format!("attn.{tag}")), &qkv, 2, i, i + 1);
            let t = o.reshape(&n(&format!("attn.{tag}_reshape")), &t, &[0, 0, h, dh]);
            o.permute(&n(&format!("attn.{tag}_permute")), &t, perm)
        };
        let q = part(o, 0, "q", &[0, 2, 1, 3]); // (B, H, N, Dh)
        let kt = part(o, 1, "k", &[0, 2, 3, 1]); // (B, H, Dh, N)
        let v = part(o, 2, "v", &[0, 2, 1, 3]); // (B, H, N, Dh)
        let q = o.mul_scalar(&n("attn.scale"), &q, (dh as f64).powf(-0.5));
        let a = o.matmul(&n("attn.qk"), &q, &kt);
        let a = o.softmax(&n("attn.softmax"), &a, -1);
        let y = o.matmul(&n("attn.av"), &a, &v); // (B, H, N, Dh)
        let y = o.permute(&n("attn.merge_permute"), &y, &[0, 2, 1, 3]);
        let y = o.reshape(&n("attn.merge_reshape"), &y, &[0, 0, h * dh]);
        let y = self.proj.forward(o, &y);
        let x = o.add(&n("add1"), x, &y);
        let y = self.norm2.forward(o, &x);
        let y = self.fc1.forward(o, &y);
        let y = o.gelu(&n("mlp.act"), &y);
        let y = self.fc2.forward(o, &y);
        o.add(&n("add2"), &x, &y)
    }
}

#[derive(Debug, Clone)]
pub struct Vit {
    pub config: VitConfig,
    patch: Conv2d,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Option<Linear>,
}

impl Vit {
    pub fn new(config: VitConfig) -> Self {
        let patch = Conv2d::new("patch_embed.proj", 3, config.embed_dim, config.patch_size, config.patch_size, 0).with_bias().default_init();
        let blocks = (0..config.depth).map(|i| Block::new(format!("blocks.{i}"), &config)).collect();
        let norm = LayerNorm::new("norm", config.embed_dim, 1e-6);
        let head = config.num_classes.map(|n| Linear::new("head", config.embed_dim, n).init(LinearInit::TruncNormal(0.02)));
        Self { config, patch, blocks, norm, head }
    }

    pub fn params(&self) -> Vec<ParamSpec> {
        let d = self.config.embed_dim;
        let g = self.config.pos_grid;
        let mut out = Vec::new();
        out.push(ParamSpec::new("cls_token", &[1, 1, d], Init::Normal { std: 1e-6 }, ParamKind::NoDecay));
        out.push(ParamSpec::new("pos_embed", &[1, g * g + 1, d], Init::TruncNormal { std: 0.02 }, ParamKind::NoDecay));
        self.patch.params(&mut out);
        for b in &self.blocks {
            b.params(&mut out);
        }
        self.norm.params(&mut out);
        if let Some(h) = &self.head {
            h.params(&mut out);
        }
        out
    }

    /// Position embedding of the patch tokens at the running resolution,
    /// resampled from the stored grid when they differ.
    ///
    /// # Shapes
    /// -> (1, grid², D)
    fn patch_pos_embed<O: Ops>(&self, o: &mut O) -> O::T {
        let c = &self.config;
        let pos = o.param("pos_embed");
        let patch_pos = o.slice("pos_embed.patches", &pos, 1, 1, i64::MAX);
        if c.grid() == c.pos_grid {
            return patch_pos;
        }
        let (g0, g, d) = (c.pos_grid, c.grid(), c.embed_dim);
        let t = o.reshape("pos_embed.to_grid", &patch_pos, &[1, g0, g0, d]);
        let t = o.permute("pos_embed.to_nchw", &t, &[0, 3, 1, 2]);
        let t = o.bicubic_resize("pos_embed.resample", &t, [g, g]);
        let t = o.permute("pos_embed.to_nhwc", &t, &[0, 2, 3, 1]);
        o.reshape("pos_embed.to_tokens", &t, &[1, g * g, d])
    }

    /// Patch tokens with their position embedding, no class token.
    ///
    /// # Shapes
    /// (B, 3, H, W) -> (B, N, D), N = (H/p)·(W/p)
    pub fn embed_patches<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let d = self.config.embed_dim;
        let t = self.patch.forward(o, x);
        let t = o.reshape("patch_embed.flatten", &t, &[0, d, -1]);
        let t = o.permute("patch_embed.transpose", &t, &[0, 2, 1]);
        let pos = self.patch_pos_embed(o);
        o.add("pos_embed.add", &t, &pos)
    }

    /// The class token plus its position embedding, broadcast to the batch of `like`.
    ///
    /// # Shapes
    /// like (B, N, D) -> (B, 1, D)
    pub fn cls_token<O: Ops>(&self, o: &mut O, like: &O::T) -> O::T {
        let cls = o.param("cls_token");
        let pos = o.param("pos_embed");
        let pos0 = o.slice("pos_embed.cls", &pos, 1, 0, 1);
        let cls = o.add("cls_token.add_pos", &cls, &pos0);
        o.expand_batch("cls_token.expand", &cls, like)
    }

    /// Transformer blocks and the final norm over a token sequence.
    ///
    /// # Shapes
    /// (B, N, D) -> (B, N, D)
    pub fn forward_blocks<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let mut h = o.share(x);
        for b in &self.blocks {
            h = b.forward(o, &h);
        }
        self.norm.forward(o, &h)
    }

    /// All tokens after the final norm, class token first.
    ///
    /// # Shapes
    /// (B, 3, H, W) -> (B, 1 + N, D)
    pub fn forward_tokens<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let t = self.embed_patches(o, x);
        let cls = self.cls_token(o, &t);
        let t = o.concat("cls_token.concat", &[cls, t], 1);
        self.forward_blocks(o, &t)
    }

    /// The class token's features.
    ///
    /// # Shapes
    /// (B, 3, H, W) -> (B, D)
    pub fn forward_features<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let t = self.forward_tokens(o, x);
        let c = o.slice("pool.cls", &t, 1, 0, 1);
        o.reshape("pool.flatten", &c, &[0, self.config.embed_dim])
    }

    /// Features, or logits when the model has a head.
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        let f = self.forward_features(o, x);
        match &self.head {
            Some(h) => h.forward(o, &f),
            None => f,
        }
    }
}

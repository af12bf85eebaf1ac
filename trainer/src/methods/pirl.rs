//! PIRL (Misra and van der Maaten 2020, "Self-Supervised Learning of
//! Pretext-Invariant Representations"): the representation `f(v_I)` of an
//! image and `g(v_I^t)` of its jigsaw-shuffled tiles are both pulled to the
//! image's memory-bank row `m_I` by NCE against other images' rows; the bank
//! holds a moving average of `f(v_I)`.
//!
//! Reference: the paper's eqs. 3-5: `s` the cosine similarity, `h(u, v) =
//! exp(s(u, v)/T) / (exp(s(u, v)/T) + N/|D|)`, `L_NCE(m_I, v) = -log h(m_I, v)
//! - sum_{I' in D_N} log(1 - h(v, m_I'))`, and `L = lambda L_NCE(m_I, g(v_I^t))
//! + (1 - lambda) L_NCE(m_I, f(v_I))` with `lambda = 0.5`, `T = 0.07`, bank
//! momentum 0.5; `f`: backbone, average pool, a Linear to 128-d; `g`: each of
//! the 9 tiles through the backbone and a Linear to 128-d, concatenated in
//! puzzle order, a Linear to 128-d. Sec. 4: tiles as in the jigsaw (here
//! `jigsaw::shuffled_tiles`: cells of `size / 3` px, tiles of `64/75` of a
//! cell at a random offset, normalised per tile), the permutation uniform
//! over all 9!. NCE is [`crate::loss::npid_nce`]: `exp(s/T)` is divided by a
//! constant `Z` estimated once, on the first batch, from the image term's
//! scores (`mean(exp(s/T)) * n`, NPID's estimate and VISSL's
//! `norm_constant: -1`; the paper's `h` is `Z = 1`, under which a random
//! negative at `T = 0.07` already has `h` near 1), and kept as state; both
//! terms share the step's `nce_k` noise rows, drawn uniformly. The
//! image and the puzzle come from two independently augmented views (VISSL's
//! PIRL: one image transform, one patch transform). The bank row of `I`
//! becomes `normalize(0.5 m_I + 0.5 f(v_I))` after the step; the bank is the
//! method's state (checkpointed). Noise per image: 9 numbers whose argsort is
//! the permutation, 18 tile offsets, then `nce_k` numbers `u` giving the
//! noise rows `floor(u n)`.

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadBlock, HeadSpec, Layer, MlpHead};
use tch::{Device, Kind, Tensor};

use super::jigsaw::{shuffled_tiles, TILES};
use super::npid::{view, MemoryBank};
use super::{check_views, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "pirl", aliases: [],
    summary: "PIRL: an image and its jigsaw-shuffled tiles both matched to the image's memory-bank row by NCE (Misra and van der Maaten 2020)",
    reference: "PIRL paper eqs. 3-5 (NCE with N/|D|, lambda 0.5, T 0.07, bank momentum 0.5); VISSL PIRL (two transforms)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Embedding dim of f and g (the paper's 128).
        proj_out: i64 = 128, Range::at_least(1.0);
        /// Temperature of the cosine similarity.
        temperature: f64 = 0.07, Range::positive();
        /// Negative memory-bank rows per image (the paper's 32000).
        nce_k: i64 = 4096, Range::at_least(1.0);
        /// Memory-bank momentum: `m <- normalize(m m + (1 - m) f)`.
        bank_momentum: f64 = 0.5, Range::closed(0.0, 1.0);
        /// Rows of the memory bank; 0: one per training image (set by `pretext train`).
        bank_size: i64 = 0, Range::at_least(0.0);
        /// Weight of the puzzle term (lambda); the image term gets 1 - lambda.
        lambda: f64 = 0.5, Range::closed(0.0, 1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        // The paper's augmentations follow NPID's (crop, jitter, grayscale, flip).
        Pipeline { views: vec![view(size), view(size)] }
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Pirl::new(self, backbone, device)))
    }
}

pub struct Pirl {
    /// Fixed transform and negative-sampling noise for the next step (step-equivalence tests).
    pub next_noise: Option<Tensor>,
    backbone: Backbone,
    f_head: MlpHead,
    tile_head: MlpHead,
    fuse_head: MlpHead,
    params: Params,
    pub bank: MemoryBank,
    c: Config,
}

impl Pirl {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let d = backbone.embed_dim();
        let mut f_head = MlpHead::new("projection_head", vec![HeadBlock::new(d, c.proj_out, None, None)]);
        f_head.layers.push(Layer::L2Normalize { name: "l2norm".into() });
        let tile_head = MlpHead::new("prediction_head.tile", vec![HeadBlock::new(d, c.proj_out, None, None)]);
        let fuse_head = MlpHead::new("prediction_head.fuse", vec![HeadBlock::new(TILES * c.proj_out, c.proj_out, None, None)]);
        let params = Params::new(specs(&backbone, &[&f_head, &tile_head, &fuse_head]), device);
        params.use_channels_last();
        let bank = MemoryBank::new(c.bank_size, c.proj_out, c.bank_momentum, device);
        Self { next_noise: None, backbone, f_head, tile_head, fuse_head, params, bank, c: c.clone() }
    }
}

impl Method for Pirl {
    super::student_accessors!("pirl");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.f_head.clone()))]
    }
    fn set_mask_noise(&mut self, noise: Tensor) {
        self.next_noise = Some(noise);
    }
    fn set_batch_indices(&mut self, indices: Tensor) {
        self.bank.set_indices(indices);
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("pirl", views, 2)?;
        let (x, xt) = (&views[0], &views[1]);
        let (b, n, k) = (x.size()[0], self.bank.rows(), self.c.nce_k);
        let idx = self.bank.take_indices(b)?;
        let noise = self.next_noise.take().unwrap_or_else(|| Tensor::rand([b, 3 * TILES + k], (Kind::Float, x.device())));
        let order = noise.narrow(1, 0, TILES).argsort(1, false);
        let tiles = shuffled_tiles(xt, &noise.narrow(1, TILES, 2 * TILES), &order);
        let negatives = (noise.narrow(1, 3 * TILES, k) * n as f64).floor().to_kind(Kind::Int64).clamp(0, n - 1);

        let mut o = TchOps::new(&self.params, true);
        let f = self.backbone.forward_features(&mut o, x);
        let f = self.f_head.forward(&mut o, &f);
        let t = self.backbone.forward_features(&mut o, &tiles);
        let t = self.tile_head.forward(&mut o, &t).reshape([TILES, b, -1]).permute([1, 0, 2]).reshape([b, -1]);
        let g = loss::l2_normalize(&self.fuse_head.forward(&mut o, &t));
        let (temp, lambda) = (self.c.temperature, self.c.lambda);
        let (l_f, z) = loss::npid_nce(&f, &self.bank.memory, &idx, &negatives, temp, self.bank.z());
        let (l_g, _) = loss::npid_nce(&g, &self.bank.memory, &idx, &negatives, temp, z);
        self.bank.set_z(z);
        self.bank.remember(idx, &f);
        Ok(l_g * lambda + l_f * (1.0 - lambda))
    }
    fn after_step(&mut self, _: &StepCtx) {
        self.bank.update();
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.bank.state()
    }
}

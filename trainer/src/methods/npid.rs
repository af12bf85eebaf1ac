//! NPID (Wu, Xiong, Yu and Lin 2018, "Unsupervised Feature Learning via
//! Non-Parametric Instance Discrimination"): every training image is its own
//! class; a 128-d l2-normalised embedding is compared with a memory bank that
//! holds one embedding per training image, by a non-parametric softmax at
//! temperature 0.07 (full, at CIFAR scale) or its NCE approximation with
//! `nce_k` noise rows; after the step the bank rows of the batch move towards
//! the new embeddings with momentum 0.5 and are re-normalised.
//!
//! Reference: the paper (eqs. 2-8) and its code (zhirongw/lemniscate.pytorch:
//! `LinearAverage` for the full softmax with `CrossEntropyLoss`;
//! `NCEAverage` + `NCECriterion` for NCE: noise rows drawn uniformly from the
//! bank, `P_n = 1 / n`, the constant `Z` estimated once as `mean(exp(s/T)) * n`
//! on the first batch and kept, eps 1e-7; the bank update
//! `v <- normalize(m v + (1 - m) f)` uses the new features after the loss
//! has read the old rows). Differences: the bank starts as random unit rows
//! (lemniscate: uniform in `[-a, a]`, unnormalised); the augmentation applies
//! colour jitter before grayscale. The bank and `Z` are the method's state,
//! checkpointed and restored on resume.
//!
//! The bank needs each image's training-set index: `pretext train` passes
//! them ([`Method::set_batch_indices`]). `bank_size = 0` means one row per
//! training image (set by `pretext train`).

use pretext_data::augment::{ColorJitter, Pipeline, Resolution, ViewSpec};
use pretext_models::{Backbone, HeadBlock, HeadSpec, Layer, MlpHead};
use tch::{Device, Kind, Tensor};

use super::{check_views, embed, specs, ConfigError, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::Params;
use crate::loss;

super::method! {
    name: "npid", aliases: ["instance_discrimination"],
    summary: "NPID: instance discrimination against a memory bank of every training image, non-parametric softmax or NCE (Wu et al. 2018)",
    reference: "NPID paper eqs. 2-8 and zhirongw/lemniscate.pytorch (`LinearAverage`, `NCEAverage`, `NCECriterion`)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Embedding dim (the paper's 128).
        proj_out: i64 = 128, Range::at_least(1.0);
        /// Softmax temperature.
        temperature: f64 = 0.07, Range::positive();
        /// Noise rows per image for NCE; 0: the full non-parametric softmax over the bank.
        nce_k: i64 = 4096, Range::at_least(0.0);
        /// Memory-bank momentum: `v <- normalize(m v + (1 - m) f)`.
        bank_momentum: f64 = 0.5, Range::closed(0.0, 1.0);
        /// Rows of the memory bank; 0: one per training image (set by `pretext train`).
        bank_size: i64 = 0, Range::at_least(0.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        Pipeline { views: vec![view(size)] }
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Npid::new(self, backbone, device)))
    }
}

/// NPID's view (lemniscate: RandomResizedCrop(0.2, 1), RandomGrayscale(0.2),
/// ColorJitter(0.4, 0.4, 0.4, 0.4), flip); PIRL's paper follows it.
pub fn view(size: usize) -> ViewSpec {
    let mut v = ViewSpec::crop_flip(size, (0.2, 1.0));
    v.jitter = Some(ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.4 });
    v.jitter_p = 1.0;
    v.gray_p = 0.2;
    v
}

/// A memory bank of one unit row per training image with NCE's normalising
/// constant (NPID and PIRL): fed with each batch's training-set indices,
/// read by the loss, updated after the optimizer step with
/// `v <- normalize(m v + (1 - m) f)`, checkpointed as `memory` and `nce_z`.
pub struct MemoryBank {
    /// (n, D) unit rows, one per training image.
    pub memory: Tensor,
    /// NCE's normalising constant, (1,); negative until the first NCE batch sets it.
    pub z: Tensor,
    momentum: f64,
    indices: Option<Tensor>,
    /// The batch's indices and embeddings, written to the bank after the step.
    pending: Option<(Tensor, Tensor)>,
}

impl MemoryBank {
    /// `rows` random unit rows of `dim`.
    pub fn new(rows: i64, dim: i64, momentum: f64, device: Device) -> Self {
        let memory = loss::l2_normalize(&Tensor::randn([rows, dim], (Kind::Float, device)));
        let z = Tensor::full([1], -1.0, (Kind::Float, device));
        Self { memory, z, momentum, indices: None, pending: None }
    }

    /// Rows of the bank.
    pub fn rows(&self) -> i64 {
        self.memory.size()[0]
    }

    /// The training-set indices of the next batch.
    pub fn set_indices(&mut self, indices: Tensor) {
        self.indices = Some(indices);
    }

    /// The batch's indices, checked: one per image, each a row of the bank.
    pub fn take_indices(&mut self, batch: i64) -> Result<Tensor, MethodError> {
        let n = self.rows();
        let bad = |what: String| MethodError::Config(ConfigError::new("method.bank_size", n, what));
        let idx = self.indices.take().ok_or_else(|| bad("a memory bank fed with each image's training-set index: none was given for this batch".into()))?;
        if idx.size() != [batch] {
            return Err(bad(format!("one index per image: got indices of shape {:?} for a batch of {batch}", idx.size())));
        }
        let (lo, hi) = (idx.min().int64_value(&[]), idx.max().int64_value(&[]));
        if lo < 0 || hi >= n {
            return Err(bad(format!("a row for every training image: image index {} is outside the bank", if lo < 0 { lo } else { hi })));
        }
        Ok(idx)
    }

    /// NCE's Z so far (negative: not yet estimated).
    pub fn z(&self) -> f64 {
        self.z.double_value(&[0])
    }

    /// Keeps the Z a loss estimated.
    pub fn set_z(&self, z: f64) {
        let _ = tch::no_grad(|| self.z.shallow_clone().fill_(z));
    }

    /// The rows `idx` move towards `f` (detached) after the step.
    pub fn remember(&mut self, idx: Tensor, f: &Tensor) {
        self.pending = Some((idx, f.detach()));
    }

    /// Writes the remembered rows: `v <- normalize(m v + (1 - m) f)`.
    pub fn update(&mut self) {
        if let Some((idx, f)) = self.pending.take() {
            let m = self.momentum;
            tch::no_grad(|| {
                let v = loss::l2_normalize(&(self.memory.index_select(0, &idx) * m + f * (1.0 - m)));
                let _ = self.memory.index_copy_(0, &idx, &v);
            });
        }
    }

    /// Checkpointed state: `memory` and `nce_z`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![("memory".into(), self.memory.shallow_clone()), ("nce_z".into(), self.z.shallow_clone())]
    }
}

pub struct Npid {
    /// Fixed noise rows (B, K) int64 for the next step (step-equivalence tests); consumed by `loss`.
    pub next_noise: Option<Tensor>,
    backbone: Backbone,
    head: MlpHead,
    params: Params,
    pub bank: MemoryBank,
    c: Config,
}

impl Npid {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        // "a linear layer ... maps to a 128-d vector, normalized by a L2-normalization layer".
        let mut head = MlpHead::new("projection_head", vec![HeadBlock::new(backbone.embed_dim(), c.proj_out, None, None)]);
        head.layers.push(Layer::L2Normalize { name: "l2norm".into() });
        let params = Params::new(specs(&backbone, &[&head]), device);
        params.use_channels_last();
        let bank = MemoryBank::new(c.bank_size, c.proj_out, c.bank_momentum, device);
        Self { next_noise: None, backbone, head, params, bank, c: c.clone() }
    }
}

impl Method for Npid {
    super::student_accessors!("npid");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.head.clone()))]
    }
    fn set_mask_noise(&mut self, noise: Tensor) {
        self.next_noise = Some(noise);
    }
    fn set_batch_indices(&mut self, indices: Tensor) {
        self.bank.set_indices(indices);
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("npid", views, 1)?;
        let x = &views[0];
        let (b, n) = (x.size()[0], self.bank.rows());
        let idx = self.bank.take_indices(b)?;
        let f = embed(&self.backbone, &self.head, &self.params, x);
        let t = self.c.temperature;
        let l = if self.c.nce_k == 0 {
            loss::npid_softmax(&f, &self.bank.memory, &idx, t)
        } else {
            let noise = self.next_noise.take().unwrap_or_else(|| Tensor::randint(n, [b, self.c.nce_k], (Kind::Int64, x.device())));
            let (l, z) = loss::npid_nce(&f, &self.bank.memory, &idx, &noise, t, self.bank.z());
            self.bank.set_z(z);
            l
        };
        self.bank.remember(idx, &f);
        Ok(l)
    }
    fn after_step(&mut self, _: &StepCtx) {
        self.bank.update();
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.bank.state()
    }
}

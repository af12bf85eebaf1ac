//! Jigsaw puzzles (Noroozi and Favaro 2016, "Unsupervised Learning of Visual
//! Representations by Solving Jigsaw Puzzles"): the image is cut into a 3x3
//! grid, one tile is cropped at a random offset inside each cell (the gap
//! keeps edges from giving the answer away), each tile is normalised on its
//! own, the tiles are shuffled by one of N permutations, every tile goes
//! through the shared backbone and a shared fc6, and the 9 fc6 outputs,
//! concatenated in puzzle order, are classified into the permutation index.
//!
//! Reference: the paper (sec. 3: 64-px tiles in 75-px cells, per-tile
//! mean/std normalisation, permutation set of maximal average Hamming
//! distance chosen greedily, N = 100) and its PyTorch port
//! (bbrattoli/JigsawPuzzlePytorch: `JigsawLoader`, `select_permutations.py`,
//! position `t` of the puzzle holds tile `perm[t]`). Differences: the cells
//! are `size / 3` px and the tiles `64/75` of a cell (8-px tiles in 10-px
//! cells for 32-px CIFAR views; train at a larger `--image-size` for larger
//! tiles); all `9B` tiles go through the backbone in one batch; fc7 has a
//! BatchNorm. The greedy selection starts at permutation `splitmix64(0) mod
//! 9!` of the lexicographic list, and ties go to the first candidate.
//!
//! Heads: `projection_head` is fc6 over one tile's features (exported); the
//! puzzle classifier `prediction_head` (fc7, fc8) takes the 9 tiles of one
//! image, so it is trained and checkpointed but not listed for export.

use pretext_data::augment::{Pipeline, Resolution, ViewSpec};
use pretext_models::{Act, Backbone, HeadBlock, HeadSpec, MlpHead, Norm};
use tch::{Device, Kind, Tensor};

use super::{check_views, specs, Method, MethodError, OptimizerDefaults, Range, Recipe, StepCtx};
use crate::backend::{Params, TchOps};
use crate::loss;

super::method! {
    name: "jigsaw", aliases: [],
    summary: "Jigsaw: 3x3 tiles through a shared backbone, classify which of N maximal-Hamming permutations shuffled them (Noroozi and Favaro 2016)",
    reference: "Jigsaw paper sec. 3 and its PyTorch port (bbrattoli/JigsawPuzzlePytorch: tile crops, per-tile normalisation, greedy permutation set)",
    optimizer: OptimizerDefaults::SGD,
    config(d) {
        /// Permutations in the set (classes of the puzzle); the paper's default is 100.
        num_permutations: i64 = 100, Range::closed(2.0, 1000.0);
        /// Output width of fc6, applied to each tile's features (the paper's 1024).
        proj_out: i64 = 128, Range::at_least(1.0);
        /// Hidden width of fc7 over the 9 concatenated fc6 outputs (the paper's 4096).
        head_hidden: i64 = d.max(32), Range::at_least(1.0);
    }
}

impl Recipe for Config {
    fn pipeline(&self, _res: Resolution, size: usize) -> Pipeline {
        // The paper crops 225 px from the image and cuts it; here the crop is the view.
        Pipeline { views: vec![ViewSpec::crop_flip(size, (0.2, 1.0))] }
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Ok(Box::new(Jigsaw::new(self, backbone, device)))
    }
}

/// Cells per side of the grid.
pub const GRID: i64 = 3;
/// Tiles per puzzle.
pub const TILES: i64 = GRID * GRID;
/// Random numbers per image in the transform's noise: the permutation, then (dy, dx) per cell.
pub const NOISE_PER_IMAGE: i64 = 1 + 2 * TILES;

/// The cell and tile sides for views of `size` px: cells `size / 3`, tiles `64/75` of a cell (at least 1).
pub fn cell_and_tile(size: i64) -> (i64, i64) {
    let cell = size / GRID;
    (cell, (cell * 64 / 75).max(1))
}

/// SplitMix64 of `x`: the start of the greedy selection, the same in the fixture generator.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The paper's greedy selection (`select_permutations.py`, "maximal"): from
/// the 9! permutations in lexicographic order, start at `splitmix64(seed) mod
/// 9!`, then repeatedly add the unused permutation with the largest summed
/// Hamming distance to those chosen (the first on ties).
pub fn permutations(n: usize, seed: u64) -> Vec<[u8; 9]> {
    let mut all: Vec<[u8; 9]> = Vec::with_capacity(362_880);
    let mut p = [0u8, 1, 2, 3, 4, 5, 6, 7, 8];
    loop {
        all.push(p);
        // Next lexicographic permutation.
        let Some(i) = (0..8).rev().find(|&i| p[i] < p[i + 1]) else { break };
        let j = (i + 1..9).rev().find(|&j| p[j] > p[i]).unwrap_or(i + 1);
        p.swap(i, j);
        p[i + 1..].reverse();
    }
    let mut dist = vec![0u32; all.len()];
    let mut used = vec![false; all.len()];
    let mut j = (splitmix64(seed) % all.len() as u64) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.min(all.len()) {
        let chosen = all[j];
        out.push(chosen);
        used[j] = true;
        let mut best = (0u32, usize::MAX);
        for (k, q) in all.iter().enumerate() {
            dist[k] += q.iter().zip(&chosen).filter(|(a, b)| a != b).count() as u32;
            if !used[k] && (best.1 == usize::MAX || dist[k] > best.0) {
                best = (dist[k], k);
            }
        }
        j = best.1;
    }
    out
}

/// The puzzles of a batch: tiles cropped at the noise's offsets, normalised
/// per tile and channel (unbiased std, 1 where it is 0), shuffled by the
/// noise's permutation; returned position-major with the labels.
///
/// # Shapes
/// x: (B, C, S, S); noise: (B, 19) uniform in [0, 1); perms: (N, 9) int64 ->
/// ((9B, C, T, T), row `t * B + b` = position `t` of image `b`; (B,) int64)
pub fn puzzles(x: &Tensor, noise: &Tensor, perms: &Tensor) -> (Tensor, Tensor) {
    let n = perms.size()[0];
    let labels = (noise.select(1, 0) * n as f64).floor().to_kind(Kind::Int64).clamp(0, n - 1);
    (shuffled_tiles(x, &noise.narrow(1, 1, 2 * TILES), &perms.index_select(0, &labels)), labels)
}

/// The tiles of [`puzzles`] for a given order per image (PIRL's random permutations).
///
/// # Shapes
/// x: (B, C, S, S); offset_noise: (B, 18) uniform in [0, 1), (dy, dx) per cell; order: (B, 9) int64 -> (9B, C, T, T)
pub fn shuffled_tiles(x: &Tensor, offset_noise: &Tensor, order: &Tensor) -> Tensor {
    let s = x.size();
    let (b, size) = (s[0], s[2]);
    let (cell, tile) = cell_and_tile(size);
    let offsets = (offset_noise * (cell - tile + 1) as f64).floor().to_kind(Kind::Int64).clamp(0, cell - tile);
    let offsets = Vec::<i64>::try_from(offsets.flatten(0, -1).to_device(Device::Cpu)).unwrap_or_default();
    let order = Vec::<i64>::try_from(order.flatten(0, -1).to_device(Device::Cpu)).unwrap_or_default();
    let mut rows = Vec::with_capacity((TILES * b) as usize);
    for t in 0..TILES {
        for i in 0..b {
            let src = order[(i * TILES + t) as usize];
            let (dy, dx) = (offsets[(i * 2 * TILES + 2 * src) as usize], offsets[(i * 2 * TILES + 2 * src + 1) as usize]);
            let (top, left) = ((src / GRID) * cell + dy, (src % GRID) * cell + dx);
            rows.push(x.get(i).narrow(1, top, tile).narrow(2, left, tile));
        }
    }
    let tiles = Tensor::stack(&rows, 0);
    let dims = [2i64, 3].as_slice();
    let mean = tiles.mean_dim(dims, true, Kind::Float);
    let std = tiles.std_dim(dims, true, true);
    let std = std.where_self(&std.ne(0.0), &std.ones_like());
    (tiles - mean) / std
}

pub struct Jigsaw {
    /// Fixed transform noise for the next step (step-equivalence tests); consumed by `loss`.
    pub next_noise: Option<Tensor>,
    backbone: Backbone,
    fc6: MlpHead,
    classifier: MlpHead,
    params: Params,
    /// (N, 9) int64: position `t` of puzzle class `k` holds tile `perms[k][t]`.
    perms: Tensor,
}

impl Jigsaw {
    pub fn new(c: &Config, backbone: Backbone, device: Device) -> Self {
        let fc6 = MlpHead::new("projection_head", vec![HeadBlock::new(backbone.embed_dim(), c.proj_out, Some(Norm::BatchNorm), Some(Act::Relu))]);
        let classifier = MlpHead::new("prediction_head", vec![
            HeadBlock::new(TILES * c.proj_out, c.head_hidden, Some(Norm::BatchNorm), Some(Act::Relu)),
            HeadBlock::new(c.head_hidden, c.num_permutations, None, None),
        ]);
        let params = Params::new(specs(&backbone, &[&fc6, &classifier]), device);
        params.use_channels_last();
        let flat: Vec<i64> = permutations(c.num_permutations as usize, 0).iter().flatten().map(|&v| v as i64).collect();
        let perms = Tensor::from_slice(&flat).reshape([c.num_permutations, TILES]).to_device(device);
        Self { next_noise: None, backbone, fc6, classifier, params, perms }
    }

    /// The puzzle logits and labels of a batch for given transform noise.
    ///
    /// # Shapes
    /// x: (B, C, S, S); noise: (B, 19) -> ((B, N), (B,))
    pub fn forward(&self, x: &Tensor, noise: &Tensor) -> (Tensor, Tensor) {
        let (tiles, labels) = puzzles(x, noise, &self.perms);
        let b = x.size()[0];
        let mut o = TchOps::new(&self.params, true);
        let f = self.backbone.forward_features(&mut o, &tiles);
        let h = self.fc6.forward(&mut o, &f);
        let h = h.reshape([TILES, b, -1]).permute([1, 0, 2]).reshape([b, -1]);
        (self.classifier.forward(&mut o, &h), labels)
    }
}

impl Method for Jigsaw {
    super::student_accessors!("jigsaw");
    fn heads(&self) -> Vec<(String, HeadSpec)> {
        vec![("projection_head".into(), HeadSpec::Mlp(self.fc6.clone()))]
    }
    fn set_mask_noise(&mut self, noise: Tensor) {
        self.next_noise = Some(noise);
    }
    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> Result<Tensor, MethodError> {
        check_views("jigsaw", views, 1)?;
        let x = &views[0];
        let noise = self.next_noise.take().unwrap_or_else(|| Tensor::rand([x.size()[0], NOISE_PER_IMAGE], (Kind::Float, x.device())));
        let (logits, labels) = self.forward(x, &noise);
        Ok(loss::cross_entropy(&logits, &labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct permutations of 0..9, the first at the seeded start; the greedy
    /// choice after a start maximises the distance: 9 (a derangement of it).
    #[test]
    fn permutation_set_is_distinct_and_far_apart() {
        let p = permutations(30, 0);
        assert_eq!(p.len(), 30);
        for q in &p {
            let mut s = q.to_vec();
            s.sort();
            assert_eq!(s, (0..9).collect::<Vec<u8>>());
        }
        let mut d = p.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 30);
        assert_eq!(p[0].iter().zip(&p[1]).filter(|(a, b)| a != b).count(), 9);
    }

    /// Noise 0 everywhere: permutation 0, tiles at the top-left of each cell.
    #[test]
    fn puzzle_tiles_come_from_their_cells_in_permutation_order() {
        tch::manual_seed(1);
        let x = Tensor::randn([1, 1, 24, 24], (Kind::Float, Device::Cpu));
        let perms = Tensor::from_slice(&[8i64, 7, 6, 5, 4, 3, 2, 1, 0]).reshape([1, 9]);
        let (tiles, labels) = puzzles(&x, &Tensor::zeros([1, NOISE_PER_IMAGE], (Kind::Float, Device::Cpu)), &perms);
        assert_eq!(tiles.size(), vec![9, 1, 6, 6]);
        assert_eq!(Vec::<i64>::try_from(labels).unwrap(), vec![0]);
        // Position 0 holds tile 8: cell (2, 2) from pixel (16, 16), normalised on its own.
        let raw = x.get(0).narrow(1, 16, 6).narrow(2, 16, 6);
        let want = (&raw - raw.mean(Kind::Float)) / raw.std(true);
        assert!(tiles.get(0).allclose(&want, 1e-5, 1e-6, false));
    }
}

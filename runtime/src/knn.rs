//! k-NN head: a gallery of L2-normalized features with labels, exact chunked
//! cosine search, an approximate HNSW index, and DINO's weighted vote.
//!
//! Voting follows DINO's `eval_knn.py`: cosine similarities to the gallery, the
//! top-k neighbours, weights `exp(sim / T)`, class score = sum of the weights of
//! the neighbours with that label; the prediction is the highest score (the lowest
//! class index on a tie). Defaults `k = 20, T = 0.07`; DINO also reports `k = 200, T = 0.1`.
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2, Axis};
use pretext_models::tensorfile::{self, Dtype, HostTensor, TensorFile, TensorFileError};
use rayon::prelude::*;

use crate::RuntimeError;

/// Gallery file format version written to the safetensors metadata.
pub const GALLERY_VERSION: &str = "1";
const GALLERY_FORMAT: &str = "pretext-gallery";

/// `(k, T)` of the vote and the two standard settings, shared with the trainer.
pub use pretext_models::knn::{KnnParams, KNN_SETTINGS};

/// L2-normalizes each row in place (a zero row stays zero).
pub fn l2_normalize_rows(x: &mut Array2<f32>) {
    x.axis_iter_mut(Axis(0)).for_each(|mut r| {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            r.mapv_inplace(|v| v / n);
        }
    });
}

/// A neighbour: similarity and gallery row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub sim: f32,
    pub index: u32,
}

#[derive(PartialEq)]
struct MinSim(f32, u32);
impl Eq for MinSim {}
impl PartialOrd for MinSim {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for MinSim {
    // Reversed so that BinaryHeap's top is the smallest similarity (ties: the larger index).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

const QUERY_CHUNK: usize = 1024;
/// Gallery rows per GEMM block: the packed block (256 x D) stays in L2 while every
/// query of the chunk runs against it, and its `[Q, 256]` similarities are scanned
/// into the heaps before the next block.
const GALLERY_BLOCK: usize = 256;

/// Exact top-k by inner product, `queries [Q, D]` against `gallery [N, D]`,
/// sorted by decreasing similarity (ties: lower index first).
///
/// Work is split into tasks of up to 1024 queries x one gallery shard, run on the
/// rayon pool; with fewer query chunks than threads the gallery is cut into shards
/// (at least 256 rows each) so that a small query batch still uses every thread.
/// Each task walks its shard in 256-row blocks: `Q_chunk x G_block^T` (see
/// [`block_sims`]), then each query's row of similarities streams through a
/// bounded min-heap. Shard results are merged per query (union, sort, truncate),
/// which is exact: every global top-k neighbour is in its own shard's top-k.
pub fn exact_topk(gallery: ArrayView2<f32>, queries: ArrayView2<f32>, k: usize) -> Vec<Vec<Neighbor>> {
    let (n, d) = gallery.dim();
    assert_eq!(queries.ncols(), d, "query and gallery dims differ");
    let nq = queries.nrows();
    let k = k.min(n);
    if k == 0 || nq == 0 {
        return vec![vec![]; nq];
    }
    let g = gallery.as_standard_layout();
    let q = queries.as_standard_layout();
    let g = g.as_slice().expect("standard layout");
    let q = q.as_slice().expect("standard layout");
    let q_chunks = nq.div_ceil(QUERY_CHUNK);
    let threads = rayon::current_num_threads().max(1);
    let shards = threads.div_ceil(q_chunks).min(n.div_ceil(GALLERY_BLOCK)).max(1);
    let shard_rows = n.div_ceil(shards);
    let tasks: Vec<(usize, usize)> = (0..q_chunks).flat_map(|c| (0..shards).map(move |s| (c * QUERY_CHUNK, s * shard_rows))).collect();
    let results: Vec<Vec<Vec<Neighbor>>> = tasks
        .par_iter()
        .map(|&(q0, s0)| {
            let qn = QUERY_CHUNK.min(nq - q0);
            let s1 = (s0 + shard_rows).min(n);
            topk_shard(&q[q0 * d..(q0 + qn) * d], &g[s0 * d..s1 * d], d, k, s0 as u32)
        })
        .collect();
    let mut out = Vec::with_capacity(nq);
    for chunk in results.chunks(shards) {
        for qi in 0..chunk[0].len() {
            let mut v: Vec<Neighbor> = chunk.iter().flat_map(|r| r[qi].iter().copied()).collect();
            v.sort_by(|a, b| b.sim.total_cmp(&a.sim).then(a.index.cmp(&b.index)));
            v.truncate(k);
            out.push(v);
        }
    }
    out
}

/// Top-k of each of the `q.len() / d` queries over the `g.len() / d` gallery rows
/// (row indices offset by `offset`), single-threaded.
fn topk_shard(q: &[f32], g: &[f32], d: usize, k: usize, offset: u32) -> Vec<Vec<Neighbor>> {
    let qn = q.len() / d;
    let n = g.len() / d;
    let mut heaps: Vec<BinaryHeap<MinSim>> = (0..qn).map(|_| BinaryHeap::with_capacity(k + 1)).collect();
    let mut gemm = BlockGemm::new(q, d);
    let block = gemm.block_rows();
    for g0 in (0..n).step_by(block) {
        let gn = block.min(n - g0);
        let (sims, ld) = gemm.sims(&g[g0 * d..(g0 + gn) * d]);
        for (qi, heap) in heaps.iter_mut().enumerate() {
            let row = &sims[qi * ld..qi * ld + gn];
            // The k-th best so far; a similarity must beat it to enter the heap.
            let mut floor = if heap.len() < k { f32::NEG_INFINITY } else { heap.peek().expect("k > 0").0 };
            for (j, &s) in row.iter().enumerate() {
                if heap.len() < k {
                    heap.push(MinSim(s, offset + (g0 + j) as u32));
                    if heap.len() == k {
                        floor = heap.peek().expect("k > 0").0;
                    }
                } else if s > floor {
                    heap.pop();
                    heap.push(MinSim(s, offset + (g0 + j) as u32));
                    floor = heap.peek().expect("k > 0").0;
                }
            }
        }
    }
    heaps
        .into_iter()
        .map(|h| {
            let mut v: Vec<Neighbor> = h.into_iter().map(|MinSim(sim, index)| Neighbor { sim, index }).collect();
            v.sort_by(|a, b| b.sim.total_cmp(&a.sim).then(a.index.cmp(&b.index)));
            v
        })
        .collect()
}

/// Rows of queries per micro-kernel tile.
const MR: usize = 6;

/// The micro-kernel [`BlockGemm`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// 6 x 32 tile, 12 zmm accumulators (x86-64 with AVX-512F).
    Avx512,
    /// 6 x 16 tile, 12 ymm accumulators (x86-64 with AVX2 and FMA).
    Avx2,
    /// matrixmultiply's sgemm.
    Portable,
}

impl Kernel {
    /// The best kernel this CPU runs; `PRETEXT_KNN_KERNEL=avx2|portable` asks for a
    /// slower one (for comparisons), never for one the CPU lacks.
    fn detect() -> Kernel {
        let asked = std::env::var("PRETEXT_KNN_KERNEL").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
            if std::arch::is_x86_feature_detected!("avx512f") && asked != "avx2" && asked != "portable" {
                return Kernel::Avx512;
            }
            if avx2 && asked != "portable" {
                return Kernel::Avx2;
            }
        }
        let _ = asked;
        Kernel::Portable
    }

    /// Gallery rows per tile.
    fn nr(self) -> usize {
        match self {
            Kernel::Avx512 => 32,
            Kernel::Avx2 => 16,
            Kernel::Portable => 1,
        }
    }
}

/// `sims = Q x G_block^T` for one query chunk against successive gallery blocks.
///
/// With AVX-512 (or AVX2 + FMA): both operands are packed once per chunk/block into
/// k-major panels (`MR` queries, `nr` gallery rows; zero-padded) and a register-tiled
/// kernel with 12 accumulators runs over the full depth `D`. The AVX-512 tile does the
/// same FLOPs per cycle as AVX2 on Zen 4 (double-pumped) with half the instructions,
/// which matters because this crate is built at opt-level 1 with debug assertions
/// (every vector load carries a check). Otherwise: matrixmultiply's sgemm.
struct BlockGemm<'a> {
    q: &'a [f32],
    d: usize,
    qn: usize,
    kernel: Kernel,
    /// Packed queries: `[qn / MR][d][MR]`.
    qp: Vec<f32>,
    /// Packed gallery block: `[GALLERY_BLOCK / nr][d][nr]`.
    gp: Vec<f32>,
    sims: Vec<f32>,
}

impl<'a> BlockGemm<'a> {
    fn new(q: &'a [f32], d: usize) -> Self {
        Self::with_kernel(q, d, Kernel::detect())
    }

    fn with_kernel(q: &'a [f32], d: usize, kernel: Kernel) -> Self {
        let qn = q.len() / d;
        let mut qp = Vec::new();
        if kernel != Kernel::Portable {
            pack(q, d, MR, &mut qp);
        }
        BlockGemm { q, d, qn, kernel, qp, gp: Vec::new(), sims: Vec::new() }
    }

    /// Gallery rows per block: `GALLERY_BLOCK` for the packed kernels; 2048 for
    /// matrixmultiply, which re-packs the queries on every call.
    fn block_rows(&self) -> usize {
        if self.kernel == Kernel::Portable {
            8 * GALLERY_BLOCK
        } else {
            GALLERY_BLOCK
        }
    }

    /// Similarities of every query with the rows of `g` (at most `block_rows()`):
    /// returns the buffer and its row stride (query `i`, row `j` at `i * ld + j`).
    fn sims(&mut self, g: &[f32]) -> (&[f32], usize) {
        let (d, qn) = (self.d, self.qn);
        let gn = g.len() / d;
        if self.kernel == Kernel::Portable {
            self.sims.resize(qn * gn, 0.0);
            // SAFETY: sims is [qn, gn] row-major, q is [qn, d] row-major, g is [gn, d]
            // row-major read as its transpose (column stride d); all in bounds.
            unsafe {
                matrixmultiply::sgemm(qn, d, gn, 1.0, self.q.as_ptr(), d as isize, 1, g.as_ptr(), 1, d as isize, 0.0, self.sims.as_mut_ptr(), gn as isize, 1);
            }
            return (&self.sims, gn);
        }
        let nr = self.kernel.nr();
        pack(g, d, nr, &mut self.gp);
        let ld = gn.div_ceil(nr) * nr;
        let rows = qn.div_ceil(MR) * MR;
        self.sims.resize(rows * ld, 0.0);
        #[cfg(target_arch = "x86_64")]
        for (pi, qpanel) in self.qp.chunks_exact(d * MR).enumerate() {
            for (pj, gpanel) in self.gp.chunks_exact(d * nr).enumerate() {
                let c = &mut self.sims[pi * MR * ld + pj * nr..];
                // SAFETY: the kernel's CPU features were detected; the panels hold
                // d * MR and d * nr values, and c has at least (MR - 1) * ld + nr values
                // from its start (rows and ld are padded to whole tiles).
                unsafe {
                    match self.kernel {
                        Kernel::Avx512 => kernel_6x32_avx512(d, qpanel.as_ptr(), gpanel.as_ptr(), c.as_mut_ptr(), ld),
                        _ => kernel_6x16_avx2(d, qpanel.as_ptr(), gpanel.as_ptr(), c.as_mut_ptr(), ld),
                    }
                }
            }
        }
        (&self.sims, ld)
    }
}

/// Packs the rows of a row-major `[rows, d]` matrix into panels of `w` rows,
/// k-major (`out[p][kk][i] = src[p * w + i][kk]`), the last panel zero-padded.
fn pack(src: &[f32], d: usize, w: usize, out: &mut Vec<f32>) {
    let rows = src.len() / d;
    out.clear();
    out.resize(rows.div_ceil(w) * d * w, 0.0);
    for (r, row) in src.chunks_exact(d).enumerate() {
        let (p, i) = (r / w, r % w);
        let panel = &mut out[p * d * w..(p + 1) * d * w];
        for (kk, &v) in row.iter().enumerate() {
            panel[kk * w + i] = v;
        }
    }
}


/// The body of a 6 x (2 * lanes) micro-kernel: `c[i][j] = sum_kk a[kk][i] * b[kk][j]`
/// (`c` row stride `ldc`), written once for the AVX-512 and AVX2 intrinsics.
/// Named accumulators, not an array: the workspace's opt-level 1 would spill an array.
#[cfg(target_arch = "x86_64")]
macro_rules! kernel_6x2v {
    ($lanes:expr, $zero:ident, $load:ident, $set1:ident, $fma:ident, $store:ident, $d:expr, $a:expr, $b:expr, $c:expr, $ldc:expr) => {{
        let (d, a, b, c, ldc) = ($d, $a, $b, $c, $ldc);
        let z = $zero();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
        for kk in 0..d {
            let bp = b.add(kk * 2 * $lanes);
            let b0 = $load(bp);
            let b1 = $load(bp.add($lanes));
            let ap = a.add(kk * MR);
            let x = $set1(*ap);
            c00 = $fma(x, b0, c00);
            c01 = $fma(x, b1, c01);
            let x = $set1(*ap.add(1));
            c10 = $fma(x, b0, c10);
            c11 = $fma(x, b1, c11);
            let x = $set1(*ap.add(2));
            c20 = $fma(x, b0, c20);
            c21 = $fma(x, b1, c21);
            let x = $set1(*ap.add(3));
            c30 = $fma(x, b0, c30);
            c31 = $fma(x, b1, c31);
            let x = $set1(*ap.add(4));
            c40 = $fma(x, b0, c40);
            c41 = $fma(x, b1, c41);
            let x = $set1(*ap.add(5));
            c50 = $fma(x, b0, c50);
            c51 = $fma(x, b1, c51);
        }
        for (i, (lo, hi)) in [(c00, c01), (c10, c11), (c20, c21), (c30, c31), (c40, c41), (c50, c51)].into_iter().enumerate() {
            $store(c.add(i * ldc), lo);
            $store(c.add(i * ldc + $lanes), hi);
        }
    }};
}

/// 6 x 32 tile with AVX-512 (see [`kernel_6x2v`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_6x32_avx512(d: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    use std::arch::x86_64::*;
    kernel_6x2v!(16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, d, a, b, c, ldc)
}

/// 6 x 16 tile with AVX2 + FMA (see [`kernel_6x2v`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16_avx2(d: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    use std::arch::x86_64::*;
    kernel_6x2v!(8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, d, a, b, c, ldc)
}

/// DINO's weighted vote over the neighbours: per-class scores `sum exp(sim / T)`.
pub fn vote(neighbors: &[Neighbor], labels: &[u32], num_classes: usize, temperature: f32) -> Vec<f32> {
    let mut scores = vec![0f32; num_classes];
    for nb in neighbors {
        let c = labels[nb.index as usize] as usize;
        scores[c] += (nb.sim / temperature).exp();
    }
    scores
}

/// Index of the highest score; the lowest index on a tie.
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}

/// One classification.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub class: usize,
    pub label: String,
    /// Per-class vote scores, normalized to sum 1.
    pub scores: Vec<f32>,
    pub neighbors: Vec<Neighbor>,
}

/// Approximate nearest-neighbour index (HNSW, `instant-distance`) over a gallery.
pub struct AnnIndex {
    map: instant_distance::HnswMap<AnnPoint, u32>,
}

#[derive(Clone)]
struct AnnPoint(Vec<f32>);

impl instant_distance::Point for AnnPoint {
    fn distance(&self, other: &Self) -> f32 {
        // Rows are L2-normalized: 1 - cosine.
        1.0 - self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum::<f32>()
    }
}

impl AnnIndex {
    /// Builds an HNSW index with search width `ef_search` (recall grows with it).
    pub fn build(features: ArrayView2<f32>, ef_search: usize, seed: u64) -> Self {
        let points: Vec<AnnPoint> = features.axis_iter(Axis(0)).map(|r| AnnPoint(r.to_vec())).collect();
        let values: Vec<u32> = (0..points.len() as u32).collect();
        let map = instant_distance::Builder::default().ef_search(ef_search).seed(seed).build(points, values);
        AnnIndex { map }
    }

    /// Approximate top-k of one normalized query, by decreasing similarity.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Neighbor> {
        let mut search = instant_distance::Search::default();
        self.map
            .search(&AnnPoint(query.to_vec()), &mut search)
            .take(k)
            .map(|item| Neighbor { sim: 1.0 - item.distance, index: *item.value })
            .collect()
    }
}

/// Features + labels + class names of labeled images, tied to the model that embedded them.
#[derive(Debug, Clone)]
pub struct Gallery {
    /// `[N, D]`, rows L2-normalized.
    pub features: Array2<f32>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
    /// sha256 of the ONNX file that produced the features.
    pub model_sha256: String,
    /// Display name of that model (file name).
    pub model_name: String,
}

impl Gallery {
    /// Normalizes the rows and checks labels against the classes.
    pub fn new(mut features: Array2<f32>, labels: Vec<u32>, classes: Vec<String>, model_sha256: String, model_name: String) -> Result<Self, RuntimeError> {
        if classes.is_empty() {
            return Err(RuntimeError::Knn("a gallery needs at least one class; it has none".into()));
        }
        if features.nrows() != labels.len() {
            return Err(RuntimeError::Knn(format!("{} feature rows but {} labels", features.nrows(), labels.len())));
        }
        if let Some(l) = labels.iter().find(|l| **l as usize >= classes.len()) {
            return Err(RuntimeError::Knn(format!("label {l} out of range for {} classes", classes.len())));
        }
        l2_normalize_rows(&mut features);
        Ok(Gallery { features, labels, classes, model_sha256, model_name })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn dim(&self) -> usize {
        self.features.ncols()
    }

    /// Writes a safetensors file: tensors `features` (F32 `[N, D]`) and `labels`
    /// (I64 `[N]`); metadata `format`, `version`, `model_sha256`, `model_name`,
    /// `embed_dim`, `classes` (JSON). Written atomically.
    pub fn save(&self, path: &Path) -> Result<(), RuntimeError> {
        let (n, d) = self.features.dim();
        let feats: Vec<f32> = self.features.iter().copied().collect();
        let labels: Vec<i64> = self.labels.iter().map(|&v| v as i64).collect();
        let tensors = BTreeMap::from([("features".to_string(), HostTensor::f32(&[n, d], &feats)), ("labels".to_string(), HostTensor::i64(&[n], &labels))]);
        let meta: HashMap<String, String> = [
            ("format", GALLERY_FORMAT.to_string()),
            ("version", GALLERY_VERSION.to_string()),
            ("model_sha256", self.model_sha256.clone()),
            ("model_name", self.model_name.clone()),
            ("embed_dim", d.to_string()),
            ("classes", serde_json::to_string(&self.classes).unwrap_or_default()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(tensorfile::write(path, &tensors, Some(meta))?)
    }

    /// Reads a gallery file (format and version checked).
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        let file = TensorFile::read(path)?;
        let gerr = |reason: String| RuntimeError::Gallery { path: path.to_path_buf(), reason };
        let bad = |key: &str, reason: &str| TensorFileError::Meta { path: path.into(), key: key.into(), value: file.metadata.get(key).cloned().unwrap_or_default(), reason: reason.into() };
        let field = |k: &str| file.meta_str(k).map_err(|_| bad(k, "missing (not a pretext gallery?)"));
        if field("format")? != GALLERY_FORMAT {
            return Err(bad("format", "not a pretext gallery").into());
        }
        if field("version")? != GALLERY_VERSION {
            return Err(bad("version", &format!("this build reads version {GALLERY_VERSION}")).into());
        }
        let classes: Vec<String> = serde_json::from_str(field("classes")?).map_err(|e| bad("classes", &e.to_string()))?;
        if classes.is_empty() {
            return Err(bad("classes", "empty; a gallery needs at least one class").into());
        }
        let f = file.expect("features", Dtype::F32, &[None, None], "F32 [N, D]")?;
        let (n, d) = (f.shape[0], f.shape[1]);
        file.expect("labels", Dtype::I64, &[Some(n)], &format!("I64 [{n}]"))?;
        let embed_dim: usize = field("embed_dim")?.parse().map_err(|e: std::num::ParseIntError| bad("embed_dim", &e.to_string()))?;
        if embed_dim != d {
            return Err(bad("embed_dim", &format!("the features are [{n}, {d}]")).into());
        }
        let (_, feats) = file.f32("features")?;
        let (_, labels) = file.i64("labels")?;
        if let Some(bad) = labels.iter().find(|v| **v < 0 || **v as usize >= classes.len()) {
            return Err(gerr(format!("label {bad} out of range for {} classes", classes.len())));
        }
        Ok(Gallery {
            features: Array2::from_shape_vec((n, d), feats).map_err(|e| gerr(e.to_string()))?,
            labels: labels.into_iter().map(|v| v as u32).collect(),
            classes,
            model_sha256: field("model_sha256")?.to_string(),
            model_name: field("model_name")?.to_string(),
        })
    }

    /// Errors unless this gallery was built by the model with this hash and dimension.
    pub fn check_model(&self, path: &Path, model: &str, model_sha256: &str, model_dim: usize) -> Result<(), RuntimeError> {
        if self.model_sha256 != model_sha256 || self.dim() != model_dim {
            return Err(RuntimeError::GalleryMismatch(Box::new(crate::error::GalleryMismatch {
                path: path.to_path_buf(),
                gallery_model: self.model_name.clone(),
                gallery_hash: self.model_sha256.clone(),
                gallery_dim: self.dim(),
                model: model.to_string(),
                model_hash: model_sha256.to_string(),
                model_dim,
            })));
        }
        Ok(())
    }

    /// Loads a gallery and checks it against an extractor's model.
    pub fn load_for(path: &Path, extractor: &crate::Extractor) -> Result<Self, RuntimeError> {
        let g = Self::load(path)?;
        let info = extractor.info();
        let dim = info.embed_dim.unwrap_or(g.dim());
        g.check_model(path, &info.display_name(), &info.sha256, dim)?;
        Ok(g)
    }

    /// Classifies query features (normalized here) by exact search and weighted vote.
    pub fn classify(&self, queries: &Array2<f32>, p: KnnParams) -> Result<Vec<Prediction>, RuntimeError> {
        if queries.ncols() != self.dim() {
            return Err(RuntimeError::Knn(format!("query dim {} but gallery dim {}", queries.ncols(), self.dim())));
        }
        if p.k == 0 || p.temperature.is_nan() || p.temperature <= 0.0 {
            return Err(RuntimeError::Knn(format!("k must be > 0 and T > 0 (got k={}, T={})", p.k, p.temperature)));
        }
        let mut q = queries.clone();
        l2_normalize_rows(&mut q);
        let nbs = exact_topk(self.features.view(), q.view(), p.k);
        Ok(nbs.into_iter().map(|nb| self.predict(nb, p.temperature)).collect())
    }

    /// Classifies one feature vector (exact search).
    pub fn classify_one(&self, features: &[f32], p: KnnParams) -> Result<Prediction, RuntimeError> {
        let q = Array2::from_shape_vec((1, features.len()), features.to_vec()).expect("one row");
        Ok(self.classify(&q, p)?.remove(0))
    }

    /// Correct top-1 predictions of labeled `queries` (normalized here), per
    /// setting: one exact search at the largest k, then each setting's vote
    /// over its first k neighbours.
    pub fn correct(&self, queries: &Array2<f32>, labels: &[u32], settings: &[KnnParams]) -> Result<Vec<usize>, RuntimeError> {
        if queries.ncols() != self.dim() || queries.nrows() != labels.len() {
            return Err(RuntimeError::Knn(format!("queries are {:?} with {} labels; the gallery dim is {}", queries.dim(), labels.len(), self.dim())));
        }
        if let Some(p) = settings.iter().find(|p| p.k == 0 || p.temperature.is_nan() || p.temperature <= 0.0) {
            return Err(RuntimeError::Knn(format!("k must be > 0 and T > 0 (got k={}, T={})", p.k, p.temperature)));
        }
        let kmax = settings.iter().map(|s| s.k).max().unwrap_or(0);
        let mut q = queries.clone();
        l2_normalize_rows(&mut q);
        let nbs = exact_topk(self.features.view(), q.view(), kmax);
        let n_classes = self.classes.len();
        Ok(settings
            .iter()
            .map(|s| nbs.iter().zip(labels).filter(|(nb, &y)| argmax(&vote(&nb[..s.k.min(nb.len())], &self.labels, n_classes, s.temperature)) == y as usize).count())
            .collect())
    }

    /// Votes over given neighbours (from [`exact_topk`] or [`AnnIndex::search`]).
    pub fn predict(&self, neighbors: Vec<Neighbor>, temperature: f32) -> Prediction {
        let mut scores = vote(&neighbors, &self.labels, self.classes.len(), temperature);
        let class = argmax(&scores);
        let total: f32 = scores.iter().sum();
        if total > 0.0 {
            scores.iter_mut().for_each(|s| *s /= total);
        }
        Prediction { class, label: self.classes[class].clone(), scores, neighbors }
    }
}

/// Top-1 accuracy of k-NN classification of `test` against `train` (both `[_, D]`,
/// normalized here), for each setting: the one ndarray k-NN accuracy.
pub fn knn_accuracy(train: &Array2<f32>, train_labels: &[u32], test: &Array2<f32>, test_labels: &[u32], num_classes: usize, settings: &[KnnParams]) -> Result<Vec<f64>, RuntimeError> {
    let g = Gallery::new(train.clone(), train_labels.to_vec(), (0..num_classes).map(|c| c.to_string()).collect(), String::new(), String::new())?;
    let correct = g.correct(test, test_labels, settings)?;
    Ok(correct.into_iter().map(|c| c as f64 / test_labels.len().max(1) as f64).collect())
}

/// Path helper for CLI defaults.
pub fn default_gallery_path(model: &Path) -> PathBuf {
    model.with_extension("gallery.safetensors")
}

#[cfg(test)]
mod block_gemm_tests {
    use super::*;

    /// Each packed kernel against matrixmultiply and a naive sum on ragged sizes
    /// (queries not a multiple of 6, gallery rows not a multiple of 16 or 32, odd depth).
    #[test]
    fn packed_kernels_match_matrixmultiply() {
        let (qn, gn, d) = (13, 37, 29);
        let q: Vec<f32> = (0..qn * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let g: Vec<f32> = (0..gn * d).map(|i| ((i * 53 % 97) as f32 - 48.0) / 24.0).collect();
        let mut portable = BlockGemm::with_kernel(&q, d, Kernel::Portable);
        let (b, ldb) = portable.sims(&g);
        let b = b.to_vec();
        let best = Kernel::detect();
        let kernels: &[Kernel] = match best {
            Kernel::Avx512 => &[Kernel::Avx512, Kernel::Avx2],
            Kernel::Avx2 => &[Kernel::Avx2],
            Kernel::Portable => &[],
        };
        if kernels.is_empty() {
            eprintln!("no AVX2/AVX-512 here: only the matrixmultiply path exists");
        }
        for &kernel in kernels {
            let mut fast = BlockGemm::with_kernel(&q, d, kernel);
            let (a, lda) = fast.sims(&g);
            for i in 0..qn {
                for j in 0..gn {
                    let naive: f32 = (0..d).map(|kk| q[i * d + kk] * g[j * d + kk]).sum();
                    assert!((a[i * lda + j] - b[i * ldb + j]).abs() < 1e-4, "{kernel:?} ({i}, {j})");
                    assert!((a[i * lda + j] - naive).abs() < 1e-4, "{kernel:?} ({i}, {j}) vs naive");
                }
            }
        }
    }
}

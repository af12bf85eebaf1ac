//! Evaluation of frozen encoders: features through the shared eval
//! preprocessing ([`pretext_data::preprocess`]), weighted k-NN (DINO's
//! `eval_knn.py`: normalize -> chunked matmul -> top-k -> `exp(sim/T)` vote),
//! and a linear probe on frozen features.

use pretext_data::preprocess::{EvalTransform, PreprocessError};
use pretext_models::Backbone;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::backend::{Params, TchOps};

/// Images as one u8 NHWC buffer.
#[derive(Clone, Copy)]
pub struct ImageSet<'a> {
    pub pixels: &'a [u8],
    pub n: usize,
    pub h: usize,
    pub w: usize,
}

impl ImageSet<'_> {
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.h * self.w * 3;
        &self.pixels[i * s..(i + 1) * s]
    }
}

/// Eval-mode features of every image, in batches.
///
/// # Shapes
/// -> (n, embed_dim) on the CPU
pub fn features(backbone: &Backbone, params: &Params, images: ImageSet, t: &EvalTransform, batch: usize, device: Device) -> Result<Tensor, PreprocessError> {
    let mut out = Vec::new();
    let side = t.crop as i64;
    for start in (0..images.n).step_by(batch.max(1)) {
        let end = (start + batch).min(images.n);
        let chunks: Result<Vec<Vec<f32>>, PreprocessError> = (start..end)
            .into_par_iter()
            .map(|i| {
                let img = image::RgbImage::from_raw(images.w as u32, images.h as u32, images.image(i).to_vec()).expect("buffer size checked by ImageSet");
                t.apply(&img, &format!("image {i}"))
            })
            .collect();
        let flat: Vec<f32> = chunks?.concat();
        let x = Tensor::from_slice(&flat).reshape([(end - start) as i64, 3, side, side]).to_device(device);
        let x = backbone_input(backbone, x, t.mean, t.std);
        let f = tch::no_grad(|| backbone.forward_features(&mut TchOps::new(params, false), &x));
        out.push(f.to_device(Device::Cpu));
    }
    Ok(Tensor::cat(&out, 0))
}

/// What the backbone reads from normalised RGB `x`: `x` itself, or for a
/// 1-channel (colorization) backbone the L channel of the un-normalised pixels.
///
/// # Shapes
/// (B, 3, H, W) -> (B, in_channels, H, W)
pub(crate) fn backbone_input(backbone: &Backbone, x: Tensor, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    if backbone.config().in_channels() != 1 {
        return x;
    }
    let v = |a: [f32; 3]| Tensor::from_slice(&a).reshape([1, 3, 1, 1]).to_device(x.device());
    crate::color::lightness_input(&(&x * v(std) + v(mean)))
}

/// k-NN top-1 accuracies (in %) for each `(k, T)` setting: the tch path (on
/// the training device), the same algorithm as the runtime's ndarray
/// `pretext_runtime::knn::knn_accuracy` (tests/knn_agree.rs checks they agree).
///
/// # Shapes
/// train (N, D), train_labels (N,), test (M, D), test_labels (M,)
pub fn knn_accuracy(train: &Tensor, train_labels: &[u32], test: &Tensor, test_labels: &[u32], settings: &[KnnParams], chunk: i64) -> Vec<f64> {
    let classes = train_labels.iter().chain(test_labels).copied().max().unwrap_or(0) as i64 + 1;
    let train = crate::loss::l2_normalize(train);
    let test = crate::loss::l2_normalize(test);
    let ytr = Tensor::from_slice(&train_labels.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let yte = Tensor::from_slice(&test_labels.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let kmax = settings.iter().map(|s| s.k as i64).max().unwrap_or(1).min(train.size()[0]);
    let mut correct = vec![0i64; settings.len()];
    let m = test.size()[0];
    tch::no_grad(|| {
        for start in (0..m).step_by(chunk as usize) {
            let c = chunk.min(m - start);
            let sim = test.narrow(0, start, c).matmul(&train.tr());
            let (top, idx) = sim.topk(kmax, 1, true, true);
            let nl = ytr.index_select(0, &idx.flatten(0, -1)).reshape([c, kmax]);
            for (si, s) in settings.iter().enumerate() {
                let k = (s.k as i64).min(kmax);
                let w = (top.narrow(1, 0, k) / s.temperature as f64).exp();
                let votes = Tensor::zeros([c, classes], (Kind::Float, Device::Cpu)).scatter_add(1, &nl.narrow(1, 0, k), &w);
                let pred = votes.argmax(1, false);
                correct[si] += pred.eq_tensor(&yte.narrow(0, start, c)).sum(Kind::Int64).int64_value(&[]);
            }
        }
    });
    correct.iter().map(|&c| 100.0 * c as f64 / m as f64).collect()
}

/// The two standard k-NN settings (DINO's k=20, T=0.07 and InstDisc/lightly's k=200, T=0.1), defined once in `pretext_models`.
pub use pretext_models::knn::{KnnParams, KNN_SETTINGS};

/// Linear probe: a linear classifier trained on frozen, standardised features
/// with AdamW and a cosine schedule; returns test top-1 in %.
pub fn linear_probe(train: &Tensor, train_labels: &[u32], test: &Tensor, test_labels: &[u32], epochs: usize, seed: u64) -> f64 {
    tch::manual_seed(seed as i64);
    let classes = train_labels.iter().chain(test_labels).copied().max().unwrap_or(0) as i64 + 1;
    let mean = train.mean_dim([0i64].as_slice(), true, Kind::Float);
    let std = train.std_dim([0i64].as_slice(), false, true) + 1e-6;
    let xtr = (train - &mean) / &std;
    let xte = (test - &mean) / &std;
    let ytr = Tensor::from_slice(&train_labels.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let yte = Tensor::from_slice(&test_labels.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let d = xtr.size()[1];
    let w = Tensor::zeros([classes, d], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let b = Tensor::zeros([classes], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let mut opt = crate::optim::Optimizer::new(crate::optim::OptimizerKind::Adamw, vec![
        crate::optim::Slot::new("w".into(), w.shallow_clone(), pretext_models::ParamKind::Weight),
        crate::optim::Slot::new("b".into(), b.shallow_clone(), pretext_models::ParamKind::NoDecay),
    ]);
    let n = xtr.size()[0];
    let bs = 256;
    let steps_per = (n + bs - 1) / bs;
    let total = epochs as u64 * steps_per as u64;
    let mut step = 0;
    for _ in 0..epochs {
        let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        for s in (0..n).step_by(bs as usize) {
            let idx = perm.narrow(0, s, bs.min(n - s));
            let logits = xtr.index_select(0, &idx).linear(&w, Some(&b));
            let loss = logits.cross_entropy_for_logits(&ytr.index_select(0, &idx));
            opt.zero_grad();
            loss.backward();
            opt.step(crate::schedule::warmup_cosine(step, total, 0, 1e-2, 0.0), 5e-4);
            step += 1;
        }
    }
    let pred = tch::no_grad(|| xte.linear(&w, Some(&b)).argmax(1, false));
    100.0 * pred.eq_tensor(&yte).sum(Kind::Int64).double_value(&[]) / yte.size()[0] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a direct per-query loop.
    #[test]
    fn knn_matches_naive_vote() {
        tch::manual_seed(1);
        let train = Tensor::randn([40, 6], (Kind::Float, Device::Cpu));
        let test = Tensor::randn([13, 6], (Kind::Float, Device::Cpu));
        let ytr: Vec<u32> = (0..40).map(|i| (i * 7 % 3) as u32).collect();
        let yte: Vec<u32> = (0..13).map(|i| (i % 3) as u32).collect();
        let got = knn_accuracy(&train, &ytr, &test, &yte, &[KnnParams { k: 5, temperature: 0.1 }, KnnParams { k: 40, temperature: 0.5 }], 4);
        let tn = crate::loss::l2_normalize(&train);
        let sn = crate::loss::l2_normalize(&test);
        for (si, (k, t)) in [(5usize, 0.1f32 as f64), (40, 0.5)].into_iter().enumerate() {
            let mut correct = 0;
            for q in 0..13 {
                let sims: Vec<f32> = Vec::try_from(&tn.matmul(&sn.get(q))).unwrap();
                let mut order: Vec<usize> = (0..40).collect();
                order.sort_by(|&a, &b| sims[b].partial_cmp(&sims[a]).unwrap());
                let mut votes = [0f64; 3];
                for &j in &order[..k] {
                    votes[ytr[j] as usize] += (sims[j] as f64 / t).exp();
                }
                let pred = (0..3).max_by(|&a, &b| votes[a].partial_cmp(&votes[b]).unwrap()).unwrap();
                correct += (pred == yte[q as usize] as usize) as usize;
            }
            assert!((got[si] - 100.0 * correct as f64 / 13.0).abs() < 1e-9, "setting {si}: {} vs {correct}/13", got[si]);
        }
    }

    #[test]
    fn linear_probe_separates_separable_data() {
        tch::manual_seed(0);
        let x = Tensor::randn([200, 4], (Kind::Float, Device::Cpu));
        let labels: Vec<u32> = Vec::<f32>::try_from(&x.select(1, 0)).unwrap().iter().map(|&v| (v > 0.0) as u32).collect();
        let acc = linear_probe(&x, &labels, &x, &labels, 300, 0);
        assert!(acc > 95.0, "{acc}");
    }
}

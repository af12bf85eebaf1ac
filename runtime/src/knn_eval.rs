//! `pretext knn build` and `pretext knn eval` as library calls: a gallery from
//! a labeled [`Source`], and the accuracy, throughput and batch-1 latency of
//! labeled queries against it.
use std::time::Instant;

use crate::knn::{KnnParams, KNN_SETTINGS};
use crate::source::{Item, Source};
use crate::{Extractor, Gallery, RuntimeError};

/// Embeds `items` (all labeled) and builds their gallery, tied to the extractor's model.
pub fn build_gallery(e: &Extractor, src: &Source, items: &[Item], batch_size: usize) -> Result<Gallery, RuntimeError> {
    let labels = src.labels(items)?;
    let feats = src.extract(e, items, batch_size, "knn build: embedding")?;
    Gallery::new(feats, labels, src.classes(), e.info().sha256.clone(), e.info().display_name())
}

/// What [`knn_eval`] measured.
#[derive(Debug, Clone)]
pub struct KnnEval {
    /// Queries evaluated.
    pub n: usize,
    /// Correct top-1 predictions per setting ([`KNN_SETTINGS`]).
    pub correct: Vec<(KnnParams, usize)>,
    /// Batched extraction of every query.
    pub extract_secs: f64,
    /// Exact search and vote of every query.
    pub search_secs: f64,
    /// Batch-1 latencies (preprocess + inference + search + vote), ms, sorted.
    pub latency_ms: Vec<f64>,
}

impl KnnEval {
    /// The `q` quantile of the latencies (nearest rank; NaN when none were timed).
    pub fn latency_quantile(&self, q: f64) -> f64 {
        if self.latency_ms.is_empty() {
            return f64::NAN;
        }
        self.latency_ms[((self.latency_ms.len() - 1) as f64 * q).round() as usize]
    }
}

/// Classifies the labeled `items` of `src` against `g` at the standard settings:
/// batched extraction, one exact search, DINO's vote; then times the first
/// `latency_samples` images one by one.
pub fn knn_eval(e: &Extractor, g: &Gallery, src: &Source, items: &[Item], batch_size: usize, latency_samples: usize) -> Result<KnnEval, RuntimeError> {
    if src.classes() != g.classes {
        return Err(RuntimeError::Knn(format!("dataset classes {:?} differ from the gallery's {:?}", src.classes(), g.classes)));
    }
    let labels = src.labels(items)?;
    let t0 = Instant::now();
    let q = src.extract(e, items, batch_size, "knn eval: embedding")?;
    let extract_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let correct = g.correct(&q, &labels, &KNN_SETTINGS)?;
    let search_secs = t1.elapsed().as_secs_f64();
    let mut latency_ms = Vec::with_capacity(latency_samples.min(items.len()));
    for &it in items.iter().take(latency_samples) {
        let t = Instant::now();
        let x = src.preprocess(e, it)?;
        let f = e.features_from_chw(&[x])?;
        let row: Vec<f32> = f.row(0).to_vec();
        std::hint::black_box(g.classify_one(&row, KnnParams::default())?.class);
        latency_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    latency_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(KnnEval { n: items.len(), correct: KNN_SETTINGS.into_iter().zip(correct).collect(), extract_secs, search_secs, latency_ms })
}

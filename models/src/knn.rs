//! The k-NN evaluation protocol's settings, defined once for the trainer's
//! tch path (`pretext_trainer::eval::knn_accuracy`) and the runtime's
//! ndarray path (`pretext_runtime::knn`).

/// `(k, T)` of DINO's weighted vote: the top-k neighbours by cosine similarity
/// vote with weights `exp(sim / T)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnParams {
    pub k: usize,
    pub temperature: f32,
}

impl KnnParams {
    /// DINO's setting (`eval_knn.py` defaults).
    pub const K20: KnnParams = KnnParams { k: 20, temperature: 0.07 };
    /// InstDisc's and lightly's setting, DINO's second.
    pub const K200: KnnParams = KnnParams { k: 200, temperature: 0.1 };
}

impl Default for KnnParams {
    fn default() -> Self {
        KnnParams::K20
    }
}

/// The two standard settings every k-NN accuracy is reported at, in this order.
pub const KNN_SETTINGS: [KnnParams; 2] = [KnnParams::K20, KnnParams::K200];

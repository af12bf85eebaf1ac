//! Feature files, as `pretext extract` writes them, through the one tensor-file
//! module (atomic writes):
//! - `.npy`: `[N, D]` little-endian f32, C order;
//! - `.safetensors`: `features` (F32 `[N, D]`), `labels` (I64 `[N]`, -1 for an
//!   unlabeled image; only when some image has a label), and metadata
//!   `model_sha256`, `model`, `classes` (JSON) and `output`.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ndarray::Array2;
use pretext_models::tensorfile::{self, HostTensor, TensorFileError};

use crate::{ModelInfo, RuntimeError};

/// Writes `features` (one row per image) with their labels, by the extension of `path`.
pub fn write_features(path: &Path, features: &Array2<f32>, labels: &[Option<u32>], classes: &[String], model: &ModelInfo) -> Result<(), RuntimeError> {
    let (n, d) = features.dim();
    let data: Vec<f32> = features.iter().copied().collect();
    match path.extension().and_then(|x| x.to_str()) {
        Some("npy") => crate::npy::write_f32(path, &[n, d], &data),
        Some("safetensors") => {
            if labels.len() != n {
                return Err(RuntimeError::Knn(format!("{n} feature rows but {} labels", labels.len())));
            }
            let mut tensors = BTreeMap::from([("features".to_string(), HostTensor::f32(&[n, d], &data))]);
            if labels.iter().any(Option::is_some) {
                let l: Vec<i64> = labels.iter().map(|l| l.map_or(-1, |v| v as i64)).collect();
                tensors.insert("labels".to_string(), HostTensor::i64(&[n], &l));
            }
            let meta = HashMap::from([
                ("model_sha256".to_string(), model.sha256.clone()),
                ("model".to_string(), model.display_name()),
                ("classes".to_string(), serde_json::to_string(classes).unwrap_or_default()),
                ("output".to_string(), model.output.clone()),
            ]);
            Ok(tensorfile::write(path, &tensors, Some(meta))?)
        }
        _ => Err(TensorFileError::Write { path: path.into(), reason: "a features file ends in .npy or .safetensors".into() }.into()),
    }
}

//! Checkpoints of named parts in one safetensors file: `student.*`,
//! `teacher.*`, `optim.*`, `state.*` (loss state: queue, center), with the
//! step and config in its metadata (a JSON copy sits beside it for people).
//! Written to a temp file and renamed, so a kill never leaves a torn file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use pretext_models::ParamKind;
use tch::{Device, Kind, Tensor};

use crate::backend::{write_safetensors, Blob, WeightsError};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: checkpoint lacks '{key}'")]
    Missing { path: PathBuf, key: String },
    #[error("{path}: '{key}' has shape {found:?}, expected {expected:?}")]
    Shape { path: PathBuf, key: String, expected: Vec<i64>, found: Vec<i64> },
    #[error("{path}: bad metadata: {reason}")]
    Meta { path: PathBuf, reason: String },
}

/// Host copy of a tensor as a blob (f32 or i64).
pub fn blob(t: &Tensor) -> Blob {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let shape = t.size();
    if t.kind() == Kind::Int64 {
        let v: Vec<i64> = Vec::try_from(t.flatten(0, -1)).unwrap_or_default();
        Blob { dtype: safetensors::Dtype::I64, shape, data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    } else {
        let v: Vec<f32> = Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default();
        Blob { dtype: safetensors::Dtype::F32, shape, data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
}

/// Writes named tensors plus string metadata atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: HashMap<String, String>) -> Result<(), CheckpointError> {
    let blobs: BTreeMap<String, Blob> = tensors.iter().map(|(k, t)| (k.clone(), blob(t))).collect();
    write_safetensors(path, &blobs, Some(meta))?;
    Ok(())
}

/// A loaded checkpoint: tensors by name and the metadata.
pub struct Loaded {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub meta: HashMap<String, String>,
}

pub fn load(path: &Path) -> Result<Loaded, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.into(), source })?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| WeightsError::Foreign { path: path.into(), reason: e.to_string() })?;
    let meta = md.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| WeightsError::Foreign { path: path.into(), reason: e.to_string() })?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let d = view.data();
        let t = match view.dtype() {
            safetensors::Dtype::F32 => Tensor::from_slice(&d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()),
            safetensors::Dtype::I64 => Tensor::from_slice(&d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()),
            other => return Err(WeightsError::Dtype { path: path.into(), key: name, dtype: format!("{other:?}") }.into()),
        };
        tensors.insert(name, t.reshape(&shape));
    }
    Ok(Loaded { path: path.into(), tensors, meta })
}

impl Loaded {
    /// Copies `key` into `dst` (same shape).
    pub fn copy_into(&self, key: &str, dst: &Tensor) -> Result<(), CheckpointError> {
        let src = self.tensors.get(key).ok_or_else(|| CheckpointError::Missing { path: self.path.clone(), key: key.into() })?;
        if src.size() != dst.size() {
            return Err(CheckpointError::Shape { path: self.path.clone(), key: key.into(), expected: dst.size(), found: src.size() });
        }
        tch::no_grad(|| dst.shallow_clone().copy_(&src.to_kind(dst.kind()).to_device(dst.device())));
        Ok(())
    }
    pub fn meta_str(&self, key: &str) -> Result<&str, CheckpointError> {
        self.meta.get(key).map(|s| s.as_str()).ok_or_else(|| CheckpointError::Meta { path: self.path.clone(), reason: format!("no '{key}'") })
    }
}

/// Every tensor of a store (weights, buffers, counters) under `prefix`.
pub fn named(prefix: &str, p: &crate::backend::Params) -> Vec<(String, Tensor)> {
    p.all().into_iter().map(|(s, t)| (format!("{prefix}{}", s.name), t.shallow_clone())).collect()
}

/// Trainable tensors only.
pub fn is_trainable(k: ParamKind) -> bool {
    matches!(k, ParamKind::Weight | ParamKind::NoDecay)
}

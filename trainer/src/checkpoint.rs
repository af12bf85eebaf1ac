//! Checkpoints of named parts in one safetensors file: `student.*`,
//! `teacher.*`, `optim.*`, `state.*` (loss state: queue, center), with the
//! step and config in its metadata (a JSON copy sits beside it for people).
//! Written atomically through [`pretext_models::tensorfile`], so a kill never
//! leaves a torn file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use pretext_models::tensorfile::{self, HostTensor, TensorFile, TensorFileError};
use pretext_models::ParamKind;
use tch::Tensor;

use crate::backend::{host_tensor, tch_tensor};

/// Writes named tensors plus string metadata atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: HashMap<String, String>) -> Result<(), TensorFileError> {
    let host: BTreeMap<String, HostTensor> = tensors.iter().map(|(k, t)| (k.clone(), host_tensor(t))).collect();
    tensorfile::write(path, &host, Some(meta))
}

/// A loaded checkpoint: tensors by name and the metadata.
pub struct Loaded {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub meta: HashMap<String, String>,
}

pub fn load(path: &Path) -> Result<Loaded, TensorFileError> {
    let file = TensorFile::read(path)?;
    let tensors = file.names().into_iter().map(|k| Ok((k.clone(), tch_tensor(&file, &k)?))).collect::<Result<_, TensorFileError>>()?;
    Ok(Loaded { path: path.into(), tensors, meta: file.metadata })
}

impl Loaded {
    /// Copies `key` into `dst` (same shape).
    pub fn copy_into(&self, key: &str, dst: &Tensor) -> Result<(), TensorFileError> {
        let src = self.tensors.get(key).ok_or_else(|| TensorFileError::Missing { path: self.path.clone(), key: key.into(), expected: dst.size() })?;
        if src.size() != dst.size() {
            return Err(TensorFileError::Shape { path: self.path.clone(), key: key.into(), expected: dst.size(), found: src.size() });
        }
        tch::no_grad(|| dst.shallow_clone().copy_(&src.to_kind(dst.kind()).to_device(dst.device())));
        Ok(())
    }
    pub fn meta_str(&self, key: &str) -> Result<&str, TensorFileError> {
        self.meta
            .get(key)
            .map(|s| s.as_str())
            .ok_or_else(|| TensorFileError::Meta { path: self.path.clone(), key: key.into(), value: String::new(), reason: "missing".into() })
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

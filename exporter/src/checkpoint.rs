//! Safetensors checkpoints as the exporter sees them: a name -> f32 array
//! map plus the file's metadata, checked against a model's [`ParamSpec`]s.
//! Read through [`pretext_models::tensorfile`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use pretext_models::tensorfile::{Dtype, PretextMeta, TensorFile, TensorFileError};
use pretext_models::{ParamKind, ParamSpec};

use crate::error::ExportError;

/// Tensors of a checkpoint, widened to f32 (integer counters are skipped).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, ArrayD<f32>>,
    pub metadata: HashMap<String, String>,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Self, ExportError> {
        Self::from_file(TensorFile::read(path)?)
    }

    /// Parses safetensors bytes; `path` is only used in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, ExportError> {
        Self::from_file(TensorFile::from_bytes(path, bytes.to_vec())?)
    }

    fn from_file(file: TensorFile) -> Result<Self, ExportError> {
        let mut tensors = BTreeMap::new();
        for name in file.names() {
            // BatchNorm `num_batches_tracked` and other counters: not part of the graph.
            if file.get(&name).is_some_and(|t| matches!(t.dtype, Dtype::I64 | Dtype::I32 | Dtype::U32 | Dtype::U8 | Dtype::I8 | Dtype::BOOL)) {
                continue;
            }
            let (shape, vals) = file.f32(&name)?;
            let arr = ArrayD::from_shape_vec(IxDyn(&shape), vals).map_err(|e| TensorFileError::Foreign { path: file.path.clone(), reason: format!("{name}: {e}") })?;
            tensors.insert(name, arr);
        }
        file.pretext()?;
        Ok(Self { path: file.path, tensors, metadata: file.metadata })
    }

    /// Checks that every float tensor in `specs` is present (under
    /// `prefix`) with the right shape. Counters are optional.
    pub fn check(&self, specs: &[ParamSpec], prefix: &str) -> Result<(), ExportError> {
        for s in specs.iter().filter(|s| s.kind != ParamKind::Counter) {
            let key = format!("{prefix}{}", s.name);
            let t = self.tensors.get(&key).ok_or_else(|| TensorFileError::Missing { path: self.path.clone(), key: key.clone(), expected: s.shape.clone() })?;
            let found: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            if found != s.shape {
                return Err(TensorFileError::Shape { path: self.path.clone(), key, expected: s.shape.clone(), found }.into());
            }
        }
        Ok(())
    }

    /// The `pretext.*` entries of `metadata`, typed (an entry that does not parse names its key).
    pub fn pretext(&self) -> Result<PretextMeta, ExportError> {
        Ok(PretextMeta::from_map(&self.metadata).map_err(|e| e.at(&self.path))?)
    }

    pub fn get(&self, key: &str) -> Option<&ArrayD<f32>> {
        self.tensors.get(key)
    }
}

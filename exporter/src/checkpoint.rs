//! Safetensors checkpoints as the exporter sees them: a name -> f32 array
//! map plus the file's metadata, checked against a model's [`ParamSpec`]s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use pretext_models::{ParamKind, ParamSpec};

use crate::error::ExportError;

/// The safetensors metadata key holding the `BackboneConfig` JSON.
pub const ARCH_KEY: &str = "pretext.arch";

/// Tensors of a checkpoint, widened to f32 (integer counters are skipped).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, ArrayD<f32>>,
    pub metadata: HashMap<String, String>,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Self, ExportError> {
        let bytes = std::fs::read(path).map_err(|source| ExportError::Io { path: path.into(), source })?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses safetensors bytes; `path` is only used in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, ExportError> {
        use safetensors::Dtype as D;
        let foreign = |e: safetensors::SafeTensorError| ExportError::Foreign { path: path.into(), reason: e.to_string() };
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(foreign)?;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(foreign)?;
        let mut tensors = BTreeMap::new();
        for (name, v) in st.tensors() {
            let d = v.data();
            let vals: Vec<f32> = match v.dtype() {
                D::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                D::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
                D::F16 => d.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
                D::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
                // BatchNorm `num_batches_tracked` and other counters: not part of the graph.
                D::I64 | D::I32 | D::U8 | D::I8 | D::BOOL => continue,
                other => return Err(ExportError::Dtype { path: path.into(), key: name, dtype: format!("{other:?}") }),
            };
            let shape: Vec<usize> = v.shape().to_vec();
            let arr = ArrayD::from_shape_vec(IxDyn(&shape), vals).map_err(|e| ExportError::Foreign { path: path.into(), reason: format!("{name}: {e}") })?;
            tensors.insert(name, arr);
        }
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Self { path: path.into(), tensors, metadata })
    }

    /// Checks that every float tensor in `specs` is present (under
    /// `prefix`) with the right shape. Counters are optional.
    pub fn check(&self, specs: &[ParamSpec], prefix: &str) -> Result<(), ExportError> {
        for s in specs.iter().filter(|s| s.kind != ParamKind::Counter) {
            let key = format!("{prefix}{}", s.name);
            let t = self.tensors.get(&key).ok_or_else(|| ExportError::Missing { path: self.path.clone(), key: key.clone(), expected: s.shape.clone() })?;
            let found: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            if found != s.shape {
                return Err(ExportError::Shape { path: self.path.clone(), key, expected: s.shape.clone(), found });
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&ArrayD<f32>> {
        self.tensors.get(key)
    }
}

//! The exporter's error type: every variant names the file, tensor or op involved.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a safetensors file ({reason})")]
    Foreign { path: PathBuf, reason: String },
    #[error("{path}: missing tensor '{key}' (the model expects shape {expected:?})")]
    Missing { path: PathBuf, key: String, expected: Vec<i64> },
    #[error("{path}: tensor '{key}' has shape {found:?}, the model expects {expected:?}")]
    Shape { path: PathBuf, key: String, expected: Vec<i64>, found: Vec<i64> },
    #[error("{path}: tensor '{key}' has unsupported dtype {dtype}")]
    Dtype { path: PathBuf, key: String, dtype: String },
    #[error("{path}: cannot tell the architecture: {reason}")]
    Arch { path: PathBuf, reason: String },
    /// A head the file lists that this exporter cannot express.
    #[error("{path}: head '{head}': {reason}")]
    Head { path: PathBuf, head: String, reason: String },
    /// `--with-head` names a head the file does not list in `pretext.heads`.
    #[error("{path}: no head '{head}' in this file; it has: {available}")]
    UnknownHead { path: PathBuf, head: String, available: String },
    #[error("opset {opset} is not supported (LayerNormalization needs >= 17; supported 17..=21)")]
    Opset { opset: i64 },
    #[error("node '{node}' ({op}): opset {opset} cannot express it (supported opsets: {supported})")]
    OpOpset { node: String, op: String, opset: i64, supported: String },
    #[error("node '{node}' ({op}): {reason}")]
    Op { node: String, op: &'static str, reason: String },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
}

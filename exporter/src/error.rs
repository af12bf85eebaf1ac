//! The exporter's error type: every variant names the file, tensor or op involved.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the checkpoint: the file, tensor and shapes involved.
    #[error(transparent)]
    File(#[from] pretext_models::tensorfile::TensorFileError),
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

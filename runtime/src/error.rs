//! The runtime's error type: every variant names the file, tensor, option or shape involved.
use std::path::PathBuf;

use pretext_data::preprocess::PreprocessError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot load ONNX model {path} with {backend}: {reason}")]
    Load { path: PathBuf, backend: &'static str, reason: String },
    #[error("ONNX model {path}: input `{input}` has rank {rank} (shape {shape}); expected a rank-4 NCHW image input")]
    InputRank { path: PathBuf, input: String, rank: usize, shape: String },
    #[error("ONNX model {path} has {count} inputs; expected exactly one NCHW image input")]
    InputCount { path: PathBuf, count: usize },
    #[error("{backend}: input of shape {got:?} does not match the model input {expected}")]
    InputShape { backend: String, got: Vec<usize>, expected: String },
    #[error("{backend}: inference on input {shape:?} failed: {reason}")]
    Run { backend: String, shape: Vec<usize>, reason: String },
    #[error("{backend}: output `{output}` has element type {dtype}, which cannot be converted to f32")]
    OutputType { backend: String, output: String, dtype: String },
    #[error("ONNX model {path} has no metadata `{key}` (not exported by pretext?); pass it explicitly with {option}")]
    MissingMetadata { path: PathBuf, key: &'static str, option: &'static str },
    #[error("ONNX model {path}: metadata `{key}` = {value:?} is invalid: {reason}")]
    BadMetadata { path: PathBuf, key: &'static str, value: String, reason: String },
    #[error("ONNX model {path} has no output named `{output}`; outputs are {available:?}")]
    NoSuchOutput { path: PathBuf, output: String, available: Vec<String> },
    #[error("ONNX Runtime: cannot load the library {path}: {reason} (set ORT_DYLIB_PATH to libonnxruntime)")]
    OrtLibrary { path: String, reason: String },
    #[error("ONNX Runtime: execution provider {provider} was requested but is not active: {reason}")]
    Provider { provider: String, reason: String },
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error("gallery {} was built by model {} (sha256 {}, embedding dim {}), but the model in use is {} (sha256 {}, embedding dim {}); rebuild the gallery with this model", .0.path.display(), .0.gallery_model, .0.gallery_hash, .0.gallery_dim, .0.model, .0.model_hash, .0.model_dim)]
    GalleryMismatch(Box<GalleryMismatch>),
    /// Reading or writing a tensor file (gallery, features): file, key, shapes.
    #[error(transparent)]
    File(#[from] pretext_models::tensorfile::TensorFileError),
    #[error("gallery {path}: {reason}")]
    Gallery { path: PathBuf, reason: String },
    #[error(transparent)]
    Data(#[from] pretext_data::DataError),
    /// An input that is no image, folder of images or dataset; an unlabeled image where labels are needed.
    #[error("{path}: {reason}")]
    Source { path: PathBuf, reason: String },
    #[error("k-NN: {0}")]
    Knn(String),
}

/// Both sides of a gallery/model mismatch (boxed to keep `RuntimeError` small).
#[derive(Debug)]
pub struct GalleryMismatch {
    pub path: PathBuf,
    pub gallery_model: String,
    pub gallery_hash: String,
    pub gallery_dim: usize,
    pub model: String,
    pub model_hash: String,
    pub model_dim: usize,
}

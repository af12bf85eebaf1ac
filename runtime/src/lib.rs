//! pretext runtime: feature extraction and k-NN classification from ONNX encoders.
//!
//! Two backends behind one [`Backend`] trait, each building its plan/session once and
//! sharing it across threads: tract (pure Rust, the default) and ONNX Runtime through
//! `ort` (cargo feature `ort`, library loaded at run time from `ORT_DYLIB_PATH`).
//!
//! - Options: [`TractOptions`], `OrtOptions`; with the cargo feature `clap`, the option
//!   enums ([`Engine`], `ExecutionProvider`, `GraphOptLevel`) derive `clap::ValueEnum`.
//! - Low level: [`open_tract`] / `open_ort` -> `Box<dyn Backend>`; `run` takes an NCHW
//!   f32 batch and returns every output as f32.
//! - [`Extractor`]: configured from the exporter's `pretext.*` metadata ([`keys`]),
//!   or from [`ExtractorBuilder`] options for foreign models; preprocessing is
//!   `pretext_data::preprocess::EvalTransform`, the trainer's own eval transform.
//! - [`Gallery`] (safetensors, tied to the model's sha256 and dim), exact chunked
//!   search ([`knn::exact_topk`]), DINO's weighted vote, HNSW ([`AnnIndex`]).
//! - [`Source`] (image files or dataset splits), [`write_features`] (`.npy` /
//!   `.safetensors`), [`build_gallery`] and [`knn_eval`]: the library behind
//!   `pretext extract` and `pretext knn`.
//!
//! ```no_run
//! use pretext_runtime::{Extractor, Gallery, KnnParams};
//! let extractor = Extractor::open("model.onnx")?;
//! let gallery = Gallery::load_for("gallery.safetensors".as_ref(), &extractor)?;
//! let f = extractor.features_file("cat.jpg".as_ref())?;
//! println!("{}", gallery.classify_one(&f, KnnParams::default())?.label);
//! # Ok::<(), pretext_runtime::RuntimeError>(())
//! ```
pub mod backend;
pub mod compare;
pub mod cpu;
pub mod error;
#[cfg(feature = "ort")]
pub mod ort_backend;
pub mod tract_backend;
pub mod tract_f16;
pub mod tract_layout;
#[cfg(feature = "ort")]
pub mod verify;

pub use backend::{Backend, Engine};
pub use error::RuntimeError;
#[cfg(feature = "ort")]
pub use ort_backend::{open_ort, ort_environment, ExecutionProvider, GraphOptLevel, OrtOptions};
pub use tract_backend::{open_tract, open_tract_with, TractOptions};
pub mod extractor;
pub mod features;
pub mod knn;
pub mod knn_eval;
pub mod npy;
pub mod source;

pub use extractor::{file_sha256, keys, BackendKind, Extractor, ExtractorBuilder, ModelInfo};
pub use features::write_features;
pub use knn::{AnnIndex, Gallery, KnnParams, Neighbor, Prediction, KNN_SETTINGS};
pub use knn_eval::{build_gallery, knn_eval, KnnEval};
pub use source::{Item, Source};
#[cfg(feature = "ort")]
pub use ort_backend::ort_dylib_path;

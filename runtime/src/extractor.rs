//! Self-configuring feature extractor: ONNX metadata -> preprocessing -> backend -> features.
//!
//! The exporter writes `metadata_props` under the `pretext.` prefix (see [`keys`]);
//! [`ExtractorBuilder`] reads them, and explicit options override them, so a
//! foreign ONNX file works when its input size, resize, mean/std and output are
//! given. A missing value that was not given is [`RuntimeError::MissingMetadata`],
//! which names the option to pass.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use ndarray::{Array2, ArrayD, IxDyn};
use pretext_data::preprocess::EvalTransform;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::tract_backend::{proto_outputs, read_proto, TractOptions};
use crate::RuntimeError;

/// The metadata keys of the exporter/runtime contract (read through [`PretextMeta`]).
pub use pretext_models::tensorfile::keys;
use pretext_models::tensorfile::PretextMeta;

/// Which backend runs the graph.
#[derive(Debug, Clone, Default)]
pub enum BackendKind {
    #[default]
    Tract,
    TractWith(TractOptions),
    #[cfg(feature = "ort")]
    Ort(crate::OrtOptions),
}

/// Everything the extractor resolved from metadata and options.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// Hex sha256 of the ONNX file.
    pub sha256: String,
    pub transform: EvalTransform,
    pub output: String,
    /// Embedding dimension (values per image of `output`); for the features output
    /// (`pretext.output`, or the only output) from an option or `pretext.embed_dim`,
    /// for any other output from an option or the output's declared shape.
    pub embed_dim: Option<usize>,
    /// `output`'s declared dims when it is not the features output (`None` = symbolic);
    /// a run's output is checked against them.
    pub output_shape: Option<Vec<Option<usize>>>,
    /// Every `metadata_props` entry of the file.
    pub metadata: HashMap<String, String>,
}

impl ModelInfo {
    /// A short display name: the file name plus `pretext.method`/`pretext.dataset` when present.
    pub fn display_name(&self) -> String {
        let file = self.path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        match (self.metadata.get(keys::METHOD), self.metadata.get(keys::DATASET)) {
            (Some(m), Some(d)) => format!("{file} ({m} on {d})"),
            _ => file,
        }
    }
}

/// Options overriding (or standing in for) the ONNX metadata.
#[derive(Debug, Clone, Default)]
pub struct ExtractorBuilder {
    path: PathBuf,
    backend: BackendKind,
    input_size: Option<u32>,
    resize: Option<u32>,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    output: Option<String>,
    embed_dim: Option<usize>,
}

impl ExtractorBuilder {
    pub fn backend(mut self, b: BackendKind) -> Self {
        self.backend = b;
        self
    }
    pub fn input_size(mut self, s: u32) -> Self {
        self.input_size = Some(s);
        self
    }
    pub fn resize(mut self, s: u32) -> Self {
        self.resize = Some(s);
        self
    }
    pub fn mean(mut self, m: [f32; 3]) -> Self {
        self.mean = Some(m);
        self
    }
    pub fn std(mut self, s: [f32; 3]) -> Self {
        self.std = Some(s);
        self
    }
    pub fn output(mut self, name: impl Into<String>) -> Self {
        self.output = Some(name.into());
        self
    }
    pub fn embed_dim(mut self, d: usize) -> Self {
        self.embed_dim = Some(d);
        self
    }

    /// Reads the metadata, resolves the configuration and builds the backend once.
    pub fn build(self) -> Result<Extractor, RuntimeError> {
        let path = self.path.clone();
        let bytes = std::fs::read(&path).map_err(|source| RuntimeError::Io { path: path.clone(), source })?;
        let sha256 = hex(&Sha256::digest(&bytes));
        drop(bytes);
        let proto = read_proto(&path)?;
        let metadata: HashMap<String, String> = proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let missing = |key: &'static str, option: &'static str| RuntimeError::MissingMetadata { path: path.clone(), key, option };
        let bad = |key: &'static str, value: &str, reason: String| RuntimeError::BadMetadata {
            path: path.clone(),
            key,
            value: value.to_string(),
            reason,
        };
        let meta = PretextMeta::from_map(&metadata).map_err(|e| bad(e.key, &e.value, e.reason))?;
        if let Some(order) = &meta.channel_order {
            if order != "RGB" {
                let why = if order == "L" { "a 1-channel (L) colorization backbone: the extractor feeds RGB models only; evaluate the run with `pretext eval knn <run>`" } else { "only RGB is supported" };
                return Err(bad(keys::CHANNEL_ORDER, order, why.into()));
            }
        }
        let input_size = match self.input_size {
            Some(s) => s,
            None => meta.input_size.ok_or_else(|| missing(keys::INPUT_SIZE, "ExtractorBuilder::input_size / --input-size"))?,
        };
        let resize = match self.resize {
            Some(s) => s,
            None => meta.resize.ok_or_else(|| missing(keys::RESIZE, "ExtractorBuilder::resize / --resize"))?,
        };
        let mean = match self.mean {
            Some(m) => m,
            None => meta.mean.ok_or_else(|| missing(keys::MEAN, "ExtractorBuilder::mean / --mean"))?,
        };
        let std = match self.std {
            Some(s) => s,
            None => meta.std.ok_or_else(|| missing(keys::STD, "ExtractorBuilder::std / --std"))?,
        };
        let transform = EvalTransform { resize, crop: input_size, mean, std };
        transform.validate()?;
        let s = input_size as usize;
        let backend: Box<dyn Backend> = match &self.backend {
            BackendKind::Tract => crate::open_tract_with(&path, &TractOptions { input_hw: Some((s, s)), ..Default::default() })?,
            BackendKind::TractWith(o) => crate::open_tract_with(&path, &TractOptions { input_hw: Some((s, s)), ..o.clone() })?,
            #[cfg(feature = "ort")]
            BackendKind::Ort(o) => crate::open_ort(&path, o)?,
        };
        let declared = backend.input_shape();
        if declared[1].is_some_and(|c| c != 3) || declared[2].is_some_and(|h| h != s) || declared[3].is_some_and(|w| w != s) {
            return Err(RuntimeError::InputShape {
                backend: backend.name().to_string(),
                got: vec![1, 3, s, s],
                expected: crate::backend::fmt_shape(declared),
            });
        }
        let outputs = backend.output_names().to_vec();
        // The features output: the one `pretext.embed_dim` describes.
        let features = meta.output.clone().or_else(|| (outputs.len() == 1).then(|| outputs[0].clone()));
        let output = match self.output.or_else(|| features.clone()) {
            Some(o) => o,
            None => return Err(missing(keys::OUTPUT, "ExtractorBuilder::output / --output (the graph has several outputs)")),
        };
        let output_index = outputs
            .iter()
            .position(|o| *o == output)
            .ok_or_else(|| RuntimeError::NoSuchOutput { path: path.clone(), output: output.clone(), available: outputs.clone() })?;
        let (embed_dim, output_shape) = if features.as_deref() == Some(output.as_str()) {
            (self.embed_dim.or(meta.embed_dim), None)
        } else {
            let dims = proto_outputs(&proto).into_iter().find(|(n, _)| *n == output).and_then(|(_, d)| d);
            let declared = dims.as_ref().and_then(|d| d.iter().skip(1).copied().product::<Option<usize>>());
            (self.embed_dim.or(declared), dims)
        };
        Ok(Extractor {
            backend,
            output_index,
            info: ModelInfo { path, sha256, transform, output, embed_dim, output_shape, metadata },
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io { path: path.to_path_buf(), source })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

/// An ONNX encoder with its preprocessing: images in, `[N, D]` features out.
pub struct Extractor {
    backend: Box<dyn Backend>,
    output_index: usize,
    info: ModelInfo,
}

impl Extractor {
    /// Opens a pretext-exported model with tract, configured from its metadata.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RuntimeError> {
        Self::builder(path).build()
    }

    /// Starts a builder for explicit options (backend, foreign-model preprocessing).
    pub fn builder(path: impl AsRef<Path>) -> ExtractorBuilder {
        ExtractorBuilder { path: path.as_ref().to_path_buf(), ..Default::default() }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
    pub fn transform(&self) -> &EvalTransform {
        &self.info.transform
    }

    /// Runs already-preprocessed CHW images (each `3*s*s` values) as one batch.
    ///
    /// # Shapes
    /// `chw`: N x `[3, s, s]` flattened -> `[N, D]`.
    pub fn features_from_chw(&self, chw: &[Vec<f32>]) -> Result<Array2<f32>, RuntimeError> {
        let s = self.info.transform.crop as usize;
        let n = chw.len();
        let mut flat = Vec::with_capacity(n * 3 * s * s);
        for (i, x) in chw.iter().enumerate() {
            if x.len() != 3 * s * s {
                return Err(RuntimeError::InputShape {
                    backend: self.backend.name().into(),
                    got: vec![i, x.len()],
                    expected: format!("{} values per image ([3, {s}, {s}])", 3 * s * s),
                });
            }
            flat.extend_from_slice(x);
        }
        let input = ArrayD::from_shape_vec(IxDyn(&[n, 3, s, s]), flat).expect("length checked");
        let mut outs = self.backend.run(input)?;
        let out = outs.swap_remove(self.output_index);
        let shape = out.shape().to_vec();
        let d: usize = shape.iter().skip(1).product();
        let (bad_shape, expected) = match &self.info.output_shape {
            // A head or other output: its declared shape (batch dim N), flattened per image.
            Some(dims) => {
                let fits = dims.len() == shape.len() && dims.iter().zip(&shape).skip(1).all(|(want, got)| want.is_none_or(|w| w == *got));
                let mut want: Vec<String> = dims.iter().map(|x| x.map(|v| v.to_string()).unwrap_or_else(|| "?".into())).collect();
                if let Some(first) = want.first_mut() {
                    *first = n.to_string();
                }
                (!fits, format!("[{}] (as the graph declares it)", want.join(", ")))
            }
            // The features: [N, D] or [N, D, 1, 1].
            None => (
                shape.iter().skip(2).any(|&x| x != 1),
                format!("[{n}, {}]", self.info.embed_dim.map(|e| e.to_string()).unwrap_or_else(|| "D".into())),
            ),
        };
        if bad_shape || shape.first() != Some(&n) || self.info.embed_dim.is_some_and(|e| e != d) {
            return Err(RuntimeError::Run {
                backend: self.backend.name().into(),
                shape: vec![n, 3, s, s],
                reason: format!("output `{}` has shape {shape:?}; expected {expected}", self.info.output),
            });
        }
        out.into_shape_with_order((n, d)).map(|a| a.into_owned()).map_err(|e| RuntimeError::Run {
            backend: self.backend.name().into(),
            shape: vec![n, 3, s, s],
            reason: format!("output `{}` of shape {shape:?} cannot be viewed as [{n}, {d}]: {e}", self.info.output),
        })
    }

    /// Preprocesses decoded RGB images (in parallel) and runs them as one batch.
    pub fn features(&self, images: &[(&RgbImage, &str)]) -> Result<Array2<f32>, RuntimeError> {
        let chw: Result<Vec<Vec<f32>>, _> = images.par_iter().map(|(im, name)| self.info.transform.apply(im, name)).collect();
        self.features_from_chw(&chw?)
    }

    /// Features of one image file.
    pub fn features_file(&self, path: &Path) -> Result<Vec<f32>, RuntimeError> {
        let chw = self.info.transform.apply_file(path)?;
        Ok(self.features_from_chw(&[chw])?.row(0).to_vec())
    }

    /// Batched extraction over `n` items: `load(i)` returns a preprocessed CHW image;
    /// batches of `batch_size` (the last one smaller) run one after another, each
    /// batch's items are loaded in parallel on the rayon pool while the previous
    /// batch runs. `progress(k)` is called with the number of images finished by each batch.
    ///
    /// The model calls are sequential on purpose: the backend parallelizes inside
    /// a call (ORT's intra-op threads, tract's matmul pool), and running batches as
    /// rayon jobs made each one wait on tract's pool from a rayon worker, which is
    /// not re-entrant (with tract's `multithread-mm` executor installed as the process
    /// default, `pretext knn eval` hung that way; see `tract_backend`).
    pub fn extract_many<F>(
        &self,
        n: usize,
        batch_size: usize,
        load: F,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Array2<f32>, RuntimeError>
    where
        F: Fn(usize) -> Result<Vec<f32>, RuntimeError> + Sync,
    {
        let bs = batch_size.max(1);
        let starts: Vec<usize> = (0..n).step_by(bs).collect();
        let load_batch = |s0: usize| -> Result<Vec<Vec<f32>>, RuntimeError> { (s0..(s0 + bs).min(n)).into_par_iter().map(&load).collect() };
        let mut parts: Vec<Array2<f32>> = Vec::with_capacity(starts.len());
        let mut next = starts.first().map(|&s0| load_batch(s0));
        for (b, _) in starts.iter().enumerate() {
            let chw = next.take().expect("loaded before use")?;
            // The model runs on a plain thread, not a rayon worker, so that a multithreaded
            // tract plan may use its pool (see `tract_backend`), while the rayon pool loads
            // the next batch.
            let (f, following) = std::thread::scope(|scope| {
                let model = scope.spawn(|| self.features_from_chw(&chw));
                let following = starts.get(b + 1).map(|&s0| load_batch(s0));
                (model.join(), following)
            });
            let f = f.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            progress(chw.len());
            parts.push(f);
            next = following;
        }
        let d = parts.first().map(|p| p.ncols()).or(self.info.embed_dim).unwrap_or(0);
        let mut out = Array2::zeros((n, d));
        let mut row = 0;
        for p in parts {
            let r = p.nrows();
            out.slice_mut(ndarray::s![row..row + r, ..]).assign(&p);
            row += r;
        }
        Ok(out)
    }

    /// Batched extraction of image files.
    pub fn extract_files(&self, paths: &[PathBuf], batch_size: usize, progress: &(dyn Fn(usize) + Sync)) -> Result<Array2<f32>, RuntimeError> {
        self.extract_many(paths.len(), batch_size, |i| Ok(self.info.transform.apply_file(&paths[i])?), progress)
    }
}

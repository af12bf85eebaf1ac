//! `pretext extract`: images or a dataset in, a features file (.npy or .safetensors) out.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use pretext_data::{Dataset, OpenOptions};
use pretext_runtime::{BackendKind, Engine, ExecutionProvider, Extractor, GraphOptLevel, OrtOptions, RuntimeError, TractOptions};

/// Backend selection and the preprocessing overrides for models without pretext metadata.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Inference backend.
    #[arg(long, value_enum, default_value_t)]
    pub backend: Engine,
    /// tract: threads (default: all cores); with more than one, a batch's images run in
    /// parallel, one thread each.
    #[arg(long)]
    pub tract_threads: Option<usize>,
    /// ort: execution provider (an unavailable provider is an error, never a CPU fallback).
    #[arg(long, value_enum, default_value_t)]
    pub provider: ExecutionProvider,
    /// ort: GPU device id for CUDA/TensorRT.
    #[arg(long, default_value_t = 0)]
    pub device: i32,
    /// ort TensorRT: build fp16 engines.
    #[arg(long)]
    pub fp16: bool,
    /// ort TensorRT: engine cache directory.
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
    /// ort: graph optimization level.
    #[arg(long, value_enum, default_value_t)]
    pub opt_level: GraphOptLevel,
    /// ort: intra-op threads.
    #[arg(long)]
    pub intra_threads: Option<usize>,
    /// ort: inter-op threads.
    #[arg(long)]
    pub inter_threads: Option<usize>,
    /// Input size (square); overrides `pretext.input_size`.
    #[arg(long)]
    pub input_size: Option<u32>,
    /// Shorter side before the center crop; overrides `pretext.resize`.
    #[arg(long)]
    pub resize: Option<u32>,
    /// Per-channel mean, e.g. 0.485,0.456,0.406; overrides `pretext.mean`.
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std; overrides `pretext.std`.
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Graph output to extract (default: the features, `pretext.output`); any graph
    /// output works, e.g. a head exported with `--with-head`.
    #[arg(long)]
    pub output: Option<String>,
}

impl ModelArgs {
    pub fn open(&self, model: &Path) -> Result<Extractor> {
        let backend = match self.backend {
            Engine::Tract => BackendKind::TractWith(TractOptions { threads: self.tract_threads, ..Default::default() }),
            Engine::Ort => BackendKind::Ort(OrtOptions {
                provider: self.provider,
                device_id: self.device,
                trt_fp16: self.fp16,
                trt_engine_cache: self.trt_cache.clone(),
                opt_level: self.opt_level,
                intra_threads: self.intra_threads,
                inter_threads: self.inter_threads,
                ..Default::default()
            }),
        };
        let mut b = Extractor::builder(model).backend(backend);
        if let Some(v) = self.input_size {
            b = b.input_size(v);
        }
        if let Some(v) = self.resize {
            b = b.resize(v);
        }
        let three = |name: &str, v: &[f32]| -> Result<[f32; 3]> {
            <[f32; 3]>::try_from(v).map_err(|_| anyhow::anyhow!("--{name} takes 3 comma-separated numbers, got {v:?}"))
        };
        if let Some(v) = &self.mean {
            b = b.mean(three("mean", v)?);
        }
        if let Some(v) = &self.std {
            b = b.std(three("std", v)?);
        }
        if let Some(v) = &self.output {
            b = b.output(v.clone());
        }
        b.build().with_context(|| format!("opening {}", model.display()))
    }
}

#[derive(Args)]
pub struct ExtractArgs {
    /// The ONNX encoder.
    pub model: PathBuf,
    /// Image files, directories of images, or one dataset (directory or tarball, see `pretext data`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output: `.npy` ([N, D], the `--output` values per image) or `.safetensors` (them as
    /// `features`, and labels for a dataset).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Dataset split; default: every split, in order.
    #[arg(long)]
    pub split: Option<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Only N images, evenly strided over the inputs.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// A bar on a terminal, a plain line on stderr every 15 s in a log (`pretext_data::progress`).
pub(crate) fn progress_bar(n: usize, what: &str) -> pretext_data::progress::Progress {
    pretext_data::progress::Progress::new(what, n as u64)
}

pub(crate) fn is_image(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// Opens a dataset with a progress bar for the first decode.
pub(crate) fn open_dataset(path: &Path) -> Result<Dataset> {
    let pb = progress_bar(0, "dataset");
    let opts = OpenOptions { progress: Some(pb.callback()), ..Default::default() };
    let ds = Dataset::open(path, &opts).with_context(|| format!("opening dataset {}", path.display()))?;
    pb.finish_and_clear();
    Ok(ds)
}

/// A labeled image source: files or dataset splits.
pub(crate) enum Source {
    Files(Vec<PathBuf>),
    Data { ds: Box<Dataset>, splits: Vec<String> },
}

impl Source {
    pub(crate) fn resolve(inputs: &[PathBuf], split: Option<&str>) -> Result<Source> {
        let mut files = vec![];
        for p in inputs {
            if p.is_file() && is_image(p) {
                files.push(p.clone());
            } else if p.is_dir() && !std::fs::read_dir(p)?.flatten().any(|e| e.path().is_dir()) {
                let mut v: Vec<PathBuf> = std::fs::read_dir(p)?.flatten().map(|e| e.path()).filter(|p| is_image(p)).collect();
                v.sort();
                files.extend(v);
            } else if inputs.len() == 1 {
                let ds = open_dataset(p)?;
                let splits = match split {
                    Some(s) => {
                        if ds.split(s).is_none() {
                            bail!("dataset {} has no split `{s}`; splits: {:?}", p.display(), ds.split_names());
                        }
                        vec![s.to_string()]
                    }
                    None => ds.split_names().iter().map(|s| s.to_string()).collect(),
                };
                return Ok(Source::Data { ds: Box::new(ds), splits });
            } else {
                bail!("{} is neither an image (.jpg/.png) nor a directory of images", p.display());
            }
        }
        if files.is_empty() {
            bail!("no images found in {inputs:?}");
        }
        Ok(Source::Files(files))
    }

    /// `(split, index within split)` for each image, up to `limit`.
    pub(crate) fn items(&self, limit: Option<usize>) -> Vec<(usize, usize)> {
        let v: Vec<(usize, usize)> = match self {
            Source::Files(f) => (0..f.len()).map(|i| (0, i)).collect(),
            Source::Data { ds, splits } => splits
                .iter()
                .enumerate()
                .flat_map(|(si, s)| (0..ds.split(s).map(|v| v.len()).unwrap_or(0)).map(move |i| (si, i)))
                .collect(),
        };
        // An evenly strided subset, so a limited run still covers every class.
        match limit {
            Some(n) if n < v.len() => (0..n).map(|k| v[k * v.len() / n]).collect(),
            _ => v,
        }
    }

    pub(crate) fn name(&self, (s, i): (usize, usize)) -> String {
        match self {
            Source::Files(f) => f[i].display().to_string(),
            Source::Data { ds, splits } => ds.split(&splits[s]).map(|v| v.file(i).to_string()).unwrap_or_default(),
        }
    }

    pub(crate) fn label(&self, (s, i): (usize, usize)) -> Option<u32> {
        match self {
            Source::Files(_) => None,
            Source::Data { ds, splits } => ds.split(&splits[s]).and_then(|v| ds.label(v.pool_index(i))),
        }
    }

    pub(crate) fn classes(&self) -> Vec<String> {
        match self {
            Source::Files(_) => vec![],
            Source::Data { ds, .. } => ds.classes().to_vec(),
        }
    }

    /// Decoded (or in-memory) image, preprocessed by the extractor's transform.
    pub(crate) fn preprocess(&self, e: &Extractor, (s, i): (usize, usize)) -> Result<Vec<f32>, RuntimeError> {
        match self {
            Source::Files(f) => Ok(e.transform().apply_file(&f[i])?),
            Source::Data { ds, splits } => {
                let v = ds.split(&splits[s]).expect("split checked");
                let im = v.image(i);
                let rgb = image::RgbImage::from_raw(im.width, im.height, im.pixels.to_vec()).ok_or_else(|| {
                    RuntimeError::Knn(format!("image {} has {} bytes for {}x{}", v.file(i), im.pixels.len(), im.width, im.height))
                })?;
                Ok(e.transform().apply(&rgb, v.file(i))?)
            }
        }
    }

    /// Batched extraction of `items` with a progress bar.
    pub(crate) fn extract(&self, e: &Extractor, items: &[(usize, usize)], batch_size: usize, what: &str) -> Result<ndarray::Array2<f32>> {
        let pb = progress_bar(items.len(), what);
        let f = e.extract_many(items.len(), batch_size, |k| self.preprocess(e, items[k]), &|n| pb.inc(n as u64))?;
        pb.finish_and_clear();
        Ok(f)
    }
}

pub fn run(a: ExtractArgs) -> Result<()> {
    let e = a.model_args.open(&a.model)?;
    let src = Source::resolve(&a.inputs, a.split.as_deref())?;
    let items = src.items(a.limit);
    let t0 = std::time::Instant::now();
    let feats = src.extract(&e, &items, a.batch_size, "extracting")?;
    let secs = t0.elapsed().as_secs_f64();
    let (n, d) = feats.dim();
    let data = feats.as_standard_layout();
    let data = data.as_slice().expect("standard layout");
    match a.out.extension().and_then(|x| x.to_str()) {
        Some("npy") => pretext_runtime::npy::write_f32(&a.out, &[n, d], data)?,
        Some("safetensors") => {
            use safetensors::tensor::{Dtype, TensorView};
            let fb: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            let labels: Vec<i64> = items.iter().map(|&it| src.label(it).map(|l| l as i64).unwrap_or(-1)).collect();
            let lb: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut tensors = vec![("features", TensorView::new(Dtype::F32, vec![n, d], &fb)?)];
            if labels.iter().any(|l| *l >= 0) {
                tensors.push(("labels", TensorView::new(Dtype::I64, vec![n], &lb)?));
            }
            let meta = std::collections::HashMap::from([
                ("model_sha256".to_string(), e.info().sha256.clone()),
                ("model".to_string(), e.info().display_name()),
                ("classes".to_string(), serde_json::to_string(&src.classes())?),
                ("output".to_string(), e.info().output.clone()),
            ]);
            safetensors::serialize_to_file(tensors, Some(meta), &a.out).with_context(|| format!("writing {}", a.out.display()))?;
        }
        _ => bail!("output {} must end in .npy or .safetensors", a.out.display()),
    }
    println!(
        "{n} images -> [{n}, {d}] `{}` in {} ({} backend, {:.1} images/s, {:.2}s)",
        e.info().output,
        a.out.display(),
        e.backend().name(),
        n as f64 / secs.max(1e-9),
        secs
    );
    Ok(())
}

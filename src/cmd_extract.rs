//! `pretext extract`: images or a dataset in, a features file (.npy or .safetensors) out.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use pretext_runtime::{write_features, BackendKind, Engine, ExecutionProvider, Extractor, GraphOptLevel, OrtOptions, Source, TractOptions};

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

pub fn run(a: ExtractArgs) -> Result<()> {
    let e = a.model_args.open(&a.model)?;
    let src = Source::resolve(&a.inputs, a.split.as_deref())?;
    let items = src.items(a.limit);
    let t0 = std::time::Instant::now();
    let feats = src.extract(&e, &items, a.batch_size, "extracting")?;
    let secs = t0.elapsed().as_secs_f64();
    let labels: Vec<Option<u32>> = items.iter().map(|&it| src.label(it)).collect();
    write_features(&a.out, &feats, &labels, &src.classes(), e.info())?;
    let (n, d) = feats.dim();
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

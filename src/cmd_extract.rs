//! `pretext extract`: images or a dataset in, a features file (.npy or .safetensors) out.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pretext_runtime::{write_features, BackendKind, ConvLayout, Extractor, F16Compute, Source, TractBatchMode, TractBatchParallel, TractOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendArg {
    Tract,
    Ort,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProviderArg {
    Cpu,
    Cuda,
    Tensorrt,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TractBatchArg {
    Split,
    Whole,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TractLayoutArg {
    ChannelLast,
    AsGraph,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TractF16Arg {
    Upcast,
    Native,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptLevelArg {
    Disable,
    Basic,
    Extended,
    All,
}

/// Backend selection and the preprocessing overrides for models without pretext metadata.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Inference backend.
    #[arg(long, value_enum, default_value = "tract")]
    pub backend: BackendArg,
    /// tract: one plan with a symbolic batch instead of one optimized plan per batch size.
    #[arg(long)]
    pub tract_symbolic: bool,
    /// tract: threads (default: all cores).
    #[arg(long)]
    pub tract_threads: Option<usize>,
    /// tract: how a batch uses the threads: `split` (its images run in parallel, one
    /// thread each; the default) or `whole` (one run, threads inside the matrix products).
    #[arg(long, value_enum, default_value = "split")]
    pub tract_batch: TractBatchArg,
    /// tract: convolution layout in the plan: `channel-last` (NHWC, the default; vectorized
    /// depthwise convolutions) or `as-graph` (the graph's NCHW).
    #[arg(long, value_enum, default_value = "channel-last")]
    pub tract_layout: TractLayoutArg,
    /// tract: fp16 graphs compute in fp32 (`upcast`, the x86_64 default) or in tract's
    /// fp16 kernels (`native`, the default elsewhere).
    #[arg(long, value_enum)]
    pub tract_f16: Option<TractF16Arg>,
    /// ort: execution provider (an unavailable provider is an error, never a CPU fallback).
    #[arg(long, value_enum, default_value = "cpu")]
    pub provider: ProviderArg,
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
    #[arg(long, value_enum, default_value = "all")]
    pub opt_level: OptLevelArg,
    /// ort: intra-op threads.
    #[arg(long)]
    pub intra_threads: Option<usize>,
    /// ort: inter-op threads.
    #[arg(long)]
    pub inter_threads: Option<usize>,
    /// ort (CPU): directory of the optimized-model cache; later opens of the same model
    /// skip ORT's optimizer and map the stored ORT-format graph (CNNs open 2-5x faster).
    #[arg(long)]
    pub ort_cache: Option<PathBuf>,
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
            BackendArg::Tract => BackendKind::TractWith(TractOptions {
                batch_mode: if self.tract_symbolic { TractBatchMode::Symbolic } else { TractBatchMode::PerBatch },
                threads: self.tract_threads,
                batch_parallel: match self.tract_batch {
                    TractBatchArg::Split => TractBatchParallel::Split,
                    TractBatchArg::Whole => TractBatchParallel::Whole,
                },
                conv_layout: match self.tract_layout {
                    TractLayoutArg::ChannelLast => ConvLayout::ChannelLast,
                    TractLayoutArg::AsGraph => ConvLayout::AsGraph,
                },
                f16: match self.tract_f16 {
                    None => F16Compute::default(),
                    Some(TractF16Arg::Upcast) => F16Compute::UpcastF32,
                    Some(TractF16Arg::Native) => F16Compute::Native,
                },
                ..Default::default()
            }),
            BackendArg::Ort => {
                use pretext_runtime::{ExecutionProvider as Ep, GraphOptLevel as L, OrtOptions};
                BackendKind::Ort(OrtOptions {
                    provider: match self.provider {
                        ProviderArg::Cpu => Ep::Cpu,
                        ProviderArg::Cuda => Ep::Cuda { device_id: self.device },
                        ProviderArg::Tensorrt => Ep::TensorRt { device_id: self.device, fp16: self.fp16, engine_cache: self.trt_cache.clone() },
                    },
                    opt_level: match self.opt_level {
                        OptLevelArg::Disable => L::Disable,
                        OptLevelArg::Basic => L::Basic,
                        OptLevelArg::Extended => L::Extended,
                        OptLevelArg::All => L::All,
                    },
                    intra_threads: self.intra_threads,
                    inter_threads: self.inter_threads,
                    optimized_cache: self.ort_cache.clone(),
                    ..Default::default()
                })
            }
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

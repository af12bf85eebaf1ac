//! `pretext bench`'s arguments and the run they ask for.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::prep::MODELS;
use crate::stats::Timing;

/// The arguments of `pretext bench` (the CLI flattens them into its subcommand).
#[derive(Args)]
pub struct BenchArgs {
    /// Smoke run: ResNet-18 CIFAR at batches 1 and 8, short budgets, small k-NN query set.
    #[arg(long)]
    pub quick: bool,
    /// Models, comma separated (resnet18-cifar, resnet50, vit-small, mobilenet_v2).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub batches: Option<Vec<usize>>,
    /// Threads for every system (ORT intra-op, tract, libtorch, PyTorch, faiss).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Sections to run, comma separated: inference, training, augment, knn.
    #[arg(long, value_delimiter = ',', default_value = "inference,training,augment,knn")]
    pub sections: Vec<String>,
    /// Timing budget per (model, batch, system) in seconds, after warm-up (at least --min-iters runs),
    /// shared out over the rounds.
    #[arg(long)]
    pub budget: Option<f64>,
    /// Minimum timed iterations per (model, batch, system), over all rounds.
    #[arg(long)]
    pub min_iters: Option<usize>,
    /// Rounds per case: the systems of a case take turns (A B C, A B C, ...), each
    /// ratio is the median of the per-round ratios with a bootstrap 95% interval
    /// (default 5 with --quick, else 12; training: SimCLR steps per system).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Where weights, inputs, ONNX files and results go.
    #[arg(long, short, default_value = "target/bench")]
    pub out: PathBuf,
    /// Threads of tract's matrix products (default: --threads; 1 = the calling
    /// thread only, i.e. tract before its multithread-mm executor was enabled).
    #[arg(long)]
    pub tract_threads: Option<usize>,
    /// ONNX Runtime intra-op thread spinning, for pretext+ORT and the torch.onnx+ORT
    /// peer alike: `default` (ONNX Runtime's: spinning), `on` or `off` (idle threads
    /// park; faster on a busy machine).
    #[arg(long, default_value = "default")]
    pub ort_spinning: String,
    /// ONNX Runtime graph optimization level for pretext+ORT: all (default,
    /// as the torch.onnx+ORT peer), extended, basic, disable.
    #[arg(long, value_enum, default_value_t)]
    pub ort_opt_level: pretext_runtime::GraphOptLevel,
    /// OpenMP wait policy for both libtorch systems (tch here, PyTorch in the
    /// peers): `passive` (default) parks idle workers instead of spinning, which
    /// keeps a shared machine's background load from stalling every parallel
    /// region; `active` is libgomp's default; `inherit` leaves OMP_WAIT_POLICY as is.
    #[arg(long, default_value = "passive")]
    pub omp_wait_policy: String,
    /// Skip the Python peers (no ratios).
    #[arg(long)]
    pub no_peers: bool,
    /// Python with torch, torchvision, timm, onnxruntime, faiss (default: $PRETEXT_PYTHON, then .venv/bin/python).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// What one run measures: the --quick or full defaults, with the arguments' overrides.
pub(crate) struct Plan {
    pub(crate) models: Vec<String>,
    pub(crate) batches: Vec<usize>,
    pub(crate) timing: Timing,
    pub(crate) train_batch: i64,
    pub(crate) train_steps: usize,
    pub(crate) knn_n: i64,
    pub(crate) knn_queries: i64,
    pub(crate) augment_images: usize,
    pub(crate) rounds: usize,
}

impl Plan {
    /// The timing of one system's block in one round: the budget and the
    /// iteration counts shared out over the rounds, at least one run.
    pub(crate) fn block(&self) -> Timing {
        let r = self.rounds.max(1);
        Timing { warmup: 0, min_iters: self.timing.min_iters.div_ceil(r).max(1), max_iters: (self.timing.max_iters / r).max(1), budget_s: self.timing.budget_s / r as f64 }
    }
}

impl BenchArgs {
    /// The run these arguments ask for, checked.
    pub(crate) fn plan(&self) -> Result<Plan> {
        let a = self;
        let mut p = if a.quick {
            Plan {
                models: vec!["resnet18-cifar".into()],
                batches: vec![1, 8],
                timing: Timing { warmup: 1, min_iters: 3, max_iters: 50, budget_s: 0.3 },
                train_batch: 32,
                train_steps: 3,
                knn_n: 50_000,
                knn_queries: 100,
                augment_images: 256,
                rounds: 5,
            }
        } else {
            Plan {
                models: MODELS.iter().map(|s| s.to_string()).collect(),
                batches: vec![1, 8, 32],
                timing: Timing { warmup: 1, min_iters: 3, max_iters: 500, budget_s: 1.5 },
                train_batch: 64,
                train_steps: 8,
                knn_n: 50_000,
                knn_queries: 1000,
                augment_images: 2048,
                rounds: 12,
            }
        };
        if let Some(m) = &a.models {
            for name in m {
                if !MODELS.contains(&name.as_str()) {
                    bail!("unknown model '{name}': expected one of {}", MODELS.join(", "));
                }
            }
            p.models = m.clone();
        }
        if let Some(b) = &a.batches {
            if b.is_empty() || b.contains(&0) {
                bail!("--batches must be positive integers, got {b:?}");
            }
            p.batches = b.clone();
        }
        if let Some(s) = a.budget {
            p.timing.budget_s = s;
        }
        if let Some(n) = a.min_iters {
            p.timing.min_iters = n.max(1);
        }
        if let Some(r) = a.rounds {
            if r < 3 {
                bail!("--rounds must be at least 3 (an interval needs several rounds), got {r}");
            }
            p.rounds = r;
            p.train_steps = r;
        }
        for s in &a.sections {
            if !["inference", "training", "augment", "knn"].contains(&s.as_str()) {
                bail!("unknown section '{s}': expected inference, training, augment, knn");
            }
        }
        if a.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if !["default", "on", "off"].contains(&a.ort_spinning.as_str()) {
            bail!("--ort-spinning must be default, on or off, got '{}'", a.ort_spinning);
        }
        Ok(p)
    }

    /// The Python of the peers: --python, else $PRETEXT_PYTHON (run time, then build time), else .venv/bin/python.
    pub(crate) fn python(&self) -> PathBuf {
        self.python
            .clone()
            .or_else(|| std::env::var_os("PRETEXT_PYTHON").map(PathBuf::from))
            .or_else(|| option_env!("PRETEXT_PYTHON").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
    }

    /// pretext+ORT's session options: --threads intra-op, one inter-op, --ort-opt-level, --ort-spinning.
    pub(crate) fn ort_options(&self) -> Result<pretext_runtime::OrtOptions> {
        let opt_level = self.ort_opt_level;
        let intra_spinning = match self.ort_spinning.as_str() {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        };
        Ok(pretext_runtime::OrtOptions { intra_threads: Some(self.threads), inter_threads: Some(1), opt_level, intra_spinning, ..Default::default() })
    }

    /// pretext+tract's options: --tract-threads (default --threads); plans per batch
    /// size, split batches and channel-last convolutions are the runtime's defaults.
    pub(crate) fn tract_options(&self) -> pretext_runtime::TractOptions {
        pretext_runtime::TractOptions { threads: Some(self.tract_threads.unwrap_or(self.threads).max(1)), ..Default::default() }
    }
}

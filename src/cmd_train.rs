//! `pretext train`: self-supervised pretraining; every run's config is saved
//! as `config.toml` in the run dir and `--config` re-runs it.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use pretext_trainer::methods;
use pretext_trainer::optim::OptimizerKind;
use pretext_trainer::train::{train, TrainConfig};

#[derive(Args)]
pub struct TrainArgs {
    /// The method (aliases accepted); the list below, and `docs/methods.md`.
    #[arg(long, default_value = "simclr")]
    method: String,
    /// resnet18-cifar, resnet18, resnet50, vit-tiny-cifar, ...
    #[arg(long, default_value = "resnet18-cifar")]
    backbone: String,
    /// First-stage channels of a ResNet (64 in torchvision).
    #[arg(long)]
    width: Option<i64>,
    /// Transformer blocks of a ViT (12 in timm's presets).
    #[arg(long)]
    depth: Option<usize>,
    /// Dataset: a tarball or folder the data crate opens (CIFAR-10 JPEG tarball, image folders, ...).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Truncated or corrupt image files in --data: `error` stops, naming them; `skip`
    /// trains without them and lists them [default: error].
    #[arg(long, value_name = "skip|error")]
    on_bad_image: Option<pretext_data::OnBadImage>,
    /// Passes over the training set [default: 10].
    #[arg(long)]
    epochs: Option<u64>,
    /// Images per step; each yields the method's views [default: 256].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate of the warmup + cosine schedule [default: 0.06 with SGD; 5e-4 with AdamW for dino/mae].
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay, not applied to norms and biases [default: 5e-4; 0.04 for dino/mae].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Epochs of linear lr warmup before the cosine decay (fractions allowed) [default: 0].
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// sgd, lars or adamw
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// Clip the global gradient norm to this value (0 = off) [default: 0].
    #[arg(long)]
    clip_grad: Option<f64>,
    /// Seed of the initialisation, data order and augmentations [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Run dir (config.toml, metrics.jsonl, checkpoints, plots).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the run dir's checkpoint.
    #[arg(long)]
    resume: bool,
    /// cpu, cuda or cuda:N (loads libtorch_cuda.so from the torch/lib libtorch came from) [default: cpu].
    #[arg(long)]
    device: Option<String>,
    /// Stop with a checkpoint after this many minutes of training.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Run k-NN on the test split every N epochs (fractions allowed).
    #[arg(long)]
    knn_every: Option<f64>,
    /// Training images used as the k-NN gallery (0 = all).
    #[arg(long)]
    knn_train: Option<usize>,
    /// Train on N evenly strided training images only (every class stays in).
    #[arg(long)]
    limit: Option<usize>,
    /// Write a checkpoint every N steps (0 = at the end of each epoch and of the run) [default: 0].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Stop after N steps of this invocation (for tests of --resume).
    #[arg(long)]
    stop_after: Option<u64>,
    /// libtorch intra-op threads (default: libtorch's choice, all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Start from these student weights (safetensors, the trainer's parameter
    /// names: torchvision/timm backbone names, `projection_head.*`, ...) instead of the random init.
    #[arg(long)]
    init_weights: Option<PathBuf>,
    /// Re-run a saved config (flags given too override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Check the settings, print the run's config.toml and exit without training.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    method_flags: MethodFlags,
}

/// One flag per setting of any method in the registry (`--queue-size`, ...),
/// generated from the methods' field tables; the values are parsed and
/// checked by the chosen method's config.
struct MethodFlags(Vec<(&'static str, String)>);

/// Every method setting once, with the methods that have it.
fn method_fields() -> Vec<(&'static methods::Field, Vec<&'static methods::MethodSpec>)> {
    let mut out: Vec<(&'static methods::Field, Vec<&'static methods::MethodSpec>)> = Vec::new();
    for m in methods::REGISTRY {
        for f in m.fields {
            match out.iter_mut().find(|(g, _)| g.name == f.name) {
                Some((_, ms)) => ms.push(m),
                None => out.push((f, vec![m])),
            }
        }
    }
    out
}

impl clap::FromArgMatches for MethodFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(method_fields().into_iter().filter_map(|(f, _)| m.get_one::<String>(f.name).map(|v| (f.name, v.clone()))).collect()))
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for MethodFlags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        cmd = cmd.next_help_heading("Method settings (generated from the method registry; d = the backbone's embed dim)");
        for (f, ms) in method_fields() {
            let defaults: Vec<String> = ms.iter().map(|m| format!("{} {}", m.name, m.field(f.name).map_or("", |g| g.default))).collect();
            let help = format!("{} Allowed: {}. Default: {}.", f.help.trim(), f.expected(), defaults.join("; "));
            // clap wants 'static names; these are built once per process.
            let long: &'static str = Box::leak(f.name.replace('_', "-").into_boxed_str());
            cmd = cmd.arg(clap::Arg::new(f.name).long(long).value_name(if f.integer { "N" } else { "X" }).value_parser(clap::value_parser!(String)).help(help));
        }
        cmd
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The methods for `pretext train --help`: name, aliases, summary.
pub fn methods_help() -> String {
    let mut s = String::from("Methods (--method NAME):\n");
    for m in methods::REGISTRY {
        let aliases = if m.aliases.is_empty() { String::new() } else { format!(" (or {})", m.aliases.join(", ")) };
        s += &format!("  {}{aliases}\n      {}\n", m.name, m.summary);
    }
    s
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let mut c = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<TrainConfig>(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => {
            // Head sizes follow the backbone's embed dim at --width.
            let mut c = TrainConfig::defaults(&a.method, &a.backbone)?;
            c.depth = a.depth;
            let mut c = c.with_width(a.width)?;
            c.out = PathBuf::from(format!("runs/{}-{}", c.method.name(), a.backbone));
            c
        }
    };
    if a.config.is_some() && a.depth.is_some() {
        c.depth = a.depth;
    }
    if a.config.is_some() && a.width.is_some() {
        // A saved config keeps its head sizes unless the width changes them.
        c = c.with_width(a.width)?;
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$f = v; } )* };
    }
    set!(data, epochs, batch_size, lr, weight_decay, warmup_epochs, optimizer, clip_grad, seed, out, device, max_minutes, knn_every, knn_train, limit, checkpoint_every, stop_after, threads, on_bad_image);
    if a.weight_decay.is_some() {
        c.final_weight_decay = c.weight_decay;
    }
    if a.init_weights.is_some() {
        c.init_weights = a.init_weights.clone();
    }
    let spec = c.method.spec();
    for (field, value) in &a.method_flags.0 {
        if spec.field(field).is_none() {
            let have: Vec<&str> = methods::REGISTRY.iter().filter(|m| m.field(field).is_some()).map(|m| m.name).collect();
            anyhow::bail!("--{} is a setting of {}, not of {}", field.replace('_', "-"), have.join(", "), spec.name);
        }
        c.method.set(field, value)?;
    }
    c.validate()?;
    if a.dry_run {
        print!("{}", toml::to_string(&c).context("serialising the config")?);
        return Ok(());
    }
    let s = train(&c, a.resume, !a.quiet).with_context(|| format!("training run {}", c.out.display()))?;
    let knn = s.last_knn.map(|(a, b)| format!(", k-NN top-1 {a:.2}% (k=20, T=0.07) / {b:.2}% (k=200, T=0.1)")).unwrap_or_default();
    println!("{} after {} steps, {:.0} images/s{knn}; run dir {}", if s.finished { "finished" } else { "stopped" }, s.steps, s.images_per_s, c.out.display());
    Ok(())
}

//! `pretext knn build|classify|eval`: a k-NN gallery on top of an ONNX encoder.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use pretext_runtime::{build_gallery, knn_eval, Gallery, KnnParams, Source};

use crate::cmd_extract::ModelArgs;

#[derive(Args)]
pub struct KnnArgs {
    #[command(subcommand)]
    pub cmd: KnnCmd,
}

#[derive(Subcommand)]
pub enum KnnCmd {
    /// Embed a labeled split and write the gallery (features, labels, classes, model hash).
    Build(BuildArgs),
    /// Classify images against a gallery.
    Classify(ClassifyArgs),
    /// Accuracy (k=20,T=0.07 and k=200,T=0.1) and latency on a labeled split.
    Eval(EvalArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    pub model: PathBuf,
    /// Dataset (directory or tarball).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "train")]
    pub split: String,
    #[arg(short, long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Only N images of the split, evenly strided.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

#[derive(Args)]
pub struct ClassifyArgs {
    pub model: PathBuf,
    pub gallery: PathBuf,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f32,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    pub model: PathBuf,
    pub gallery: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long)]
    pub limit: Option<usize>,
    /// Images timed one by one (decode-free preprocess + batch-1 inference + search + vote).
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

pub fn run(a: KnnArgs) -> Result<()> {
    match a.cmd {
        KnnCmd::Build(b) => build(b),
        KnnCmd::Classify(c) => classify(c),
        KnnCmd::Eval(e) => eval(e),
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let e = a.model_args.open(&a.model)?;
    let src = Source::resolve(std::slice::from_ref(&a.data), Some(&a.split))?;
    let items = src.items(a.limit);
    let t0 = Instant::now();
    let g = build_gallery(&e, &src, &items, a.batch_size)?;
    let secs = t0.elapsed().as_secs_f64();
    g.save(&a.out)?;
    println!(
        "gallery {}: {} images x {} dims, {} classes, model sha256 {} ({:.1} images/s with {})",
        a.out.display(),
        g.len(),
        g.dim(),
        g.classes.len(),
        g.model_sha256.get(..12).unwrap_or(&g.model_sha256),
        g.len() as f64 / secs.max(1e-9),
        e.backend().name()
    );
    Ok(())
}

fn classify(a: ClassifyArgs) -> Result<()> {
    let e = a.model_args.open(&a.model)?;
    let g = Gallery::load_for(&a.gallery, &e)?;
    let p = KnnParams { k: a.k, temperature: a.temperature };
    for img in &a.images {
        let f = e.features_file(img)?;
        let pred = g.classify_one(&f, p)?;
        println!("{}\t{}\t{:.4}", img.display(), pred.label, pred.scores[pred.class]);
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let e = a.model_args.open(&a.model)?;
    let g = Gallery::load_for(&a.gallery, &e)?;
    let src = Source::resolve(std::slice::from_ref(&a.data), Some(&a.split))?;
    let items = src.items(a.limit);
    let r = knn_eval(&e, &g, &src, &items, a.batch_size, a.latency_samples)?;
    println!(
        "k-NN eval of {} on {} split `{}` ({} images) against {} ({} images, {} dims), backend {}",
        e.info().display_name(),
        a.data.display(),
        a.split,
        r.n,
        a.gallery.display(),
        g.len(),
        g.dim(),
        e.backend().name()
    );
    for &(s, correct) in &r.correct {
        println!("  k={:<3} T={:<4}  top-1 accuracy {:.2}% ({correct}/{})", s.k, s.temperature, 100.0 * correct as f64 / r.n.max(1) as f64, r.n);
    }
    println!(
        "  throughput: {:.1} images/s end to end (extract {:.2}s at batch {}, search+vote {:.3}s)",
        r.n as f64 / (r.extract_secs + r.search_secs).max(1e-9),
        r.extract_secs,
        a.batch_size,
        r.search_secs
    );
    let m = r.latency_ms.len();
    if m > 0 {
        println!(
            "  latency per image (batch 1, {m} images): p50 {:.2} ms, p90 {:.2} ms ({:.1} images/s sequential)",
            r.latency_quantile(0.5),
            r.latency_quantile(0.9),
            1e3 * m as f64 / r.latency_ms.iter().sum::<f64>()
        );
    }
    Ok(())
}

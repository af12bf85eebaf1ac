//! `pretext knn build|classify|eval`: a k-NN gallery on top of an ONNX encoder.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pretext_runtime::knn::{argmax, exact_topk, l2_normalize_rows, vote};
use pretext_runtime::{Gallery, KnnParams};

use crate::cmd_extract::{ModelArgs, Source};

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
    let labels: Vec<u32> = items
        .iter()
        .map(|&it| src.label(it).with_context(|| format!("{} has no class label (detection dataset?)", src.name(it))))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    let feats = src.extract(&e, &items, a.batch_size, "knn build: embedding")?;
    let secs = t0.elapsed().as_secs_f64();
    let g = Gallery::new(feats, labels, src.classes(), e.info().sha256.clone(), e.info().display_name())?;
    g.save(&a.out)?;
    println!(
        "gallery {}: {} images x {} dims, {} classes, model sha256 {} ({:.1} images/s with {})",
        a.out.display(),
        g.len(),
        g.dim(),
        g.classes.len(),
        &g.model_sha256[..12],
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

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn eval(a: EvalArgs) -> Result<()> {
    let e = a.model_args.open(&a.model)?;
    let g = Gallery::load_for(&a.gallery, &e)?;
    let src = Source::resolve(std::slice::from_ref(&a.data), Some(&a.split))?;
    if src.classes() != g.classes {
        bail!("dataset classes {:?} differ from the gallery's {:?}", src.classes(), g.classes);
    }
    let items = src.items(a.limit);
    let labels: Vec<u32> = items.iter().map(|&it| src.label(it).with_context(|| format!("{} has no label", src.name(it)))).collect::<Result<_>>()?;
    // Throughput: batched extraction of the whole split, then chunked exact search.
    let t0 = Instant::now();
    let mut q = src.extract(&e, &items, a.batch_size, "knn eval: embedding")?;
    let t_extract = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    l2_normalize_rows(&mut q);
    let settings = [KnnParams::default(), KnnParams::K200];
    let kmax = settings.iter().map(|s| s.k).max().unwrap_or(1);
    let nbs = exact_topk(g.features.view(), q.view(), kmax);
    let t_search = t1.elapsed().as_secs_f64();
    println!(
        "k-NN eval of {} on {} split `{}` ({} images) against {} ({} images, {} dims), backend {}",
        e.info().display_name(),
        a.data.display(),
        a.split,
        items.len(),
        a.gallery.display(),
        g.len(),
        g.dim(),
        e.backend().name()
    );
    for s in settings {
        let correct = nbs
            .iter()
            .zip(&labels)
            .filter(|(nb, &y)| argmax(&vote(&nb[..s.k.min(nb.len())], &g.labels, g.classes.len(), s.temperature)) == y as usize)
            .count();
        println!(
            "  k={:<3} T={:<4}  top-1 accuracy {:.2}% ({correct}/{})",
            s.k,
            s.temperature,
            100.0 * correct as f64 / items.len().max(1) as f64,
            items.len()
        );
    }
    let n = items.len() as f64;
    println!(
        "  throughput: {:.1} images/s end to end (extract {:.2}s at batch {}, search+vote {:.3}s)",
        n / (t_extract + t_search).max(1e-9),
        t_extract,
        a.batch_size,
        t_search
    );
    // Latency: one image at a time, preprocess + inference + search + vote.
    let m = a.latency_samples.min(items.len());
    let mut lat = Vec::with_capacity(m);
    for &it in items.iter().take(m) {
        let t = Instant::now();
        let x = src.preprocess(&e, it)?;
        let f = e.features_from_chw(&[x])?;
        let pred = g.classify_one(f.row(0).as_slice().expect("row"), KnnParams::default())?;
        std::hint::black_box(pred.class);
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    if m > 0 {
        println!(
            "  latency per image (batch 1, {m} images): p50 {:.2} ms, p90 {:.2} ms ({:.1} images/s sequential)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            1e3 * m as f64 / lat.iter().sum::<f64>()
        );
    }
    Ok(())
}

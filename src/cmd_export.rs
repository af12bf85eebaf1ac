//! `pretext export`: lowers a safetensors checkpoint to ONNX with pretext's
//! own compiler, optionally verifying the graph in tract and ONNX Runtime
//! against the tch forward of the same checkpoint on real images.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use pretext_exporter::{Checkpoint, ExportOptions};
use pretext_models::BackboneConfig;
use pretext_runtime::verify::{self, Tolerance};
use pretext_trainer::reference;

#[derive(Args)]
pub struct ExportArgs {
    /// Checkpoint (.safetensors) keyed by torchvision/timm parameter names.
    pub checkpoint: PathBuf,
    /// Output ONNX file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Backbone name (e.g. resnet18, vit-small-cifar); default: the checkpoint's
    /// `pretext.arch` metadata or a sibling config.json.
    #[arg(long)]
    pub arch: Option<String>,
    /// Convert to fp16 (LayerNorm, Softmax, reductions and BN stay fp32).
    #[arg(long)]
    pub fp16: bool,
    /// With --fp16: fp16 graph input and outputs too (default: fp32 I/O).
    #[arg(long)]
    pub fp16_io: bool,
    #[arg(long, default_value_t = pretext_exporter::DEFAULT_OPSET)]
    pub opset: i64,
    /// Run resolution (ViT position embeddings are resampled bicubically).
    #[arg(long)]
    pub image_size: Option<i64>,
    /// Export a head as an extra output (repeatable): one the file lists in its
    /// `pretext.heads` metadata (a run's `projection_head`, `prediction_head`,
    /// MAE's `decoder`), or the architecture's classifier (`fc`, `head`, `classifier.1`).
    #[arg(long = "with-head")]
    pub with_head: Vec<String>,
    /// Prefix of the network's tensors in the checkpoint (e.g. `backbone.`);
    /// default: the file's `pretext.prefix` (`student.` in a run's checkpoint), else none.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// SSL method recorded in the metadata (default: from the checkpoint).
    #[arg(long)]
    pub method: Option<String>,
    /// Training dataset recorded in the metadata (default: from the checkpoint).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Override the normalisation mean written to the metadata: three comma-separated floats.
    #[arg(long, value_parser = parse3)]
    pub mean: Option<[f32; 3]>,
    /// Override the normalisation std written to the metadata: three comma-separated floats.
    #[arg(long, value_parser = parse3)]
    pub std: Option<[f32; 3]>,
    /// Weights above this many bytes go to an external `.data` file (default: 2 GB).
    #[arg(long, default_value_t = pretext_exporter::PROTOBUF_LIMIT)]
    pub external_data_threshold: u64,
    /// Run the graph in tract and ONNX Runtime and compare with the tch forward.
    #[arg(long)]
    pub verify: bool,
    /// Images for --verify: a .tar.gz or a folder (default: the CIFAR-10 test set in ../shared/data).
    #[arg(long)]
    pub verify_data: Option<PathBuf>,
    /// Images used by --verify.
    #[arg(long, default_value_t = 8)]
    pub verify_count: usize,
    /// Tolerance of --verify: max abs error (fp32) ...
    #[arg(long, default_value_t = pretext_runtime::compare::tol::F32)]
    pub tol: f32,
    /// ... and minimum cosine (fp16).
    #[arg(long, default_value_t = pretext_runtime::compare::tol::F16_COS)]
    pub min_cosine: f32,
}

fn parse3(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s.split(',').map(|x| x.trim().parse::<f32>().map_err(|e| format!("{x}: {e}"))).collect::<Result<_, _>>()?;
    v.try_into().map_err(|v: Vec<f32>| format!("expected 3 values, got {}", v.len()))
}

pub fn run(a: ExportArgs) -> Result<()> {
    let ckpt = Checkpoint::load(&a.checkpoint)?;
    let config = match &a.arch {
        Some(n) => BackboneConfig::from_name(n)?,
        None => pretext_exporter::arch_from_checkpoint(&ckpt)?,
    };
    let opts = ExportOptions {
        opset: a.opset,
        fp16: a.fp16,
        fp16_io: a.fp16_io,
        image_size: a.image_size,
        heads: a.with_head.clone(),
        prefix: a.prefix.clone(),
        external_data_threshold: a.external_data_threshold,
        mean: a.mean,
        std: a.std,
        method: a.method.clone(),
        dataset: a.dataset.clone(),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let (model, report) = pretext_exporter::export(&config, &ckpt, &opts)?;
    let files = model.write(&a.output, opts.external_data_threshold)?;
    // An MAE decoder head takes a mask as extra graph inputs: --verify feeds a fixed one.
    let resolved = pretext_exporter::resolve(&config, &ckpt, &opts)?;
    drop(ckpt);
    if !report.unused.is_empty() {
        let ex: Vec<_> = report.unused.iter().take(5).collect();
        eprintln!("warning: {} checkpoint tensors are not part of the exported graph, e.g. {ex:?} (use --with-head NAME to export a head)", report.unused.len());
    }
    println!(
        "exported {} -> {} in {:.2}s: {} nodes, {} initializers, outputs {:?}; folded {} BatchNorms and {} constants{}",
        a.checkpoint.display(),
        files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" + "),
        t.elapsed().as_secs_f64(),
        model.graph.nodes.len(),
        model.graph.inits.len(),
        report.outputs,
        report.folded_batch_norms,
        report.folded_constants,
        if a.fp16 { format!("; fp16 with {} casts", report.casts) } else { String::new() },
    );
    if !a.verify {
        return Ok(());
    }
    let data = a.verify_data.clone().unwrap_or_else(|| PathBuf::from("../shared/data/cifar10-jpg.tar.gz"));
    let meta = pretext_models::tensorfile::PretextMeta::from_map(&model.metadata.iter().cloned().collect())?;
    let (Some(mean), Some(std), Some(size)) = (meta.mean, meta.std, meta.input_size) else { bail!("the exported model lacks its preprocessing metadata") };
    let order = meta.channel_order.clone().unwrap_or_else(|| "RGB".into());
    let x = verify::load_images_as(&data, a.verify_count, 97, size, mean, std, &order).with_context(|| format!("--verify-data {}", data.display()))?;
    let mask = reference::mask_for(&resolved, x.shape()[0]);
    let extra: Vec<_> = mask.iter().flat_map(|m| [&m.keep, &m.restore]).collect();
    let rows = verify::verify(&a.output, &x, &extra, &reference::tch_forward(&a.checkpoint, &config, &opts, &x)?)?;
    println!("verify on {} images from {}, input {:?} ({order}; reference: tch eval forward)\n{}", x.shape()[0], data.display(), x.shape(), verify::format_table(&rows));
    let tol = if a.fp16 { Tolerance::MinCosine(a.min_cosine) } else { Tolerance::MaxAbs(a.tol) };
    verify::check(&rows, tol)?;
    println!("verify: OK ({tol})");
    Ok(())
}

//! `pretext eval knn|linear|finetune <checkpoint or run dir> --data <path>`:
//! evaluates a backbone checkpoint and, next to it, the same architecture at
//! random init (seed 0) as the baseline. `probes` runs k-NN and the linear
//! probe on one feature extraction; `--json` also writes the accuracies.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use pretext_models::tensorfile::{keys, TensorFile};
use pretext_models::Backbone;
use pretext_trainer::eval::{features, knn_accuracy, linear_probe, KNN_SETTINGS};
use pretext_trainer::finetune::{finetune, FinetuneOpts};
use pretext_trainer::train::{eval_transform, load_splits};
use pretext_trainer::Params;

#[derive(Clone, Copy, ValueEnum)]
pub enum Protocol {
    Knn,
    Linear,
    /// k-NN and the linear probe on the same features.
    Probes,
    Finetune,
}

#[derive(Args)]
pub struct EvalArgs {
    protocol: Protocol,
    /// A run dir (its backbone.safetensors) or a backbone safetensors file with `pretext.arch` metadata.
    checkpoint: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// At most N images of each split (train and test), evenly strided so every
    /// class stays in; 0 = all. `--train-limit` overrides the train side.
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Training images used (gallery / probe / fine-tune set); 0 = as --limit.
    #[arg(long, default_value_t = 0)]
    train_limit: usize,
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Skip the random-init baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Also write the accuracies as JSON to this file ({"checkpoint": {...}, "random init": {...}}).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn backbone_file(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("backbone.safetensors")
    } else {
        p.to_path_buf()
    }
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let file = backbone_file(&a.checkpoint);
    let meta = TensorFile::read(&file)?.pretext()?;
    let bc = meta.backbone().map_err(|e| e.at(&file))?.with_context(|| format!("{}: no '{}' metadata (not written by pretext train?)", file.display(), keys::ARCH))?;
    let device = pretext_trainer::device::parse_device(&a.device)?;
    let backbone = Backbone::new(&bc);
    let size = bc.default_image_size();
    let (train, test, _) = load_splits(&a.data, pretext_data::OnBadImage::Error)?;
    let test = test.context("the dataset has no 'test' split")?.subset(a.limit);
    let train = train.subset(if a.train_limit > 0 { a.train_limit } else { a.limit });
    println!("{} training / {} test images", train.n, test.n);
    let n = train.n;
    let tr = train.images();
    let trained = Params::new(backbone.params(), device);
    trained.load_safetensors(&file, "", true)?;
    tch::manual_seed(0);
    let random = Params::new(backbone.params(), device);
    let mut runs = vec![("checkpoint", trained)];
    if !a.no_baseline {
        runs.push(("random init", random));
    }
    let t = eval_transform(size);
    let mut report = serde_json::Map::new();
    for (name, p) in &runs {
        let mut r = serde_json::json!({"train_images": n, "test_images": test.n});
        match a.protocol {
            Protocol::Knn | Protocol::Linear | Protocol::Probes => {
                let ftr = features(&backbone, p, tr, &t, 512, device)?;
                let fte = features(&backbone, p, test.images(), &t, 512, device)?;
                if matches!(a.protocol, Protocol::Knn | Protocol::Probes) {
                    let acc = knn_accuracy(&ftr, &train.labels[..n], &fte, &test.labels, &KNN_SETTINGS, 1000);
                    let each: Vec<String> = KNN_SETTINGS.iter().zip(&acc).map(|(s, a)| format!("{a:.2}% (k={}, T={})", s.k, s.temperature)).collect();
                    println!("{name:>12}: k-NN top-1 {}", each.join(", "));
                    r["knn"] = KNN_SETTINGS.iter().zip(&acc).map(|(s, a)| serde_json::json!({"k": s.k, "temperature": s.temperature, "top1": a})).collect();
                }
                if matches!(a.protocol, Protocol::Linear | Protocol::Probes) {
                    let acc = linear_probe(&ftr, &train.labels[..n], &fte, &test.labels, a.epochs, 0);
                    println!("{name:>12}: linear probe top-1 {acc:.2}% ({} epochs on frozen features)", a.epochs);
                    r["linear"] = serde_json::json!({"epochs": a.epochs, "top1": acc});
                }
            }
            Protocol::Finetune => {
                let o = FinetuneOpts { epochs: a.epochs, batch_size: 128, lr: 0.05, weight_decay: 5e-4, seed: 0, device };
                let acc = finetune(&backbone, p, tr, &train.labels[..n], test.images(), &test.labels, size as usize, &o)?;
                println!("{name:>12}: fine-tuned top-1 {acc:.2}% ({} epochs)", a.epochs);
                r["finetune"] = serde_json::json!({"epochs": a.epochs, "top1": acc});
            }
        }
        report.insert(name.to_string(), r);
    }
    if let Some(path) = &a.json {
        pretext_models::io::atomic_write(path, &serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

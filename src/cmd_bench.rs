//! `pretext bench`: latency and throughput of pretext against the peers a
//! user would pick instead, measured in the same run on the same weights
//! and inputs.
//!
//! Systems: the pretext runtime with ONNX Runtime and with tract on the
//! graph our exporter writes, libtorch eager through tch running the same
//! backbone code as the trainer; peers (scripts/bench_peers.py): PyTorch
//! eager and `torch.onnx.export` + onnxruntime, PyTorch for the training
//! step, faiss `IndexFlatIP` for k-NN. Every system gets the same thread
//! count. Output: a table on stdout, `bench.json`, and `bench.png`, each
//! with the ratio to every peer.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

#[path = "bench/chart.rs"]
mod chart;
#[path = "bench/flops.rs"]
mod flops;
#[path = "bench/peak.rs"]
mod peak;
#[path = "bench/prep.rs"]
mod prep;
#[path = "bench/stats.rs"]
mod stats;
#[path = "bench/systems.rs"]
mod systems;

use prep::{ModelCase, MODELS};
use stats::{Summary, Timing};

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
    /// Timing budget per (model, batch, system) in seconds, after warm-up (at least --min-iters runs).
    #[arg(long)]
    pub budget: Option<f64>,
    /// Minimum timed iterations per case.
    #[arg(long)]
    pub min_iters: Option<usize>,
    /// Where weights, inputs, ONNX files and results go.
    #[arg(long, short, default_value = "target/bench")]
    pub out: PathBuf,
    /// tract plan: `symbolic` (one plan with a symbolic batch, the runtime's default)
    /// or `per-batch` (one plan optimised per concrete batch size).
    #[arg(long, default_value = "per-batch")]
    pub tract_plan: String,
    /// Threads of tract's matrix products (default: --threads; 1 = the calling
    /// thread only, i.e. tract before its multithread-mm executor was enabled).
    #[arg(long)]
    pub tract_threads: Option<usize>,
    /// How tract runs a batch of more than one image: `split` (the images in parallel,
    /// one thread each; the runtime's default) or `whole` (one run, threads only
    /// inside the matrix products).
    #[arg(long, default_value = "split")]
    pub tract_batch: String,
    /// tract's convolution layout: `channel-last` (the runtime's default) or `as-graph`.
    #[arg(long, default_value = "channel-last")]
    pub tract_layout: String,
    /// ONNX Runtime intra-op thread spinning, for pretext+ORT and the torch.onnx+ORT
    /// peer alike: `default` (ONNX Runtime's: spinning), `on` or `off` (idle threads
    /// park; faster on a busy machine).
    #[arg(long, default_value = "default")]
    pub ort_spinning: String,
    /// ONNX Runtime graph optimization level for pretext+ORT: all (default,
    /// as the torch.onnx+ORT peer), extended, basic, disable.
    #[arg(long, default_value = "all")]
    pub ort_opt_level: String,
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

/// Display names; the JSON uses the keys.
const SYSTEMS: &[(&str, &str, bool)] = &[
    ("pretext_ort", "pretext+ORT", false),
    ("pretext_tract", "pretext+tract", false),
    ("pretext_tch", "libtorch eager (tch)", false),
    ("pytorch_eager", "PyTorch eager", true),
    ("torch_onnx_ort", "torch.onnx+ORT", true),
];
const PEERS: &[&str] = &["pytorch_eager", "torch_onnx_ort"];

fn system_label(key: &str) -> &str {
    SYSTEMS.iter().find(|s| s.0 == key).map(|s| s.1).unwrap_or(key)
}

struct Plan {
    models: Vec<String>,
    batches: Vec<usize>,
    timing: Timing,
    train_batch: i64,
    train_steps: usize,
    knn_n: i64,
    knn_queries: i64,
    augment_images: usize,
}

fn plan(a: &BenchArgs) -> Result<Plan> {
    let mut p = if a.quick {
        Plan {
            models: vec!["resnet18-cifar".into()],
            batches: vec![1, 8],
            timing: Timing { warmup: 1, min_iters: 3, max_iters: 50, budget_s: 0.3 },
            train_batch: 32,
            train_steps: 2,
            knn_n: 50_000,
            knn_queries: 100,
            augment_images: 256,
        }
    } else {
        Plan {
            models: MODELS.iter().map(|s| s.to_string()).collect(),
            batches: vec![1, 8, 32],
            timing: Timing { warmup: 1, min_iters: 3, max_iters: 500, budget_s: 1.5 },
            train_batch: 64,
            train_steps: 6,
            knn_n: 50_000,
            knn_queries: 1000,
            augment_images: 2048,
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

fn python(a: &BenchArgs) -> PathBuf {
    a.python
        .clone()
        .or_else(|| std::env::var_os("PRETEXT_PYTHON").map(PathBuf::from))
        .or_else(|| option_env!("PRETEXT_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// Lowers the case's backbone with pretext's exporter (default options:
/// opset 17, fp32, BatchNorm and constant folding), as `pretext export` does.
fn export_onnx(case: &ModelCase, path: &Path) -> Result<()> {
    let opts = pretext_exporter::ExportOptions::default();
    pretext_exporter::export_file(&case.weights, Some(case.config.clone()), path, &opts)
        .with_context(|| format!("exporting {} to {}", case.weights.display(), path.display()))?;
    Ok(())
}

/// Max |a - b| / max |b|: output agreement with the PyTorch eager reference.
fn rel_diff(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || b.is_empty() {
        return None;
    }
    // Non-finite values on either side give +inf (never a pass).
    let scale = pretext_runtime::compare::max_abs(b).max(1e-12);
    Some(pretext_runtime::compare::max_abs_diff(a, b) / scale)
}

/// One row of the inference table.
#[derive(Clone, serde::Serialize)]
struct Row {
    model: String,
    batch: usize,
    system: String,
    #[serde(flatten)]
    summary: Summary,
    images_per_s: f64,
    gflops_per_s: f64,
    fraction_of_peak: f64,
    /// p50 latency of this system / p50 latency of each peer.
    latency_ratio_vs: std::collections::BTreeMap<String, f64>,
    max_rel_diff_vs_pytorch: Option<f64>,
}

/// libgomp reads OMP_WAIT_POLICY once, when libtorch is loaded at process
/// start, so a different policy needs a fresh process: re-executes this
/// command with the variable set (the Python peers inherit it).
fn reexec_with_wait_policy(policy: &str) -> Result<Option<i32>> {
    let want = match policy {
        "passive" => "PASSIVE",
        "active" => "ACTIVE",
        "inherit" => return Ok(None),
        other => bail!("--omp-wait-policy must be passive, active or inherit, got '{other}'"),
    };
    if std::env::var("OMP_WAIT_POLICY").is_ok_and(|v| v.eq_ignore_ascii_case(want)) {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("locating the pretext executable")?;
    let status = Command::new(exe).args(std::env::args_os().skip(1)).env("OMP_WAIT_POLICY", want).status().context("re-executing pretext bench")?;
    Ok(Some(status.code().unwrap_or(1)))
}

pub fn run(a: BenchArgs) -> Result<()> {
    let p = plan(&a)?;
    if let Some(code) = reexec_with_wait_policy(&a.omp_wait_policy)? {
        if code != 0 {
            bail!("pretext bench (OMP_WAIT_POLICY={}) exited with status {code}", a.omp_wait_policy);
        }
        return Ok(());
    }
    let opt_level = match a.ort_opt_level.as_str() {
        "all" => pretext_runtime::GraphOptLevel::All,
        "extended" => pretext_runtime::GraphOptLevel::Extended,
        "basic" => pretext_runtime::GraphOptLevel::Basic,
        "disable" => pretext_runtime::GraphOptLevel::Disable,
        other => bail!("--ort-opt-level must be all, extended, basic or disable, got '{other}'"),
    };
    let tract_opts = pretext_runtime::TractOptions {
        batch_mode: match a.tract_plan.as_str() {
            "symbolic" => pretext_runtime::TractBatchMode::Symbolic,
            "per-batch" => pretext_runtime::TractBatchMode::PerBatch,
            other => bail!("--tract-plan must be symbolic or per-batch, got '{other}'"),
        },
        threads: Some(a.tract_threads.unwrap_or(a.threads).max(1)),
        batch_parallel: match a.tract_batch.as_str() {
            "split" => pretext_runtime::TractBatchParallel::Split,
            "whole" => pretext_runtime::TractBatchParallel::Whole,
            other => bail!("--tract-batch must be split or whole, got '{other}'"),
        },
        conv_layout: match a.tract_layout.as_str() {
            "channel-last" => pretext_runtime::ConvLayout::ChannelLast,
            "as-graph" => pretext_runtime::ConvLayout::AsGraph,
            other => bail!("--tract-layout must be channel-last or as-graph, got '{other}'"),
        },
        ..Default::default()
    };
    let dir = a.out.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let started = std::time::Instant::now();
    let load_before = loadavg();
    if load_before.is_some_and(|l| l > 1.5) {
        eprintln!("[bench] warning: load average {:.2} > 1.5; other processes share these cores, timings will be noisy", load_before.unwrap_or(0.0));
    }
    tch::set_num_threads(a.threads as i32);
    tch::set_num_interop_threads(1);
    let sections = |s: &str| a.sections.iter().any(|x| x == s);

    eprintln!("[bench] measuring the f32 FMA peak on {} threads", a.threads);
    let peak = peak::measure(a.threads, 25);
    eprintln!("[bench] peak {:.1} GFLOP/s ({})", peak.gflops, peak.isa);

    // ---- shared weights and inputs
    let max_batch = *p.batches.iter().max().unwrap_or(&1) as i64;
    let mut cases = Vec::new();
    let mut onnx = std::collections::BTreeMap::new();
    if sections("inference") {
        for m in &p.models {
            let case = prep::model_case(&dir, m, max_batch)?;
            let path = dir.join(format!("{m}.onnx"));
            let t0 = std::time::Instant::now();
            let r = export_onnx(&case, &path).map(|_| t0.elapsed().as_secs_f64());
            if let Err(e) = &r {
                eprintln!("[bench] {m}: pretext export failed: {e:#}");
            }
            onnx.insert(m.clone(), r.map_err(|e| format!("{e:#}")));
            cases.push(case);
        }
    }
    let step_cfg = systems::StepConfig { lr: 0.03, momentum: 0.9, weight_decay: 5e-4, temperature: 0.5 };
    let train = if sections("training") { Some(prep::train_case(&dir, p.train_batch)?) } else { None };
    let knn_path = if sections("knn") { Some(prep::knn_case(&dir, p.knn_n, p.knn_queries, 512)?) } else { None };

    // ---- Python peers: run section by section (model by model for
    // inference) right before the Rust side, so compared systems are timed
    // minutes apart at most, under the same background load.
    let base_spec = json!({"threads": a.threads, "timing": p.timing, "ort_spinning": a.ort_spinning});
    let mut peers = json!({"inference": [], "training": [], "knn": {}, "torch_flop_counter": {}, "versions": null});
    fn merge(peers: &mut Value, v: Value) {
        if let Some(l) = v["inference"].as_array() {
            peers["inference"].as_array_mut().expect("array").extend(l.iter().cloned());
        }
        if let Some(m) = v["torch_flop_counter"].as_object() {
            for (k, x) in m {
                peers["torch_flop_counter"][k] = x.clone();
            }
        }
        if v["training"].as_array().is_some_and(|t| !t.is_empty()) {
            peers["training"] = v["training"].clone();
        }
        if v["knn"].as_object().is_some_and(|k| !k.is_empty()) {
            peers["knn"] = v["knn"].clone();
        }
        peers["versions"] = v["versions"].clone();
    }

    // ---- inference
    let mut rows: Vec<Row> = Vec::new();
    let mut unavailable: Vec<String> = Vec::new();
    // (model, batch, system, per-run seconds, output for the numeric check)
    type Series = (String, usize, String, Vec<f64>, Option<Vec<f32>>);
    let mut raw: Vec<Series> = Vec::new();
    for case in &cases {
        if !a.no_peers {
            let spec = json!({"inference": {
                "systems": PEERS,
                "onnx_dir": dir,
                "outputs": dir.join(format!("{}.peer_outputs.safetensors", case.name)),
                "models": [{"name": case.name, "weights": case.weights, "input": case.input, "batches": p.batches}],
            }});
            merge(&mut peers, run_peers(&a, &dir, &case.name, &base_spec, spec)?);
        }
        let tch_model = systems::TchModel::load(case)?;
        let ort = match &onnx[&case.name] {
            Ok(_) => {
                let opts = pretext_runtime::OrtOptions {
                    intra_threads: Some(a.threads),
                    inter_threads: Some(1),
                    opt_level,
                    intra_spinning: match a.ort_spinning.as_str() {
                        "on" => Some(true),
                        "off" => Some(false),
                        _ => None,
                    },
                    ..Default::default()
                };
                Some((pretext_runtime::open_ort(&dir.join(format!("{}.onnx", case.name)), &opts)?, pretext_runtime::open_tract_with(&dir.join(format!("{}.onnx", case.name)), &tract_opts)?))
            }
            Err(e) => {
                unavailable.push(format!("{}: pretext+ORT and pretext+tract not measured: {e}", case.name));
                None
            }
        };
        // System by system (not interleaved), with a pause between them so
        // the previous system's spinning worker threads have parked.
        for system in ["pretext_ort", "pretext_tract", "pretext_tch"] {
            std::thread::sleep(std::time::Duration::from_millis(300));
            for &b in &p.batches {
                let x = systems::input_batch(case, b)?;
                let m = match (system, &ort) {
                    ("pretext_ort", Some((o, _))) => systems::time_runtime(o.as_ref(), &x, &p.timing)?,
                    ("pretext_tract", Some((_, t))) => systems::time_runtime(t.as_ref(), &x, &p.timing)?,
                    ("pretext_tch", _) => tch_model.time(&x, &p.timing)?,
                    _ => continue,
                };
                eprintln!("[bench] {} b{b} {system} p50 {:.2} ms ({} it)", case.name, Summary::of(&m.times_s).p50_ms, m.times_s.len());
                raw.push((case.name.clone(), b, system.to_string(), m.times_s, Some(m.output)));
            }
        }
    }
    if let Some(list) = peers["inference"].as_array() {
        for r in list {
            let times: Vec<f64> = serde_json::from_value(r["times_s"].clone())?;
            raw.push((r["model"].as_str().unwrap_or("").into(), r["batch"].as_u64().unwrap_or(0) as usize, r["system"].as_str().unwrap_or("").into(), times, None));
        }
    }
    let mut macs = std::collections::BTreeMap::new();
    for case in &cases {
        let c = flops::count_forward(&pretext_models::Backbone::new(&case.config), 1, case.image_size);
        macs.insert(case.name.clone(), c);
    }
    for (model, batch, system, times, output) in &raw {
        let s = Summary::of(times);
        let flop = macs.get(model).map(|c| c.flops() as f64).unwrap_or(f64::NAN) * *batch as f64;
        let gflops = flop / (s.p50_ms / 1e3) / 1e9;
        let mut ratio = std::collections::BTreeMap::new();
        for peer in PEERS {
            if let Some((_, _, _, pt, _)) = raw.iter().find(|r| &r.0 == model && r.1 == *batch && r.2 == *peer) {
                ratio.insert(peer.to_string(), s.p50_ms / Summary::of(pt).p50_ms);
            }
        }
        let diff = output.as_ref().and_then(|o| {
            let (reference, _) = prep::read_f32(&dir.join(format!("{model}.peer_outputs.safetensors")), &format!("{model}/pytorch_eager/{batch}")).ok()?;
            rel_diff(o, &reference)
        });
        rows.push(Row {
            model: model.clone(),
            batch: *batch,
            system: system.clone(),
            summary: s,
            images_per_s: *batch as f64 / (s.p50_ms / 1e3),
            gflops_per_s: gflops,
            fraction_of_peak: gflops / peak.gflops,
            latency_ratio_vs: ratio,
            max_rel_diff_vs_pytorch: diff,
        });
    }
    let order = |r: &Row| {
        (
            MODELS.iter().position(|m| *m == r.model).unwrap_or(99),
            r.batch,
            SYSTEMS.iter().position(|s| s.0 == r.system).unwrap_or(99),
        )
    };
    rows.sort_by_key(order);

    // ---- training
    let mut training = Vec::new();
    if let Some(t) = &train {
        // pretext's steps bracket the peers' (half before, half after, one
        // trajectory), so a drift in background load weighs on both sides.
        eprintln!("[bench] SimCLR step, batch {} (x2 views), 1 + {} steps around the peers'", t.batch, p.train_steps);
        let mut session = systems::TrainSession::new(t, step_cfg, 1 + p.train_steps as u64)?;
        let (mut times, mut losses) = (Vec::new(), Vec::new());
        let first = p.train_steps / 2;
        session.steps(1, false, &mut times, &mut losses)?;
        session.steps(first, true, &mut times, &mut losses)?;
        if !a.no_peers {
            let spec = json!({"training": {
                "weights": t.weights, "input": t.views, "hidden": t.hidden, "out": t.out,
                "lr": step_cfg.lr, "momentum": step_cfg.momentum, "weight_decay": step_cfg.weight_decay,
                "temperature": step_cfg.temperature, "warmup": 1, "steps": p.train_steps,
            }});
            merge(&mut peers, run_peers(&a, &dir, "training", &base_spec, spec)?);
        }
        session.steps(p.train_steps - first, true, &mut times, &mut losses)?;
        drop(session);
        let imgs = (2 * t.batch) as f64;
        training.push(json!({"system": "pretext_tch", "images_per_step": imgs, "summary": Summary::of(&times), "images_per_s": imgs / (Summary::of(&times).p50_ms / 1e3), "losses": losses}));
        // Peers: `pytorch` (NCHW, the target's reference) and `pytorch_channels_last`.
        for pr in peers["training"].as_array().into_iter().flatten() {
            let system = pr["system"].as_str().unwrap_or("pytorch").to_string();
            let times: Vec<f64> = serde_json::from_value(pr["times_s"].clone())?;
            let theirs: Vec<f64> = serde_json::from_value(pr["losses"].clone()).unwrap_or_default();
            let diff = pretext_runtime::compare::max_abs_diff(&losses, &theirs);
            training[0][format!("loss_max_abs_diff_vs_{system}")] = json!(diff);
            training.push(json!({"system": system, "images_per_step": imgs, "summary": Summary::of(&times), "images_per_s": imgs / (Summary::of(&times).p50_ms / 1e3), "losses": theirs}));
        }
    }

    // ---- augmentation
    let mut augment = Vec::new();
    if sections("augment") {
        use pretext_data::augment::Resolution;
        let t = Timing { warmup: 1, min_iters: 3, max_iters: 50, budget_s: p.timing.budget_s };
        for (label, res, size, side) in [("simclr cifar 32px", Resolution::Cifar, 32, 32), ("simclr imagenet 224px (from 256px)", Resolution::Imagenet, 224, 256)] {
            let n = if side > 64 { p.augment_images / 16 } else { p.augment_images };
            for threads in [1, a.threads] {
                let times = systems::time_augment(res, size, side, n, threads, &t)?;
                let s = Summary::of(&times);
                let ips = n as f64 / (s.p50_ms / 1e3);
                eprintln!("[bench] augment {label} {threads} thread(s): {ips:.0} img/s");
                augment.push(json!({"pipeline": label, "threads": threads, "images": n, "images_per_s": ips,
                    "images_per_s_per_core": ips / threads as f64, "summary": s}));
            }
        }
    }

    // ---- k-NN
    let mut knn = Vec::new();
    if let Some(path) = &knn_path {
        if !a.no_peers {
            merge(&mut peers, run_peers(&a, &dir, "knn", &base_spec, json!({"knn": {"data": path, "k": 20}}))?);
        }
        let (times, top1, nq) = systems::time_knn(path, 20, a.threads, &p.timing)?;
        let s = Summary::of(&times);
        let mut row = json!({"system": "pretext_exact", "gallery": p.knn_n, "dim": 512, "queries": nq, "k": 20,
            "summary": s, "queries_per_s": nq as f64 / (s.p50_ms / 1e3)});
        if let Some(ft) = peers["knn"]["times_s"].as_array() {
            let ft: Vec<f64> = ft.iter().filter_map(|v| v.as_f64()).collect();
            let fs = Summary::of(&ft);
            let faiss_top1: Vec<u32> = serde_json::from_value(peers["knn"]["top1"].clone()).unwrap_or_default();
            let agree = top1.iter().zip(&faiss_top1).filter(|(a, b)| a == b).count() as f64 / nq.max(1) as f64;
            row["time_ratio_vs_faiss"] = json!(s.p50_ms / fs.p50_ms);
            row["top1_agreement_with_faiss"] = json!(agree);
            knn.push(row);
            knn.push(json!({"system": "faiss_flat_ip", "gallery": p.knn_n, "dim": 512, "queries": nq, "k": 20,
                "summary": fs, "queries_per_s": nq as f64 / (fs.p50_ms / 1e3), "faiss": peers["knn"]["faiss"]}));
        } else {
            knn.push(row);
        }
    }

    // ---- report
    let report = json!({
        "date_utc": utc_now(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": {"cpu": cpu_model(), "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "threads_per_system": a.threads, "tract_threads": a.tract_threads.unwrap_or(a.threads), "tract_batch": a.tract_batch, "tract_layout": a.tract_layout, "ort_spinning": a.ort_spinning, "omp_wait_policy": std::env::var("OMP_WAIT_POLICY").ok(), "load_before": load_before, "load_after": loadavg()},
        "peak": peak,
        "macs_per_image": macs.iter().map(|(k, c)| (k.clone(), json!({"macs": c.macs, "elementwise": c.elementwise,
            "torch_flop_counter_flops": peers["torch_flop_counter"][k]}))).collect::<serde_json::Map<_, _>>(),
        "inference": rows,
        "unavailable": unavailable,
        "training": training,
        "augment": augment,
        "knn": knn,
        "targets": targets(&rows, &training, &knn),
        "peers_versions": peers["versions"],
        "wall_s": started.elapsed().as_secs_f64(),
    });
    let json_path = dir.join("bench.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    print_table(&report, &rows);
    let png = dir.join("bench.png");
    let subtitle = [
        format!("{} {} THREADS PER SYSTEM, SAME WEIGHTS AND INPUTS. BARS: THROUGHPUT AT P50.", utc_now(), a.threads),
        "RATIOS: P50 LATENCY (TIME) OF THE BAR / THAT OF THE PEER, < 1 = FASTER; TRAINING: IMAGES/S RATIO, > 1 = FASTER.".to_string(),
    ];
    let mut groups = chart_groups(&rows);
    groups.extend(extra_groups(&report));
    chart::write_png(&png, "PRETEXT BENCH", &subtitle, &groups)?;
    println!("\nwrote {} and {}", json_path.display(), png.display());
    Ok(())
}

/// Runs scripts/bench_peers.py on `base` + `section` and returns its JSON.
fn run_peers(a: &BenchArgs, dir: &Path, tag: &str, base: &Value, section: Value) -> Result<Value> {
    let mut spec = base.clone();
    for (k, v) in section.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let spec_path = dir.join(format!("peers_spec.{tag}.json"));
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let out_path = dir.join(format!("peers.{tag}.json"));
    let py = python(a);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_peers.py");
    eprintln!("[bench] Python peers: {tag} ({})", py.display());
    let status = Command::new(&py)
        .arg(&script)
        .arg(&spec_path)
        .arg(&out_path)
        .env("OMP_NUM_THREADS", a.threads.to_string())
        .status()
        .with_context(|| format!("starting {} {}", py.display(), script.display()))?;
    if !status.success() {
        bail!("{} failed on {} ({status}); rerun with --no-peers to measure pretext alone", script.display(), spec_path.display());
    }
    serde_json::from_slice(&std::fs::read(&out_path)?).with_context(|| format!("parsing {}", out_path.display()))
}

fn utc_now() -> String {
    Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().ok().and_then(|o| String::from_utf8(o.stdout).ok()).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn fmt_ratio(r: Option<&f64>) -> String {
    r.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into())
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<15} {:>5} {:<21} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9} {:>11} {:>9}",
        "model", "batch", "system", "runs", "p50 ms", "p90 ms", "p99 ms", "img/s", "GFLOP/s", "%peak", "vs eager", "vs t.onnx", "rel.diff"
    );
    for r in rows {
        println!(
            "{:<15} {:>5} {:<21} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8.1} {:>5.1}% {:>9} {:>11} {:>9}",
            r.model,
            r.batch,
            system_label(&r.system),
            r.summary.iters,
            r.summary.p50_ms,
            r.summary.p90_ms,
            r.summary.p99_ms,
            r.images_per_s,
            r.gflops_per_s,
            100.0 * r.fraction_of_peak,
            fmt_ratio(r.latency_ratio_vs.get("pytorch_eager")),
            fmt_ratio(r.latency_ratio_vs.get("torch_onnx_ort")),
            r.max_rel_diff_vs_pytorch.map(|d| format!("{d:.1e}")).unwrap_or_else(|| "-".into()),
        );
    }
}

fn print_table(report: &Value, rows: &[Row]) {
    let peak = &report["peak"];
    println!("pretext bench, {} — {} threads per system, OMP_WAIT_POLICY={}, {}, load average {} before, {} after", report["date_utc"].as_str().unwrap_or(""), report["machine"]["threads_per_system"], report["machine"]["omp_wait_policy"].as_str().unwrap_or("unset"), report["machine"]["cpu"].as_str().unwrap_or(""), report["machine"]["load_before"], report["machine"]["load_after"]);
    println!("peak f32: {:.1} GFLOP/s ({})", peak["gflops"].as_f64().unwrap_or(0.0), peak["method"].as_str().unwrap_or(""));
    println!("ratios are p50 latency of the row / p50 latency of the peer (< 1 = faster)\n");
    if !rows.is_empty() {
        print_rows(rows);
    }
    for u in report["unavailable"].as_array().into_iter().flatten() {
        println!("not measured: {}", u.as_str().unwrap_or(""));
    }
    if let Some(t) = report["training"].as_array().filter(|t| !t.is_empty()) {
        println!("\ntraining: SimCLR step on ResNet-18 CIFAR (forward+backward+SGD, {} images/step)", t[0]["images_per_step"]);
        let base = t.iter().find(|x| x["system"] == "pytorch").and_then(|x| x["images_per_s"].as_f64());
        for x in t {
            let ips = x["images_per_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {:<21} {:>8.1} img/s  p50 {:>8.1} ms/step  images/s vs PyTorch {}{}",
                x["system"].as_str().unwrap_or(""),
                ips,
                x["summary"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
                fmt_ratio(base.map(|b| ips / b).as_ref()),
                x.as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, d)| Some((k.strip_prefix("loss_max_abs_diff_vs_")?, d.as_f64()?)))
                    .map(|(peer, d)| format!("  (loss per step vs {peer}: max |diff| {d:.1e})"))
                    .collect::<String>()
            );
        }
    }
    if let Some(t) = report["augment"].as_array().filter(|t| !t.is_empty()) {
        println!("\naugmentation alone (trainer's SimCLR pipeline, both views; random u8 images)");
        for x in t {
            println!("  {:<36} {} thread(s) {:>9.0} img/s  {:>9.0} img/s per core", x["pipeline"].as_str().unwrap_or(""), x["threads"], x["images_per_s"].as_f64().unwrap_or(f64::NAN), x["images_per_s_per_core"].as_f64().unwrap_or(f64::NAN));
        }
    }
    if let Some(k) = report["knn"].as_array().filter(|t| !t.is_empty()) {
        println!("\nk-NN exact search, top-{} over {} x {} (cosine = inner product), {} queries per search", k[0]["k"], k[0]["gallery"], k[0]["dim"], k[0]["queries"]);
        for x in k {
            println!("  {:<14} {:>10.0} queries/s  p50 {:>8.1} ms{}", x["system"].as_str().unwrap_or(""), x["queries_per_s"].as_f64().unwrap_or(f64::NAN), x["summary"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
                x["time_ratio_vs_faiss"].as_f64().map(|r| format!("  time vs faiss {r:.2}x, top-1 agreement {:.3}", x["top1_agreement_with_faiss"].as_f64().unwrap_or(0.0))).unwrap_or_default());
        }
    }
    if let Some(t) = report["targets"].as_array().filter(|t| !t.is_empty()) {
        println!("\ntargets");
        for x in t {
            let v = x["value"].as_f64();
            let met = match x["met"].as_bool() { Some(true) => "met", Some(false) => "MISSED", None => "not measured" };
            println!("  {:<58} {:>8} (limit {} {:.1}x)  {met}", x["target"].as_str().unwrap_or(""), v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into()), if x["at_most"] == true { "<=" } else { ">=" }, x["limit"].as_f64().unwrap_or(0.0));
        }
    }
}

/// The targets, evaluated on this run's ratios.
fn targets(rows: &[Row], training: &[Value], knn: &[Value]) -> Vec<Value> {
    let p50 = |m: &str, b: usize, s: &str| rows.iter().find(|r| r.model == m && r.batch == b && r.system == s).map(|r| r.summary.p50_ms);
    let mut out = Vec::new();
    let mut push = |name: String, value: Option<f64>, limit: f64, at_most: bool| {
        let met = value.map(|v| if at_most { v <= limit } else { v >= limit });
        out.push(json!({"target": name, "value": value, "limit": limit, "at_most": at_most, "met": met}));
    };
    let mut cases: Vec<(String, usize)> = rows.iter().map(|r| (r.model.clone(), r.batch)).collect();
    cases.dedup();
    for (m, b) in &cases {
        let ort = p50(m, *b, "pretext_ort");
        push(format!("{m} b{b}: pretext+ORT / torch.onnx+ORT latency"), ort.zip(p50(m, *b, "torch_onnx_ort")).map(|(a, c)| a / c), 1.0, true);
        if *b == 1 && (m == "resnet50" || m == "vit-small") {
            push(format!("{m} b1: pretext+ORT / PyTorch eager latency"), ort.zip(p50(m, 1, "pytorch_eager")).map(|(a, c)| a / c), 0.7, true);
        }
        push(format!("{m} b{b}: tract / pretext+ORT latency"), p50(m, *b, "pretext_tract").zip(ort).map(|(a, c)| a / c), 3.0, true);
    }
    let ips = |s: &str| training.iter().find(|t| t["system"] == s).and_then(|t| t["images_per_s"].as_f64());
    if !training.is_empty() {
        push("training: pretext / PyTorch images/s".into(), ips("pretext_tch").zip(ips("pytorch")).map(|(a, b)| a / b), 1.0, false);
    }
    if !knn.is_empty() {
        push("k-NN: pretext exact / faiss IndexFlatIP time".into(), knn[0]["time_ratio_vs_faiss"].as_f64(), 1.5, true);
    }
    out
}

/// Chart groups of the training, k-NN and augmentation sections.
fn extra_groups(report: &Value) -> Vec<chart::Group> {
    let mut groups = Vec::new();
    let train = report["training"].as_array().cloned().unwrap_or_default();
    if !train.is_empty() {
        let base = train.iter().find(|t| t["system"] == "pytorch").and_then(|t| t["images_per_s"].as_f64());
        let bars = train
            .iter()
            .map(|t| {
                let v = t["images_per_s"].as_f64().unwrap_or(f64::NAN);
                let system = t["system"].as_str().unwrap_or("");
                let is_peer = system.starts_with("pytorch");
                let mut label = format!("{v:.1}");
                if let (false, Some(b)) = (is_peer, base) {
                    label.push_str(&format!("  {:.2}X PYTORCH (IMAGES/S)", v / b));
                }
                let name = match system {
                    "pytorch" => "PyTorch",
                    "pytorch_channels_last" => "PyTorch channels_last",
                    _ => "pretext (tch)",
                };
                chart::Bar { system: name.into(), value: v, label, is_peer }
            })
            .collect();
        groups.push(chart::Group { title: "TRAINING: SIMCLR STEP, RESNET-18 CIFAR (IMAGES/S)".into(), bars });
    }
    let knn = report["knn"].as_array().cloned().unwrap_or_default();
    if !knn.is_empty() {
        let bars = knn
            .iter()
            .map(|k| {
                let v = k["queries_per_s"].as_f64().unwrap_or(f64::NAN);
                let is_peer = k["system"] == "faiss_flat_ip";
                let mut label = format!("{v:.0}");
                if let Some(r) = k["time_ratio_vs_faiss"].as_f64() {
                    label.push_str(&format!("  {r:.2}X FAISS (TIME)"));
                }
                chart::Bar { system: if is_peer { "faiss IndexFlatIP".into() } else { "pretext exact".into() }, value: v, label, is_peer }
            })
            .collect();
        groups.push(chart::Group { title: format!("K-NN TOP-{} OVER {} X {} (QUERIES/S)", knn[0]["k"], knn[0]["gallery"], knn[0]["dim"]), bars });
    }
    let aug = report["augment"].as_array().cloned().unwrap_or_default();
    if !aug.is_empty() {
        let bars = aug
            .iter()
            .map(|x| {
                let v = x["images_per_s_per_core"].as_f64().unwrap_or(f64::NAN);
                chart::Bar { system: format!("{} {}T", x["pipeline"].as_str().unwrap_or(""), x["threads"]), value: v, label: format!("{v:.0}"), is_peer: false }
            })
            .collect();
        groups.push(chart::Group { title: "AUGMENTATION ALONE (IMAGES/S PER CORE, NO PEER)".into(), bars });
    }
    groups
}

fn chart_groups(rows: &[Row]) -> Vec<chart::Group> {
    let mut groups: Vec<chart::Group> = Vec::new();
    for r in rows {
        let title = format!("INFERENCE {} BATCH {} (IMAGES/S)", r.model, r.batch);
        if groups.last().map(|g| g.title != title).unwrap_or(true) {
            groups.push(chart::Group { title, bars: Vec::new() });
        }
        let mut label = format!("{:.1}", r.images_per_s);
        for (peer, short) in [("pytorch_eager", "EAGER"), ("torch_onnx_ort", "T.ONNX+ORT")] {
            if r.system != peer {
                if let Some(v) = r.latency_ratio_vs.get(peer) {
                    label.push_str(&format!("  {v:.2}X {short}"));
                }
            }
        }
        let is_peer = PEERS.contains(&r.system.as_str());
        groups.last_mut().expect("pushed above").bars.push(chart::Bar { system: system_label(&r.system).to_string(), value: r.images_per_s, label, is_peer });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_diff_is_scaled_by_the_reference() {
        assert_eq!(rel_diff(&[1.0, 2.0], &[1.0, 4.0]), Some(0.5));
        assert_eq!(rel_diff(&[1.0], &[1.0, 2.0]), None);
    }
}

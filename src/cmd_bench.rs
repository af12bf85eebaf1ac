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
#[path = "bench/peak.rs"]
mod peak;
#[path = "bench/peers.rs"]
mod peers;
#[path = "bench/prep.rs"]
mod prep;
#[path = "bench/stats.rs"]
mod stats;
#[path = "bench/systems.rs"]
mod systems;

use pretext_data::progress::Progress;
use prep::{ModelCase, MODELS};
use stats::{Interval, Rounds, Summary, Timing, Verdict};

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
    /// (default 5 with --quick, else 8; training: SimCLR steps per system).
    #[arg(long)]
    pub rounds: Option<usize>,
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
    rounds: usize,
}

impl Plan {
    /// The timing of one system's block in one round: the budget and the
    /// iteration counts shared out over the rounds, at least one run.
    fn block(&self) -> Timing {
        let r = self.rounds.max(1);
        Timing { warmup: 0, min_iters: self.timing.min_iters.div_ceil(r).max(1), max_iters: (self.timing.max_iters / r).max(1), budget_s: self.timing.budget_s / r as f64 }
    }
}

/// Round 0 of every case: one untimed-in-effect run per system (its times are dropped).
const WARMUP: Timing = Timing { warmup: 0, min_iters: 1, max_iters: 1, budget_s: 0.0 };
/// Between two systems' blocks, so spinning worker threads park.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
/// The training peers, in scripts/bench_peers.py.
const TRAIN_PEERS: &[&str] = &["pytorch", "pytorch_channels_last"];

/// Median ratio of two systems' per-round p50s with its bootstrap 95% interval.
fn interval(num: &[f64], den: &[f64]) -> Option<Interval> {
    stats::ratio_interval(num, den, stats::BOOTSTRAP_RESAMPLES, stats::BOOTSTRAP_SEED)
}

/// One inference system on one (model, batch), round by round.
struct Measured {
    model: String,
    batch: usize,
    system: String,
    rounds: Rounds,
    /// Output of the last run, for the numeric check (Rust systems only).
    output: Option<Vec<f32>>,
}

impl Measured {
    fn new(model: &str, batch: usize, system: &str) -> Self {
        Self { model: model.into(), batch, system: system.into(), rounds: Rounds::default(), output: None }
    }
}

fn plan(a: &BenchArgs) -> Result<Plan> {
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
            rounds: 8,
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
    /// Latency of this system / latency of each peer: median of the per-round
    /// ratios of p50s, with its bootstrap 95% interval.
    latency_ratio_vs: std::collections::BTreeMap<String, Interval>,
    /// This system's p50 in each round.
    round_p50_ms: Vec<f64>,
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

    // ---- Python peers: one process per section (per model for inference)
    // that serves timing requests, so its systems take their turn in the
    // same rounds as ours.
    let base_spec = json!({"threads": a.threads, "ort_spinning": a.ort_spinning});
    let mut peers = json!({"knn": {}, "torch_flop_counter": {}, "versions": null});
    fn merge(peers: &mut Value, v: Value) {
        if let Some(m) = v["torch_flop_counter"].as_object() {
            for (k, x) in m {
                peers["torch_flop_counter"][k] = x.clone();
            }
        }
        if v["knn"].as_object().is_some_and(|k| !k.is_empty()) {
            peers["knn"] = v["knn"].clone();
        }
        peers["versions"] = v["versions"].clone();
    }
    let block = p.block();

    // ---- inference: per model and batch, every system once per round
    // (A B C D E, A B C D E, ...); round 0 is a one-run warm-up.
    let mut rows: Vec<Row> = Vec::new();
    let mut unavailable: Vec<String> = Vec::new();
    let mut raw: Vec<Measured> = Vec::new();
    for case in &cases {
        let mut peer = if a.no_peers {
            None
        } else {
            let spec = json!({"inference": {
                "systems": PEERS,
                "onnx_dir": dir,
                "outputs": dir.join(format!("{}.peer_outputs.safetensors", case.name)),
                "models": [{"name": case.name, "weights": case.weights, "input": case.input, "batches": p.batches}],
            }});
            Some(start_peers(&a, &dir, &case.name, &base_spec, spec)?)
        };
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
        let mut names: Vec<&str> = if ort.is_some() { vec!["pretext_ort", "pretext_tract", "pretext_tch"] } else { vec!["pretext_tch"] };
        if peer.is_some() {
            names.extend(PEERS);
        }
        for &b in &p.batches {
            let x = systems::input_batch(case, b)?;
            let mut m: Vec<Measured> = names.iter().map(|s| Measured::new(&case.name, b, s)).collect();
            let bar = Progress::new(&format!("bench {} b{b}", case.name), p.rounds as u64 + 1);
            for round in 0..=p.rounds {
                let t = if round == 0 { WARMUP } else { block };
                for (system, m) in names.iter().zip(m.iter_mut()) {
                    // The previous system's spinning worker threads park.
                    std::thread::sleep(PAUSE);
                    let (times, output) = match (*system, &ort, &mut peer) {
                        ("pretext_ort", Some((o, _)), _) => systems::time_runtime(o.as_ref(), &x, &t).map(|r| (r.times_s, Some(r.output)))?,
                        ("pretext_tract", Some((_, tr)), _) => systems::time_runtime(tr.as_ref(), &x, &t).map(|r| (r.times_s, Some(r.output)))?,
                        ("pretext_tch", _, _) => tch_model.time(&x, &t).map(|r| (r.times_s, Some(r.output)))?,
                        (peer_system, _, Some(pp)) => (pp.time(peer_system, &case.name, b, &t)?, None),
                        _ => continue,
                    };
                    if round > 0 {
                        m.rounds.push(&times);
                    }
                    m.output = output.or(m.output.take());
                }
                bar.set_position(round as u64 + 1);
            }
            bar.finish_and_clear();
            for m in &m {
                eprintln!("[bench] {} b{b} {:<15} p50 {:>9.2} ms ({} rounds, {} runs)", case.name, m.system, Summary::of(&m.rounds.times_s).p50_ms, m.rounds.p50_s.len(), m.rounds.times_s.len());
            }
            raw.extend(m);
        }
        if let Some(pp) = peer {
            merge(&mut peers, pp.finish()?);
        }
    }
    let mut macs = std::collections::BTreeMap::new();
    for case in &cases {
        let c = pretext_models::flops::count_forward(&pretext_models::Backbone::new(&case.config), 1, case.image_size);
        macs.insert(case.name.clone(), c);
    }
    for m in &raw {
        let s = Summary::of(&m.rounds.times_s);
        let flop = macs.get(&m.model).map(|c| c.flops() as f64).unwrap_or(f64::NAN) * m.batch as f64;
        let gflops = flop / (s.p50_ms / 1e3) / 1e9;
        let mut ratio = std::collections::BTreeMap::new();
        for peer in PEERS.iter().filter(|p| **p != m.system) {
            if let Some(pm) = raw.iter().find(|r| r.model == m.model && r.batch == m.batch && r.system == *peer) {
                if let Some(iv) = interval(&m.rounds.p50_s, &pm.rounds.p50_s) {
                    ratio.insert(peer.to_string(), iv);
                }
            }
        }
        let diff = m.output.as_ref().and_then(|o| {
            let (reference, _) = prep::read_f32(&dir.join(format!("{}.peer_outputs.safetensors", m.model)), &format!("{}/pytorch_eager/{}", m.model, m.batch)).ok()?;
            rel_diff(o, &reference)
        });
        rows.push(Row {
            model: m.model.clone(),
            batch: m.batch,
            system: m.system.clone(),
            summary: s,
            images_per_s: m.batch as f64 / (s.p50_ms / 1e3),
            gflops_per_s: gflops,
            fraction_of_peak: gflops / peak.gflops,
            latency_ratio_vs: ratio,
            round_p50_ms: m.rounds.p50_s.iter().map(|t| t * 1e3).collect(),
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

    // ---- training: one step of each system per round (pretext, PyTorch,
    // PyTorch channels_last), each on its own trajectory from the same weights.
    let mut training = Vec::new();
    if let Some(t) = &train {
        eprintln!("[bench] SimCLR step, batch {} (x2 views): 1 warm-up + {} rounds", t.batch, p.train_steps);
        let mut peer = if a.no_peers {
            None
        } else {
            let spec = json!({"training": {
                "weights": t.weights, "input": t.views, "hidden": t.hidden, "out": t.out,
                "lr": step_cfg.lr, "momentum": step_cfg.momentum, "weight_decay": step_cfg.weight_decay,
                "temperature": step_cfg.temperature,
            }});
            Some(start_peers(&a, &dir, "training", &base_spec, spec)?)
        };
        let mut session = systems::TrainSession::new(t, step_cfg, 1 + p.train_steps as u64)?;
        let (mut times, mut losses) = (Vec::new(), Vec::new());
        let mut mine = Rounds::default();
        let mut theirs: Vec<(&str, Rounds, Vec<f64>)> = if peer.is_some() { TRAIN_PEERS.iter().map(|s| (*s, Rounds::default(), Vec::new())).collect() } else { Vec::new() };
        let bar = Progress::new("bench training", p.train_steps as u64 + 1);
        for round in 0..=p.train_steps {
            let timed = round > 0;
            let n = times.len();
            session.steps(1, timed, &mut times, &mut losses)?;
            mine.push(&times[n..]);
            if let Some(pp) = &mut peer {
                for (system, r, l) in theirs.iter_mut() {
                    let (tt, ll) = pp.train(system, 1, timed)?;
                    r.push(&tt);
                    l.extend(ll);
                }
            }
            bar.set_position(round as u64 + 1);
            bar.set_message(format!("loss {:.4}", losses.last().copied().unwrap_or(f64::NAN)));
        }
        bar.finish_and_clear();
        drop(session);
        if let Some(pp) = peer {
            merge(&mut peers, pp.finish()?);
        }
        let imgs = (2 * t.batch) as f64;
        let row = |system: &str, r: &Rounds, losses: &[f64]| {
            let s = Summary::of(&r.times_s);
            json!({"system": system, "images_per_step": imgs, "summary": s, "images_per_s": imgs / (s.p50_ms / 1e3),
                   "round_p50_ms": r.p50_s.iter().map(|t| t * 1e3).collect::<Vec<_>>(), "losses": losses})
        };
        training.push(row("pretext_tch", &mine, &losses));
        for (system, r, theirs_losses) in &theirs {
            let diff = pretext_runtime::compare::max_abs_diff(&losses, theirs_losses);
            training[0][format!("loss_max_abs_diff_vs_{system}")] = json!(diff);
            // images/s of pretext / that of the peer = the peer's step time / pretext's, round by round.
            training[0]["images_per_s_ratio_vs"][*system] = json!(interval(&r.p50_s, &mine.p50_s));
            training.push(row(system, r, theirs_losses));
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

    // ---- k-NN: pretext's exact search and faiss, one block each per round
    let mut knn = Vec::new();
    if let Some(path) = &knn_path {
        let mut peer = if a.no_peers { None } else { Some(start_peers(&a, &dir, "knn", &base_spec, json!({"knn": {"data": path, "k": 20}}))?) };
        let search = systems::KnnSearch::new(path, 20, a.threads)?;
        let nq = search.queries();
        let (mut mine, mut faiss, mut top1) = (Rounds::default(), Rounds::default(), Vec::new());
        let bar = Progress::new("bench k-NN", p.rounds as u64 + 1);
        for round in 0..=p.rounds {
            let t = if round == 0 { WARMUP } else { block };
            std::thread::sleep(PAUSE);
            let (tt, t1) = search.time(&t)?;
            top1 = t1;
            if let Some(pp) = &mut peer {
                std::thread::sleep(PAUSE);
                let ft = pp.time("faiss_flat_ip", "knn", 0, &t)?;
                if round > 0 {
                    faiss.push(&ft);
                }
            }
            if round > 0 {
                mine.push(&tt);
            }
            bar.set_position(round as u64 + 1);
        }
        bar.finish_and_clear();
        if let Some(pp) = peer {
            merge(&mut peers, pp.finish()?);
        }
        let s = Summary::of(&mine.times_s);
        let round_ms = |r: &Rounds| r.p50_s.iter().map(|t| t * 1e3).collect::<Vec<_>>();
        let mut row = json!({"system": "pretext_exact", "gallery": p.knn_n, "dim": 512, "queries": nq, "k": 20,
            "summary": s, "queries_per_s": nq as f64 / (s.p50_ms / 1e3), "round_p50_ms": round_ms(&mine)});
        if !faiss.times_s.is_empty() {
            let fs = Summary::of(&faiss.times_s);
            let faiss_top1: Vec<u32> = serde_json::from_value(peers["knn"]["top1"].clone()).unwrap_or_default();
            let agree = top1.iter().zip(&faiss_top1).filter(|(a, b)| a == b).count() as f64 / nq.max(1) as f64;
            row["time_ratio_vs_faiss"] = json!(interval(&mine.p50_s, &faiss.p50_s));
            row["top1_agreement_with_faiss"] = json!(agree);
            knn.push(row);
            knn.push(json!({"system": "faiss_flat_ip", "gallery": p.knn_n, "dim": 512, "queries": nq, "k": 20,
                "summary": fs, "queries_per_s": nq as f64 / (fs.p50_ms / 1e3), "round_p50_ms": round_ms(&faiss), "faiss": peers["knn"]["faiss"]}));
        } else {
            knn.push(row);
        }
    }

    // ---- report
    let targets = targets(&rows, &training, &knn);
    let report = json!({
        "date_utc": utc_now(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": {"cpu": cpu_model(), "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "threads_per_system": a.threads, "tract_threads": a.tract_threads.unwrap_or(a.threads), "tract_batch": a.tract_batch, "tract_layout": a.tract_layout, "ort_spinning": a.ort_spinning, "omp_wait_policy": std::env::var("OMP_WAIT_POLICY").ok(), "load_before": load_before, "load_after": loadavg(),
                    "rounds": p.rounds, "training_rounds": p.train_steps, "bootstrap": {"resamples": stats::BOOTSTRAP_RESAMPLES, "seed": stats::BOOTSTRAP_SEED, "interval": 0.95}},
        "peak": peak,
        "macs_per_image": macs.iter().map(|(k, c)| (k.clone(), json!({"macs": c.macs, "elementwise": c.elementwise,
            "torch_flop_counter_flops": peers["torch_flop_counter"][k]}))).collect::<serde_json::Map<_, _>>(),
        "inference": rows,
        "unavailable": unavailable,
        "training": training,
        "augment": augment,
        "knn": knn,
        "targets": targets,
        "peers_versions": peers["versions"],
        "wall_s": started.elapsed().as_secs_f64(),
    });
    let json_path = dir.join("bench.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    print_table(&report, &rows);
    let png = dir.join("bench.png");
    let subtitle = [
        format!("{}, {} threads per system, same weights and inputs; {}, {} logical CPUs", utc_now(), a.threads, report["machine"]["cpu"].as_str().unwrap_or(""), report["machine"]["logical_cpus"]),
        format!("Systems take turns in {} rounds per case; a ratio is the median of the per-round ratios, its bar the bootstrap 95% interval.", p.rounds),
        "Met: the whole interval on the good side of the limit; missed: on the bad side; undecided: it straddles the limit.".to_string(),
    ];
    chart::write_png(&png, "pretext bench: ratios to the peers vs their targets", &subtitle, &targets)?;
    println!("\nwrote {} and {}", json_path.display(), png.display());
    Ok(())
}

/// Starts scripts/bench_peers.py on `base` + `section`, set up and waiting for requests.
fn start_peers(a: &BenchArgs, dir: &Path, tag: &str, base: &Value, section: Value) -> Result<peers::Peer> {
    let mut spec = base.clone();
    for (k, v) in section.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let py = python(a);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_peers.py");
    eprintln!("[bench] Python peers: {tag} ({})", py.display());
    peers::Peer::start(&py, &script, &dir.join(format!("peers_spec.{tag}.json")), &spec, &dir.join(format!("peers.{tag}.json")), a.threads)
}

fn utc_now() -> String {
    Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().ok().and_then(|o| String::from_utf8(o.stdout).ok()).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `0.85x [0.80, 0.91]`: median ratio and its 95% interval.
fn fmt_iv(r: Option<&Interval>) -> String {
    r.map(|v| format!("{:.2}x [{:.2}, {:.2}]", v.median, v.lo, v.hi)).unwrap_or_else(|| "-".into())
}

fn fmt_iv_json(v: &Value) -> String {
    fmt_iv(serde_json::from_value::<Interval>(v.clone()).ok().as_ref())
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<15} {:>5} {:<21} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>20} {:>20} {:>9}",
        "model", "batch", "system", "runs", "p50 ms", "p90 ms", "p99 ms", "img/s", "GFLOP/s", "%peak", "vs eager", "vs t.onnx", "rel.diff"
    );
    for r in rows {
        println!(
            "{:<15} {:>5} {:<21} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8.1} {:>5.1}% {:>20} {:>20} {:>9}",
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
            fmt_iv(r.latency_ratio_vs.get("pytorch_eager")),
            fmt_iv(r.latency_ratio_vs.get("torch_onnx_ort")),
            r.max_rel_diff_vs_pytorch.map(|d| format!("{d:.1e}")).unwrap_or_else(|| "-".into()),
        );
    }
}

fn print_table(report: &Value, rows: &[Row]) {
    let peak = &report["peak"];
    let m = &report["machine"];
    println!("pretext bench, {} — {} threads per system, OMP_WAIT_POLICY={}, {}, load average {} before, {} after", report["date_utc"].as_str().unwrap_or(""), m["threads_per_system"], m["omp_wait_policy"].as_str().unwrap_or("unset"), m["cpu"].as_str().unwrap_or(""), m["load_before"], m["load_after"]);
    println!("peak f32: {:.1} GFLOP/s ({})", peak["gflops"].as_f64().unwrap_or(0.0), peak["method"].as_str().unwrap_or(""));
    println!("systems of a case take turns in {} rounds; a ratio is the median of the per-round ratios of p50 latencies [bootstrap 95% interval] (< 1 = faster)\n", m["rounds"]);
    if !rows.is_empty() {
        print_rows(rows);
    }
    for u in report["unavailable"].as_array().into_iter().flatten() {
        println!("not measured: {}", u.as_str().unwrap_or(""));
    }
    if let Some(t) = report["training"].as_array().filter(|t| !t.is_empty()) {
        println!("\ntraining: SimCLR step on ResNet-18 CIFAR (forward+backward+SGD, {} images/step), one step per system per round, {} rounds", t[0]["images_per_step"], m["training_rounds"]);
        for x in t {
            let ratios: String = x["images_per_s_ratio_vs"].as_object().into_iter().flatten().map(|(peer, iv)| format!("  images/s vs {peer} {}", fmt_iv_json(iv))).collect();
            let diffs: String = x.as_object().into_iter().flatten().filter_map(|(k, d)| Some((k.strip_prefix("loss_max_abs_diff_vs_")?, d.as_f64()?))).map(|(peer, d)| format!("  (loss per step vs {peer}: max |diff| {d:.1e})")).collect();
            println!("  {:<21} {:>8.1} img/s  p50 {:>8.1} ms/step{ratios}{diffs}", x["system"].as_str().unwrap_or(""), x["images_per_s"].as_f64().unwrap_or(f64::NAN), x["summary"]["p50_ms"].as_f64().unwrap_or(f64::NAN));
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
                x.get("time_ratio_vs_faiss").map(|r| format!("  time vs faiss {}, top-1 agreement {:.3}", fmt_iv_json(r), x["top1_agreement_with_faiss"].as_f64().unwrap_or(0.0))).unwrap_or_default());
        }
    }
    if let Some(t) = report["targets"].as_array().filter(|t| !t.is_empty()) {
        println!("\ntargets (met: the whole interval on the good side of the limit; undecided: it straddles the limit)");
        for x in t {
            let verdict = match x["verdict"].as_str() { Some("met") => "met", Some("missed") => "MISSED", Some("undecided") => "undecided", _ => "not measured" };
            println!("  {:<58} {:>22} (limit {} {:.1}x)  {verdict}", x["target"].as_str().unwrap_or(""), fmt_iv_json(&x["ratio"]), if x["at_most"] == true { "<" } else { ">" }, x["limit"].as_f64().unwrap_or(0.0));
        }
    }
}

/// The targets, evaluated on this run's intervals.
fn targets(rows: &[Row], training: &[Value], knn: &[Value]) -> Vec<chart::Target> {
    let rounds = |m: &str, b: usize, s: &str| rows.iter().find(|r| r.model == m && r.batch == b && r.system == s).map(|r| r.round_p50_ms.clone());
    let ratio = |m: &str, b: usize, s: &str, peer: &str| interval(&rounds(m, b, s)?, &rounds(m, b, peer)?);
    let mut out = Vec::new();
    let mut push = |target: String, ratio: Option<Interval>, limit: f64, at_most: bool| {
        let verdict = ratio.map(|iv| Verdict::of(&iv, limit, at_most));
        out.push(chart::Target { target, ratio, limit, at_most, verdict });
    };
    let mut cases: Vec<(String, usize)> = rows.iter().map(|r| (r.model.clone(), r.batch)).collect();
    cases.dedup();
    for (m, b) in &cases {
        push(format!("{m} b{b}: pretext+ORT / torch.onnx+ORT latency"), ratio(m, *b, "pretext_ort", "torch_onnx_ort"), 1.0, true);
        if *b == 1 && (m == "resnet50" || m == "vit-small") {
            push(format!("{m} b1: pretext+ORT / PyTorch eager latency"), ratio(m, 1, "pretext_ort", "pytorch_eager"), 0.7, true);
        }
        push(format!("{m} b{b}: tract / pretext+ORT latency"), ratio(m, *b, "pretext_tract", "pretext_ort"), 3.0, true);
    }
    if !training.is_empty() {
        let iv = serde_json::from_value(training[0]["images_per_s_ratio_vs"]["pytorch"].clone()).ok();
        push("training: pretext / PyTorch images/s".into(), iv, 1.0, false);
    }
    if !knn.is_empty() {
        push("k-NN: pretext exact / faiss IndexFlatIP time".into(), serde_json::from_value(knn[0]["time_ratio_vs_faiss"].clone()).ok(), 1.5, true);
    }
    out
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

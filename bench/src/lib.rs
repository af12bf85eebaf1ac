//! `pretext bench`: latency and throughput of pretext against the peers a
//! user would pick instead, measured in the same run on the same weights
//! and inputs.
//!
//! Systems: the pretext runtime with ONNX Runtime and with tract on the
//! graph our exporter writes, libtorch eager through tch running the same
//! backbone code as the trainer; peers (scripts/bench_peers.py): PyTorch
//! eager and `torch.onnx.export` + onnxruntime (the graph exported by the
//! peer, timed in this process through the same ORT), PyTorch for the training
//! step, faiss `IndexFlatIP` for k-NN. Every system gets the same thread
//! count. The systems of one case take turns in rounds (A B C, A B C, ...),
//! and each ratio is the median of the per-round ratios with a bootstrap 95%
//! interval. Output: a table on stdout, `bench.json`, and `bench.png`.
//!
//! Modules: [`args`] (the flags and the plan), `inference`, `training`,
//! `sections` (augmentation, k-NN), `report` (table, targets), and the
//! pieces they share: `prep` (weights and inputs on disk), `systems` (the
//! Rust-side systems), `peers` (the Python child), `stats` (timing loop,
//! percentiles, intervals), `peak` (the FMA peak), `chart` (bench.png).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub mod args;
mod chart;
mod inference;
mod peak;
mod peers;
mod prep;
mod report;
mod sections;
mod stats;
mod systems;
mod training;

pub use args::BenchArgs;
use stats::{Interval, Timing};

/// Round 0 of every case: one untimed-in-effect run per system (its times are dropped).
const WARMUP: Timing = Timing { warmup: 0, min_iters: 1, max_iters: 1, budget_s: 0.0 };
/// Between two systems' blocks, so spinning worker threads park.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Median ratio of two systems' per-round p50s with its bootstrap 95% interval.
fn interval(num: &[f64], den: &[f64]) -> Option<Interval> {
    stats::ratio_interval(num, den, stats::BOOTSTRAP_RESAMPLES, stats::BOOTSTRAP_SEED)
}

/// What every section shares: the arguments, the plan, the output folder and
/// what the Python peers reported so far.
struct Ctx<'a> {
    a: &'a BenchArgs,
    p: args::Plan,
    dir: PathBuf,
    /// `knn`, `torch_flop_counter` and `versions`, merged from every peer session.
    peers: Value,
}

impl Ctx<'_> {
    /// Starts scripts/bench_peers.py on the shared spec + `section`, set up and
    /// waiting for requests; `None` with --no-peers.
    fn start_peers(&self, tag: &str, section: Value) -> Result<Option<peers::Peer>> {
        if self.a.no_peers {
            return Ok(None);
        }
        let mut spec = json!({"threads": self.a.threads, "ort_spinning": self.a.ort_spinning});
        for (k, v) in section.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        let py = self.a.python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_peers.py");
        eprintln!("[bench] Python peers: {tag} ({})", py.display());
        let d = &self.dir;
        peers::Peer::start(&py, &script, &d.join(format!("peers_spec.{tag}.json")), &spec, &d.join(format!("peers.{tag}.json")), self.a.threads).map(Some)
    }

    /// Ends a peer session and keeps what it reported.
    fn finish_peers(&mut self, peer: Option<peers::Peer>) -> Result<()> {
        let Some(peer) = peer else { return Ok(()) };
        let v = peer.finish()?;
        if let Some(m) = v["torch_flop_counter"].as_object() {
            for (k, x) in m {
                self.peers["torch_flop_counter"][k] = x.clone();
            }
        }
        if v["knn"].as_object().is_some_and(|k| !k.is_empty()) {
            self.peers["knn"] = v["knn"].clone();
        }
        self.peers["versions"] = v["versions"].clone();
        Ok(())
    }
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
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

/// Runs the benchmark `a` asks for: prints the table, writes `bench.json` and `bench.png` under `--out`.
pub fn run(a: BenchArgs) -> Result<()> {
    let p = a.plan()?;
    if let Some(code) = reexec_with_wait_policy(&a.omp_wait_policy)? {
        if code != 0 {
            bail!("pretext bench (OMP_WAIT_POLICY={}) exited with status {code}", a.omp_wait_policy);
        }
        return Ok(());
    }
    let ort_opts = a.ort_options()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let dir = a.out.canonicalize().with_context(|| format!("resolving {}", a.out.display()))?;
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

    let mut ctx = Ctx { a: &a, p, dir, peers: json!({"knn": {}, "torch_flop_counter": {}, "versions": null}) };
    let inference = if sections("inference") { inference::run(&mut ctx, &ort_opts, &a.tract_options(), peak.gflops)? } else { inference::Inference::default() };
    let training = if sections("training") { training::run(&mut ctx)? } else { Vec::new() };
    let augment = if sections("augment") { sections::augment(&ctx)? } else { Vec::new() };
    let knn = if sections("knn") { sections::knn(&mut ctx)? } else { Vec::new() };

    let (p, dir, peers) = (&ctx.p, &ctx.dir, &ctx.peers);
    let targets = report::targets(&inference.rows, &training, &knn);
    let report = json!({
        "date_utc": report::utc_now(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": {"cpu": report::cpu_model(), "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "threads_per_system": a.threads, "tract_threads": a.tract_threads.unwrap_or(a.threads), "ort_spinning": a.ort_spinning, "omp_wait_policy": std::env::var("OMP_WAIT_POLICY").ok(), "load_before": load_before, "load_after": loadavg(),
                    "rounds": p.rounds, "training_rounds": p.train_steps, "bootstrap": {"resamples": stats::BOOTSTRAP_RESAMPLES, "seed": stats::BOOTSTRAP_SEED, "interval": 0.95}},
        "peak": peak,
        "macs_per_image": inference.macs.iter().map(|(k, c)| (k.clone(), json!({"macs": c.macs, "elementwise": c.elementwise,
            "torch_flop_counter_flops": peers["torch_flop_counter"][k]}))).collect::<serde_json::Map<_, _>>(),
        "inference": inference.rows,
        "unavailable": inference.unavailable,
        "training": training,
        "augment": augment,
        "knn": knn,
        "targets": targets,
        "peers_versions": peers["versions"],
        "wall_s": started.elapsed().as_secs_f64(),
    });
    let json_path = dir.join("bench.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", json_path.display()))?;
    report::print_table(&report, &inference.rows);
    let png = dir.join("bench.png");
    let subtitle = [
        format!("{}, {} threads per system, same weights and inputs; {}, {} logical CPUs", report::utc_now(), a.threads, report["machine"]["cpu"].as_str().unwrap_or(""), report["machine"]["logical_cpus"]),
        format!("Systems take turns in {} rounds per case; a ratio is the median of the per-round ratios, its bar the bootstrap 95% interval.", p.rounds),
        "Met: the whole interval on the good side of the limit; missed: on the bad side; undecided: it straddles the limit.".to_string(),
    ];
    chart::write_png(&png, "pretext bench: ratios to the peers vs their targets", &subtitle, &targets)?;
    println!("\nwrote {} and {}", json_path.display(), png.display());
    Ok(())
}

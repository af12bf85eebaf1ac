//! Inference: per model and batch, every system once per round (A B C D E,
//! A B C D E, ...); round 0 is a one-run warm-up. The torch.onnx+ORT peer's
//! graph is exported by the Python peer but timed here, in this process,
//! through the same ONNX Runtime library with the same session options as
//! pretext+ORT: their ratio compares the two graphs, not two processes. Each row carries its
//! percentiles, achieved GFLOP/s against the measured peak, the latency
//! ratio to each peer with its interval, and its output's distance to
//! PyTorch eager's.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use pretext_data::progress::Progress;
use pretext_models::flops::{self, Count};
use serde_json::json;

use crate::prep::{self, ModelCase, MODELS};
use crate::stats::{Interval, Rounds, Summary};
use crate::{interval, systems, Ctx, PAUSE, WARMUP};

/// Display names; the JSON uses the keys.
pub(crate) const SYSTEMS: &[(&str, &str)] = &[
    ("pretext_ort", "pretext+ORT"),
    ("pretext_tract", "pretext+tract"),
    ("pretext_tch", "libtorch eager (tch)"),
    ("pytorch_eager", "PyTorch eager"),
    ("torch_onnx_ort", "torch.onnx+ORT"),
];
const PEERS: &[&str] = &["pytorch_eager", "torch_onnx_ort"];

pub(crate) fn system_label(key: &str) -> &str {
    SYSTEMS.iter().find(|s| s.0 == key).map(|s| s.1).unwrap_or(key)
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

/// One row of the inference table.
#[derive(Clone, serde::Serialize)]
pub(crate) struct Row {
    pub model: String,
    pub batch: usize,
    pub system: String,
    #[serde(flatten)]
    pub summary: Summary,
    pub images_per_s: f64,
    pub gflops_per_s: f64,
    pub fraction_of_peak: f64,
    /// Latency of this system / latency of each peer: median of the per-round
    /// ratios of p50s, with its bootstrap 95% interval.
    pub latency_ratio_vs: BTreeMap<String, Interval>,
    /// This system's p50 in each round.
    pub round_p50_ms: Vec<f64>,
    pub max_rel_diff_vs_pytorch: Option<f64>,
}

/// The section's results: table rows, cases pretext could not export, MACs per image.
#[derive(Default)]
pub(crate) struct Inference {
    pub rows: Vec<Row>,
    pub unavailable: Vec<String>,
    pub macs: BTreeMap<String, Count>,
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

/// Times one model at every batch of the plan, every system once per round.
fn measure_case(ctx: &mut Ctx, case: &ModelCase, exported: &Result<(), String>, ort_opts: &pretext_runtime::OrtOptions, tract_opts: &pretext_runtime::TractOptions, out: &mut Inference) -> Result<Vec<Measured>> {
    let (p, dir) = (&ctx.p, &ctx.dir);
    let spec = json!({"inference": {
        "systems": PEERS,
        // The peer exports torch.onnx's graph; this process times it.
        "torch_onnx_timed_by": "pretext",
        "onnx_dir": dir,
        "outputs": dir.join(format!("{}.peer_outputs.safetensors", case.name)),
        "models": [{"name": case.name, "weights": case.weights, "input": case.input, "batches": p.batches}],
    }});
    let mut peer = ctx.start_peers(&case.name, spec)?;
    // torch.onnx's graph, written by the peer's setup, in this process's ORT
    // at ORT's default optimisation level (what a torch.onnx user gets).
    let torch_onnx = dir.join(format!("{}.torch.onnx", case.name));
    let torch_ort = match &peer {
        Some(_) => Some(pretext_runtime::open_ort(&torch_onnx, &pretext_runtime::OrtOptions { opt_level: pretext_runtime::GraphOptLevel::All, ..ort_opts.clone() }).with_context(|| format!("opening the peer's {}", torch_onnx.display()))?),
        None => None,
    };
    let tch_model = systems::TchModel::load(case)?;
    let onnx = dir.join(format!("{}.onnx", case.name));
    let runtimes = match exported {
        Ok(()) => Some((pretext_runtime::open_ort(&onnx, ort_opts)?, pretext_runtime::open_tract_with(&onnx, tract_opts)?)),
        Err(e) => {
            out.unavailable.push(format!("{}: pretext+ORT and pretext+tract not measured: {e}", case.name));
            None
        }
    };
    let mut names: Vec<&str> = if runtimes.is_some() { vec!["pretext_ort", "pretext_tract", "pretext_tch"] } else { vec!["pretext_tch"] };
    if peer.is_some() {
        names.extend(PEERS);
    }
    let (block, mut raw) = (p.block(), Vec::new());
    for &b in &p.batches {
        let x = systems::input_batch(case, b)?;
        let mut m: Vec<Measured> = names.iter().map(|s| Measured { model: case.name.clone(), batch: b, system: s.to_string(), rounds: Rounds::default(), output: None }).collect();
        let bar = Progress::new(&format!("bench {} b{b}", case.name), p.rounds as u64 + 1);
        for round in 0..=p.rounds {
            let t = if round == 0 { WARMUP } else { block };
            for (system, m) in names.iter().zip(m.iter_mut()) {
                // The previous system's spinning worker threads park.
                std::thread::sleep(PAUSE);
                let (times, output) = match (*system, &runtimes, &mut peer) {
                    ("torch_onnx_ort", _, _) => match &torch_ort {
                        Some(o) => systems::time_runtime(o.as_ref(), &x, &t).map(|r| (r.times_s, Some(r.output)))?,
                        None => continue,
                    },
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
    ctx.finish_peers(peer)?;
    Ok(raw)
}

/// Prepares every model of the plan (weights, inputs, pretext's export) and measures it.
pub(crate) fn run(ctx: &mut Ctx, ort_opts: &pretext_runtime::OrtOptions, tract_opts: &pretext_runtime::TractOptions, peak_gflops: f64) -> Result<Inference> {
    let max_batch = *ctx.p.batches.iter().max().unwrap_or(&1) as i64;
    let mut cases = Vec::new();
    for m in &ctx.p.models {
        let case = prep::model_case(&ctx.dir, m, max_batch)?;
        let r = export_onnx(&case, &ctx.dir.join(format!("{m}.onnx")));
        if let Err(e) = &r {
            eprintln!("[bench] {m}: pretext export failed: {e:#}");
        }
        cases.push((case, r.map_err(|e| format!("{e:#}"))));
    }
    let mut out = Inference::default();
    let mut raw = Vec::new();
    for (case, exported) in &cases {
        raw.extend(measure_case(ctx, case, exported, ort_opts, tract_opts, &mut out)?);
        out.macs.insert(case.name.clone(), flops::count_forward(&pretext_models::Backbone::new(&case.config), 1, case.image_size));
    }
    for m in &raw {
        let s = Summary::of(&m.rounds.times_s);
        let flop = out.macs.get(&m.model).map(|c| c.flops() as f64).unwrap_or(f64::NAN) * m.batch as f64;
        let gflops = flop / (s.p50_ms / 1e3) / 1e9;
        let mut ratio = BTreeMap::new();
        for peer in PEERS.iter().filter(|p| **p != m.system) {
            if let Some(pm) = raw.iter().find(|r| r.model == m.model && r.batch == m.batch && r.system == *peer) {
                if let Some(iv) = interval(&m.rounds.p50_s, &pm.rounds.p50_s) {
                    ratio.insert(peer.to_string(), iv);
                }
            }
        }
        let diff = m.output.as_ref().and_then(|o| {
            let (reference, _) = prep::read_f32(&ctx.dir.join(format!("{}.peer_outputs.safetensors", m.model)), &format!("{}/pytorch_eager/{}", m.model, m.batch)).ok()?;
            rel_diff(o, &reference)
        });
        out.rows.push(Row {
            model: m.model.clone(),
            batch: m.batch,
            system: m.system.clone(),
            summary: s,
            images_per_s: m.batch as f64 / (s.p50_ms / 1e3),
            gflops_per_s: gflops,
            fraction_of_peak: gflops / peak_gflops,
            latency_ratio_vs: ratio,
            round_p50_ms: m.rounds.p50_s.iter().map(|t| t * 1e3).collect(),
            max_rel_diff_vs_pytorch: diff,
        });
    }
    out.rows.sort_by_key(|r| (MODELS.iter().position(|m| *m == r.model).unwrap_or(99), r.batch, SYSTEMS.iter().position(|s| s.0 == r.system).unwrap_or(99)));
    Ok(out)
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

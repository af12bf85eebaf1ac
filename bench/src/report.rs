//! The report: the table on stdout, and the targets evaluated on
//! this run's intervals (the chart and the JSON carry them too).
use std::process::Command;

use serde_json::Value;

use crate::chart;
use crate::inference::{system_label, Row};
use crate::interval;
use crate::stats::{Interval, Verdict};

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn utc_now() -> String {
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

pub(crate) fn print_table(report: &Value, rows: &[Row]) {
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
pub(crate) fn targets(rows: &[Row], training: &[Value], knn: &[Value]) -> Vec<chart::Target> {
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

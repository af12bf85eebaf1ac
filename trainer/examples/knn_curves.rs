//! Draws the k-NN-vs-training-minutes curves of several `pretext train` run
//! dirs into one PNG per k-NN setting; each curve starts at its random-init
//! k-NN (minute 0), so the gain over random init at the same budget is the
//! rise of the curve.
//!
//! ```text
//! cargo run -p pretext-trainer --example knn_curves -- OUT_PREFIX NAME=RUN_DIR...
//! ```
//! writes `OUT_PREFIX_k20.png` and `OUT_PREFIX_k200.png`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use pretext_trainer::plot::{line_plot, LineChart, Series};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: knn_curves OUT_PREFIX NAME=RUN_DIR...");
    }
    let mut runs = Vec::new();
    for a in &args[1..] {
        let (name, dir) = a.split_once('=').with_context(|| format!("'{a}': expected NAME=RUN_DIR"))?;
        let path = PathBuf::from(dir).join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let (mut k20, mut k200) = (Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
            let m = v["minutes"].as_f64().with_context(|| format!("{}:{}: no minutes", path.display(), i + 1))?;
            if let (Some(a), Some(b)) = (v["knn20"].as_f64(), v["knn200"].as_f64()) {
                k20.push((m, a));
                k200.push((m, b));
            }
        }
        if k20.is_empty() {
            bail!("{}: no k-NN evaluations", path.display());
        }
        runs.push((name.to_string(), k20, k200));
    }
    for (suffix, pick) in [("k20", 0usize), ("k200", 1)] {
        let series: Vec<Series> = runs.iter().map(|(n, a, b)| Series { name: n, points: if pick == 0 { a.clone() } else { b.clone() } }).collect();
        let out = PathBuf::from(format!("{}_{suffix}.png", args[0]));
        let title = if pick == 0 { "k-NN top-1 (k=20, T=0.07) vs training time" } else { "k-NN top-1 (k=200, T=0.1) vs training time" };
        let chart = LineChart { title, x_label: "training time (minutes)", y_label: "top-1 accuracy (%)", series: &series, references: &[] };
        line_plot(&out, &chart, 720, 420).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

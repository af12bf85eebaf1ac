//! Session-creation time with and without ONNX Runtime's optimized-model cache:
//!
//! ```text
//! cargo run -p pretext-runtime --features ort --example ort_cache_timing -- [--rounds N] model.onnx [more.onnx ...]
//! ```
//! Per model and round, alternating: open with no cache; open with an emptied cache
//! (optimizes, stores the ORT-format entry); open again (maps the entry). Each open is
//! timed alone and followed by one batch-1 run, timed separately: the cached session
//! maps its weights lazily, so part of its cost moves to the first run, and the fair
//! figure is open + first run. Prints medians (min-max) over the rounds, the load
//! average before and after, and checks that cached and uncached outputs agree.
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::ArrayD;
use pretext_runtime::ort_backend::OrtBackend;
use pretext_runtime::{optimized_cache_path, Backend, CacheUse, OrtOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// Milliseconds of `open`, of the first batch-1 run, the output and what the cache did.
fn time(model: &Path, o: &OrtOptions) -> Res<(f64, f64, ArrayD<f32>, CacheUse)> {
    let t = Instant::now();
    let b = OrtBackend::open(model, o)?;
    let open = t.elapsed().as_secs_f64() * 1e3;
    let dims: Vec<usize> = b.input_shape().iter().enumerate().map(|(i, d)| d.unwrap_or(if i == 0 { 1 } else { 224 })).collect();
    let n: usize = dims.iter().product();
    let x = ArrayD::from_shape_vec(ndarray::IxDyn(&dims), (0..n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect())?;
    let t = Instant::now();
    let y = b.run(x)?.remove(0);
    Ok((open, t.elapsed().as_secs_f64() * 1e3, y, b.cache_use().clone()))
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn main() -> Res<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 5;
    if let Some(i) = args.iter().position(|a| a == "--rounds") {
        rounds = args.get(i + 1).ok_or("--rounds needs a value")?.parse()?;
        args.drain(i..i + 2);
    }
    let models: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
    if models.is_empty() {
        return Err("usage: ort_cache_timing [--rounds N] model.onnx [more.onnx ...]".into());
    }
    let cache = tempfile::tempdir()?;
    let plain = OrtOptions { intra_threads: Some(2), inter_threads: Some(1), ..Default::default() };
    let cached = OrtOptions { optimized_cache: Some(cache.path().to_path_buf()), ..plain.clone() };
    println!("load average before: {}", loadavg());
    println!("| model | no cache: open + 1st run | first open (optimize + store) | from cache: open + 1st run | cached / uncached (open + run) |");
    println!("|---|---|---|---|---|");
    for m in &models {
        let entry = optimized_cache_path(cache.path(), m, &cached)?;
        let (mut none, mut store, mut hit) = (vec![], vec![], vec![]);
        let (mut none_run, mut hit_run) = (vec![], vec![]);
        let mut worst = 0.0f32;
        for _ in 0..rounds {
            let (o, r, want, u) = time(m, &plain)?;
            assert_eq!(u, CacheUse::Off);
            none.push(o);
            none_run.push(r);
            let _ = std::fs::remove_file(&entry);
            let _ = std::fs::remove_file(entry.with_extension("json"));
            let (o, _, _, u) = time(m, &cached)?;
            if !matches!(u, CacheUse::Stored(_)) {
                return Err(format!("{}: expected a store, got {u:?}", m.display()).into());
            }
            store.push(o);
            let (o, r, got, u) = time(m, &cached)?;
            if !matches!(u, CacheUse::Hit(_)) {
                return Err(format!("{}: expected a hit, got {u:?}", m.display()).into());
            }
            hit.push(o);
            hit_run.push(r);
            worst = worst.max(pretext_runtime::compare::max_abs_diff(got.iter(), want.iter()) as f32);
        }
        let ratio: Vec<f64> = (0..rounds).map(|i| (hit[i] + hit_run[i]) / (none[i] + none_run[i])).collect();
        let f = |v: &[f64]| {
            let (med, lo, hi) = stats(v);
            format!("{med:.0} ms ({lo:.0}-{hi:.0})")
        };
        let g = |a: &[f64], b: &[f64]| {
            let (oa, ra) = (stats(a).0, stats(b).0);
            format!("{oa:.0} + {ra:.0} ms (open {})", f(a))
        };
        println!(
            "| {} | {} | {} | {} | {:.2} (max abs diff {worst:.1e}) |",
            m.file_stem().unwrap_or_default().to_string_lossy(),
            g(&none, &none_run),
            f(&store),
            g(&hit, &hit_run),
            stats(&ratio).0
        );
    }
    println!("load average after: {}  ({rounds} rounds, medians (min-max), 2 intra-op threads)", loadavg());
    Ok(())
}

//! tract with 1 thread vs N threads (a batch of more than one image split over the
//! threads) on the same model, runs interleaved so that background load hits both alike:
//!
//! ```text
//! cargo run -p pretext-runtime --example tract_threads -- model.onnx [batch] [threads] [runs]
//! ```
//! `TRACT_PANEL_THRESHOLD=n` overrides tract's threading gate (64 panels).
//! The input is `[batch, 3, H, W]` with `H = W` from the graph (or 224), N(0, 1)-ish values.
use std::path::PathBuf;
use std::time::Instant;

use ndarray::ArrayD;
use pretext_runtime::{open_tract_with, TractOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = PathBuf::from(args.first().ok_or("usage: tract_threads model.onnx [batch] [threads] [runs]")?);
    let batch: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let threads: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let runs: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(7);
    if let Ok(p) = std::env::var("TRACT_PANEL_THRESHOLD") {
        // tract's gate below which a matmul stays on the calling thread (default 64 panels).
        tract_linalg::multithread::set_threading_panel_threshold(p.parse()?);
    }
    let open = |t: usize| open_tract_with(&model, &TractOptions { threads: Some(t), input_hw: Some((224, 224)) });
    let backends = [open(1)?, open(threads)?];
    let hw = backends[0].input_shape()[2].unwrap_or(224);
    let x = ArrayD::from_shape_fn(vec![batch, 3, hw, hw], |ix| ((ix[1] * 31 + ix[2] * 7 + ix[3]) % 17) as f32 / 8.0 - 1.0);
    let reference = backends[0].run(x.clone())?;
    let mut diff = 0f32;
    for b in &backends[1..] {
        let y = b.run(x.clone())?;
        diff = diff.max(pretext_runtime::compare::max_abs_diff(&y[0], &reference[0]) as f32);
    }
    let mut times = vec![Vec::new(); backends.len()];
    for _ in 0..runs {
        for (backend, t) in backends.iter().zip(times.iter_mut()) {
            let start = Instant::now();
            backend.run(x.clone())?;
            t.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let p50: Vec<f64> = times
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    println!(
        "{} batch {batch}: tract 1 thread {:.1} ms; {threads} threads {:.1} ms ({:.2}x faster); max |diff| {diff:.1e}",
        model.display(),
        p50[0],
        p50[1],
        p50[0] / p50[1]
    );
    Ok(())
}

//! tract: one plan with a symbolic batch vs one optimized plan per batch size.
//!
//! ```text
//! cargo run -p pretext-runtime --example tract_batch_modes -- model.onnx
//! ```
//! Prints plan build time and per-image CPU time at batch 1, 8 and 32 for both modes.
use std::time::Instant;

use ndarray::ArrayD;
use pretext_runtime::{open_tract_with, TractBatchMode, TractOptions};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::cpu_seconds;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: tract_batch_modes <model.onnx>")?;
    for mode in [TractBatchMode::Symbolic, TractBatchMode::PerBatch] {
        let t = Instant::now();
        let b = open_tract_with(path.as_ref(), &TractOptions { batch_mode: mode, ..Default::default() })?;
        let open = t.elapsed().as_secs_f64();
        let s = b.input_shape().to_vec();
        let (h, w) = (s[2].ok_or("symbolic H")?, s[3].ok_or("symbolic W")?);
        let mut line = format!("{mode:?}: open {open:.2}s");
        for n in [1usize, 8, 32] {
            let x = ArrayD::<f32>::from_elem(vec![n, 3, h, w], 0.1);
            let t = Instant::now();
            b.run(x.clone())?; // first run: builds the per-batch plan
            let first = t.elapsed().as_secs_f64();
            let reps = (64 / n).max(2);
            let c = cpu_seconds();
            for _ in 0..reps {
                b.run(x.clone())?;
            }
            let per_image = (cpu_seconds() - c) / (reps * n) as f64 * 1e3;
            line += &format!(" | batch {n}: first run {first:.2}s, {per_image:.2} ms CPU/image");
        }
        println!("{line}");
    }
    Ok(())
}

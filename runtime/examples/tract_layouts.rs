//! tract's convolution layouts ([`ConvLayout`]) on the same model, 1 thread, one image
//! per run: CPU time per image (robust to other processes on the machine) and the
//! largest output difference between the layouts.
//!
//! ```text
//! cargo run -p pretext-runtime --example tract_layouts -- model.onnx [batch] [runs]
//! ```
use std::path::PathBuf;

use ndarray::ArrayD;
use pretext_runtime::{open_tract_with, ConvLayout, TractOptions};

#[path = "common/cpu.rs"]
mod cpu;
use cpu::cpu_seconds;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = PathBuf::from(args.first().ok_or("usage: tract_layouts model.onnx [batch] [runs]")?);
    let batch: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let runs: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let layouts = [ConvLayout::AsGraph, ConvLayout::ChannelLast];
    let backends = layouts
        .iter()
        .map(|&conv_layout| {
            open_tract_with(&model, &TractOptions { threads: Some(1), input_hw: Some((224, 224)), conv_layout, ..Default::default() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let hw = backends[0].input_shape()[2].unwrap_or(224);
    let x = ArrayD::from_shape_fn(vec![batch, 3, hw, hw], |ix| ((ix[0] * 13 + ix[1] * 31 + ix[2] * 7 + ix[3]) % 17) as f32 / 8.0 - 1.0);
    let outs = backends.iter().map(|b| b.run(x.clone())).collect::<Result<Vec<_>, _>>()?;
    let scale = pretext_runtime::compare::max_abs(&outs[0][0]) as f32;
    let diff = pretext_runtime::compare::max_abs_diff(&outs[0][0], &outs[1][0]) as f32;
    let mut cpu = vec![0f64; backends.len()];
    for _ in 0..runs {
        for (b, c) in backends.iter().zip(cpu.iter_mut()) {
            let t = cpu_seconds();
            b.run(x.clone())?;
            *c += cpu_seconds() - t;
        }
    }
    let per_image: Vec<f64> = cpu.iter().map(|c| c / (runs * batch) as f64 * 1e3).collect();
    println!(
        "{} batch {batch}, 1 thread, CPU ms/image: as graph {:.2}, channel-last {:.2} ({:.2}x faster); max |diff| {diff:.1e} (max |y| {scale:.2})",
        model.display(),
        per_image[0],
        per_image[1],
        per_image[0] / per_image[1]
    );
    Ok(())
}

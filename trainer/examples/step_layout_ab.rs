//! Same-run A/B timing of a training step, NCHW vs channels-last conv weights: by default the SimCLR step (`pretext bench`'s
//! training row: ResNet-18 CIFAR + 512-512-128 head, SGD momentum 0.9,
//! lr 0.03, wd 5e-4 on weights), alternating two variants step by step so
//! both see the same machine load.
//!
//! `cargo run -p pretext-trainer --example step_layout_ab -- WEIGHTS VIEWS ROUNDS`
//! with the bench's `simclr.safetensors` and `simclr.views.safetensors`
//! (`pretext bench --sections training` writes them). Variant `nchw`: conv
//! weights re-laid contiguous (NCHW), the layout before; `channels_last`:
//! SimCLR's students as built (`Params::use_channels_last`). Env: `THREADS` (libtorch intra-op threads), `ONLY`
//! (run one variant). Prints wall and process CPU seconds per step (CPU time
//! is the steadier figure on a shared machine) and the per-round ratios.
//! `METHOD` = byol, moco or simsiam (two-view methods) times that method's
//! step instead, from a seeded random init, teacher re-laid too.

use std::time::Instant;

use pretext_models::{Backbone, BackboneConfig};
use pretext_trainer::methods::{self, MethodConfig, StepCtx};
use pretext_trainer::optim::OptimizerKind;
use pretext_trainer::train::{StepSchedule, Trainer};
use tch::{Device, Tensor};

fn build(method_name: &str, weights: &str, nchw: bool) -> Trainer {
    let backbone = Backbone::new(&BackboneConfig::from_name("resnet18-cifar").unwrap());
    let mut mc = MethodConfig::defaults(method_name, backbone.embed_dim()).unwrap();
    mc.set("proj_hidden", "512").unwrap();
    mc.set("proj_out", "128").unwrap();
    if mc.spec().field("temperature").is_some() {
        mc.set("temperature", "0.5").unwrap();
    }
    // Both variants start from the same random init (other methods' heads are not in WEIGHTS).
    tch::manual_seed(0);
    let method = methods::build(&mc, backbone, Device::Cpu).unwrap();
    for (_, params) in method.students() {
        if method_name == "simclr" {
            params.load_safetensors(std::path::Path::new(weights), "", true).unwrap();
        }
        // Same variables, data swapped for an NCHW-contiguous copy (the layout before channels-last).
        for (_, t) in params.all().into_iter().chain(method.teacher().map(|t| t.all()).unwrap_or_default()).filter(|(_, t)| nchw && t.dim() == 4) {
            let mut t = t.shallow_clone();
            let c = t.contiguous();
            tch::no_grad(|| t.set_data(&c));
        }
    }
    Trainer::new(method, OptimizerKind::Sgd, 0.9, StepSchedule::constant(0.03, 5e-4))
}

/// CPU seconds used by this process so far (all threads), from /proc/self/stat.
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (weights, views, rounds) = (&args[1], &args[2], args[3].parse::<usize>().unwrap());
    let x = Tensor::read_safetensors(views).unwrap().into_iter().find(|(n, _)| n == "x").unwrap().1;
    let b = x.size()[0] / 2;
    let views = [x.narrow(0, 0, b), x.narrow(0, b, b)];
    let method_name = std::env::var("METHOD").unwrap_or_else(|_| "simclr".into());
    let mut variants = vec![("nchw", build(&method_name, weights, true)), ("channels_last", build(&method_name, weights, false))];
    if let Ok(only) = std::env::var("ONLY") {
        variants.retain(|v| v.0 == only);
    }
    let stride = variants.last().unwrap().1.method.students()[0].1.get("layer1.0.conv1.weight").unwrap().stride();
    println!("last variant conv weight strides {stride:?}");
    if let Some(n) = std::env::var("THREADS").ok().and_then(|s| s.parse().ok()) {
        tch::set_num_threads(n);
    }
    println!("libtorch threads {}", tch::get_num_threads());
    let mut times = vec![Vec::new(); variants.len()];
    let mut cpu = vec![Vec::new(); variants.len()];
    let mut losses = vec![Vec::new(); variants.len()];
    for r in 0..rounds {
        for (i, (_, trainer)) in variants.iter_mut().enumerate() {
            let ctx = StepCtx { step: r as u64, total_steps: rounds as u64, epoch: 0 };
            let (t0, c0) = (Instant::now(), cpu_s());
            losses[i].push(trainer.step(&views, &ctx).unwrap());
            times[i].push(t0.elapsed().as_secs_f64());
            cpu[i].push(cpu_s() - c0);
        }
    }
    for (i, (name, _)) in variants.iter().enumerate() {
        let t: Vec<String> = times[i].iter().map(|t| format!("{t:.2}")).collect();
        println!("{name:>14}: median cpu {:.3} s, wall {:.3} s (first step excluded) {t:?} losses {:?}", median(&cpu[i][1..]), median(&times[i][1..]), &losses[i][..4.min(rounds)]);
    }
    if variants.len() < 2 {
        return;
    }
    let ratios: Vec<f64> = (1..rounds).map(|r| times[0][r] / times[1][r]).collect();
    let cr: Vec<f64> = (1..rounds).map(|r| cpu[0][r] / cpu[1][r]).collect();
    println!("cpu nchw / channels_last per round: median {:.3} {:?}", median(&cr), cr.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>());
    println!("wall nchw / channels_last per round: median {:.3} {:?}", median(&ratios), ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>());
}

//! Training: the SimCLR step on ResNet-18 CIFAR, one step of each system per
//! round (pretext through the trainer's own `Trainer::step`, PyTorch,
//! PyTorch channels_last), each on its own trajectory from the same weights.
use anyhow::Result;
use pretext_data::progress::Progress;
use serde_json::{json, Value};

use crate::stats::{Rounds, Summary};
use crate::{interval, prep, systems, Ctx};

/// The training peers, in scripts/bench_peers.py.
const TRAIN_PEERS: &[&str] = &["pytorch", "pytorch_channels_last"];

/// The step's hyper-parameters, the same for every system.
const STEP: systems::StepConfig = systems::StepConfig { lr: 0.03, momentum: 0.9, weight_decay: 5e-4, temperature: 0.5 };

/// One JSON row per system; pretext's first, with its ratios and loss differences to each peer.
pub(crate) fn run(ctx: &mut Ctx) -> Result<Vec<Value>> {
    let steps = ctx.p.train_steps;
    let t = prep::train_case(&ctx.dir, ctx.p.train_batch)?;
    eprintln!("[bench] SimCLR step, batch {} (x2 views): 1 warm-up + {steps} rounds", t.batch);
    let spec = json!({"training": {
        "weights": t.weights, "input": t.views, "hidden": t.hidden, "out": t.out,
        "lr": STEP.lr, "momentum": STEP.momentum, "weight_decay": STEP.weight_decay,
        "temperature": STEP.temperature,
    }});
    let mut peer = ctx.start_peers("training", spec)?;
    let mut session = systems::TrainSession::new(&t, STEP, 1 + steps as u64)?;
    let (mut times, mut losses) = (Vec::new(), Vec::new());
    let mut mine = Rounds::default();
    let mut theirs: Vec<(&str, Rounds, Vec<f64>)> = if peer.is_some() { TRAIN_PEERS.iter().map(|s| (*s, Rounds::default(), Vec::new())).collect() } else { Vec::new() };
    let bar = Progress::new("bench training", steps as u64 + 1);
    for round in 0..=steps {
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
    ctx.finish_peers(peer)?;
    let imgs = (2 * t.batch) as f64;
    let row = |system: &str, r: &Rounds, losses: &[f64]| {
        let s = Summary::of(&r.times_s);
        json!({"system": system, "images_per_step": imgs, "summary": s, "images_per_s": imgs / (s.p50_ms / 1e3),
               "round_p50_ms": r.p50_s.iter().map(|t| t * 1e3).collect::<Vec<_>>(), "losses": losses})
    };
    let mut training = vec![row("pretext_tch", &mine, &losses)];
    for (system, r, theirs_losses) in &theirs {
        let diff = pretext_runtime::compare::max_abs_diff(&losses, theirs_losses);
        training[0][format!("loss_max_abs_diff_vs_{system}")] = json!(diff);
        // images/s of pretext / that of the peer = the peer's step time / pretext's, round by round.
        training[0]["images_per_s_ratio_vs"][*system] = json!(interval(&r.p50_s, &mine.p50_s));
        training.push(row(system, r, theirs_losses));
    }
    Ok(training)
}

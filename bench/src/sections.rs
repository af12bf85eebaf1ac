//! The two smaller sections: the trainer's augmentation alone, and exact
//! k-NN search against faiss `IndexFlatIP` (one block each per round).
use anyhow::Result;
use pretext_data::augment::Resolution;
use pretext_data::progress::Progress;
use serde_json::{json, Value};

use crate::stats::{Rounds, Summary, Timing};
use crate::{interval, prep, systems, Ctx, PAUSE, WARMUP};

/// The SimCLR pipeline at CIFAR and ImageNet sizes, on 1 and --threads threads: one JSON row each.
pub(crate) fn augment(ctx: &Ctx) -> Result<Vec<Value>> {
    let mut augment = Vec::new();
    let t = Timing { warmup: 1, min_iters: 3, max_iters: 50, budget_s: ctx.p.timing.budget_s };
    for (label, res, size, side) in [("simclr cifar 32px", Resolution::Cifar, 32, 32), ("simclr imagenet 224px (from 256px)", Resolution::Imagenet, 224, 256)] {
        let n = if side > 64 { ctx.p.augment_images / 16 } else { ctx.p.augment_images };
        for threads in [1, ctx.a.threads] {
            let times = systems::time_augment(res, size, side, n, threads, &t)?;
            let s = Summary::of(&times);
            let ips = n as f64 / (s.p50_ms / 1e3);
            eprintln!("[bench] augment {label} {threads} thread(s): {ips:.0} img/s");
            augment.push(json!({"pipeline": label, "threads": threads, "images": n, "images_per_s": ips,
                "images_per_s_per_core": ips / threads as f64, "summary": s}));
        }
    }
    Ok(augment)
}

/// Top-20 over a random L2-normalised gallery: pretext's row, then faiss's when the peers run.
pub(crate) fn knn(ctx: &mut Ctx) -> Result<Vec<Value>> {
    let (n, k, dim) = (ctx.p.knn_n, 20, 512);
    let path = prep::knn_case(&ctx.dir, n, ctx.p.knn_queries, dim)?;
    let mut peer = ctx.start_peers("knn", json!({"knn": {"data": path, "k": k}}))?;
    let search = systems::KnnSearch::new(&path, k, ctx.a.threads)?;
    let nq = search.queries();
    let (mut mine, mut faiss, mut top1) = (Rounds::default(), Rounds::default(), Vec::new());
    let (rounds, block) = (ctx.p.rounds, ctx.p.block());
    let bar = Progress::new("bench k-NN", rounds as u64 + 1);
    for round in 0..=rounds {
        let t = if round == 0 { WARMUP } else { block };
        std::thread::sleep(PAUSE);
        let (tt, t1) = search.time(&t)?;
        top1 = t1;
        if let Some(pp) = &mut peer {
            std::thread::sleep(PAUSE);
            let ft = pp.time("faiss_flat_ip", "knn", 0, &t)?;
            if round > 0 {
                faiss.push(&ft);
            }
        }
        if round > 0 {
            mine.push(&tt);
        }
        bar.set_position(round as u64 + 1);
    }
    bar.finish_and_clear();
    ctx.finish_peers(peer)?;
    let s = Summary::of(&mine.times_s);
    let round_ms = |r: &Rounds| r.p50_s.iter().map(|t| t * 1e3).collect::<Vec<_>>();
    let mut row = json!({"system": "pretext_exact", "gallery": n, "dim": dim, "queries": nq, "k": k,
        "summary": s, "queries_per_s": nq as f64 / (s.p50_ms / 1e3), "round_p50_ms": round_ms(&mine)});
    if faiss.times_s.is_empty() {
        return Ok(vec![row]);
    }
    let fs = Summary::of(&faiss.times_s);
    let faiss_top1: Vec<u32> = serde_json::from_value(ctx.peers["knn"]["top1"].clone()).unwrap_or_default();
    let agree = top1.iter().zip(&faiss_top1).filter(|(a, b)| a == b).count() as f64 / nq.max(1) as f64;
    row["time_ratio_vs_faiss"] = json!(interval(&mine.p50_s, &faiss.p50_s));
    row["top1_agreement_with_faiss"] = json!(agree);
    Ok(vec![
        row,
        json!({"system": "faiss_flat_ip", "gallery": n, "dim": dim, "queries": nq, "k": k,
            "summary": fs, "queries_per_s": nq as f64 / (fs.p50_ms / 1e3), "round_p50_ms": round_ms(&faiss), "faiss": ctx.peers["knn"]["faiss"]}),
    ])
}

//! One training step of each method against the PyTorch reference written by
//! `scripts/gen_method_fixtures.py` (lightly's losses, the papers' pseudo-code):
//! same weights and views in, then the loss, the gradient norm of each
//! parameter group, the student after one SGD step, the EMA teacher and the
//! loss state (MoCo queue, DINO center) must agree. Where the fixture starts
//! the teacher away from the student, the EMA order (MoCo: before the keys;
//! BYOL, DINO: after the step) shows in the loss and the teacher; DINO runs at
//! epoch 0 (last layer frozen) and at epoch 2 (teacher temperature mid-warmup).
//! The step is `Trainer::step`, the one `pretext train` runs; the gradients it
//! leaves on the tensors are compared after it.
//! Barlow Twins and VICReg are checked against lightly's `BarlowTwinsLoss` /
//! `VICRegLoss` and projection heads.

use std::collections::HashMap;
use std::path::PathBuf;

use pretext_models::resnet::BlockKind;
use pretext_models::{Backbone, BackboneConfig, ParamKind, ResNetConfig, Stem, VitConfig};
use pretext_runtime::compare::tol;
use pretext_trainer::checkpoint;
use pretext_trainer::methods::{build, MethodConfig, StepCtx};
use pretext_trainer::optim::OptimizerKind;
use pretext_trainer::train::{StepSchedule, Trainer};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> checkpoint::Loaded {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.safetensors"));
    checkpoint::load(&p).unwrap_or_else(|e| panic!("{e} (run scripts/gen_method_fixtures.py)"))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn close(name: &str, got: &Tensor, want: &Tensor, rtol: f64, atol: f64) {
    assert_eq!(got.size(), want.size(), "{name}: shape");
    let g = got.to_kind(Kind::Double);
    let w = want.to_kind(Kind::Double);
    let excess = ((&g - &w).abs() - (w.abs() * rtol + atol)).max().double_value(&[]);
    assert!(excess <= 0.0, "{name}: max |diff| {:.3e} beyond tolerance", (&g - &w).abs().max().double_value(&[]));
}

fn group(name: &str) -> &'static str {
    for g in ["projection_head", "prediction_head", "decoder"] {
        if name.starts_with(g) {
            return g;
        }
    }
    "backbone"
}

fn check(fixture_name: &str) {
    let fx = fixture(fixture_name);
    let method = fixture_name.strip_suffix("_epoch2").or_else(|| fixture_name.strip_suffix("_vit")).or_else(|| fixture_name.strip_suffix("_softmax")).unwrap_or(fixture_name);
    let cfg: serde_json::Value = serde_json::from_str(fx.meta_str("config").unwrap()).unwrap();
    let u = |k: &str| cfg[k].as_i64().unwrap_or_else(|| panic!("config {k}"));
    let backbone = if method == "mae" || fixture_name.ends_with("_vit") {
        let mut v = VitConfig::vit_tiny_patch16_224().with_patch_and_size(u("patch"), 16).with_depth(1);
        v.embed_dim = u("embed_dim");
        v.num_heads = 2;
        BackboneConfig::Vit(v)
    } else {
        BackboneConfig::Resnet(ResNetConfig { block: BlockKind::Basic, layers: [1, 1, 1, 1], stem: Stem::Cifar, width: 4, num_classes: None, in_channels: 3 })
    };
    let bb = Backbone::new(&backbone);
    let mut mc = MethodConfig::defaults(method, bb.embed_dim()).unwrap();
    for (k, v) in cfg.as_object().unwrap() {
        if mc.spec().field(k).is_some() {
            mc.set(k, &v.to_string()).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
    }
    tch::manual_seed(0);
    let mut m = build(&mc, bb, Device::Cpu).unwrap();
    for (prefix, p) in m.students() {
        for (s, t) in p.all() {
            fx.copy_into(&format!("init.{prefix}{}", s.name), t).unwrap();
        }
    }
    if let Some(t) = m.teacher() {
        for (s, dst) in t.all() {
            let own = format!("init_teacher.{}", s.name);
            let key = if fx.tensors.contains_key(&own) { own } else { format!("init.{}", s.name) };
            fx.copy_into(&key, dst).unwrap();
        }
    }
    for (k, t) in m.state() {
        fx.copy_into(&format!("state_init.{k}"), &t).unwrap();
    }
    if let Some(noise) = fx.tensors.get("noise") {
        m.set_mask_noise(noise.shallow_clone());
    }
    if let Some(indices) = fx.tensors.get("indices") {
        m.set_batch_indices(indices.shallow_clone());
    }
    let lr: f64 = fx.meta_str("lr").unwrap().parse().unwrap();
    let wd: f64 = fx.meta_str("weight_decay").unwrap().parse().unwrap();
    let momentum = fx.meta_str("momentum").unwrap().parse().unwrap();
    let mut views = Vec::new();
    while let Some(v) = fx.tensors.get(&format!("view{}", views.len())) {
        views.push(v.shallow_clone());
    }
    let meta_u = |k: &str| -> u64 { fx.meta_str(k).unwrap().parse().unwrap() };
    let ctx = StepCtx { step: meta_u("step"), total_steps: meta_u("total_steps"), epoch: meta_u("epoch") };
    let frozen: Vec<String> = serde_json::from_str(fx.meta_str("frozen").unwrap()).unwrap();
    assert_eq!(m.frozen(&ctx), frozen, "{fixture_name}: tensors frozen at epoch {}", ctx.epoch);

    let mut trainer = Trainer::new(m, OptimizerKind::Sgd, momentum, StepSchedule::constant(lr, wd));
    let got = trainer.step(&views, &ctx).unwrap();
    let want: f64 = fx.meta_str("loss").unwrap().parse().unwrap();
    assert!(rel(got, want) < tol::F32_REL, "{fixture_name}: loss {got} vs PyTorch {want}");
    let (m, opt) = (&trainer.method, &trainer.opt);

    let mut groups: HashMap<&str, f64> = HashMap::new();
    let per_want: HashMap<String, f64> = serde_json::from_str(fx.meta_str("grad_norms_per_tensor").unwrap()).unwrap();
    let want_groups: HashMap<String, f64> = serde_json::from_str(fx.meta_str("grad_norms").unwrap()).unwrap();
    for s in &opt.slots {
        let g = s.param.grad();
        let n2 = g.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
        *groups.entry(group(&s.name)).or_default() += n2;
        let w = per_want[&s.name];
        // A gradient that is zero up to rounding in the reference (Barlow Twins' and VICReg's
        // last projector bias: both losses ignore a per-dimension shift) must be so here too.
        let zero = 1e-6 * want_groups[group(&s.name)];
        if w < zero {
            assert!(n2.sqrt() < zero, "{fixture_name}: grad norm of {}: {} vs PyTorch {w} (zero up to rounding)", s.name, n2.sqrt());
            continue;
        }
        assert!((n2.sqrt() - w).abs() <= tol::F32_REL_TENSOR * w + 1e-7, "{fixture_name}: grad norm of {}: {} vs {w}", s.name, n2.sqrt());
    }
    assert_eq!(groups.len(), want_groups.len(), "{fixture_name}: groups {groups:?} vs {want_groups:?}");
    for (g, w) in &want_groups {
        let got = groups[g.as_str()].sqrt();
        assert!(rel(got, *w) < tol::F32_REL, "{fixture_name}: grad norm of group {g}: {got} vs PyTorch {w}");
    }

    for (prefix, p) in m.students() {
        for (s, t) in p.all() {
            if s.kind == ParamKind::Counter {
                continue; // PyTorch's num_batches_tracked is unused with a fixed momentum
            }
            let k = format!("after.student.{prefix}{}", s.name);
            close(&format!("{fixture_name}: {k}"), t, &fx.tensors[&k], tol::F32_REL, tol::F32_OP as f64);
        }
    }
    if let Some(t) = m.teacher() {
        for (s, v) in t.all() {
            if s.kind == ParamKind::Counter {
                continue;
            }
            let k = format!("after.teacher.{}", s.name);
            close(&format!("{fixture_name}: {k}"), v, &fx.tensors[&k], tol::F32_REL, tol::F32_OP as f64);
        }
    }
    let state = m.state();
    let expected_state = fx.tensors.keys().filter(|k| k.starts_with("after.state.")).count();
    assert_eq!(state.len(), expected_state, "{fixture_name}: loss state parts");
    for (k, t) in state {
        let key = format!("after.state.{k}");
        close(&format!("{fixture_name}: {key}"), &t, &fx.tensors[&key], tol::F32_REL, 1e-6);
    }
}

#[test]
fn simclr_step_matches_pytorch() {
    check("simclr");
}
#[test]
fn byol_step_matches_pytorch() {
    check("byol");
}
#[test]
fn simsiam_step_matches_pytorch() {
    check("simsiam");
}
#[test]
fn moco_v2_step_matches_pytorch() {
    check("moco_v2");
}
#[test]
fn dino_step_matches_pytorch() {
    check("dino");
}
#[test]
fn dino_epoch2_step_matches_pytorch() {
    check("dino_epoch2");
}
#[test]
fn mae_step_matches_pytorch() {
    check("mae");
}
#[test]
fn barlow_twins_step_matches_pytorch() {
    check("barlow_twins");
}
#[test]
fn vicreg_step_matches_pytorch() {
    check("vicreg");
}
#[test]
fn dcl_step_matches_pytorch() {
    check("dcl");
}
#[test]
fn dclw_step_matches_pytorch() {
    check("dclw");
}
#[test]
fn moco_v3_step_matches_pytorch() {
    check("moco_v3");
}
#[test]
fn nnclr_step_matches_pytorch() {
    check("nnclr");
}
#[test]
fn fastsiam_step_matches_pytorch() {
    check("fastsiam");
}
#[test]
fn tico_step_matches_pytorch() {
    check("tico");
}
#[test]
fn swav_step_matches_pytorch() {
    check("swav");
}
#[test]
fn swav_epoch2_step_matches_pytorch() {
    check("swav_epoch2");
}
#[test]
fn moco_v3_vit_step_matches_pytorch() {
    check("moco_v3_vit");
}
#[test]
fn rotation_step_matches_pytorch() {
    check("rotation");
}
#[test]
fn jigsaw_step_matches_pytorch() {
    check("jigsaw");
}
/// The greedy maximal-Hamming set of 100 equals the generator's numpy implementation.
#[test]
fn jigsaw_permutations_match_the_generator() {
    let want = fixture("jigsaw_permutations").tensors["permutations"].shallow_clone();
    let got: Vec<i64> = pretext_trainer::methods::jigsaw::permutations(100, 0).iter().flatten().map(|&v| v as i64).collect();
    assert!(Tensor::from_slice(&got).reshape([100, 9]).equal(&want), "the permutation sets differ");
}
#[test]
fn npid_nce_step_matches_pytorch() {
    check("npid");
}
#[test]
fn npid_softmax_step_matches_pytorch() {
    check("npid_softmax");
}
#[test]
fn context_prediction_step_matches_pytorch() {
    check("context_prediction");
}
#[test]
fn counting_step_matches_pytorch() {
    check("counting");
}
#[test]
fn pirl_step_matches_pytorch() {
    check("pirl");
}
#[test]
fn context_encoder_step_matches_pytorch() {
    check("context_encoder");
}
#[test]
fn cpc_v2_step_matches_pytorch() {
    check("cpc_v2");
}
#[test]
fn colorization_step_matches_pytorch() {
    check("colorization");
}
/// `color::rgb_to_lab` against the fixture's float64 Lab of the same views (skimage's formulas, written in the generator).
#[test]
fn colorization_lab_matches_pytorch() {
    let fx = fixture("colorization");
    let got = pretext_trainer::color::rgb_to_lab(&fx.tensors["view0"]);
    close("colorization: Lab of view0", &got, &fx.tensors["lab"], 0.0, 2e-3);
}

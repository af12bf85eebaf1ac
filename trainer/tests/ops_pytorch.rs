//! The tch backend's new ops against PyTorch: forward outputs, gradients of
//! `(y * r).sum()` and BatchNorm running buffers from
//! `tests/fixtures/ops/ops.safetensors` (`scripts/gen_op_fixtures.py`).

use std::collections::HashMap;

use pretext_models::{ConvTransposeArgs, Ops, UpsampleMode};
use pretext_trainer::{Params, TchOps};
use tch::{Device, Kind, Tensor};

/// Absolute tolerance, scaled by max(1, max |reference|).
const TOL: f64 = pretext_runtime::compare::tol::F32_OP as f64;

fn fixtures() -> HashMap<String, Tensor> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/ops/ops.safetensors");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (run scripts/gen_op_fixtures.py)"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
            let t = match v.dtype() {
                safetensors::Dtype::F32 => Tensor::from_slice(&v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()),
                safetensors::Dtype::I64 => Tensor::from_slice(&v.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>()),
                d => panic!("{k}: dtype {d:?}"),
            };
            (k, t.reshape(&shape))
        })
        .collect()
}

/// Asserts shape equality and max |got - want| <= TOL * max(1, max |want|); NaN fails.
fn close(tag: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.size(), want.size(), "{tag}: shape");
    let err = f64::try_from((got.to_kind(Kind::Float) - want).abs().max()).unwrap();
    let scale = f64::try_from(want.abs().max()).unwrap().max(1.0);
    eprintln!("{tag}: max abs error {err:.2e} (reference max {scale:.2})");
    assert!(err <= TOL * scale, "{tag}: max abs error {err:.3e} above {:.1e}", TOL * scale);
}

struct Fx(HashMap<String, Tensor>);

impl Fx {
    fn get(&self, k: &str) -> Tensor {
        self.0.get(k).unwrap_or_else(|| panic!("fixture has no '{k}'")).copy()
    }
    /// A leaf input that collects its gradient.
    fn leaf(&self, k: &str) -> Tensor {
        self.get(k).set_requires_grad(true)
    }
    /// Checks y and, after backward of (y * r).sum(), the gradients of `grads`.
    fn check(&self, case: &str, y: &Tensor, grads: &[(&str, &Tensor)]) {
        close(&format!("{case}.y"), y, &self.get(&format!("{case}.y")));
        if grads.is_empty() {
            return;
        }
        (y * self.get(&format!("{case}.r"))).sum(Kind::Float).backward();
        for (k, t) in grads {
            close(&format!("{case}.grad_{k}"), &t.grad(), &self.get(&format!("{case}.grad_{k}")));
        }
    }
}

fn with_ops<R>(train: bool, f: impl FnOnce(&mut TchOps) -> R) -> R {
    let p = Params::new(vec![], Device::Cpu);
    let mut o = TchOps::new(&p, train);
    f(&mut o)
}

#[test]
fn l2_normalize_and_weight_norm_match_pytorch() {
    let fx = Fx(fixtures());
    for (case, eps) in [("l2_2d", 1e-12), ("l2_3d", 1e-6)] {
        let x = fx.leaf(&format!("{case}.x"));
        let y = with_ops(true, |o| o.l2_normalize("n", &x, eps));
        fx.check(case, &y, &[("x", &x)]);
    }
    // DINO's last layer: linear(x, l2_normalize(v)), g fixed to 1.
    let (x, w) = (fx.leaf("wnorm.x"), fx.leaf("wnorm.w"));
    let y = with_ops(true, |o| {
        let wn = o.l2_normalize("last_layer.weight_norm", &w, 1e-12);
        o.linear("last_layer", &x, &wn, None)
    });
    fx.check("wnorm", &y, &[("x", &x), ("w", &w)]);
}

#[test]
fn batch_norm_plain_trains_and_updates_buffers_like_pytorch() {
    let fx = Fx(fixtures());
    for case in ["bn_plain_2d", "bn_plain_4d"] {
        let x = fx.leaf(&format!("{case}.x"));
        let (m, v) = (fx.get(&format!("{case}.running_mean")), fx.get(&format!("{case}.running_var")));
        let y_eval = with_ops(false, |o| o.batch_norm_plain("bn", &x, &m, &v, 0.1, 1e-5));
        close(&format!("{case}.y_eval"), &y_eval, &fx.get(&format!("{case}.y_eval")));
        close(&format!("{case}: eval leaves running_mean"), &m, &fx.get(&format!("{case}.running_mean")));
        let y = with_ops(true, |o| o.batch_norm_plain("bn", &x, &m, &v, 0.1, 1e-5));
        close(&format!("{case}.mean_after"), &m, &fx.get(&format!("{case}.mean_after")));
        close(&format!("{case}.var_after"), &v, &fx.get(&format!("{case}.var_after")));
        fx.check(case, &y, &[("x", &x)]);
    }
}

#[test]
fn batch_norm_batch_stats_uses_the_batch_in_both_modes() {
    let fx = Fx(fixtures());
    for train in [false, true] {
        let (x, w, b) = (fx.leaf("bn_batch_2d.x"), fx.leaf("bn_batch_2d.w"), fx.leaf("bn_batch_2d.b"));
        let y = with_ops(train, |o| o.batch_norm_batch_stats("bn", &x, Some(&w), Some(&b), 1e-5));
        fx.check("bn_batch_2d", &y, &[("x", &x), ("w", &w), ("b", &b)]);
        let x = fx.leaf("bn_batch_4d.x");
        let y = with_ops(train, |o| o.batch_norm_batch_stats("bn", &x, None, None, 1e-5));
        fx.check("bn_batch_4d", &y, &[("x", &x)]);
    }
}

#[test]
fn gather_tokens_and_masked_blend_match_pytorch() {
    let fx = Fx(fixtures());
    let x = fx.leaf("gather.x");
    let ids = fx.get("gather.ids");
    assert_eq!(ids.kind(), Kind::Int64);
    let y = with_ops(true, |o| o.gather_tokens("keep", &x, &ids));
    fx.check("gather", &y, &[("x", &x)]);
    let (mask, x, token) = (fx.get("blend.mask"), fx.leaf("blend.x"), fx.leaf("blend.token"));
    let y = with_ops(true, |o| o.masked_blend("mask_token", &mask, &x, &token));
    fx.check("blend", &y, &[("x", &x), ("token", &token)]);
}

#[test]
fn upsample_matches_interpolate() {
    let fx = Fx(fixtures());
    for (case, s, mode) in [
        ("up_nearest_2", 2, UpsampleMode::Nearest),
        ("up_nearest_3", 3, UpsampleMode::Nearest),
        ("up_bilinear_2", 2, UpsampleMode::Bilinear),
        ("up_bilinear_3", 3, UpsampleMode::Bilinear),
    ] {
        let x = fx.leaf(&format!("{case}.x"));
        let y = with_ops(true, |o| o.upsample("up", &x, s, mode));
        fx.check(case, &y, &[("x", &x)]);
    }
}

#[test]
fn conv_transpose2d_matches_pytorch() {
    let fx = Fx(fixtures());
    for case in ["convt_s2", "convt_g2", "convt_k4"] {
        let a: Vec<i64> = Vec::try_from(fx.get(&format!("{case}.args"))).unwrap();
        let args = ConvTransposeArgs { stride: a[0], padding: a[1], output_padding: a[2], dilation: a[3], groups: a[4] };
        let (x, w) = (fx.leaf(&format!("{case}.x")), fx.leaf(&format!("{case}.w")));
        let b = fx.0.contains_key(&format!("{case}.b")).then(|| fx.leaf(&format!("{case}.b")));
        let y = with_ops(true, |o| o.conv_transpose2d("deconv", &x, &w, b.as_ref(), args));
        let mut grads = vec![("x", &x), ("w", &w)];
        grads.extend(b.as_ref().map(|b| ("b", b)));
        fx.check(case, &y, &grads);
    }
}

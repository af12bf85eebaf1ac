//! Self-supervised losses as pure functions of tensors.
//!
//! Each follows the formulation of lightly's loss modules (which quote the
//! papers), so the step-equivalence fixtures can use them as the reference.

use tch::{Kind, Tensor};

/// Rows scaled to unit L2 norm (`F.normalize(x, dim=1)`, eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let n = x.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true).clamp_min(1e-12);
    x / n
}

/// NT-Xent (Chen et al. 2020, SimCLR eq. 1): for `2B` projections, each row's
/// positive is its other view, the `2B - 2` other rows are negatives; cross
/// entropy averaged over all `2B` rows.
///
/// # Shapes
/// z0, z1: (B, D) -> scalar
pub fn nt_xent(z0: &Tensor, z1: &Tensor, temperature: f64) -> Tensor {
    let b = z0.size()[0];
    let z = l2_normalize(&Tensor::cat(&[z0, z1], 0));
    let sim = z.matmul(&z.tr()) / temperature;
    let eye = Tensor::eye(2 * b, (Kind::Bool, z.device()));
    let sim = sim.masked_fill(&eye, f64::NEG_INFINITY);
    let idx = Tensor::arange(2 * b, (Kind::Int64, z.device()));
    let target = (idx + b).remainder(2 * b);
    sim.cross_entropy_for_logits(&target)
}

/// InfoNCE with a memory bank (MoCo, He et al. 2020, alg. 1): the positive is
/// the key of the same image, negatives are the queued keys.
///
/// # Shapes
/// q, k: (B, D); queue: (K, D) -> scalar
pub fn info_nce_queue(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> Tensor {
    let q = l2_normalize(q);
    let k = l2_normalize(k);
    let pos = (&q * &k).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    let neg = q.matmul(&l2_normalize(queue).tr());
    let logits = Tensor::cat(&[pos, neg], 1) / temperature;
    let target = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
    logits.cross_entropy_for_logits(&target)
}

/// `-cos(p, z)` averaged over the batch (BYOL eq. 2 up to the affine `2 - 2cos`,
/// SimSiam eq. 1). The caller detaches `z` where the method stops gradients.
///
/// # Shapes
/// p, z: (B, D) -> scalar
pub fn negative_cosine(p: &Tensor, z: &Tensor) -> Tensor {
    let pn = p.norm_scalaropt_dim(2.0, [1i64].as_slice(), false).clamp_min(1e-8);
    let zn = z.norm_scalaropt_dim(2.0, [1i64].as_slice(), false).clamp_min(1e-8);
    let cos = (p * z).sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / (pn * zn);
    -cos.mean(Kind::Float)
}

/// Symmetrised predictor loss of BYOL/SimSiam: `(D(p0, z1) + D(p1, z0)) / 2`.
pub fn symmetric_negative_cosine(p0: &Tensor, z1: &Tensor, p1: &Tensor, z0: &Tensor) -> Tensor {
    (negative_cosine(p0, &z1.detach()) + negative_cosine(p1, &z0.detach())) * 0.5
}

/// DINO (Caron et al. 2021, alg. 1): cross entropy between the centered,
/// sharpened teacher distribution of each global view and the student's
/// distribution of every *other* view, averaged over pairs.
///
/// # Shapes
/// teacher: list of (B, K) (global views); student: list of (B, K) (all views,
/// globals first); center: (1, K) -> scalar
pub fn dino(teacher: &[Tensor], student: &[Tensor], center: &Tensor, teacher_temp: f64, student_temp: f64) -> Tensor {
    let t: Vec<Tensor> = teacher.iter().map(|t| ((t - center) / teacher_temp).softmax(-1, Kind::Float).detach()).collect();
    let s: Vec<Tensor> = student.iter().map(|s| (s / student_temp).log_softmax(-1, Kind::Float)).collect();
    let mut total = Tensor::zeros([], (Kind::Float, center.device()));
    let mut n = 0;
    for (i, ti) in t.iter().enumerate() {
        for (j, sj) in s.iter().enumerate() {
            if i == j {
                continue;
            }
            let ce = (-(ti * sj)).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float).mean(Kind::Float);
            total += ce;
            n += 1;
        }
    }
    total / n as f64
}

/// DINO's center update: `c <- m c + (1 - m) mean(teacher outputs)`.
///
/// # Shapes
/// teacher: list of (B, K); center: (1, K) -> (1, K)
pub fn dino_center(teacher: &[Tensor], center: &Tensor, momentum: f64) -> Tensor {
    let all = Tensor::cat(teacher, 0).detach();
    let batch = all.mean_dim([0i64].as_slice(), true, Kind::Float);
    center * momentum + batch * (1.0 - momentum)
}

/// MAE (He et al. 2021) reconstruction loss: per-patch MSE against the
/// normalized target pixels, averaged over the masked patches only.
///
/// # Shapes
/// pred, target: (B, N, P); mask: (B, N), 1 = masked -> scalar
pub fn mae(pred: &Tensor, target: &Tensor, mask: &Tensor, norm_pix: bool) -> Tensor {
    let target = if norm_pix {
        let mean = target.mean_dim([-1i64].as_slice(), true, Kind::Float);
        let var = target.var_dim([-1i64].as_slice(), true, true);
        (target - mean) / (var + 1e-6).sqrt()
    } else {
        target.shallow_clone()
    };
    let per_patch = (pred - target).square().mean_dim([-1i64].as_slice(), false, Kind::Float);
    (per_patch * mask).sum(Kind::Float) / mask.sum(Kind::Float)
}

/// Each column standardised over the batch: `(z - mean) / sqrt(var + 1e-5)`,
/// biased variance (`F.batch_norm(z, None, None, training=True)`, as lightly).
fn standardize_columns(z: &Tensor) -> Tensor {
    let mean = z.mean_dim([0i64].as_slice(), true, Kind::Float);
    let var = z.var_dim([0i64].as_slice(), false, true);
    (z - mean) / (var + 1e-5).sqrt()
}

/// The `D x D` matrix `x` with its diagonal set to zero.
fn off_diagonal(x: &Tensor) -> Tensor {
    let d = x.size()[0];
    x * (1.0 - Tensor::eye(d, (Kind::Float, x.device())))
}

/// Barlow Twins (Zbontar et al. 2021, alg. 1; lightly's `BarlowTwinsLoss`):
/// the cross-correlation `C = z_a^T z_b / N` of the batch-standardised
/// projections is pushed to the identity,
/// `sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`.
///
/// # Shapes
/// z_a, z_b: (N, D) -> scalar
pub fn barlow_twins(z_a: &Tensor, z_b: &Tensor, lambda: f64) -> Tensor {
    let n = z_a.size()[0];
    let c = standardize_columns(z_a).tr().matmul(&standardize_columns(z_b)) / n as f64;
    let on_diag = (c.diagonal(0, 0, 1) - 1.0).square().sum(Kind::Float);
    on_diag + off_diagonal(&c).square().sum(Kind::Float) * lambda
}

/// VICReg (Bardes et al. 2022, eqs. 1-6; lightly's `VICRegLoss`):
/// `lambda * mse(z_a, z_b) + mu * (v(z_a) + v(z_b)) / 2 + nu * (c(z_a) + c(z_b))`,
/// with the hinge on the per-dimension std `v(z) = mean_j relu(1 - sqrt(var_j + eps))`
/// (unbiased variance) and the covariance term
/// `c(z) = sum_{i != j} Cov(z)_ij^2 / D` (covariance with `N - 1`).
///
/// # Shapes
/// z_a, z_b: (N, D), N > 1 -> scalar
pub fn vicreg(z_a: &Tensor, z_b: &Tensor, lambda: f64, mu: f64, nu: f64, eps: f64) -> Tensor {
    let invariance = (z_a - z_b).square().mean(Kind::Float);
    let variance = |z: &Tensor| (-(z.var_dim([0i64].as_slice(), true, false) + eps).sqrt() + 1.0).relu().mean(Kind::Float);
    let covariance = |z: &Tensor| {
        let (n, d) = (z.size()[0], z.size()[1]);
        let zc = z - z.mean_dim([0i64].as_slice(), true, Kind::Float);
        let cov = zc.tr().matmul(&zc) / (n - 1) as f64;
        off_diagonal(&cov).square().sum(Kind::Float) / d as f64
    };
    invariance * lambda + (variance(z_a) + variance(z_b)) * (0.5 * mu) + (covariance(z_a) + covariance(z_b)) * nu
}

/// Decoupled contrastive loss (Yeh et al. 2022, eq. 6; lightly's `DCLLoss`):
/// NT-Xent with the positive pair removed from the denominator,
/// `-w_i s_ii(0,1) + logsumexp_{j != i}([s_ij(0,0), s_ij(0,1)])` over
/// `s = z . z' / temperature` of the L2-normalised projections, averaged over
/// the batch and symmetrised over the two views. With `sigma` (DCLW) the
/// positive term is weighted by `w = 2 - B softmax_i(z0_i . z1_i / sigma)`
/// (lightly's `negative_mises_fisher_weights`, no gradient through `w`).
///
/// # Shapes
/// z0, z1: (B, D) -> scalar
pub fn dcl(z0: &Tensor, z1: &Tensor, temperature: f64, sigma: Option<f64>) -> Tensor {
    let (z0, z1) = (l2_normalize(z0), l2_normalize(z1));
    let b = z0.size()[0];
    let eye = Tensor::eye(b, (Kind::Bool, z0.device()));
    let one_side = |a: &Tensor, o: &Tensor| {
        let s_aa = a.matmul(&a.tr()) / temperature;
        let s_ao = a.matmul(&o.tr()) / temperature;
        let mut positive = -s_ao.diagonal(0, 0, 1);
        if let Some(sigma) = sigma {
            let sim = (a * o).sum_dim_intlist([1i64].as_slice(), false, Kind::Float).detach() / sigma;
            positive *= -(sim.softmax(0, Kind::Float) * b as f64) + 2.0;
        }
        let negatives = Tensor::cat(&[s_aa.masked_fill(&eye, f64::NEG_INFINITY), s_ao.masked_fill(&eye, f64::NEG_INFINITY)], 1);
        (positive + negatives.logsumexp([1i64].as_slice(), false)).mean(Kind::Float)
    };
    (one_side(&z0, &z1) + one_side(&z1, &z0)) * 0.5
}

/// MoCo v3's `contrastive_loss` summed over both directions (Chen et al.
/// 2021, alg. 1): `ctr(q1, k2) + ctr(q2, k1)`, where `ctr(q, k)` is the cross
/// entropy of `q_i . k_j / T` (L2-normalised) with target `j = i`, times `2T`.
///
/// # Shapes
/// q1, q2, k1, k2: (B, D) -> scalar
pub fn moco_v3(q1: &Tensor, q2: &Tensor, k1: &Tensor, k2: &Tensor, temperature: f64) -> Tensor {
    let ctr = |q: &Tensor, k: &Tensor| {
        let logits = l2_normalize(q).matmul(&l2_normalize(&k.detach()).tr()) / temperature;
        logits.cross_entropy_for_logits(&Tensor::arange(q.size()[0], (Kind::Int64, q.device()))) * (2.0 * temperature)
    };
    ctr(q1, k2) + ctr(q2, k1)
}

/// FastSiam (Pototzky et al. 2022; lightly's example): each view's prediction
/// against the mean of the other views' detached projections,
/// `sum_i -cos(p_i, mean_{j != i} z_j) / n`.
///
/// # Shapes
/// ps, zs: n x (B, D) -> scalar
pub fn fastsiam(ps: &[Tensor], zs: &[Tensor]) -> Tensor {
    let n = ps.len();
    let z = Tensor::stack(zs, 0).detach();
    let total = z.sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    let mut loss = Tensor::zeros([], (Kind::Float, z.device()));
    for (i, p) in ps.iter().enumerate() {
        let others = (&total - z.get(i as i64)) / (n - 1) as f64;
        loss += negative_cosine(p, &others) / n as f64;
    }
    loss
}

/// TiCo (Zhu et al. 2022; lightly's `TiCoLoss`): with `z_a`, `z_b`
/// L2-normalised and the running covariance first updated with this batch,
/// `C' = beta C + (1 - beta) z_a^T z_a / B` (no gradient), the loss is
/// `1 - mean_i(z_a_i . z_b_i) + rho * mean_i(z_a_i^T C' z_a_i)`. Returns the
/// loss and `C'`, the state for the next step.
///
/// # Shapes
/// z_a, z_b: (B, D); c: (D, D) -> (scalar, (D, D))
pub fn tico(z_a: &Tensor, z_b: &Tensor, c: &Tensor, beta: f64, rho: f64) -> (Tensor, Tensor) {
    let (a, b) = (l2_normalize(z_a), l2_normalize(z_b));
    let batch = a.tr().matmul(&a).detach() / a.size()[0] as f64;
    let c = (c * beta + batch * (1.0 - beta)).detach();
    let sum1 = |t: Tensor| t.sum_dim_intlist([1i64].as_slice(), false, Kind::Float).mean(Kind::Float);
    let invariance = -sum1(&a * &b) + 1.0;
    let contrast = sum1(a.matmul(&c) * &a) * rho;
    (invariance + contrast, c)
}

/// Sinkhorn-Knopp codes of prototype scores (SwAV alg. 1, lightly's
/// `sinkhorn`): `Q = exp(scores / epsilon)^T` normalised to sum 1, then
/// `iterations` times rows to `1/K` and columns to `1/B`; returns `B Q^T`,
/// each row a distribution over the prototypes.
///
/// # Shapes
/// scores: (B, K) -> (B, K)
pub fn sinkhorn(scores: &Tensor, iterations: u64, epsilon: f64) -> Tensor {
    tch::no_grad(|| {
        let mut q = (scores.detach() / epsilon).exp().tr();
        q = &q / q.sum(Kind::Float);
        let b = q.size()[1] as f64;
        for _ in 0..iterations {
            q = &q / q.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
            q = &q / q.sum_dim_intlist([0i64].as_slice(), true, Kind::Float) / b;
        }
        (q * b).tr()
    })
}

/// SwAV's swapped prediction (Caron et al. 2020, eq. 1; lightly's `SwaVLoss`):
/// for each global crop `i`, codes `q_i` by [`sinkhorn`] over its scores (with
/// its queue's scores appended, the codes of the batch rows kept), then the
/// cross entropy `-sum_k q_ik log softmax(s_v / T)_k` from every other crop
/// `v`, averaged over the `n_crops - 1` crops and the global crops.
///
/// # Shapes
/// high: 2 x (B, K); low: n_local x (B', K); queue: 2 x (Q, K) -> scalar
pub fn swav(high: &[Tensor], low: &[Tensor], queue: Option<&[Tensor]>, temperature: f64, iterations: u64, epsilon: f64) -> Tensor {
    let n_crops = (high.len() + low.len()) as f64;
    let ce = |s: &Tensor, q: &Tensor| -(q * (s / temperature).log_softmax(1, Kind::Float)).sum_dim_intlist([1i64].as_slice(), false, Kind::Float).mean(Kind::Float);
    let mut loss = Tensor::zeros([], (Kind::Float, high[0].device()));
    for (i, hi) in high.iter().enumerate() {
        let b = hi.size()[0];
        let q = match queue {
            Some(queue) => sinkhorn(&Tensor::cat(&[hi.detach(), queue[i].detach()], 0), iterations, epsilon).narrow(0, 0, b),
            None => sinkhorn(hi, iterations, epsilon),
        };
        let mut sub = Tensor::zeros([], (Kind::Float, hi.device()));
        for s in high.iter().enumerate().filter(|(v, _)| *v != i).map(|(_, s)| s).chain(low) {
            sub += ce(s, &q);
        }
        loss += sub / (n_crops - 1.0);
    }
    loss / high.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn f(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    /// The textbook definition, one row at a time.
    fn nt_xent_naive(z0: &Tensor, z1: &Tensor, t: f64) -> f64 {
        let z = l2_normalize(&Tensor::cat(&[z0, z1], 0));
        let n = z.size()[0];
        let b = n / 2;
        let mut total = 0.0;
        for i in 0..n {
            let pos = (i + b) % n;
            let zi = z.get(i);
            let mut denom = 0.0;
            for k in 0..n {
                if k != i {
                    denom += (f(&(&zi * z.get(k)).sum(Kind::Float)) / t).exp();
                }
            }
            let num = (f(&(&zi * z.get(pos)).sum(Kind::Float)) / t).exp();
            total += -(num / denom).ln();
        }
        total / n as f64
    }

    #[test]
    fn nt_xent_matches_naive_loop() {
        tch::manual_seed(0);
        let z0 = Tensor::randn([6, 5], (Kind::Float, Device::Cpu));
        let z1 = Tensor::randn([6, 5], (Kind::Float, Device::Cpu));
        for t in [0.1, 0.5, 1.0] {
            let a = f(&nt_xent(&z0, &z1, t));
            let b = nt_xent_naive(&z0, &z1, t);
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "t={t}: {a} vs {b}");
        }
    }

    /// Identical views of mutually orthogonal vectors: positive similarity 1,
    /// negatives 0 except the copies; loss = -ln(e^{1/t} / (e^{1/t} + 2B-2)).
    #[test]
    fn nt_xent_closed_form_for_identical_orthogonal_pairs() {
        let b = 4;
        let z = Tensor::eye(b, (Kind::Float, Device::Cpu));
        let t = 0.5;
        let want = -((1.0f64 / t).exp() / ((1.0f64 / t).exp() + (2 * b - 2) as f64)).ln();
        let got = f(&nt_xent(&z, &z, t));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn negative_cosine_at_known_points() {
        let p = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).reshape([2, 2]);
        assert!((f(&negative_cosine(&p, &p)) + 1.0).abs() < 1e-6);
        assert!((f(&negative_cosine(&p, &(-&p))) - 1.0).abs() < 1e-6);
        let q = Tensor::from_slice(&[0.0f32, 2.0, 3.0, 0.0]).reshape([2, 2]);
        assert!(f(&negative_cosine(&p, &q)).abs() < 1e-6);
        // Scale invariance and symmetry of the symmetrised loss.
        let r = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0]).reshape([2, 2]);
        let a = f(&symmetric_negative_cosine(&p, &r, &r, &p));
        assert!((a + 0.5f64.sqrt()).abs() < 1e-6, "{a}");
        // Gradient flows only into the predictor side.
        let pg = p.set_requires_grad(true);
        let zg = r.set_requires_grad(true);
        symmetric_negative_cosine(&pg, &zg, &pg, &zg).backward();
        assert!(!zg.grad().defined(), "the target side must be detached");
        assert!(pg.grad().defined());
    }

    #[test]
    fn dino_centering_and_sharpening() {
        // A teacher equal to the center gives uniform targets: loss = mean CE vs uniform.
        let k = 4;
        let center = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0]).reshape([1, k]);
        let t = center.repeat([3, 1]);
        let s = Tensor::zeros([3, k], (Kind::Float, Device::Cpu));
        let l = f(&dino(&[t.shallow_clone(), t.shallow_clone()], &[s.shallow_clone(), s.shallow_clone(), s], &center, 0.04, 0.1));
        assert!((l - (k as f64).ln()).abs() < 1e-5, "{l}");
        // Sharpening: a low teacher temperature makes the target one-hot on the argmax.
        let t2 = Tensor::from_slice(&[0.0f32, 0.1, 0.0, 0.0]).reshape([1, k]);
        let s2 = Tensor::from_slice(&[0.0f32, 3.0, 0.0, 0.0]).reshape([1, k]);
        let zero = Tensor::zeros([1, k], (Kind::Float, Device::Cpu));
        let sharp = f(&dino(&[t2.shallow_clone(), t2.shallow_clone()], &[s2.shallow_clone(), s2.shallow_clone()], &zero, 0.001, 1.0));
        let want = -f(&s2.log_softmax(-1, Kind::Float).get(0).get(1));
        assert!((sharp - want).abs() < 1e-5, "{sharp} vs {want}");
        // Center EMA.
        let c = dino_center(&[Tensor::ones([2, k], (Kind::Float, Device::Cpu))], &zero, 0.9);
        assert!((f(&c.mean(Kind::Float)) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn mae_loss_only_counts_masked_patches() {
        let target = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 5.0, 5.0, 6.0, 9.0]).reshape([1, 2, 4]);
        let pred = Tensor::zeros([1, 2, 4], (Kind::Float, Device::Cpu));
        let mask = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 2]);
        let l = f(&mae(&pred, &target, &mask, false));
        assert!((l - 3.5).abs() < 1e-6, "{l}"); // (0+1+4+9)/4
        // Changing the unmasked patch's prediction leaves the loss unchanged.
        let pred2 = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0, 7.0, -3.0, 1.0, 2.0]).reshape([1, 2, 4]);
        assert_eq!(f(&mae(&pred2, &target, &mask, false)), l);
        // Normalized targets: a prediction equal to the standardized patch has zero loss.
        let row = target.get(0).get(0);
        let std = (row.var(true) + 1e-6).sqrt();
        let z = (&row - row.mean(Kind::Float)) / std;
        let pred3 = Tensor::cat(&[z.reshape([1, 1, 4]), Tensor::zeros([1, 1, 4], (Kind::Float, Device::Cpu))], 1);
        assert!(f(&mae(&pred3, &target, &mask, true)).abs() < 1e-10);
    }

    /// Barlow Twins from its definition, one matrix entry at a time.
    fn barlow_twins_naive(a: &Tensor, b: &Tensor, lambda: f64) -> f64 {
        let (n, d) = (a.size()[0], a.size()[1]);
        let col = |z: &Tensor, j: i64| -> Vec<f64> {
            let v: Vec<f64> = (0..n).map(|i| z.double_value(&[i, j])).collect();
            let m = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
            v.iter().map(|x| (x - m) / (var + 1e-5).sqrt()).collect()
        };
        let mut loss = 0.0;
        for i in 0..d {
            for j in 0..d {
                let c = col(a, i).iter().zip(col(b, j)).map(|(x, y)| x * y).sum::<f64>() / n as f64;
                loss += if i == j { (1.0 - c).powi(2) } else { lambda * c * c };
            }
        }
        loss
    }

    #[test]
    fn barlow_twins_matches_naive_loop_and_is_symmetric() {
        tch::manual_seed(0);
        let a = Tensor::randn([7, 5], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([7, 5], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        for lambda in [5e-3, 0.5] {
            let got = f(&barlow_twins(&a, &b, lambda));
            let want = barlow_twins_naive(&a, &b, lambda);
            assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "lambda {lambda}: {got} vs {want}");
            // C(b, a) = C(a, b)^T: same loss.
            assert!((f(&barlow_twins(&b, &a, lambda)) - got).abs() < 1e-5 * got.abs().max(1.0));
        }
    }

    #[test]
    fn barlow_twins_closed_forms() {
        // Decorrelated, identical views: columns +-1 in orthogonal sign patterns
        // (rows of a 4x4 Hadamard matrix without the constant one) give C = I: loss 0
        // (up to the 1e-5 in the standardisation: C_ii = 1 / (1 + 1e-5)).
        let h = Tensor::from_slice(&[1.0f32, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0]).reshape([4, 3]);
        let l = f(&barlow_twins(&h, &h, 5e-3));
        assert!(l.abs() < 1e-9, "{l}");
        // Anti-correlated views: C = -I, loss = D * (1 - (-1))^2 = 4 D.
        let l = f(&barlow_twins(&h, &(-&h), 5e-3));
        assert!((l - 12.0).abs() < 1e-3, "{l}");
        // Identical columns (total redundancy) in both views: C = all ones,
        // loss = lambda * (D^2 - D).
        let z = Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0]).reshape([4, 1]).repeat([1, 3]);
        let l = f(&barlow_twins(&z, &z, 0.1));
        assert!((l - 0.6).abs() < 1e-4, "{l}");
    }

    /// VICReg from its definition with scalar loops.
    fn vicreg_naive(a: &Tensor, b: &Tensor, lambda: f64, mu: f64, nu: f64, eps: f64) -> f64 {
        let (n, d) = (a.size()[0], a.size()[1]);
        let at = |z: &Tensor, i: i64, j: i64| z.double_value(&[i, j]);
        let mut inv = 0.0;
        for i in 0..n {
            for j in 0..d {
                inv += (at(a, i, j) - at(b, i, j)).powi(2);
            }
        }
        inv /= (n * d) as f64;
        let stats = |z: &Tensor| {
            let mean: Vec<f64> = (0..d).map(|j| (0..n).map(|i| at(z, i, j)).sum::<f64>() / n as f64).collect();
            let cov = |p: i64, q: i64| (0..n).map(|i| (at(z, i, p) - mean[p as usize]) * (at(z, i, q) - mean[q as usize])).sum::<f64>() / (n - 1) as f64;
            let var = (0..d).map(|j| (1.0 - (cov(j, j) + eps).sqrt()).max(0.0)).sum::<f64>() / d as f64;
            let mut c = 0.0;
            for p in 0..d {
                for q in 0..d {
                    if p != q {
                        c += cov(p, q).powi(2);
                    }
                }
            }
            (var, c / d as f64)
        };
        let (va, ca) = stats(a);
        let (vb, cb) = stats(b);
        lambda * inv + mu * (va + vb) / 2.0 + nu * (ca + cb)
    }

    #[test]
    fn vicreg_matches_naive_loop_and_is_symmetric() {
        tch::manual_seed(1);
        // Small scale so that the variance hinge is active for some dimensions.
        let a = Tensor::randn([6, 4], (Kind::Float, Device::Cpu)) * Tensor::from_slice(&[0.3f32, 2.0, 0.8, 1.5]);
        let b = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
        let got = f(&vicreg(&a, &b, 25.0, 25.0, 1.0, 1e-4));
        let want = vicreg_naive(&a, &b, 25.0, 25.0, 1.0, 1e-4);
        assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "{got} vs {want}");
        assert!((f(&vicreg(&b, &a, 25.0, 25.0, 1.0, 1e-4)) - got).abs() < 1e-5 * got.abs().max(1.0));
        // Each term alone.
        for (l, m, n) in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)] {
            let got = f(&vicreg(&a, &b, l, m, n, 1e-4));
            let want = vicreg_naive(&a, &b, l, m, n, 1e-4);
            assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "({l}, {m}, {n}): {got} vs {want}");
        }
    }

    #[test]
    fn vicreg_closed_forms() {
        // Collapsed, identical embeddings: no invariance or covariance cost, the
        // variance hinge is at its maximum 1 - sqrt(eps) per dimension: mu * (1 - 0.01).
        let z = Tensor::ones([5, 3], (Kind::Float, Device::Cpu));
        let l = f(&vicreg(&z, &z, 25.0, 25.0, 1.0, 1e-4));
        assert!((l - 25.0 * 0.99).abs() < 1e-5, "{l}");
        // Identical, decorrelated, spread embeddings (+-2 in orthogonal sign patterns,
        // unbiased var 16/3 > 1): every term is 0.
        let h = Tensor::from_slice(&[1.0f32, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0]).reshape([4, 3]) * 2.0;
        let l = f(&vicreg(&h, &h, 25.0, 25.0, 1.0, 1e-4));
        assert!(l.abs() < 1e-9, "{l}");
        // Invariance alone is the MSE: views apart by 0.5 everywhere give lambda * 0.25.
        let l = f(&vicreg(&h, &(&h + 0.5), 25.0, 25.0, 1.0, 1e-4));
        assert!((l - 25.0 * 0.25).abs() < 1e-5, "{l}");
    }
}

/// DCL/DCLW, MoCo v3, FastSiam, TiCo, SwAV against their definitions and closed forms
/// (the step-equivalence fixtures compare them with lightly and the moco-v3 repo).
#[cfg(test)]
mod joint_embedding_tests {
    use super::*;
    use tch::Device;

    fn f(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    /// Eq. 6 of the DCL paper one row at a time, both directions; `sigma`: DCLW's weight.
    fn dcl_naive(z0: &Tensor, z1: &Tensor, t: f64, sigma: Option<f64>) -> f64 {
        let (a, b) = (l2_normalize(z0), l2_normalize(z1));
        let n = a.size()[0];
        let dot = |x: &Tensor, i: i64, y: &Tensor, j: i64| f(&(x.get(i) * y.get(j)).sum(Kind::Float));
        let side = |x: &Tensor, y: &Tensor| {
            let pos: Vec<f64> = (0..n).map(|i| dot(x, i, y, i)).collect();
            let w: Vec<f64> = match sigma {
                Some(s) => {
                    let e: Vec<f64> = pos.iter().map(|p| (p / s).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    e.iter().map(|v| 2.0 - n as f64 * v / sum).collect()
                }
                None => vec![1.0; n as usize],
            };
            let mut total = 0.0;
            for i in 0..n {
                let neg: f64 = (0..n).filter(|&j| j != i).map(|j| (dot(x, i, x, j) / t).exp() + (dot(x, i, y, j) / t).exp()).sum();
                total += -w[i as usize] * pos[i as usize] / t + neg.ln();
            }
            total / n as f64
        };
        (side(&a, &b) + side(&b, &a)) / 2.0
    }

    #[test]
    fn dcl_and_dclw_match_naive_loops() {
        tch::manual_seed(3);
        let z0 = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let z1 = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        for (t, sigma) in [(0.1, None), (0.5, None), (0.2, Some(0.5)), (1.0, Some(2.0))] {
            let got = f(&dcl(&z0, &z1, t, sigma));
            let want = dcl_naive(&z0, &z1, t, sigma);
            assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "t {t} sigma {sigma:?}: {got} vs {want}");
        }
        // The weights average to 1: for equal positive similarities DCLW is DCL.
        let e = Tensor::eye(4, (Kind::Float, Device::Cpu));
        assert!((f(&dcl(&e, &e, 0.3, Some(0.5))) - f(&dcl(&e, &e, 0.3, None))).abs() < 1e-6);
    }

    /// Orthonormal queries equal to their keys: logits 1/T on the diagonal, 0 elsewhere.
    #[test]
    fn moco_v3_closed_form() {
        let (b, t) = (4, 0.2);
        let e = Tensor::eye(b, (Kind::Float, Device::Cpu));
        let ce = -((1.0f64 / t).exp() / ((1.0f64 / t).exp() + (b - 1) as f64)).ln();
        let got = f(&moco_v3(&e, &e, &e, &e, t));
        assert!((got - 2.0 * 2.0 * t * ce).abs() < 1e-5, "{got}");
    }

    /// A prediction equal (up to scale) to the mean of the other views' projections scores -1.
    #[test]
    fn fastsiam_closed_form() {
        tch::manual_seed(4);
        let zs: Vec<Tensor> = (0..3).map(|_| Tensor::randn([2, 5], (Kind::Float, Device::Cpu))).collect();
        let ps: Vec<Tensor> = (0..3).map(|i| (&zs[(i + 1) % 3] + &zs[(i + 2) % 3]) * 3.0).collect();
        assert!((f(&fastsiam(&ps, &zs)) + 1.0).abs() < 1e-6);
    }

    /// Identical orthonormal views: no invariance cost; with beta 0 the covariance is this
    /// batch's, `I / B`, so the contrast is rho / B; with beta 1 the old covariance is kept.
    #[test]
    fn tico_closed_forms_and_covariance_update() {
        let b = 4;
        let e = Tensor::eye(b, (Kind::Float, Device::Cpu));
        let zero = Tensor::zeros([b, b], (Kind::Float, Device::Cpu));
        let (l, c) = tico(&e, &e, &zero, 0.0, 8.0);
        assert!((f(&l) - 8.0 / b as f64).abs() < 1e-6, "{}", f(&l));
        assert!(f(&(c - &e / b as f64).abs().max()) < 1e-7);
        let old = Tensor::ones([b, b], (Kind::Float, Device::Cpu));
        let (l, c) = tico(&e, &(-&e), &old, 1.0, 2.0);
        assert!((f(&l) - (2.0 + 2.0)).abs() < 1e-6, "{}", f(&l));
        assert!(c.equal(&old));
    }

    #[test]
    fn sinkhorn_codes_are_distributions_with_balanced_prototypes() {
        tch::manual_seed(5);
        let s = Tensor::randn([6, 3], (Kind::Float, Device::Cpu)) * 0.1;
        let q = sinkhorn(&s, 50, 0.05);
        let rows = q.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        assert!(f(&(rows - 1.0).abs().max()) < 1e-5, "each code sums to 1");
        let cols = q.sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
        assert!(f(&(cols - 2.0).abs().max()) < 1e-3, "each prototype gets B / K of the batch");
    }

    /// Equal scores everywhere: uniform codes and predictions, a cross entropy of ln K.
    #[test]
    fn swav_uniform_scores_give_ln_k() {
        let k = 5;
        let s = Tensor::full([3, k], 0.3, (Kind::Float, Device::Cpu));
        let q = Tensor::full([7, k], -0.2, (Kind::Float, Device::Cpu));
        let high = [s.shallow_clone(), s.shallow_clone()];
        let low = [s.shallow_clone()];
        for queue in [None, Some([q.shallow_clone(), q.shallow_clone()])] {
            let l = f(&swav(&high, &low, queue.as_ref().map(|q| q.as_slice()), 0.1, 3, 0.05));
            assert!((l - (k as f64).ln()).abs() < 1e-5, "{l}");
        }
    }
}

/// Cross entropy of logits against class labels, averaged over the rows
/// (`F.cross_entropy`): the pretext tasks that classify (rotation, jigsaw).
///
/// # Shapes
/// logits: (N, K); labels: (N,) int64 -> scalar
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(labels)
}

/// NPID's full non-parametric softmax (Wu et al. 2018, eq. 2; lemniscate's
/// `LinearAverage` + `CrossEntropyLoss`): the logits of each embedding are its
/// dot products with every memory-bank row over `temperature`, the class its
/// own row.
///
/// # Shapes
/// f: (B, D) unit rows; memory: (n, D); idx: (B,) int64 -> scalar
pub fn npid_softmax(f: &Tensor, memory: &Tensor, idx: &Tensor, temperature: f64) -> Tensor {
    cross_entropy(&(f.matmul(&memory.tr()) / temperature), idx)
}

/// NPID's NCE (Wu et al. 2018, eqs. 5-7; lemniscate's `NCEAverage` and
/// `NCECriterion`): `P(i|v) = exp(v_i . f / T) / Z` for the image's own row and
/// `K` noise rows, noise distribution `P_n = 1/n`, the loss
/// `-[log(P_pos / (P_pos + K P_n + eps)) + sum log(K P_n / (P_neg + K P_n + eps))]`
/// averaged over the batch. `z < 0` estimates `Z = mean(exp(s/T)) * n` on this
/// batch (the paper's Monte-Carlo estimate, kept fixed afterwards); returns the
/// loss and the `Z` used.
///
/// # Shapes
/// f: (B, D); memory: (n, D); idx: (B,); noise: (B, K) int64 -> (scalar, Z)
pub fn npid_nce(f: &Tensor, memory: &Tensor, idx: &Tensor, noise: &Tensor, temperature: f64, z: f64) -> (Tensor, f64) {
    const EPS: f64 = 1e-7;
    let (b, k) = (f.size()[0], noise.size()[1]);
    let n = memory.size()[0] as f64;
    let rows = Tensor::cat(&[idx.unsqueeze(1), noise.shallow_clone()], 1);
    let w = memory.index_select(0, &rows.flatten(0, -1)).reshape([b, k + 1, -1]);
    let out = (w.bmm(&f.unsqueeze(2)).squeeze_dim(2) / temperature).exp();
    let z = if z < 0.0 { out.mean(Kind::Float).double_value(&[]) * n } else { z };
    let out = out / z;
    let kpn = k as f64 / n;
    let pos = out.select(1, 0);
    let neg = out.narrow(1, 1, k);
    let ln_pmt = (&pos / (&pos + (kpn + EPS))).log();
    let ln_pon = ((neg.ones_like() * kpn) / (&neg + (kpn + EPS))).log();
    (-(ln_pmt.sum(Kind::Float) + ln_pon.sum(Kind::Float)) / b as f64, z)
}

/// Counting (Noroozi et al. 2017, eq. 5): `|d - t|^2 + max(0, M - |o - t|^2)`
/// averaged over the rows, with `d` the counts of the downsampled image, `t`
/// the summed counts of its tiles and `o` the counts of another image.
///
/// # Shapes
/// down, tiles, other: (B, K) -> scalar
pub fn counting(down: &Tensor, tiles: &Tensor, other: &Tensor, margin: f64) -> Tensor {
    let sq = |a: &Tensor| (a - tiles).square().sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    (sq(down) + (-sq(other) + margin).clamp_min(0.0)).mean(Kind::Float)
}

/// Mean squared error over every element (`F.mse_loss`): context encoders' reconstruction of the hole.
///
/// # Shapes
/// pred, target: same shape -> scalar
pub fn mse(pred: &Tensor, target: &Tensor) -> Tensor {
    (pred - target).square().mean(Kind::Float)
}

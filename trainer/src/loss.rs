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

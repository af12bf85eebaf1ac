//! Numeric comparisons for parity checks, in which a non-finite value never passes.
//!
//! `f32::max` drops a NaN (`0.0f32.max(NaN) == 0.0`), so a fold of `|a - b|` with it
//! reports 0 for a graph whose every output is NaN. Here any NaN or infinity on either
//! side makes [`max_abs_diff`] and [`max_abs`] return `+inf` and [`min_cosine`] `-inf`,
//! so `err <= tol` and `cos >= min` are false. Mismatched lengths fail the same way.
//! Empty inputs agree (0 difference, cosine 1): shapes are the caller's check.

/// The named tolerance levels of every numeric check: the parity and
/// reference tests of every crate and `pretext export --verify` read them
/// here, so a level changes in one place. Absolute bounds assume values of
/// order 1 (normalised features, logits, activations); a check on larger
/// values states its relative measure where it makes it.
pub mod tol {
    /// One fp32 network against another fp32 implementation of it (tch,
    /// tract, ONNX Runtime, PyTorch): max |a - b| over every output.
    pub const F32: f32 = 1e-4;
    /// One op or a short chain of ops in fp32 (an ONNX op, a tch op, an
    /// augmentation, a kernel), or the same graph split over batches or
    /// threads: max |a - b|.
    pub const F32_OP: f32 = 1e-5;
    /// A reduced quantity against PyTorch in fp32 (a loss, a gradient norm,
    /// an optimizer step's parameters): relative error.
    pub const F32_REL: f64 = 1e-4;
    /// One parameter tensor's gradient norm after a training step against
    /// PyTorch: relative error (a small tensor's gradient carries the whole
    /// network's rounding, so it is looser than [`F32_REL`]).
    pub const F32_REL_TENSOR: f64 = 1e-3;
    /// One op with fp16 weights and compute (fp32 IO): max |a - b|.
    pub const F16_OP: f32 = 1e-2;
    /// An fp16 graph against the fp32 reference: the smallest per-row cosine.
    pub const F16_COS: f32 = 0.999;
    /// [`F16_COS`] for MobileNetV2 at width 1.0: its fp16 graph reached a
    /// smallest cosine of 0.99859 on 4 CIFAR-10 test images at 64 px
    /// (random init), in tract and ONNX Runtime alike (0.998588 both), so the
    /// loss is the graph's fp16 rounding through 17 inverted-residual blocks,
    /// not an engine's.
    pub const F16_COS_MOBILENET: f32 = 0.998;
    /// How far above its own floor an implementation may land when a
    /// network's fp32 rounding alone exceeds [`F32`] (ResNet-50): at most
    /// this many times the error of a trusted fp32 forward (tch or PyTorch)
    /// to the same network in float64. It was 1.5 until tract's AVX2 kernels
    /// landed at 1.501x on a width-8 ResNet-50 (2.092e-4 vs tch's 1.394e-4).
    pub const FLOOR_FACTOR: f64 = 2.0;
    /// [`F32`] as a relative error, max |a - b| / max |b|, for a network
    /// whose fp32 output is already more than `F32 / FLOOR_FACTOR` from its
    /// float64 output in PyTorch itself (ResNet-50 at 64 px: 1.96e-4 on
    /// features of max |y| 5.3), where no fp32 engine can meet [`F32`]
    /// absolute; such a network must meet both this and [`FLOOR_FACTOR`].
    pub const F32_NET_REL: f64 = 1e-4;
}

/// A value these comparisons accept: `f32` or `f64`, compared in `f64`.
pub trait Value: Copy {
    fn to_f64(self) -> f64;
}
impl Value for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Value for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// `max |a_i - b_i|`; `+inf` when a value on either side is not finite or the lengths differ.
pub fn max_abs_diff<'a, A: Value + 'a, B: Value + 'a>(a: impl IntoIterator<Item = &'a A>, b: impl IntoIterator<Item = &'a B>) -> f64 {
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    let mut m = 0.0f64;
    loop {
        match (a.next(), b.next()) {
            (None, None) => return m,
            (Some(p), Some(q)) => {
                let (p, q) = (p.to_f64(), q.to_f64());
                if !p.is_finite() || !q.is_finite() {
                    return f64::INFINITY;
                }
                m = m.max((p - q).abs());
            }
            _ => return f64::INFINITY,
        }
    }
}

/// `max |a_i|`; `+inf` when a value is not finite.
pub fn max_abs<'a, A: Value + 'a>(a: impl IntoIterator<Item = &'a A>) -> f64 {
    let mut m = 0.0f64;
    for p in a {
        let p = p.to_f64();
        if !p.is_finite() {
            return f64::INFINITY;
        }
        m = m.max(p.abs());
    }
    m
}

/// How many values are NaN or infinite.
pub fn count_non_finite<'a, A: Value + 'a>(a: impl IntoIterator<Item = &'a A>) -> usize {
    a.into_iter().filter(|p| !p.to_f64().is_finite()).count()
}

/// The smallest cosine similarity between corresponding rows of `row_len` values
/// (`a` and `b` flattened row-major, e.g. `[N, D]` with `row_len = D`). `-inf` when a
/// value is not finite, the lengths differ, or they are not whole rows. Two all-zero
/// rows have cosine 1 (equal); one all-zero row against a non-zero one has cosine 0.
pub fn min_cosine<A: Value, B: Value>(a: &[A], b: &[B], row_len: usize) -> f64 {
    if a.len() != b.len() || (row_len == 0 && !a.is_empty()) || (row_len > 0 && a.len() % row_len != 0) {
        return f64::NEG_INFINITY;
    }
    let mut m = 1.0f64;
    for (p, q) in a.chunks(row_len.max(1)).zip(b.chunks(row_len.max(1))) {
        let (mut d, mut np, mut nq) = (0.0f64, 0.0f64, 0.0f64);
        for (x, y) in p.iter().zip(q) {
            let (x, y) = (x.to_f64(), y.to_f64());
            if !x.is_finite() || !y.is_finite() {
                return f64::NEG_INFINITY;
            }
            d += x * y;
            np += x * x;
            nq += y * y;
        }
        let c = match (np > 0.0, nq > 0.0) {
            (false, false) => 1.0,
            (true, true) => d / (np.sqrt() * nq.sqrt()),
            _ => 0.0,
        };
        m = m.min(c);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_abs_diff_is_the_largest_difference() {
        assert_eq!(max_abs_diff(&[1.0f32, 2.0, 3.0], &[1.5f32, 2.0, 1.0]), 2.0);
        assert_eq!(max_abs_diff(&[1.0f32], &[1.25f64]), 0.25);
    }

    #[test]
    fn a_non_finite_value_on_either_side_never_passes() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let good = [0.0f32, 1.0];
            let with = [0.0f32, bad];
            for (a, b) in [(&good, &with), (&with, &good), (&with, &with)] {
                let d = max_abs_diff(a, b);
                assert!(!(d <= 1e30), "{a:?} vs {b:?}: {d}");
                let c = min_cosine(a, b, 2);
                assert!(!(c >= -1.0), "{a:?} vs {b:?}: cosine {c}");
            }
            assert_eq!(max_abs(&with), f64::INFINITY);
            assert_eq!(count_non_finite(&with), 1);
        }
        // A NaN only in the first row still fails a two-row comparison.
        assert_eq!(min_cosine(&[f32::NAN, 1.0, 1.0, 0.0], &[1.0f32, 1.0, 1.0, 0.0], 2), f64::NEG_INFINITY);
    }

    #[test]
    fn negative_zero_equals_zero() {
        assert_eq!(max_abs_diff(&[-0.0f32, 1.0], &[0.0f32, 1.0]), 0.0);
        assert_eq!(max_abs(&[-0.0f32]), 0.0);
        assert_eq!(min_cosine(&[-0.0f32, 0.0], &[0.0f32, 0.0], 2), 1.0);
    }

    #[test]
    fn empty_inputs_agree_and_mismatched_lengths_fail() {
        let e: [f32; 0] = [];
        assert_eq!(max_abs_diff(&e, &e), 0.0);
        assert_eq!(max_abs(&e), 0.0);
        assert_eq!(min_cosine(&e, &e, 4), 1.0);
        assert_eq!(max_abs_diff(&[1.0f32], &e), f64::INFINITY);
        assert_eq!(max_abs_diff(&e, &[1.0f32]), f64::INFINITY);
        assert_eq!(min_cosine(&[1.0f32, 2.0], &[1.0f32], 1), f64::NEG_INFINITY);
        assert_eq!(min_cosine(&[1.0f32, 2.0, 3.0], &[1.0f32, 2.0, 3.0], 2), f64::NEG_INFINITY);
    }

    #[test]
    fn cosine_is_the_worst_row() {
        // Row 0 identical (1), row 1 orthogonal (0), row 2 opposite (-1).
        let a = [1.0f32, 0.0, 0.0, 1.0, 2.0, 2.0];
        let b = [3.0f32, 0.0, 1.0, 0.0, -1.0, -1.0];
        assert_eq!(min_cosine(&a[..4], &b[..4], 2), 0.0);
        assert!((min_cosine(&a, &b, 2) + 1.0).abs() < 1e-12);
        // 45 degrees: cos = 1/sqrt(2).
        assert!((min_cosine(&[1.0f32, 0.0], &[1.0f32, 1.0], 2) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(min_cosine(&[0.0f32, 0.0], &[1.0f32, 0.0], 2), 0.0);
    }
}

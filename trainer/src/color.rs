//! CIE Lab colour and the quantised ab space of colorization (Zhang, Isola
//! and Efros 2016, "Colorful Image Colorization"), as tensor ops.
//!
//! - [`rgb_to_lab`] / [`lab_to_rgb`]: sRGB (gamma) <-> linear RGB <-> XYZ
//!   <-> Lab with the D65 white, the constants of `skimage.color.rgb2lab`
//!   (sRGB primaries matrix to 6 digits, `t > 0.008856 ? t^(1/3) : 7.787 t + 16/116`).
//! - [`ab_bins`]: the in-gamut bins of a 10-wide grid in ab space: the grid
//!   centres `(10 i, 10 j)` that are the nearest centre (`round(ab / 10)`) of
//!   some sRGB colour of a 64-level-per-channel grid of the RGB cube
//!   (262,144 colours). That gives [`NUM_BINS`] = 261 bins, not the paper's
//!   313: the paper's `pts_in_hull.npy` comes from a wider hull (its list is
//!   not derived in the paper), and a finer RGB grid gives 261 or 262 here.
//! - [`soft_encode`], [`rebalance_weights`], [`annealed_mean`]: the paper's
//!   eq. 2 target, class rebalancing (sec. 2.2) and decoding (sec. 2.3).

use tch::{Device, Kind, Tensor};

/// sRGB primaries to XYZ (skimage's `xyz_from_rgb`).
const XYZ_FROM_RGB: [[f64; 3]; 3] = [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]];
/// The D65 white point (2° observer), skimage's `illuminants["D65"]["2"]`.
const D65: [f64; 3] = [0.95047, 1.0, 1.08883];
/// Side of one ab bin.
pub const BIN_SIDE: f64 = 10.0;
/// How many in-gamut bins [`ab_bins`] finds.
pub const NUM_BINS: i64 = 261;
/// Levels per channel of the RGB grid whose colours define the gamut.
const GAMUT_LEVELS: i64 = 64;

fn matrix(m: [[f64; 3]; 3], device: Device) -> Tensor {
    Tensor::from_slice(&m.concat()).reshape([3, 3]).to_kind(Kind::Float).to_device(device)
}

/// Applies a 3x3 matrix over the channel dim: (B, 3, H, W) -> (B, 3, H, W).
fn mix(x: &Tensor, m: &Tensor) -> Tensor {
    Tensor::einsum("ij,bjhw->bihw", &[m, x], None::<&[i64]>)
}

/// sRGB in [0, 1] to CIE Lab (L in [0, 100]).
///
/// # Shapes
/// (B, 3, H, W) -> (B, 3, H, W), channels L, a, b
pub fn rgb_to_lab(rgb: &Tensor) -> Tensor {
    let x = rgb.to_kind(Kind::Float);
    let lin = ((&x + 0.055) / 1.055).clamp_min(0.0).pow_tensor_scalar(2.4).where_self(&x.gt(0.04045), &(&x / 12.92));
    let white = Tensor::from_slice(&D65).to_kind(Kind::Float).to_device(x.device()).reshape([1, 3, 1, 1]);
    let xyz = mix(&lin, &matrix(XYZ_FROM_RGB, x.device())) / white;
    let f = xyz.clamp_min(0.008856).pow_tensor_scalar(1.0 / 3.0).where_self(&xyz.gt(0.008856), &(&xyz * 7.787 + 16.0 / 116.0));
    let (fx, fy, fz) = (f.narrow(1, 0, 1), f.narrow(1, 1, 1), f.narrow(1, 2, 1));
    Tensor::cat(&[&fy * 116.0 - 16.0, (&fx - &fy) * 500.0, (&fy - &fz) * 200.0], 1)
}

/// CIE Lab to sRGB, clipped to [0, 1] (skimage's `lab2rgb`).
///
/// # Shapes
/// (B, 3, H, W) -> (B, 3, H, W)
pub fn lab_to_rgb(lab: &Tensor) -> Tensor {
    let lab = lab.to_kind(Kind::Float);
    let fy = (lab.narrow(1, 0, 1) + 16.0) / 116.0;
    let fx = lab.narrow(1, 1, 1) / 500.0 + &fy;
    let fz = &fy - lab.narrow(1, 2, 1) / 200.0;
    let f = Tensor::cat(&[fx, fy, fz], 1);
    let white = Tensor::from_slice(&D65).to_kind(Kind::Float).to_device(lab.device()).reshape([1, 3, 1, 1]);
    let xyz = f.pow_tensor_scalar(3.0).where_self(&f.gt(0.2068966), &((&f - 16.0 / 116.0) / 7.787)) * white;
    let lin = mix(&xyz, &matrix(XYZ_FROM_RGB, lab.device()).inverse());
    let srgb = (lin.clamp_min(0.0031308).pow_tensor_scalar(1.0 / 2.4) * 1.055 - 0.055).where_self(&lin.gt(0.0031308), &(&lin * 12.92));
    srgb.clamp(0.0, 1.0)
}

/// The network's input: the L channel of sRGB pixels in [0, 1], centred and
/// scaled to `(L - 50) / 50` (in [-1, 1]).
///
/// # Shapes
/// (B, 3, H, W) -> (B, 1, H, W)
pub fn lightness_input(rgb: &Tensor) -> Tensor {
    (rgb_to_lab(rgb).narrow(1, 0, 1) - 50.0) / 50.0
}

/// The in-gamut ab bin centres, in row-major order of (a, b) (see the module doc).
///
/// # Shapes
/// -> (NUM_BINS, 2)
pub fn ab_bins(device: Device) -> Tensor {
    let n = GAMUT_LEVELS;
    let levels = Tensor::arange(n, (Kind::Float, device)) / (n - 1) as f64;
    let grid = Tensor::meshgrid_indexing(&[&levels, &levels, &levels], "ij");
    let rgb = Tensor::stack(&grid, 0).reshape([1, 3, n * n, n]);
    let ab = rgb_to_lab(&rgb).narrow(1, 1, 2).reshape([2, -1]);
    // Index of the nearest centre on the grid -110..110 (23 x 23; sRGB's |a|, |b| stay below 110).
    let q = (ab / BIN_SIDE).round().to_kind(Kind::Int64) + 11;
    let cell = q.get(0) * 23 + q.get(1);
    let hit = cell.bincount::<Tensor>(None, 23 * 23).gt(0).nonzero().squeeze_dim(1);
    let centres = Tensor::stack(&[hit.divide_scalar_mode(23, "floor") - 11, hit.remainder(23) - 11], 1).to_kind(Kind::Float) * BIN_SIDE;
    assert_eq!(centres.size()[0], NUM_BINS, "in-gamut ab bins");
    centres
}

/// Squared distances from each pixel's ab to each bin centre.
///
/// # Shapes
/// ab (B, 2, h, w), bins (Q, 2) -> (B, h, w, Q)
fn sq_distances(ab: &Tensor, bins: &Tensor) -> Tensor {
    let p = ab.permute([0, 2, 3, 1]).unsqueeze(3);
    (p - bins.reshape([1, 1, 1, -1, 2])).square().sum_dim_intlist(-1, false, Kind::Float)
}

/// The paper's soft-encoding (sec. 2.1): each pixel's `k` nearest bins,
/// weighted by a Gaussian kernel of width `sigma` on the distance, summing to 1.
///
/// # Shapes
/// ab (B, 2, h, w), bins (Q, 2) -> (B, Q, h, w)
pub fn soft_encode(ab: &Tensor, bins: &Tensor, k: i64, sigma: f64) -> Tensor {
    let d2 = sq_distances(ab, bins);
    let (near, idx) = d2.topk(k, -1, false, true);
    let w = (near / (-2.0 * sigma * sigma)).softmax(-1, Kind::Float);
    d2.zeros_like().scatter(-1, &idx, &w).permute([0, 3, 1, 2])
}

/// The nearest bin of each pixel (`argmax` of its soft encoding).
///
/// # Shapes
/// ab (B, 2, h, w), bins (Q, 2) -> (B, h, w) int64
pub fn nearest_bin(ab: &Tensor, bins: &Tensor) -> Tensor {
    sq_distances(ab, bins).argmin(-1, false)
}

/// Class rebalancing weights (sec. 2.2): the empirical distribution `p` of
/// the bins (from `counts`), smoothed with a Gaussian kernel of width `sigma`
/// over the bin centres, mixed with the uniform distribution,
/// `w ∝ ((1 - lambda) p~ + lambda / Q)^-1`, normalised so `sum_q p~_q w_q = 1`.
///
/// # Shapes
/// counts (Q,), bins (Q, 2) -> (Q,)
pub fn rebalance_weights(counts: &Tensor, bins: &Tensor, sigma: f64, lambda: f64) -> Tensor {
    let q = bins.size()[0];
    let p = counts.to_kind(Kind::Float);
    let p = &p / p.sum(Kind::Float).clamp_min(1.0);
    let kernel = ((bins.unsqueeze(1) - bins.unsqueeze(0)).square().sum_dim_intlist(-1, false, Kind::Float) / (-2.0 * sigma * sigma)).exp();
    let smooth = kernel.matmul(&p);
    let smooth = &smooth / smooth.sum(Kind::Float).clamp_min(1e-12);
    let w = ((&smooth * (1.0 - lambda)) + lambda / q as f64).reciprocal();
    let e = (&smooth * &w).sum(Kind::Float);
    w / e
}

/// Annealed-mean decoding (sec. 2.3): `H(Z) = sum_q f_T(Z)_q c_q` with
/// `f_T(z) = exp(log z / T) / sum exp(log z / T)`, i.e. the softmax of the logits over `T`.
///
/// # Shapes
/// logits (B, Q, h, w), bins (Q, 2) -> (B, 2, h, w)
pub fn annealed_mean(logits: &Tensor, bins: &Tensor, temperature: f64) -> Tensor {
    let f = (logits / temperature).softmax(1, Kind::Float);
    Tensor::einsum("bqhw,qc->bchw", &[&f, bins], None::<&[i64]>)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(r: f32, g: f32, b: f32) -> Tensor {
        Tensor::from_slice(&[r, g, b]).reshape([1, 3, 1, 1])
    }

    /// Published CIE Lab values (D65) of sRGB white, red, green and blue
    /// (Lindbloom's calculator: red L 53.2408, a 80.0925, b 67.2032).
    #[test]
    fn lab_matches_published_values_and_round_trips() {
        let cases = [((1., 1., 1.), [100.0, 0.0, 0.0]), ((1., 0., 0.), [53.2408, 80.0925, 67.2032]), ((0., 1., 0.), [87.7347, -86.1827, 83.1793]), ((0., 0., 1.), [32.2970, 79.1875, -107.8602])];
        for ((r, g, b), want) in cases {
            let lab = Vec::<f32>::try_from(rgb_to_lab(&px(r, g, b)).flatten(0, -1)).unwrap();
            for (got, want) in lab.iter().zip(want) {
                assert!((*got as f64 - want).abs() < 0.01, "rgb ({r}, {g}, {b}): Lab {lab:?} vs {want:?}");
            }
        }
        let x = Tensor::rand([2, 3, 5, 5], (Kind::Float, Device::Cpu));
        let back = lab_to_rgb(&rgb_to_lab(&x));
        assert!((back - &x).abs().max().double_value(&[]) < 1e-4);
    }

    /// Every bin is reached by some colour, and each pixel's soft target sums to 1 over its 5 nearest bins.
    #[test]
    fn bins_soft_encoding_and_weights() {
        let bins = ab_bins(Device::Cpu);
        assert!(bins.abs().max().double_value(&[]) <= 110.0);
        let ab = Tensor::from_slice(&[3.0f32, -12.0, 41.0, 7.0]).reshape([1, 2, 1, 2]);
        let z = soft_encode(&ab, &bins, 5, 5.0);
        assert_eq!(z.size(), vec![1, NUM_BINS, 1, 2]);
        assert!((z.sum_dim_intlist(1, false, Kind::Float) - 1.0).abs().max().double_value(&[]) < 1e-6);
        assert_eq!(Vec::<i64>::try_from(z.gt(0.0).sum_dim_intlist(1, false, Kind::Int64).flatten(0, -1)).unwrap(), vec![5, 5]);
        // (3, 41) -> bin (0, 40); (-12, 7) -> bin (-10, 10).
        let near = nearest_bin(&ab, &bins).flatten(0, -1);
        let c = bins.index_select(0, &near);
        assert_eq!(Vec::<f32>::try_from(c.flatten(0, -1)).unwrap(), vec![0.0, 40.0, -10.0, 10.0]);
        // Weights are positive, and rare bins weigh more than a frequent one.
        let w = rebalance_weights(&Tensor::ones([NUM_BINS], (Kind::Int64, Device::Cpu)), &bins, 5.0, 0.5);
        assert!(w.min().double_value(&[]) > 0.0);
        let mut counts = vec![0i64; NUM_BINS as usize];
        counts[0] = 1000;
        let w = rebalance_weights(&Tensor::from_slice(&counts), &bins, 5.0, 0.5);
        assert!(w.double_value(&[0]) < w.double_value(&[NUM_BINS - 1]));
    }

    /// At a low temperature the annealed mean tends to the mode; at T = 1 it is the mean.
    #[test]
    fn annealed_mean_between_mean_and_mode() {
        let bins = Tensor::from_slice(&[0.0f32, 0.0, 10.0, 0.0]).reshape([2, 2]);
        let logits = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 2, 1, 1]);
        let a = |t| annealed_mean(&logits, &bins, t).double_value(&[0, 0, 0, 0]);
        let p1 = 10.0 / (1.0 + std::f64::consts::E);
        assert!((a(1.0) - p1).abs() < 1e-5);
        assert!(a(0.38) < p1 && a(0.05) < 1e-6);
    }
}

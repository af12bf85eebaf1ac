//! Analytic FLOP counting: an [`Ops`] implementation whose tensors are
//! shapes. Running a backbone's `forward_features` through it visits exactly
//! the ops every backend executes, so the count follows the architecture as
//! written, not a hand-maintained table.
//!
//! Counted as multiply-accumulates (MACs): convolutions, linear layers and
//! matmuls (the dense work). FLOPs = 2 × MACs. Normalisation, activations,
//! pooling, softmax and adds are reported separately as element ops; they are
//! < 1 % of the dense work for every benchmarked model and are not included
//! in achieved GFLOP/s.

use std::collections::HashMap;

use crate::{Backbone, ConvArgs, ConvTransposeArgs, Ops, UpsampleMode};

/// Dense MACs and elementwise op count of one forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Count {
    pub macs: u64,
    pub elementwise: u64,
}

impl Count {
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }
}

/// Counts the forward pass of `backbone` on a `(batch, 3, size, size)` input.
pub fn count_forward(backbone: &Backbone, batch: i64, size: i64) -> Count {
    let shapes = backbone.params().into_iter().map(|p| (p.name, p.shape)).collect();
    let mut o = Counter { shapes, count: Count::default() };
    let x = vec![batch, 3, size, size];
    let _ = backbone.forward_features(&mut o, &x);
    o.count
}

/// The shape-propagating counter.
pub struct Counter {
    shapes: HashMap<String, Vec<i64>>,
    pub count: Count,
}

fn numel(s: &[i64]) -> u64 {
    s.iter().product::<i64>().max(0) as u64
}

/// Numpy broadcasting of two shapes.
fn broadcast(a: &[i64], b: &[i64]) -> Vec<i64> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
            let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
            da.max(db)
        })
        .collect()
}

fn pool_out(len: i64, k: i64, s: i64, p: i64, d: i64) -> i64 {
    (len + 2 * p - d * (k - 1) - 1) / s + 1
}

impl Counter {
    fn elementwise(&mut self, x: &[i64]) -> Vec<i64> {
        self.count.elementwise += numel(x);
        x.to_vec()
    }
}

impl Ops for Counter {
    type T = Vec<i64>;

    fn share(&mut self, x: &Self::T) -> Self::T {
        x.clone()
    }
    fn is_training(&self) -> bool {
        false
    }
    fn param(&mut self, path: &str) -> Self::T {
        // Every path comes from the model's own `params()`, so a miss is a bug in the model.
        self.shapes.get(path).cloned().unwrap_or_else(|| panic!("flop counter: model asked for unknown parameter '{path}'"))
    }
    fn conv2d(&mut self, _name: &str, x: &Self::T, w: &Self::T, _b: Option<&Self::T>, a: ConvArgs) -> Self::T {
        let (n, h, wd) = (x[0], x[2], x[3]);
        let (co, ci_g, kh, kw) = (w[0], w[1], w[2], w[3]);
        let ho = pool_out(h, kh, a.stride, a.padding, a.dilation);
        let wo = pool_out(wd, kw, a.stride, a.padding, a.dilation);
        self.count.macs += numel(&[n, co, ho, wo, ci_g, kh, kw]);
        vec![n, co, ho, wo]
    }
    fn batch_norm(&mut self, _: &str, x: &Self::T, _: &Self::T, _: &Self::T, _: &Self::T, _: &Self::T, _: f64, _: f64) -> Self::T {
        self.elementwise(x)
    }
    fn linear(&mut self, _name: &str, x: &Self::T, w: &Self::T, _b: Option<&Self::T>) -> Self::T {
        let rows = numel(&x[..x.len() - 1]);
        self.count.macs += rows * numel(w);
        let mut out = x.clone();
        *out.last_mut().expect("linear on a scalar") = w[0];
        out
    }
    fn layer_norm(&mut self, _: &str, x: &Self::T, _: &Self::T, _: &Self::T, _: f64) -> Self::T {
        self.elementwise(x)
    }
    fn relu(&mut self, _: &str, x: &Self::T) -> Self::T {
        self.elementwise(x)
    }
    fn relu6(&mut self, _: &str, x: &Self::T) -> Self::T {
        self.elementwise(x)
    }
    fn gelu(&mut self, _: &str, x: &Self::T) -> Self::T {
        self.elementwise(x)
    }
    fn add(&mut self, _: &str, a: &Self::T, b: &Self::T) -> Self::T {
        let s = broadcast(a, b);
        self.elementwise(&s)
    }
    fn mul_scalar(&mut self, _: &str, x: &Self::T, _: f64) -> Self::T {
        self.elementwise(x)
    }
    fn max_pool2d(&mut self, _: &str, x: &Self::T, k: i64, s: i64, p: i64) -> Self::T {
        let out = vec![x[0], x[1], pool_out(x[2], k, s, p, 1), pool_out(x[3], k, s, p, 1)];
        self.count.elementwise += numel(&out) * (k * k) as u64;
        out
    }
    fn global_avg_pool(&mut self, _: &str, x: &Self::T) -> Self::T {
        self.count.elementwise += numel(x);
        vec![x[0], x[1]]
    }
    fn reshape(&mut self, _: &str, x: &Self::T, shape: &[i64]) -> Self::T {
        let mut out: Vec<i64> = shape.iter().enumerate().map(|(i, &d)| if d == 0 { x[i] } else { d }).collect();
        if let Some(pos) = out.iter().position(|&d| d == -1) {
            let known: i64 = out.iter().filter(|&&d| d != -1).product();
            out[pos] = numel(x) as i64 / known.max(1);
        }
        out
    }
    fn permute(&mut self, _: &str, x: &Self::T, perm: &[i64]) -> Self::T {
        perm.iter().map(|&p| x[p as usize]).collect()
    }
    fn matmul(&mut self, _: &str, a: &Self::T, b: &Self::T) -> Self::T {
        let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
        let n = b[b.len() - 1];
        let mut out = broadcast(&a[..a.len() - 2], &b[..b.len() - 2]);
        self.count.macs += numel(&out) * (m * k * n) as u64;
        out.extend([m, n]);
        out
    }
    fn softmax(&mut self, _: &str, x: &Self::T, _: i64) -> Self::T {
        self.elementwise(x)
    }
    fn concat(&mut self, _: &str, xs: &[Self::T], dim: i64) -> Self::T {
        let d = dim.rem_euclid(xs[0].len() as i64) as usize;
        let mut out = xs[0].clone();
        out[d] = xs.iter().map(|s| s[d]).sum();
        out
    }
    fn slice(&mut self, _: &str, x: &Self::T, dim: i64, start: i64, end: i64) -> Self::T {
        let d = dim.rem_euclid(x.len() as i64) as usize;
        let mut out = x.clone();
        out[d] = end.min(x[d]) - start;
        out
    }
    fn expand_batch(&mut self, _: &str, x: &Self::T, like: &Self::T) -> Self::T {
        let mut out = x.clone();
        out[0] = like[0];
        out
    }
    fn bicubic_resize(&mut self, _: &str, x: &Self::T, hw: [i64; 2]) -> Self::T {
        vec![x[0], x[1], hw[0], hw[1]]
    }
    fn l2_normalize(&mut self, _: &str, x: &Self::T, _: f64) -> Self::T {
        self.elementwise(x)
    }
    fn batch_norm_plain(&mut self, _: &str, x: &Self::T, _: &Self::T, _: &Self::T, _: f64, _: f64) -> Self::T {
        self.elementwise(x)
    }
    fn batch_norm_batch_stats(&mut self, _: &str, x: &Self::T, _: Option<&Self::T>, _: Option<&Self::T>, _: f64) -> Self::T {
        self.elementwise(x)
    }
    fn gather_tokens(&mut self, _: &str, x: &Self::T, ids: &Self::T) -> Self::T {
        let out = vec![ids[0], ids[1], x[2]];
        self.elementwise(&out)
    }
    fn masked_blend(&mut self, _: &str, _: &Self::T, x: &Self::T, _: &Self::T) -> Self::T {
        self.elementwise(x)
    }
    fn upsample(&mut self, _: &str, x: &Self::T, s: i64, _: UpsampleMode) -> Self::T {
        let out = vec![x[0], x[1], x[2] * s, x[3] * s];
        self.elementwise(&out)
    }
    /// Every input pixel scatters `out/groups * kh * kw` products: N·Cin·H·W·(Cout/g)·kh·kw MACs.
    fn conv_transpose2d(&mut self, _: &str, x: &Self::T, w: &Self::T, _: Option<&Self::T>, a: ConvTransposeArgs) -> Self::T {
        let (n, h, wd) = (x[0], x[2], x[3]);
        let (ci, co_g, kh, kw) = (w[0], w[1], w[2], w[3]);
        let len = |l: i64, k: i64| (l - 1) * a.stride - 2 * a.padding + a.dilation * (k - 1) + a.output_padding + 1;
        self.count.macs += numel(&[n, ci, h, wd, co_g, kh, kw]);
        vec![n, co_g * a.groups, len(h, kh), len(wd, kw)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackboneConfig;

    fn macs(name: &str, size: i64) -> u64 {
        count_forward(&Backbone::new(&BackboneConfig::from_name(name).unwrap()), 1, size).macs
    }

    /// Published figures (torchvision's model table, timm's `gmacs` column,
    /// fvcore's count for MobileNetV2) minus the classifier we do not run.
    #[test]
    fn macs_match_published_figures() {
        // torchvision resnet50: 4.089 GFLOPS (= GMACs) incl. fc (2048*1000).
        let r50 = macs("resnet50", 224) as f64;
        assert!((r50 + 2_048_000.0 - 4.089e9).abs() / 4.089e9 < 0.002, "resnet50 {r50}");
        // torchvision resnet18: 1.814 GMACs incl. fc (512*1000).
        let r18 = macs("resnet18", 224) as f64;
        assert!((r18 + 512_000.0 - 1.814e9).abs() / 1.814e9 < 0.002, "resnet18 {r18}");
        // timm vit_small_patch16_224: 4.61 GMACs incl. head (384*1000).
        let vit = macs("vit-small", 224) as f64;
        assert!((vit + 384_000.0 - 4.61e9).abs() / 4.61e9 < 0.005, "vit-small {vit}");
        // torchvision mobilenet_v2: 0.301 GMACs incl. classifier (1280*1000).
        let mnv2 = macs("mobilenet_v2", 224) as f64;
        assert!((mnv2 + 1_280_000.0 - 0.301e9).abs() / 0.301e9 < 0.01, "mobilenet_v2 {mnv2}");
    }

    /// The CIFAR ResNet-18 by a closed form: 3x3 stem at 32x32 plus the four
    /// stages, each conv counted as H·W·Cout·Cin·9.
    #[test]
    fn resnet18_cifar_closed_form() {
        let conv = |hw: u64, ci: u64, co: u64, k: u64| hw * hw * ci * co * k * k;
        let mut want = conv(32, 3, 64, 3);
        want += 4 * conv(32, 64, 64, 3);
        for (hw, ci, co) in [(16, 64, 128), (8, 128, 256), (4, 256, 512)] {
            want += conv(hw, ci, co, 3) + 3 * conv(hw, co, co, 3) + conv(hw, ci, co, 1);
        }
        assert_eq!(macs("resnet18-cifar", 32), want);
        // Linear in the batch.
        let b = Backbone::new(&BackboneConfig::from_name("resnet18-cifar").unwrap());
        assert_eq!(count_forward(&b, 8, 32).macs, 8 * want);
    }

    /// ConvTranspose2d(4, 6, 3, stride 2, padding 1, output_padding 1, groups 2) on 5x4:
    /// output (H-1)*2 - 2 + 2 + 1 + 1 = 10 x 8 (PyTorch's formula); MACs = input pixels x Cout/g x k².
    #[test]
    fn conv_transpose_shape_and_macs() {
        let mut c = Counter { shapes: HashMap::from([("w".to_string(), vec![4, 3, 3, 3])]), count: Count::default() };
        let w = c.param("w");
        let a = ConvTransposeArgs { stride: 2, padding: 1, output_padding: 1, dilation: 1, groups: 2 };
        assert_eq!(c.conv_transpose2d("t", &vec![2, 4, 5, 4], &w, None, a), vec![2, 6, 10, 8]);
        assert_eq!(c.count.macs, 2 * 4 * 5 * 4 * 3 * 9);
    }
}

//! [`Scoped`]: an [`Ops`] wrapper that runs a sub-model under a path prefix.
//! Its parameters are fetched as `{prefix}.{path}` and its nodes named
//! likewise, so a model written with root names (a ViT's `blocks.N`, `norm`)
//! can be nested inside another one (MAE's decoder under `decoder.`) without
//! its names clashing with the outer model's.

use crate::ops::{join, ConvArgs, ConvTransposeArgs, Ops, UpsampleMode};

pub struct Scoped<'a, O: Ops> {
    inner: &'a mut O,
    prefix: String,
}

impl<'a, O: Ops> Scoped<'a, O> {
    pub fn new(inner: &'a mut O, prefix: &str) -> Self {
        Self { inner, prefix: prefix.to_string() }
    }
    fn at(&self, name: &str) -> String {
        join(&self.prefix, name)
    }
}

impl<O: Ops> Ops for Scoped<'_, O> {
    type T = O::T;

    fn share(&mut self, x: &O::T) -> O::T {
        self.inner.share(x)
    }
    fn is_training(&self) -> bool {
        self.inner.is_training()
    }
    fn param(&mut self, path: &str) -> O::T {
        let p = self.at(path);
        self.inner.param(&p)
    }
    fn conv2d(&mut self, n: &str, x: &O::T, w: &O::T, b: Option<&O::T>, a: ConvArgs) -> O::T {
        let n = self.at(n);
        self.inner.conv2d(&n, x, w, b, a)
    }
    #[allow(clippy::too_many_arguments)]
    fn batch_norm(&mut self, n: &str, x: &O::T, w: &O::T, b: &O::T, m: &O::T, v: &O::T, momentum: f64, eps: f64) -> O::T {
        let n = self.at(n);
        self.inner.batch_norm(&n, x, w, b, m, v, momentum, eps)
    }
    fn linear(&mut self, n: &str, x: &O::T, w: &O::T, b: Option<&O::T>) -> O::T {
        let n = self.at(n);
        self.inner.linear(&n, x, w, b)
    }
    fn layer_norm(&mut self, n: &str, x: &O::T, w: &O::T, b: &O::T, eps: f64) -> O::T {
        let n = self.at(n);
        self.inner.layer_norm(&n, x, w, b, eps)
    }
    fn relu(&mut self, n: &str, x: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.relu(&n, x)
    }
    fn relu6(&mut self, n: &str, x: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.relu6(&n, x)
    }
    fn gelu(&mut self, n: &str, x: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.gelu(&n, x)
    }
    fn add(&mut self, n: &str, a: &O::T, b: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.add(&n, a, b)
    }
    fn mul_scalar(&mut self, n: &str, x: &O::T, s: f64) -> O::T {
        let n = self.at(n);
        self.inner.mul_scalar(&n, x, s)
    }
    fn max_pool2d(&mut self, n: &str, x: &O::T, k: i64, s: i64, p: i64) -> O::T {
        let n = self.at(n);
        self.inner.max_pool2d(&n, x, k, s, p)
    }
    fn global_avg_pool(&mut self, n: &str, x: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.global_avg_pool(&n, x)
    }
    fn reshape(&mut self, n: &str, x: &O::T, shape: &[i64]) -> O::T {
        let n = self.at(n);
        self.inner.reshape(&n, x, shape)
    }
    fn permute(&mut self, n: &str, x: &O::T, perm: &[i64]) -> O::T {
        let n = self.at(n);
        self.inner.permute(&n, x, perm)
    }
    fn matmul(&mut self, n: &str, a: &O::T, b: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.matmul(&n, a, b)
    }
    fn softmax(&mut self, n: &str, x: &O::T, dim: i64) -> O::T {
        let n = self.at(n);
        self.inner.softmax(&n, x, dim)
    }
    fn concat(&mut self, n: &str, xs: &[O::T], dim: i64) -> O::T {
        let n = self.at(n);
        self.inner.concat(&n, xs, dim)
    }
    fn slice(&mut self, n: &str, x: &O::T, dim: i64, start: i64, end: i64) -> O::T {
        let n = self.at(n);
        self.inner.slice(&n, x, dim, start, end)
    }
    fn expand_batch(&mut self, n: &str, x: &O::T, like: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.expand_batch(&n, x, like)
    }
    fn bicubic_resize(&mut self, n: &str, x: &O::T, hw: [i64; 2]) -> O::T {
        let n = self.at(n);
        self.inner.bicubic_resize(&n, x, hw)
    }
    fn l2_normalize(&mut self, n: &str, x: &O::T, eps: f64) -> O::T {
        let n = self.at(n);
        self.inner.l2_normalize(&n, x, eps)
    }
    fn batch_norm_plain(&mut self, n: &str, x: &O::T, m: &O::T, v: &O::T, momentum: f64, eps: f64) -> O::T {
        let n = self.at(n);
        self.inner.batch_norm_plain(&n, x, m, v, momentum, eps)
    }
    fn batch_norm_batch_stats(&mut self, n: &str, x: &O::T, w: Option<&O::T>, b: Option<&O::T>, eps: f64) -> O::T {
        let n = self.at(n);
        self.inner.batch_norm_batch_stats(&n, x, w, b, eps)
    }
    fn gather_tokens(&mut self, n: &str, x: &O::T, ids: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.gather_tokens(&n, x, ids)
    }
    fn masked_blend(&mut self, n: &str, mask: &O::T, x: &O::T, token: &O::T) -> O::T {
        let n = self.at(n);
        self.inner.masked_blend(&n, mask, x, token)
    }
    fn upsample(&mut self, n: &str, x: &O::T, scale: i64, mode: UpsampleMode) -> O::T {
        let n = self.at(n);
        self.inner.upsample(&n, x, scale, mode)
    }
    fn conv_transpose2d(&mut self, n: &str, x: &O::T, w: &O::T, b: Option<&O::T>, a: ConvTransposeArgs) -> O::T {
        let n = self.at(n);
        self.inner.conv_transpose2d(&n, x, w, b, a)
    }
}

//! The ONNX-shaped op trait every model is written against.
//!
//! A backend implements [`Ops`]: the trainer's tch backend executes eagerly
//! with autograd, the exporter's ONNX backend records nodes and initializers.
//! Every op takes `name`, the module path (`layer1.0.conv1`), which becomes
//! the ONNX node name so errors in ORT or tract point back at the model.
//! A third implementation, [`crate::flops::Counter`], propagates shapes only
//! and counts each op's multiply-accumulates (the per-op FLOP formulas).
//! Parameters are fetched by their full path (`layer1.0.conv1.weight`), the
//! torchvision/timm key.
//!
//! Shapes follow ONNX/PyTorch conventions: images are NCHW, tokens are
//! (batch, tokens, dim). In [`Ops::reshape`], `0` copies the input dim at
//! that position and `-1` is inferred, as in ONNX `Reshape` (allowzero=0),
//! so the batch axis stays dynamic.

use serde::{Deserialize, Serialize};

/// How a parameter is initialised when a model is created from scratch.
/// Mirrors the torchvision/timm defaults so random-init baselines are the
/// ones a PyTorch user would get.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Init {
    Zeros,
    Ones,
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: std = sqrt(2 / fan_out).
    KaimingNormalFanOut { fan_out: i64 },
    /// PyTorch's default `nn.Linear`/`nn.Conv2d` init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
    /// both weight (kaiming_uniform a=sqrt(5)) and bias.
    UniformFanIn { fan_in: i64 },
    /// Normal(0, std).
    Normal { std: f64 },
    /// timm's `trunc_normal_(std)` truncated at +-2.
    TruncNormal { std: f64 },
    /// Xavier/Glorot uniform (timm ViT linear layers).
    XavierUniform { fan_in: i64, fan_out: i64 },
}

/// What role a named tensor plays: decides optimizer treatment (no weight
/// decay on norms and biases) and whether it is trained at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamKind {
    /// Trained, with weight decay (conv and linear weights).
    Weight,
    /// Trained, without weight decay (biases, norm affine params, tokens, pos embeds).
    NoDecay,
    /// Not trained: BatchNorm running statistics (f32).
    Buffer,
    /// Not trained, int64 scalar: BatchNorm `num_batches_tracked`.
    Counter,
}

/// One named tensor of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub init: Init,
    pub kind: ParamKind,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, shape: &[i64], init: Init, kind: ParamKind) -> Self {
        Self { name: name.into(), shape: shape.to_vec(), init, kind }
    }
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// Convolution hyper-parameters (symmetric padding).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvArgs {
    pub stride: i64,
    pub padding: i64,
    pub dilation: i64,
    pub groups: i64,
}

/// Transposed-convolution hyper-parameters (`nn.ConvTranspose2d`, symmetric padding).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvTransposeArgs {
    pub stride: i64,
    pub padding: i64,
    pub output_padding: i64,
    pub dilation: i64,
    pub groups: i64,
}

/// Interpolation of [`Ops::upsample`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UpsampleMode {
    /// `mode="nearest"`: out[i] = in[floor(i / s)].
    Nearest,
    /// `mode="bilinear", align_corners=False` (half-pixel centres, edges clamped).
    Bilinear,
}

/// The op set. `T` is the backend's tensor handle.
pub trait Ops {
    type T;

    /// Another handle to the same tensor (tch `shallow_clone`; a node-output
    /// name for the ONNX recorder).
    fn share(&mut self, x: &Self::T) -> Self::T;

    /// True while training: BatchNorm uses batch statistics and updates its
    /// running buffers, dropout is active.
    fn is_training(&self) -> bool;

    /// The parameter or buffer stored under `path` (e.g. `layer1.0.bn1.running_mean`).
    fn param(&mut self, path: &str) -> Self::T;

    /// 2-D convolution, NCHW, weight (out, in/groups, kh, kw).
    fn conv2d(&mut self, name: &str, x: &Self::T, w: &Self::T, b: Option<&Self::T>, args: ConvArgs) -> Self::T;

    /// BatchNorm over dim 1 of (N, C) or (N, C, H, W). In training mode uses
    /// batch statistics and updates `running_mean`/`running_var` in place
    /// with `momentum` (PyTorch convention: new = (1-m)*old + m*batch,
    /// unbiased variance for the running estimate).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm(
        &mut self,
        name: &str,
        x: &Self::T,
        weight: &Self::T,
        bias: &Self::T,
        running_mean: &Self::T,
        running_var: &Self::T,
        momentum: f64,
        eps: f64,
    ) -> Self::T;

    /// `x @ w^T + b` over the last dim of x (any rank), w (out, in).
    fn linear(&mut self, name: &str, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Self::T;

    /// LayerNorm over the last dim.
    fn layer_norm(&mut self, name: &str, x: &Self::T, w: &Self::T, b: &Self::T, eps: f64) -> Self::T;

    fn relu(&mut self, name: &str, x: &Self::T) -> Self::T;
    /// min(max(x, 0), 6)
    fn relu6(&mut self, name: &str, x: &Self::T) -> Self::T;
    /// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)).
    fn gelu(&mut self, name: &str, x: &Self::T) -> Self::T;

    fn add(&mut self, name: &str, a: &Self::T, b: &Self::T) -> Self::T;
    fn mul_scalar(&mut self, name: &str, x: &Self::T, s: f64) -> Self::T;

    /// Max pooling with square kernel, symmetric padding.
    fn max_pool2d(&mut self, name: &str, x: &Self::T, kernel: i64, stride: i64, padding: i64) -> Self::T;
    /// Mean over H and W: (N, C, H, W) -> (N, C).
    fn global_avg_pool(&mut self, name: &str, x: &Self::T) -> Self::T;

    /// ONNX-style reshape: `0` copies the input dim, `-1` is inferred.
    fn reshape(&mut self, name: &str, x: &Self::T, shape: &[i64]) -> Self::T;
    fn permute(&mut self, name: &str, x: &Self::T, perm: &[i64]) -> Self::T;
    /// Batched matmul with numpy broadcasting.
    fn matmul(&mut self, name: &str, a: &Self::T, b: &Self::T) -> Self::T;
    fn softmax(&mut self, name: &str, x: &Self::T, dim: i64) -> Self::T;
    fn concat(&mut self, name: &str, xs: &[Self::T], dim: i64) -> Self::T;
    /// Elements `start..end` along `dim` (end may be i64::MAX for "to the end").
    fn slice(&mut self, name: &str, x: &Self::T, dim: i64, start: i64, end: i64) -> Self::T;
    /// Broadcast `x` of shape (1, ...) to the batch size of `like` (dim 0).
    fn expand_batch(&mut self, name: &str, x: &Self::T, like: &Self::T) -> Self::T;
    /// Bicubic resize of (1, C, H, W) to (1, C, h, w), PyTorch
    /// `interpolate(mode="bicubic", align_corners=False)`. Used to resample ViT
    /// position embeddings for another resolution; the exporter folds it into
    /// a frozen initializer.
    fn bicubic_resize(&mut self, name: &str, x: &Self::T, out_hw: [i64; 2]) -> Self::T;

    /// `F.normalize(x, dim=-1, eps)`: x / max(||x||_2, eps) over the last dim.
    ///
    /// Weight normalisation (DINO's last layer, `weight_norm` with g fixed to
    /// 1) is a composition: `l2_normalize` of the weight `param` (out, in),
    /// rows normalised, then `linear`. The exporter folds it into a constant.
    fn l2_normalize(&mut self, name: &str, x: &Self::T, eps: f64) -> Self::T;
    /// BatchNorm over dim 1 of (N, C) or (N, C, H, W) without affine parameters (`affine=False`):
    /// batch statistics (and running-buffer update, PyTorch convention) in training, running statistics otherwise.
    fn batch_norm_plain(&mut self, name: &str, x: &Self::T, running_mean: &Self::T, running_var: &Self::T, momentum: f64, eps: f64) -> Self::T;
    /// BatchNorm that always normalises with the statistics of the batch (`track_running_stats=False`), in training and
    /// in inference (the exported graph computes them too), with optional affine weight and bias.
    fn batch_norm_batch_stats(&mut self, name: &str, x: &Self::T, weight: Option<&Self::T>, bias: Option<&Self::T>, eps: f64) -> Self::T;
    /// x (B, N, D), ids (B, K) int64 -> (B, K, D) with out[b, k] = x[b, ids[b, k]]
    /// (`torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, D))`).
    ///
    /// MAE's decoder un-shuffle needs no other op: `concat([kept (B, K, D),
    /// expand_batch(mask_token) (B, 1, D)], 1)` then `gather_tokens` with
    /// `ids_restore.clamp(max=K)` (every masked position reads row K, the mask token).
    fn gather_tokens(&mut self, name: &str, x: &Self::T, ids: &Self::T) -> Self::T;
    /// mask (B, N) (1 = replace, 0 = keep, float), x (B, N, D), token (1, 1, D) -> x * (1 - mask) + token * mask (MAE/SimMIM mask tokens).
    fn masked_blend(&mut self, name: &str, mask: &Self::T, x: &Self::T, token: &Self::T) -> Self::T;
    /// Upsampling of (N, C, H, W) by an integer factor, `F.interpolate(scale_factor=s, mode=...)`; bilinear is align_corners=False.
    fn upsample(&mut self, name: &str, x: &Self::T, scale: i64, mode: UpsampleMode) -> Self::T;
    /// `nn.ConvTranspose2d`: weight (in, out/groups, kh, kw), symmetric padding, output_padding, groups.
    fn conv_transpose2d(&mut self, name: &str, x: &Self::T, w: &Self::T, b: Option<&Self::T>, args: ConvTransposeArgs) -> Self::T;
}

/// Joins a module path and a child name: `join("layer1.0", "conv1")`.
pub fn join(prefix: &str, child: &str) -> String {
    if prefix.is_empty() {
        child.to_string()
    } else {
        format!("{prefix}.{child}")
    }
}

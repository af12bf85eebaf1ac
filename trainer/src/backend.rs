//! The tch implementation of [`pretext_models::Ops`]: eager execution with
//! autograd, train/eval modes, parameters in a `VarStore` under their
//! torchvision/timm path names, and safetensors checkpoints keyed by them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use pretext_models::{ConvArgs, ConvTransposeArgs, Init, Ops, ParamKind, ParamSpec, UpsampleMode};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Errors loading or saving named weights: the tensor-file error, which names
/// the file, the tensor and both shapes.
pub use pretext_models::tensorfile::TensorFileError;
use pretext_models::tensorfile::{HostTensor, TensorFile};

/// Named parameters and buffers of one network (backbone and/or heads) in a VarStore.
pub struct Params {
    pub vs: VarStore,
    pub specs: Vec<ParamSpec>,
    map: HashMap<String, Tensor>,
}

impl Params {
    /// Creates and initialises every tensor in `specs` (seed with
    /// `tch::manual_seed` first for reproducible inits).
    pub fn new(specs: Vec<ParamSpec>, device: Device) -> Self {
        let vs = VarStore::new(device);
        let mut map = HashMap::new();
        tch::no_grad(|| {
            for s in &specs {
                let t = init_tensor(s, device);
                let trainable = matches!(s.kind, ParamKind::Weight | ParamKind::NoDecay);
                let (parent, leaf) = match s.name.rsplit_once('.') {
                    Some((p, l)) => (Some(p), l),
                    None => (None, s.name.as_str()),
                };
                let mut path = vs.root();
                if let Some(p) = parent {
                    for c in p.split('.') {
                        path = path.sub(c);
                    }
                }
                let v = path.add(leaf, t, trainable);
                map.insert(s.name.clone(), v);
            }
        });
        Self { vs, specs, map }
    }

    /// Re-lays every conv kernel (4-D weight) out channels-last, in place
    /// (same variables, same values; see [`channels_last`]). Training
    /// methods call it on their students (and `momentum_copy` on teachers): a
    /// CNN step then runs on libtorch's NHWC kernels. Per step on ResNet-18
    /// CIFAR, 2 threads (`examples/step_layout_ab.rs`): SimCLR 1.11-1.18x,
    /// BYOL 1.18x, MoCo 1.13x, SimSiam 1.14x faster.
    /// Call it before the optimizer creates its state, so momentum buffers
    /// (`zeros_like`) take the same layout.
    ///
    /// A no-op where [`channels_last_is_safe`] says libtorch's NHWC backward
    /// is broken (CPUs without AVX-512).
    pub fn use_channels_last(&self) {
        if !channels_last_is_safe() {
            return;
        }
        tch::no_grad(|| {
            for s in self.specs.iter().filter(|s| s.kind == ParamKind::Weight && s.shape.len() == 4) {
                let mut t = self.map[&s.name].shallow_clone();
                let nhwc = channels_last(&t);
                t.set_data(&nhwc);
            }
        });
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }

    /// (name, tensor) of trainable parameters, in model order.
    pub fn trainable(&self) -> Vec<(&ParamSpec, &Tensor)> {
        self.specs.iter().filter(|s| matches!(s.kind, ParamKind::Weight | ParamKind::NoDecay)).map(|s| (s, &self.map[&s.name])).collect()
    }

    /// Every tensor in model order.
    pub fn all(&self) -> Vec<(&ParamSpec, &Tensor)> {
        self.specs.iter().map(|s| (s, &self.map[&s.name])).collect()
    }

    /// Copies every tensor from `other` (same specs), e.g. to initialise a teacher.
    pub fn copy_from(&self, other: &Params) {
        tch::no_grad(|| {
            for s in &self.specs {
                let mut dst = self.map[&s.name].shallow_clone();
                dst.copy_(&other.map[&s.name]);
            }
        });
    }

    /// Loads tensors by name from a safetensors file. Every spec must be
    /// present with the right shape; extra tensors are an error when `strict`
    /// and are returned otherwise. `prefix` is prepended to spec names when
    /// looking them up (e.g. `"backbone."`).
    pub fn load_safetensors(&self, path: &Path, prefix: &str, strict: bool) -> Result<Vec<String>, TensorFileError> {
        let file = TensorFile::read(path)?;
        let mut used = std::collections::HashSet::new();
        let mut loaded = Vec::new();
        for s in &self.specs {
            let key = format!("{prefix}{}", s.name);
            file.check_shape(&key, &s.shape)?;
            loaded.push((s.name.clone(), tch_tensor(&file, &key)?));
            used.insert(key);
        }
        let extra: Vec<String> = file.names().into_iter().filter(|n| n.starts_with(prefix) && !used.contains(n)).collect();
        if strict && !extra.is_empty() {
            return Err(TensorFileError::Unexpected { path: path.into(), n: extra.len(), examples: extra.into_iter().take(5).collect() });
        }
        tch::no_grad(|| {
            for (name, t) in loaded {
                let mut dst = self.map[&name].shallow_clone();
                dst.copy_(&t.to_kind(dst.kind()).to_device(dst.device()));
            }
        });
        Ok(extra)
    }

    /// The tensors as host f32/i64 tensors for a safetensors file, names prefixed.
    pub fn to_named_blobs(&self, prefix: &str) -> BTreeMap<String, HostTensor> {
        self.specs.iter().map(|s| (format!("{prefix}{}", s.name), host_tensor(&self.map[&s.name]))).collect()
    }

    /// Writes the tensors to a safetensors file atomically.
    pub fn save_safetensors(&self, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<(), TensorFileError> {
        pretext_models::tensorfile::write(path, &self.to_named_blobs(""), metadata)
    }
}

/// Host copy of a tensor: i64 for integer tensors (counters), else f32.
pub fn host_tensor(t: &Tensor) -> HostTensor {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    if t.kind() == Kind::Int64 {
        HostTensor::i64(&shape, &Vec::<i64>::try_from(t.flatten(0, -1)).unwrap_or_default())
    } else {
        HostTensor::f32(&shape, &Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default())
    }
}

/// Tensor `key` of a file on the CPU: integer dtypes as Int64, float dtypes widened to Float.
pub fn tch_tensor(file: &TensorFile, key: &str) -> Result<Tensor, TensorFileError> {
    use pretext_models::tensorfile::Dtype as D;
    let int = file.get(key).is_some_and(|t| matches!(t.dtype, D::I64 | D::I32 | D::U32 | D::U8));
    let (shape, t) = if int {
        let (shape, v) = file.i64(key)?;
        (shape, Tensor::from_slice(&v))
    } else {
        let (shape, v) = file.f32(key)?;
        (shape, Tensor::from_slice(&v))
    };
    Ok(t.reshape(shape.iter().map(|&d| d as i64).collect::<Vec<_>>()))
}

/// Re-exported from [`pretext_models::io`], shared with the exporter.
pub use pretext_models::io::atomic_write;
/// The tensor-file writer under its former names (src/bench/prep.rs uses them).
pub use pretext_models::tensorfile::{write as write_safetensors, HostTensor as Blob};

fn init_tensor(s: &ParamSpec, device: Device) -> Tensor {
    let opts = (Kind::Float, device);
    let shape = s.shape.as_slice();
    match s.init {
        _ if s.kind == ParamKind::Counter => Tensor::zeros(shape, (Kind::Int64, device)),
        Init::Zeros => Tensor::zeros(shape, opts),
        Init::Ones => Tensor::ones(shape, opts),
        Init::KaimingNormalFanOut { fan_out } => Tensor::randn(shape, opts) * (2.0 / fan_out as f64).sqrt(),
        Init::UniformFanIn { fan_in } => {
            let b = 1.0 / (fan_in as f64).sqrt();
            Tensor::rand(shape, opts) * (2.0 * b) - b
        }
        Init::Normal { std } => Tensor::randn(shape, opts) * std,
        Init::TruncNormal { std } => (Tensor::randn(shape, opts) * std).clamp(-2.0, 2.0),
        Init::XavierUniform { fan_in, fan_out } => {
            let b = (6.0 / (fan_in + fan_out) as f64).sqrt();
            Tensor::rand(shape, opts) * (2.0 * b) - b
        }
    }
}

/// The same values with NHWC strides (PyTorch's `channels_last`), shape unchanged.
///
/// With conv weights stored this way ([`Params::use_channels_last`]),
/// libtorch runs every convolution, BatchNorm, ReLU and residual add of a
/// CNN on channels-last activations (a convolution with a channels-last
/// weight returns channels-last output, whatever the input layout), which
/// oneDNN computes without reordering activations at each op. Readers go
/// through `contiguous()`, so checkpoints stay NCHW.
/// Whether libtorch's channels-last convolution backward can be trusted on
/// this CPU. On AVX2-only x86 CPUs (no AVX-512), torch 2.11's backward of a
/// strided 1x1 convolution over channels-last activations with fewer than 8
/// input channels corrupts the heap ("double free or corruption", or silently
/// wrong gradients: the width-4 step-equivalence fixtures failed). Python
/// reproduces it with `F.conv2d(x, w, stride=2).sum().backward()` for x
/// (8, 4, 16, 16) in `torch.channels_last` and w (8, 4, 1, 1). Channels-last
/// was measured, and the fixtures pass, on AVX-512 CPUs; elsewhere training
/// stays NCHW (the same results, without the 1.1-1.2x step speed-up).
pub fn channels_last_is_safe() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Runs models on tch tensors. Parameter lookups of unknown names panic
/// with the name: model code and specs come from the same structs, so that
/// is a programming error, not bad input.
pub struct TchOps<'a> {
    pub params: &'a Params,
    pub train: bool,
}

impl<'a> TchOps<'a> {
    pub fn new(params: &'a Params, train: bool) -> Self {
        Self { params, train }
    }
}

impl Ops for TchOps<'_> {
    type T = Tensor;

    fn share(&mut self, x: &Tensor) -> Tensor {
        x.shallow_clone()
    }
    fn is_training(&self) -> bool {
        self.train
    }
    fn param(&mut self, path: &str) -> Tensor {
        self.params.get(path).unwrap_or_else(|| panic!("model asked for parameter '{path}', which is not in the store")).shallow_clone()
    }
    fn conv2d(&mut self, _: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: ConvArgs) -> Tensor {
        x.conv2d(w, b, [a.stride, a.stride], [a.padding, a.padding], [a.dilation, a.dilation], a.groups)
    }
    fn batch_norm(&mut self, _: &str, x: &Tensor, w: &Tensor, b: &Tensor, m: &Tensor, v: &Tensor, momentum: f64, eps: f64) -> Tensor {
        x.batch_norm(Some(w), Some(b), Some(m), Some(v), self.train, momentum, eps, false)
    }
    fn linear(&mut self, _: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        x.linear(w, b)
    }
    fn layer_norm(&mut self, _: &str, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let d = *x.size().last().expect("layer_norm on a scalar");
        x.layer_norm([d], Some(w), Some(b), eps, false)
    }
    fn relu(&mut self, _: &str, x: &Tensor) -> Tensor {
        x.relu()
    }
    fn relu6(&mut self, _: &str, x: &Tensor) -> Tensor {
        x.clamp(0.0, 6.0)
    }
    fn gelu(&mut self, _: &str, x: &Tensor) -> Tensor {
        x.gelu("none")
    }
    fn add(&mut self, _: &str, a: &Tensor, b: &Tensor) -> Tensor {
        a + b
    }
    fn mul_scalar(&mut self, _: &str, x: &Tensor, s: f64) -> Tensor {
        x * s
    }
    fn max_pool2d(&mut self, _: &str, x: &Tensor, k: i64, s: i64, p: i64) -> Tensor {
        x.max_pool2d([k, k], [s, s], [p, p], [1, 1], false)
    }
    fn global_avg_pool(&mut self, _: &str, x: &Tensor) -> Tensor {
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
    fn reshape(&mut self, _: &str, x: &Tensor, shape: &[i64]) -> Tensor {
        let size = x.size();
        let dims: Vec<i64> = shape.iter().enumerate().map(|(i, &d)| if d == 0 { size[i] } else { d }).collect();
        x.reshape(&dims)
    }
    fn permute(&mut self, _: &str, x: &Tensor, perm: &[i64]) -> Tensor {
        x.permute(perm)
    }
    fn matmul(&mut self, _: &str, a: &Tensor, b: &Tensor) -> Tensor {
        a.matmul(b)
    }
    fn softmax(&mut self, _: &str, x: &Tensor, dim: i64) -> Tensor {
        x.softmax(dim, Kind::Float)
    }
    fn concat(&mut self, _: &str, xs: &[Tensor], dim: i64) -> Tensor {
        Tensor::cat(xs, dim)
    }
    fn slice(&mut self, _: &str, x: &Tensor, dim: i64, start: i64, end: i64) -> Tensor {
        let n = x.size()[dim.rem_euclid(x.dim() as i64) as usize];
        x.narrow(dim, start, end.min(n) - start)
    }
    fn expand_batch(&mut self, _: &str, x: &Tensor, like: &Tensor) -> Tensor {
        let mut s = x.size();
        s[0] = like.size()[0];
        x.expand(&s, false)
    }
    fn bicubic_resize(&mut self, _: &str, x: &Tensor, hw: [i64; 2]) -> Tensor {
        x.upsample_bicubic2d(hw, false, None, None)
    }
    fn l2_normalize(&mut self, _: &str, x: &Tensor, eps: f64) -> Tensor {
        // F.normalize: x / clamp_min(norm, eps).expand_as(x)
        x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(eps).expand_as(x)
    }
    fn batch_norm_plain(&mut self, _: &str, x: &Tensor, m: &Tensor, v: &Tensor, momentum: f64, eps: f64) -> Tensor {
        x.batch_norm(None::<&Tensor>, None, Some(m), Some(v), self.train, momentum, eps, false)
    }
    fn batch_norm_batch_stats(&mut self, _: &str, x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Tensor {
        // No running buffers: libtorch normalises with the batch's statistics whatever the mode.
        x.batch_norm(w, b, None, None, true, 0.0, eps, false)
    }
    fn gather_tokens(&mut self, _: &str, x: &Tensor, ids: &Tensor) -> Tensor {
        let d = *x.size().last().expect("gather_tokens on a scalar");
        x.gather(1, &ids.unsqueeze(-1).expand([-1, -1, d], false), false)
    }
    fn masked_blend(&mut self, _: &str, mask: &Tensor, x: &Tensor, token: &Tensor) -> Tensor {
        let m = mask.unsqueeze(-1);
        x * m.rsub_scalar(1.0) + token * &m
    }
    fn upsample(&mut self, _: &str, x: &Tensor, s: i64, mode: UpsampleMode) -> Tensor {
        let size = x.size();
        let out = [size[2] * s, size[3] * s];
        match mode {
            UpsampleMode::Nearest => x.upsample_nearest2d(out, s as f64, s as f64),
            UpsampleMode::Bilinear => x.upsample_bilinear2d(out, false, s as f64, s as f64),
        }
    }
    fn conv_transpose2d(&mut self, _: &str, x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: ConvTransposeArgs) -> Tensor {
        x.conv_transpose2d(w, b, [a.stride; 2], [a.padding; 2], [a.output_padding; 2], a.groups, [a.dilation; 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_models::{Backbone, BackboneConfig};

    #[test]
    fn resnet_and_vit_run_and_save_load_round_trip() {
        tch::manual_seed(0);
        for name in ["resnet18-cifar", "vit-tiny-cifar", "mobilenet_v2"] {
            let b = Backbone::new(&BackboneConfig::from_name(name).unwrap());
            let p = Params::new(b.params(), Device::Cpu);
            let s = b.config();
            let size = s.default_image_size();
            let x = Tensor::randn([2, 3, size, size], (Kind::Float, Device::Cpu));
            let y = tch::no_grad(|| b.forward_features(&mut TchOps::new(&p, false), &x));
            assert_eq!(y.size(), vec![2, b.embed_dim()], "{name}");
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("w.safetensors");
            p.save_safetensors(&f, None).unwrap();
            tch::manual_seed(1);
            let q = Params::new(b.params(), Device::Cpu);
            q.load_safetensors(&f, "", true).unwrap();
            let y2 = tch::no_grad(|| b.forward_features(&mut TchOps::new(&q, false), &x));
            assert!(f64::try_from((y - y2).abs().max()).unwrap() == 0.0, "{name}: reload changed the output");
        }
    }

    /// `use_channels_last` re-lays conv weights in NHWC strides (so libtorch
    /// picks its NHWC kernels), yet every reader sees NCHW order: safetensors
    /// blobs are indexed (o, i, kh, kw) row-major, as PyTorch writes them.
    #[test]
    fn conv_weights_are_channels_last_and_saved_nchw() {
        tch::manual_seed(0);
        let b = Backbone::new(&BackboneConfig::from_name("resnet18-cifar").unwrap());
        let p = Params::new(b.params(), Device::Cpu);
        let w = p.get("layer1.0.conv1.weight").unwrap();
        assert_eq!(w.stride(), vec![576, 9, 3, 1], "NCHW unless asked");
        let before = w.copy();
        p.use_channels_last();
        assert_eq!(w.size(), vec![64, 64, 3, 3]);
        let want = if channels_last_is_safe() { vec![576, 1, 192, 64] } else { vec![576, 9, 3, 1] };
        assert_eq!(w.stride(), want, "NHWC strides where channels-last is safe (AVX-512), else NCHW; same variable");
        assert!(w.requires_grad());
        assert!(w.equal(&before), "values unchanged");
        assert_eq!(p.get("fc.weight").map(|t| t.stride()), None, "headless");
        assert_eq!(p.get("bn1.weight").unwrap().stride(), vec![1]);
        let blobs = p.to_named_blobs("");
        let blob = &blobs["layer1.0.conv1.weight"];
        let at = |k: usize| f32::from_le_bytes(blob.data[4 * k..4 * k + 4].try_into().unwrap()) as f64;
        for (o, i, kh, kw) in [(0, 0, 0, 0), (0, 1, 0, 0), (3, 5, 2, 1), (63, 63, 2, 2)] {
            let want = w.double_value(&[o, i, kh, kw]);
            assert_eq!(at((((o * 64 + i) * 3 + kh) * 3 + kw) as usize), want, "[{o}, {i}, {kh}, {kw}]");
        }
        // The trained graph runs channels-last end to end.
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let mut o = TchOps::new(&p, true);
        let y = o.conv2d("conv1", &x, &p.get("conv1.weight").unwrap().shallow_clone(), None, ConvArgs { stride: 1, padding: 1, dilation: 1, groups: 1 });
        let want = if channels_last_is_safe() { vec![64 * 32 * 32, 1, 32 * 64, 64] } else { vec![64 * 32 * 32, 32 * 32, 32, 1] };
        assert_eq!(y.stride(), want);
    }

    /// fp16 subnormals are man * 2^-24 (numpy: np.uint16(1).view(np.float16) == 2**-24),
    /// through a file as the loader reads it.
    #[test]
    fn f16_subnormals_widen_exactly() {
        let bits = [0x0001u16, 0x0200, 0x03ff, 0x8001, 0x3c00];
        let t = HostTensor { dtype: pretext_models::tensorfile::Dtype::F16, shape: vec![5i64], data: bits.iter().flat_map(|b| b.to_le_bytes()).collect() };
        let bytes = pretext_models::tensorfile::to_bytes(Path::new("h"), &BTreeMap::from([("h".to_string(), t)]), None).unwrap();
        let got = Vec::<f32>::try_from(tch_tensor(&TensorFile::from_bytes(Path::new("h"), bytes).unwrap(), "h").unwrap()).unwrap();
        assert_eq!(got, vec![2f32.powi(-24), 2f32.powi(-15), 1023.0 * 2f32.powi(-24), -(2f32.powi(-24)), 1.0]);
    }

    #[test]
    fn load_errors_name_key_and_shapes() {
        let a = Backbone::new(&BackboneConfig::from_name("resnet18-cifar").unwrap());
        let b = Backbone::new(&BackboneConfig::Resnet(pretext_models::ResNetConfig::resnet18_cifar().with_width(16)));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.safetensors");
        Params::new(b.params(), Device::Cpu).save_safetensors(&f, None).unwrap();
        let err = Params::new(a.params(), Device::Cpu).load_safetensors(&f, "", true).unwrap_err().to_string();
        assert!(err.contains("'conv1.weight' has shape [16, 3, 3, 3], the model expects [64, 3, 3, 3]"), "{err}");
        std::fs::write(&f, b"not a safetensors file at all").unwrap();
        let err = Params::new(a.params(), Device::Cpu).load_safetensors(&f, "", true).unwrap_err().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
        let r50 = Backbone::new(&BackboneConfig::from_name("resnet50").unwrap());
        let r18 = Backbone::new(&BackboneConfig::from_name("resnet18").unwrap());
        Params::new(r18.params(), Device::Cpu).save_safetensors(&f, None).unwrap();
        let err = Params::new(r50.params(), Device::Cpu).load_safetensors(&f, "", true).unwrap_err().to_string();
        assert!(err.contains("missing tensor 'layer1.0.conv3.weight'") || err.contains("layer1.0.conv1.weight"), "{err}");
    }
}

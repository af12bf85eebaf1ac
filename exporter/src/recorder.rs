//! The ONNX implementation of [`Ops`]: running a model's forward records
//! ONNX nodes (named by module path) and initializers (named by parameter
//! path). Errors cannot flow through the trait, so the first one is kept and
//! returned by [`OnnxOps::finish`].

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};
use pretext_models::{ConvArgs, ConvTransposeArgs, Ops, UpsampleMode};

use crate::checkpoint::Checkpoint;
use crate::error::ExportError;
use crate::graph::Graph;
use crate::tensor::{self, Attr, Const};

/// Lowest and highest opset the recorder emits.
pub const OPSETS: std::ops::RangeInclusive<i64> = 17..=21;

/// Records a forward pass as an ONNX graph.
pub struct OnnxOps<'c> {
    ckpt: &'c Checkpoint,
    /// Prefix prepended to parameter paths when reading the checkpoint.
    pub prefix: String,
    pub graph: Graph,
    opset: i64,
    ranks: HashMap<String, usize>,
    error: Option<ExportError>,
}

impl<'c> OnnxOps<'c> {
    /// Inputs and shared attributes of a `Conv` / `ConvTranspose` node (kernel shape read from the weight).
    #[allow(clippy::too_many_arguments)]
    fn conv_inputs(&self, x: &str, w: &str, b: Option<&String>, stride: i64, padding: i64, dilation: i64, groups: i64) -> (Vec<String>, Vec<(String, Attr)>) {
        let k = self.graph.inits.get(w).map(|c| c.dims()).unwrap_or_default();
        let (kh, kw) = (k.get(2).copied().unwrap_or(1), k.get(3).copied().unwrap_or(1));
        let mut ins = vec![x.to_string(), w.to_string()];
        ins.extend(b.cloned());
        let attrs = vec![
            ints("kernel_shape", vec![kh, kw]),
            ints("strides", vec![stride; 2]),
            ints("pads", vec![padding; 4]),
            ints("dilations", vec![dilation; 2]),
            int("group", groups),
        ];
        (ins, attrs)
    }

    pub fn new(ckpt: &'c Checkpoint, opset: i64) -> Result<Self, ExportError> {
        if !OPSETS.contains(&opset) {
            return Err(ExportError::Opset { opset });
        }
        Ok(Self { ckpt, prefix: String::new(), graph: Graph::default(), opset, ranks: HashMap::new(), error: None })
    }

    /// Declares a graph input of the given rank and returns its name.
    pub fn input(&mut self, v: crate::graph::ValueInfo) -> String {
        self.ranks.insert(v.name.clone(), v.dims.len());
        let n = v.name.clone();
        self.graph.inputs.push(v);
        n
    }

    /// The recorded graph, or the first error met while recording.
    pub fn finish(self) -> Result<Graph, ExportError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.graph),
        }
    }

    fn fail(&mut self, e: ExportError) -> String {
        if self.error.is_none() {
            self.error = Some(e);
        }
        "<error>".to_string()
    }

    fn rank(&self, t: &str) -> usize {
        self.ranks.get(t).copied().unwrap_or(0)
    }

    /// Adds a constant initializer under a fresh name derived from `base`.
    fn constant(&mut self, base: &str, c: Const) -> String {
        let n = self.graph.fresh_name(base);
        self.ranks.insert(n.clone(), c.dims().len());
        self.graph.inits.insert(n.clone(), c);
        n
    }

    /// Appends a node whose single output is named after the node.
    fn node(&mut self, name: &str, op: &'static str, inputs: Vec<String>, attrs: Vec<(String, Attr)>, rank: usize) -> String {
        let name = self.graph.fresh_name(name);
        self.ranks.insert(name.clone(), rank);
        self.graph.nodes.push(crate::graph::Node { name: name.clone(), op, inputs, outputs: vec![name.clone()], attrs });
        name
    }

    /// A `keepdims` reduction over `axes`: attribute `axes` through opset 17,
    /// an `axes` input from 18 (ReduceMean, ReduceL2, ReduceMax).
    fn reduce(&mut self, name: &str, op: &'static str, x: &str, axes: &[i64], rank: usize) -> String {
        let keep = int("keepdims", 1);
        if self.opset >= 18 {
            let a = self.constant(&format!("{name}.axes"), Const::i64s(axes));
            self.node(name, op, vec![x.to_string(), a], vec![keep], rank)
        } else {
            self.node(name, op, vec![x.to_string()], vec![ints("axes", axes.to_vec()), keep], rank)
        }
    }

    /// Evaluates a tensor that depends on initializers only, walking back
    /// through its producers with the constant evaluator.
    pub fn eval_const(&self, t: &str) -> Option<Const> {
        if let Some(c) = self.graph.inits.get(t) {
            return Some(c.clone());
        }
        let n = &self.graph.nodes[self.graph.producer(t)?];
        let ins: Option<Vec<Const>> = n.inputs.iter().map(|i| self.eval_const(i)).collect();
        let ins = ins?;
        tensor::eval(n.op, &n.attrs, &ins.iter().collect::<Vec<_>>())
    }
}

fn ints(k: &str, v: Vec<i64>) -> (String, Attr) {
    (k.to_string(), Attr::Ints(v))
}
fn int(k: &str, v: i64) -> (String, Attr) {
    (k.to_string(), Attr::Int(v))
}

impl Ops for OnnxOps<'_> {
    type T = String;

    fn share(&mut self, x: &String) -> String {
        x.clone()
    }
    fn is_training(&self) -> bool {
        false
    }
    fn param(&mut self, path: &str) -> String {
        if self.graph.inits.contains_key(path) {
            return path.to_string();
        }
        let key = format!("{}{path}", self.prefix);
        match self.ckpt.get(&key) {
            Some(a) => {
                self.ranks.insert(path.to_string(), a.ndim());
                self.graph.inits.insert(path.to_string(), Const::F32(a.clone()));
                path.to_string()
            }
            None => self.fail(pretext_models::tensorfile::TensorFileError::Missing { path: self.ckpt.path.clone(), key, expected: vec![] }.into()),
        }
    }
    fn conv2d(&mut self, name: &str, x: &String, w: &String, b: Option<&String>, a: ConvArgs) -> String {
        let (ins, attrs) = self.conv_inputs(x, w, b, a.stride, a.padding, a.dilation, a.groups);
        self.node(name, "Conv", ins, attrs, 4)
    }
    fn batch_norm(&mut self, name: &str, x: &String, w: &String, b: &String, m: &String, v: &String, _momentum: f64, eps: f64) -> String {
        let r = self.rank(x);
        let ins = vec![x.clone(), w.clone(), b.clone(), m.clone(), v.clone()];
        self.node(name, "BatchNormalization", ins, vec![("epsilon".into(), Attr::Float(eps as f32))], r)
    }
    fn linear(&mut self, name: &str, x: &String, w: &String, b: Option<&String>) -> String {
        let r = self.rank(x);
        if r == 2 {
            let mut ins = vec![x.clone(), w.clone()];
            ins.extend(b.cloned());
            return self.node(name, "Gemm", ins, vec![int("transB", 1)], 2);
        }
        // Rank > 2: MatMul with the transposed weight (a Transpose of an
        // initializer, which constant folding turns into an initializer).
        let wt = self.node(&format!("{w}_t"), "Transpose", vec![w.clone()], vec![ints("perm", vec![1, 0])], 2);
        match b {
            Some(b) => {
                let mm = self.node(&format!("{name}.matmul"), "MatMul", vec![x.clone(), wt], vec![], r);
                self.node(name, "Add", vec![mm, b.clone()], vec![], r)
            }
            None => self.node(name, "MatMul", vec![x.clone(), wt], vec![], r),
        }
    }
    fn layer_norm(&mut self, name: &str, x: &String, w: &String, b: &String, eps: f64) -> String {
        let r = self.rank(x);
        let attrs = vec![int("axis", -1), ("epsilon".into(), Attr::Float(eps as f32))];
        self.node(name, "LayerNormalization", vec![x.clone(), w.clone(), b.clone()], attrs, r)
    }
    fn relu(&mut self, name: &str, x: &String) -> String {
        let r = self.rank(x);
        self.node(name, "Relu", vec![x.clone()], vec![], r)
    }
    fn relu6(&mut self, name: &str, x: &String) -> String {
        let r = self.rank(x);
        let lo = self.constant(&format!("{name}.min"), Const::scalar_f32(0.0));
        let hi = self.constant(&format!("{name}.max"), Const::scalar_f32(6.0));
        self.node(name, "Clip", vec![x.clone(), lo, hi], vec![], r)
    }
    fn gelu(&mut self, name: &str, x: &String) -> String {
        let r = self.rank(x);
        if self.opset >= 20 {
            return self.node(name, "Gelu", vec![x.clone()], vec![("approximate".into(), Attr::Str("none".into()))], r);
        }
        // 0.5 x (1 + erf(x / sqrt 2)), as PyTorch computes it.
        let c = self.constant(&format!("{name}.inv_sqrt2"), Const::scalar_f32(std::f32::consts::FRAC_1_SQRT_2));
        let s = self.node(&format!("{name}.scale"), "Mul", vec![x.clone(), c], vec![], r);
        let e = self.node(&format!("{name}.erf"), "Erf", vec![s], vec![], r);
        let one = self.constant(&format!("{name}.one"), Const::scalar_f32(1.0));
        let e1 = self.node(&format!("{name}.add1"), "Add", vec![e, one], vec![], r);
        let xe = self.node(&format!("{name}.mulx"), "Mul", vec![x.clone(), e1], vec![], r);
        let half = self.constant(&format!("{name}.half"), Const::scalar_f32(0.5));
        self.node(name, "Mul", vec![xe, half], vec![], r)
    }
    fn add(&mut self, name: &str, a: &String, b: &String) -> String {
        let r = self.rank(a).max(self.rank(b));
        self.node(name, "Add", vec![a.clone(), b.clone()], vec![], r)
    }
    fn mul_scalar(&mut self, name: &str, x: &String, s: f64) -> String {
        let r = self.rank(x);
        let c = self.constant(&format!("{name}.value"), Const::scalar_f32(s as f32));
        self.node(name, "Mul", vec![x.clone(), c], vec![], r)
    }
    fn max_pool2d(&mut self, name: &str, x: &String, k: i64, s: i64, p: i64) -> String {
        let attrs = vec![ints("kernel_shape", vec![k, k]), ints("strides", vec![s, s]), ints("pads", vec![p; 4])];
        self.node(name, "MaxPool", vec![x.clone()], attrs, 4)
    }
    fn global_avg_pool(&mut self, name: &str, x: &String) -> String {
        let g = self.node(&format!("{name}.pool"), "GlobalAveragePool", vec![x.clone()], vec![], 4);
        self.node(name, "Flatten", vec![g], vec![int("axis", 1)], 2)
    }
    fn reshape(&mut self, name: &str, x: &String, shape: &[i64]) -> String {
        let s = self.constant(&format!("{name}.shape"), Const::i64s(shape));
        self.node(name, "Reshape", vec![x.clone(), s], vec![], shape.len())
    }
    fn permute(&mut self, name: &str, x: &String, perm: &[i64]) -> String {
        self.node(name, "Transpose", vec![x.clone()], vec![ints("perm", perm.to_vec())], perm.len())
    }
    fn matmul(&mut self, name: &str, a: &String, b: &String) -> String {
        let r = self.rank(a).max(self.rank(b));
        self.node(name, "MatMul", vec![a.clone(), b.clone()], vec![], r)
    }
    fn softmax(&mut self, name: &str, x: &String, dim: i64) -> String {
        let r = self.rank(x);
        self.node(name, "Softmax", vec![x.clone()], vec![int("axis", dim)], r)
    }
    fn concat(&mut self, name: &str, xs: &[String], dim: i64) -> String {
        let r = xs.first().map(|x| self.rank(x)).unwrap_or(0);
        self.node(name, "Concat", xs.to_vec(), vec![int("axis", dim)], r)
    }
    fn slice(&mut self, name: &str, x: &String, dim: i64, start: i64, end: i64) -> String {
        let r = self.rank(x);
        let s = self.constant(&format!("{name}.starts"), Const::i64s(&[start]));
        let e = self.constant(&format!("{name}.ends"), Const::i64s(&[end]));
        let a = self.constant(&format!("{name}.axes"), Const::i64s(&[dim]));
        self.node(name, "Slice", vec![x.clone(), s, e, a], vec![], r)
    }
    fn expand_batch(&mut self, name: &str, x: &String, like: &String) -> String {
        let r = self.rank(x);
        // shape = [batch(like), 1, ..., 1]; Expand broadcasts the 1s to x's dims.
        let batch = self.node(&format!("{name}.batch"), "Shape", vec![like.clone()], vec![int("start", 0), int("end", 1)], 1);
        let ones = self.constant(&format!("{name}.ones"), Const::i64s(&vec![1; r.saturating_sub(1)]));
        let shape = self.node(&format!("{name}.shape"), "Concat", vec![batch, ones], vec![int("axis", 0)], 1);
        self.node(name, "Expand", vec![x.clone(), shape], vec![], r)
    }
    fn bicubic_resize(&mut self, name: &str, x: &String, hw: [i64; 2]) -> String {
        // Only constants are resized (ViT position embeddings): computed here,
        // stored as a frozen initializer; the nodes that fed it become dead.
        let Some(Const::F32(a)) = self.eval_const(x) else {
            return self.fail(ExportError::Op { node: name.into(), op: "Resize", reason: "bicubic resize of a non-constant tensor is not supported".into() });
        };
        if a.ndim() != 4 {
            return self.fail(ExportError::Op { node: name.into(), op: "Resize", reason: format!("expected (N, C, H, W), got {:?}", a.shape()) });
        }
        let out: ArrayD<f32> = tensor::bicubic_resize(&a, hw[0] as usize, hw[1] as usize);
        self.constant(name, Const::F32(out))
    }
    fn l2_normalize(&mut self, name: &str, x: &String, eps: f64) -> String {
        // x / max(ReduceL2(x), eps), F.normalize's form; of an initializer
        // (weight norm) it folds to a constant. In fp16 a row below fp16's
        // range (norm < ~6e-8) flushes to 0 and 0 / eps can be NaN on tract.
        let r = self.rank(x);
        let norm = self.reduce(&format!("{name}.norm"), "ReduceL2", x, &[-1], r);
        let e = self.constant(&format!("{name}.eps"), Const::scalar_f32(eps as f32));
        let clamped = self.node(&format!("{name}.clamp"), "Max", vec![norm, e], vec![], r);
        self.node(name, "Div", vec![x.clone(), clamped], vec![], r)
    }
    fn batch_norm_plain(&mut self, name: &str, x: &String, m: &String, v: &String, _momentum: f64, eps: f64) -> String {
        // BatchNormalization with constant scale 1 and bias 0: BN folding treats it like any other.
        let Some(c) = self.graph.inits.get(m).map(|c| c.len()) else {
            return self.fail(ExportError::Op { node: name.into(), op: "BatchNormalization", reason: format!("running mean '{m}' is not an initializer") });
        };
        let w = self.constant(&format!("{name}.weight"), Const::F32(ArrayD::ones(IxDyn(&[c]))));
        let b = self.constant(&format!("{name}.bias"), Const::F32(ArrayD::zeros(IxDyn(&[c]))));
        let r = self.rank(x);
        let ins = vec![x.clone(), w, b, m.clone(), v.clone()];
        self.node(name, "BatchNormalization", ins, vec![("epsilon".into(), Attr::Float(eps as f32))], r)
    }
    fn batch_norm_batch_stats(&mut self, name: &str, x: &String, w: Option<&String>, b: Option<&String>, eps: f64) -> String {
        // (x - mean) / sqrt(var + eps) over every dim but 1, biased variance, as PyTorch.
        let r = self.rank(x);
        let axes: Vec<i64> = std::iter::once(0).chain(2..r as i64).collect();
        let mean = self.reduce(&format!("{name}.mean"), "ReduceMean", x, &axes, r);
        let d = self.node(&format!("{name}.centered"), "Sub", vec![x.clone(), mean], vec![], r);
        let sq = self.node(&format!("{name}.square"), "Mul", vec![d.clone(), d.clone()], vec![], r);
        let var = self.reduce(&format!("{name}.var"), "ReduceMean", &sq, &axes, r);
        let e = self.constant(&format!("{name}.eps"), Const::scalar_f32(eps as f32));
        let ve = self.node(&format!("{name}.var_eps"), "Add", vec![var, e], vec![], r);
        let sd = self.node(&format!("{name}.std"), "Sqrt", vec![ve], vec![], r);
        // The last node is named `name`.
        let last = if b.is_some() { "shift" } else if w.is_some() { "scale" } else { "normalized" };
        let at = |suffix: &str| if suffix == last { name.to_string() } else { format!("{name}.{suffix}") };
        let mut y = self.node(&at("normalized"), "Div", vec![d, sd], vec![], r);
        // (C,) affine parameters broadcast as (C, 1, ..., 1) against (N, C, ...).
        let per_channel: Vec<i64> = std::iter::once(-1).chain(std::iter::repeat_n(1, r.saturating_sub(2))).collect();
        for (p, op, suffix) in [(w, "Mul", "scale"), (b, "Add", "shift")] {
            if let Some(p) = p {
                let shape = self.constant(&format!("{name}.{suffix}_shape"), Const::i64s(&per_channel));
                let pc = self.node(&format!("{p}.per_channel"), "Reshape", vec![p.clone(), shape], vec![], per_channel.len());
                y = self.node(&at(suffix), op, vec![y, pc], vec![], r);
            }
        }
        y
    }
    fn gather_tokens(&mut self, name: &str, x: &String, ids: &String) -> String {
        // GatherND with batch_dims = 1 on ids (B, K, 1): out[b, k] = x[b, ids[b, k]], any batch.
        let shape = self.constant(&format!("{name}.ids_shape"), Const::i64s(&[0, 0, 1]));
        let ids3 = self.node(&format!("{name}.ids"), "Reshape", vec![ids.clone(), shape], vec![], 3);
        self.node(name, "GatherND", vec![x.clone(), ids3], vec![int("batch_dims", 1)], 3)
    }
    fn masked_blend(&mut self, name: &str, mask: &String, x: &String, token: &String) -> String {
        let r = self.rank(x);
        let shape = self.constant(&format!("{name}.mask_shape"), Const::i64s(&[0, 0, 1]));
        let m = self.node(&format!("{name}.mask"), "Reshape", vec![mask.clone(), shape], vec![], 3);
        let one = self.constant(&format!("{name}.one"), Const::scalar_f32(1.0));
        let keep = self.node(&format!("{name}.keep"), "Sub", vec![one, m.clone()], vec![], 3);
        let kept = self.node(&format!("{name}.kept"), "Mul", vec![x.clone(), keep], vec![], r);
        let tok = self.node(&format!("{name}.tokens"), "Mul", vec![token.clone(), m], vec![], r);
        self.node(name, "Add", vec![kept, tok], vec![], r)
    }
    fn upsample(&mut self, name: &str, x: &String, s: i64, mode: UpsampleMode) -> String {
        // PyTorch's source coordinates: nearest floor(dst / s) ("asymmetric" + "floor"),
        // bilinear align_corners=False max(0, (dst + 0.5) / s - 0.5) ("pytorch_half_pixel").
        let scales = self.constant(&format!("{name}.scales"), Const::F32(ArrayD::from_shape_vec(IxDyn(&[4]), vec![1.0, 1.0, s as f32, s as f32]).expect("4 scales")));
        let s = |k: &str, v: &str| (k.to_string(), Attr::Str(v.into()));
        let attrs = match mode {
            UpsampleMode::Nearest => vec![s("mode", "nearest"), s("coordinate_transformation_mode", "asymmetric"), s("nearest_mode", "floor")],
            UpsampleMode::Bilinear => vec![s("mode", "linear"), s("coordinate_transformation_mode", "pytorch_half_pixel")],
        };
        self.node(name, "Resize", vec![x.clone(), String::new(), scales], attrs, 4)
    }
    fn conv_transpose2d(&mut self, name: &str, x: &String, w: &String, b: Option<&String>, a: ConvTransposeArgs) -> String {
        let (ins, mut attrs) = self.conv_inputs(x, w, b, a.stride, a.padding, a.dilation, a.groups);
        attrs.push(ints("output_padding", vec![a.output_padding; 2]));
        self.node(name, "ConvTranspose", ins, attrs, 4)
    }
}

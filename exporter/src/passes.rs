//! Graph passes: BatchNorm folding, constant folding, dead-code removal and
//! fp16 conversion. Each returns how much it changed, so tests and the CLI
//! can report it.

use std::collections::HashSet;

use ndarray::{Axis, IxDyn};

use crate::graph::{Elem, Graph, Node};
use crate::tensor::{self, Attr, Const};

/// Folds `BatchNormalization(Conv(x, W, b))` into the Conv when the Conv
/// output feeds only the BN and all parameters are initializers:
/// `W' = W * s`, `b' = (b - mean) * s + beta` with `s = gamma / sqrt(var + eps)`
/// per output channel. The Conv takes the BN's output name; its bias is
/// named `{conv}.bias`. Returns the number of folded BNs.
pub fn fold_batch_norm(g: &mut Graph) -> usize {
    let mut folded = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        if g.nodes[i].op != "BatchNormalization" || g.nodes[i].inputs.len() != 5 {
            i += 1;
            continue;
        }
        let bn = g.nodes[i].clone();
        let Some(ci) = g.producer(&bn.inputs[0]) else {
            i += 1;
            continue;
        };
        let conv = g.nodes[ci].clone();
        let counts = g.use_counts();
        let single = |t: &str| counts.get(t).copied().unwrap_or(0) == 1;
        let eps = bn.attrs.iter().find_map(|(k, a)| if let (true, Attr::Float(f)) = (k == "epsilon", a) { Some(*f) } else { None }).unwrap_or(1e-5);
        let get = |t: &str| g.inits.get(t).and_then(|c| c.as_f32()).cloned();
        let (Some(w), Some(gamma), Some(beta), Some(mean), Some(var)) =
            (get(&conv.inputs.get(1).cloned().unwrap_or_default()), get(&bn.inputs[1]), get(&bn.inputs[2]), get(&bn.inputs[3]), get(&bn.inputs[4]))
        else {
            i += 1;
            continue;
        };
        if conv.op != "Conv" || !single(&conv.outputs[0]) || !single(&conv.inputs[1]) || conv.inputs.get(2).is_some_and(|b| !single(b) || get(b).is_none()) {
            i += 1;
            continue;
        }
        let c = w.shape()[0];
        let bias = conv.inputs.get(2).and_then(|b| get(b)).unwrap_or_else(|| ndarray::ArrayD::zeros(IxDyn(&[c])));
        let scale: Vec<f32> = (0..c).map(|k| gamma[k] / (var[k] + eps).sqrt()).collect();
        let mut w2 = w.clone();
        for (k, mut sub) in w2.axis_iter_mut(Axis(0)).enumerate() {
            sub.mapv_inplace(|v| v * scale[k]);
        }
        let b2 = ndarray::ArrayD::from_shape_fn(IxDyn(&[c]), |ix| (bias[ix[0]] - mean[ix[0]]) * scale[ix[0]] + beta[ix[0]]);
        let wname = conv.inputs[1].clone();
        g.inits.insert(wname, Const::F32(w2));
        let bname = match conv.inputs.get(2) {
            Some(b) => b.clone(),
            None => g.fresh_name(&format!("{}.bias", conv.name)),
        };
        g.inits.insert(bname.clone(), Const::F32(b2));
        let node = &mut g.nodes[ci];
        if node.inputs.len() < 3 {
            node.inputs.push(bname);
        }
        node.outputs = bn.outputs.clone();
        g.nodes.remove(i);
        folded += 1;
    }
    eliminate_dead(g);
    folded
}

/// Replaces nodes whose inputs are all initializers by the initializer they
/// compute (for the ops [`tensor::eval`] knows). Graph outputs are never
/// folded away. Returns the number of folded nodes.
pub fn fold_constants(g: &mut Graph) -> usize {
    let outputs: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    let mut folded = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let n = &g.nodes[i];
        let foldable = n.outputs.len() == 1 && !outputs.contains(&n.outputs[0]) && n.inputs.iter().all(|t| g.inits.contains_key(t));
        let value = if foldable {
            let ins: Vec<&Const> = n.inputs.iter().map(|t| &g.inits[t]).collect();
            tensor::eval(n.op, &n.attrs, &ins)
        } else {
            None
        };
        match value {
            Some(v) => {
                let out = g.nodes[i].outputs[0].clone();
                g.inits.insert(out, v);
                g.nodes.remove(i);
                folded += 1;
            }
            None => i += 1,
        }
    }
    eliminate_dead(g);
    folded
}

/// Removes nodes that no graph output depends on, then initializers no node
/// reads. Returns (nodes removed, initializers removed).
pub fn eliminate_dead(g: &mut Graph) -> (usize, usize) {
    let mut live: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    let mut keep = vec![false; g.nodes.len()];
    for (k, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|o| live.contains(o)) {
            keep[k] = true;
            live.extend(n.inputs.iter().cloned());
        }
    }
    let before = (g.nodes.len(), g.inits.len());
    let mut it = keep.iter();
    g.nodes.retain(|_| *it.next().expect("same length"));
    g.inits.retain(|k, _| live.contains(k));
    (before.0 - g.nodes.len(), before.1 - g.inits.len())
}

/// Ops that stay in fp32 after [`to_fp16`]: normalisations, softmax and
/// reductions, where fp16 overflows or loses the small differences that matter.
pub const KEEP_FP32: &[&str] =
    &["LayerNormalization", "Softmax", "BatchNormalization", "GlobalAveragePool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2"];

/// Float inputs that ONNX types as `tensor(float)` whatever the data type:
/// (op, input index). Their initializers stay fp32 under [`to_fp16`].
pub const FLOAT_ONLY_INPUTS: &[(&str, usize)] = &[("Resize", 1), ("Resize", 2)];

fn cast(name: String, input: String, output: String, to: Elem) -> Node {
    let to = match to {
        Elem::F32 => crate::proto::tensor_proto::DataType::Float as i64,
        Elem::F16 => crate::proto::tensor_proto::DataType::Float16 as i64,
        Elem::I64 => crate::proto::tensor_proto::DataType::Int64 as i64,
    };
    Node { name, op: "Cast", inputs: vec![input], outputs: vec![output], attrs: vec![("to".into(), Attr::Int(to))] }
}

/// Converts float initializers and computation to fp16, except the
/// [`KEEP_FP32`] ops, which get Casts around them and keep their own
/// parameters in fp32. With `keep_io_fp32` the graph's inputs and outputs
/// stay fp32 (Casts at the boundary). Int64 inputs (token ids) and the
/// [`FLOAT_ONLY_INPUTS`] stay as they are. Returns the number of Casts inserted.
pub fn to_fp16(g: &mut Graph, keep_io_fp32: bool) -> usize {
    let keep = |op: &str| KEEP_FP32.contains(&op);
    // Initializers read only by fp32 ops stay fp32.
    let mut fp32_only: HashSet<String> = g.inits.iter().filter(|(_, c)| c.as_f32().is_some()).map(|(k, _)| k.clone()).collect();
    for n in &g.nodes {
        if !keep(n.op) {
            for (k, i) in n.inputs.iter().enumerate() {
                if !FLOAT_ONLY_INPUTS.contains(&(n.op, k)) {
                    fp32_only.remove(i);
                }
            }
        }
    }
    for (k, c) in g.inits.iter_mut() {
        if let (Const::F32(a), false) = (&*c, fp32_only.contains(k)) {
            let mut h = tensor::to_f16(a);
            // A nonzero scalar (an eps: l2_normalize's clamp) must not flush to zero.
            if let (1, Some(v), Some(x)) = (a.len(), h.iter_mut().next(), a.iter().next()) {
                if v.to_f32() == 0.0 && *x != 0.0 {
                    *v = half::f16::from_bits(if *x > 0.0 { 0x0001 } else { 0x8001 });
                }
            }
            *c = Const::F16(h);
        }
    }
    let mut nodes = Vec::with_capacity(g.nodes.len());
    let mut casts = 0;
    let mut used = HashSet::new();
    let mut fresh = |base: String, g: &Graph| {
        let mut n = base.clone();
        let mut k = 0;
        while used.contains(&n) || g.producer(&n).is_some() || g.inits.contains_key(&n) {
            k += 1;
            n = format!("{base}_{k}");
        }
        used.insert(n.clone());
        n
    };
    if keep_io_fp32 {
        for inp in g.inputs.clone().into_iter().filter(|i| i.elem == Elem::F32) {
            let h = fresh(format!("{}.fp16", inp.name), g);
            g.rename_uses(&inp.name, &h);
            nodes.push(cast(h.clone(), inp.name.clone(), h, Elem::F16));
            casts += 1;
        }
    } else {
        for inp in g.inputs.iter_mut().filter(|i| i.elem == Elem::F32) {
            inp.elem = Elem::F16;
        }
    }
    let mut to32: std::collections::HashMap<String, String> = Default::default();
    for mut n in std::mem::take(&mut g.nodes) {
        if keep(n.op) {
            for t in n.inputs.iter_mut() {
                let is_fp32_init = matches!(g.inits.get(t.as_str()), Some(Const::F32(_)) | Some(Const::I64(_)));
                if t.is_empty() || is_fp32_init {
                    continue;
                }
                let t32 = match to32.get(t.as_str()) {
                    Some(x) => x.clone(),
                    None => {
                        let x = fresh(format!("{t}.fp32"), g);
                        nodes.push(cast(x.clone(), t.clone(), x.clone(), Elem::F32));
                        casts += 1;
                        to32.insert(t.clone(), x.clone());
                        x
                    }
                };
                *t = t32;
            }
            let outs = n.outputs.clone();
            let mut back = Vec::new();
            for (k, o) in outs.iter().enumerate() {
                let o32 = fresh(format!("{o}.fp32"), g);
                n.outputs[k] = o32.clone();
                back.push(cast(format!("{o}.to_fp16"), o32, o.clone(), Elem::F16));
                casts += 1;
            }
            nodes.push(n);
            nodes.extend(back);
        } else {
            nodes.push(n);
        }
    }
    g.nodes = nodes;
    if keep_io_fp32 {
        for o in g.outputs.clone() {
            let h = fresh(format!("{}.fp16", o.name), g);
            for n in g.nodes.iter_mut() {
                for t in n.inputs.iter_mut().chain(n.outputs.iter_mut()) {
                    if *t == o.name {
                        *t = h.clone();
                    }
                }
            }
            g.nodes.push(cast(format!("{}.to_fp32", o.name), h, o.name.clone(), Elem::F32));
            casts += 1;
        }
    } else {
        for o in &mut g.outputs {
            o.elem = Elem::F16;
        }
    }
    casts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Dim, ValueInfo};
    use ndarray::ArrayD;

    fn vi(name: &str, dims: &[i64]) -> ValueInfo {
        ValueInfo { name: name.into(), elem: Elem::F32, dims: dims.iter().map(|&d| Dim::Fixed(d)).collect() }
    }
    fn node(name: &str, op: &'static str, inputs: &[&str], attrs: Vec<(String, Attr)>) -> Node {
        Node { name: name.into(), op, inputs: inputs.iter().map(|s| s.to_string()).collect(), outputs: vec![name.into()], attrs }
    }
    fn arr(shape: &[usize], f: impl Fn(usize) -> f32) -> ArrayD<f32> {
        let n = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(f).collect()).unwrap()
    }

    /// 1x1 convolution + BatchNorm evaluated by loops, before and after folding.
    #[test]
    fn batch_norm_folds_into_conv_exactly() {
        let (cin, cout, hw) = (3usize, 4usize, 2usize);
        let mut g = Graph::default();
        g.inputs.push(vi("x", &[1, cin as i64, hw as i64, hw as i64]));
        g.inits.insert("c.weight".into(), Const::F32(arr(&[cout, cin, 1, 1], |i| (i as f32 * 0.37).sin())));
        g.inits.insert("bn.weight".into(), Const::F32(arr(&[cout], |i| 0.5 + i as f32 * 0.3)));
        g.inits.insert("bn.bias".into(), Const::F32(arr(&[cout], |i| i as f32 * 0.1 - 0.2)));
        g.inits.insert("bn.running_mean".into(), Const::F32(arr(&[cout], |i| (i as f32).cos())));
        g.inits.insert("bn.running_var".into(), Const::F32(arr(&[cout], |i| 0.5 + i as f32)));
        g.nodes.push(node("c", "Conv", &["x", "c.weight"], vec![("kernel_shape".into(), Attr::Ints(vec![1, 1]))]));
        g.nodes.push(node("bn", "BatchNormalization", &["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"], vec![("epsilon".into(), Attr::Float(1e-5))]));
        g.outputs.push(vi("bn", &[1, cout as i64, hw as i64, hw as i64]));
        let x = arr(&[1, cin, hw, hw], |i| (i as f32 * 0.71).cos());
        let f = |g: &Graph, k: &str| g.inits[k].as_f32().unwrap().clone();
        let conv = |w: &ArrayD<f32>, b: Option<&ArrayD<f32>>, o: usize, y: usize, xx: usize| -> f32 {
            (0..cin).map(|c| w[[o, c, 0, 0]] * x[[0, c, y, xx]]).sum::<f32>() + b.map(|b| b[o]).unwrap_or(0.0)
        };
        let before: Vec<f32> = (0..cout * hw * hw)
            .map(|i| {
                let (o, y, xx) = (i / (hw * hw), (i / hw) % hw, i % hw);
                let v = conv(&f(&g, "c.weight"), None, o, y, xx);
                (v - f(&g, "bn.running_mean")[o]) / (f(&g, "bn.running_var")[o] + 1e-5).sqrt() * f(&g, "bn.weight")[o] + f(&g, "bn.bias")[o]
            })
            .collect();
        assert_eq!(fold_batch_norm(&mut g), 1);
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].op, "Conv");
        assert_eq!(g.nodes[0].inputs, vec!["x", "c.weight", "c.bias"]);
        assert_eq!(g.nodes[0].outputs, vec!["bn"]);
        assert!(!g.inits.contains_key("bn.running_mean"), "BN parameters are dead after folding");
        for (i, want) in before.iter().enumerate() {
            let (o, y, xx) = (i / (hw * hw), (i / hw) % hw, i % hw);
            let got = conv(&f(&g, "c.weight"), Some(&f(&g, "c.bias")), o, y, xx);
            assert!((got - want).abs() < 1e-5, "{i}: {got} vs {want}");
        }
    }

    #[test]
    fn batch_norm_not_folded_when_conv_output_is_shared() {
        let mut g = Graph::default();
        g.inputs.push(vi("x", &[1, 1, 1, 1]));
        for k in ["c.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
            g.inits.insert(k.into(), Const::F32(arr(&[1, 1, 1, 1][..if k == "c.weight" { 4 } else { 1 }], |_| 1.0)));
        }
        g.nodes.push(node("c", "Conv", &["x", "c.weight"], vec![]));
        g.nodes.push(node("bn", "BatchNormalization", &["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"], vec![]));
        g.nodes.push(node("sum", "Add", &["bn", "c"], vec![]));
        g.outputs.push(vi("sum", &[1, 1, 1, 1]));
        assert_eq!(fold_batch_norm(&mut g), 0);
        assert_eq!(g.count_op("BatchNormalization"), 1);
    }

    #[test]
    fn constants_fold_through_chains_but_not_into_outputs() {
        let mut g = Graph::default();
        g.inputs.push(vi("x", &[2, 3]));
        g.inits.insert("w".into(), Const::F32(arr(&[2, 3], |i| i as f32)));
        g.inits.insert("one".into(), Const::scalar_f32(1.0));
        g.nodes.push(node("wt", "Transpose", &["w"], vec![("perm".into(), Attr::Ints(vec![1, 0]))]));
        g.nodes.push(node("wt1", "Add", &["wt", "one"], vec![]));
        g.nodes.push(node("y", "MatMul", &["x", "wt1"], vec![]));
        g.nodes.push(node("c", "Mul", &["one", "one"], vec![]));
        g.outputs.push(vi("y", &[2, 2]));
        g.outputs.push(vi("c", &[]));
        assert_eq!(fold_constants(&mut g), 2);
        let ops: Vec<_> = g.nodes.iter().map(|n| n.op).collect();
        assert_eq!(ops, vec!["MatMul", "Mul"], "graph outputs stay computed");
        let wt1 = g.inits["wt1"].as_f32().unwrap();
        assert_eq!(wt1.shape(), &[3, 2]);
        assert_eq!(wt1[[2, 1]], 6.0);
        assert!(!g.inits.contains_key("w"), "the untransposed weight is dead");
    }

    #[test]
    fn dead_nodes_and_initializers_are_removed() {
        let mut g = Graph::default();
        g.inputs.push(vi("x", &[1]));
        g.inits.insert("a".into(), Const::scalar_f32(2.0));
        g.inits.insert("unused".into(), Const::scalar_f32(3.0));
        g.nodes.push(node("live", "Mul", &["x", "a"], vec![]));
        g.nodes.push(node("dead1", "Relu", &["x"], vec![]));
        g.nodes.push(node("dead2", "Relu", &["dead1"], vec![]));
        g.outputs.push(vi("live", &[1]));
        assert_eq!(eliminate_dead(&mut g), (2, 1));
        assert_eq!(g.nodes.len(), 1);
        assert!(g.inits.contains_key("a"));
    }

    fn ln_graph() -> Graph {
        let mut g = Graph::default();
        g.inputs.push(vi("x", &[2, 4]));
        g.inits.insert("fc.weight".into(), Const::F32(arr(&[4, 4], |i| i as f32 * 0.1)));
        g.inits.insert("ln.weight".into(), Const::F32(arr(&[4], |_| 1.0)));
        g.inits.insert("ln.bias".into(), Const::F32(arr(&[4], |_| 0.0)));
        g.nodes.push(node("fc", "Gemm", &["x", "fc.weight"], vec![("transB".into(), Attr::Int(1))]));
        g.nodes.push(node("ln", "LayerNormalization", &["fc", "ln.weight", "ln.bias"], vec![]));
        g.nodes.push(node("sm", "Softmax", &["ln"], vec![]));
        g.outputs.push(vi("sm", &[2, 4]));
        g
    }

    #[test]
    fn fp16_keeps_layer_norm_and_softmax_in_fp32_and_io_fp32() {
        let mut g = ln_graph();
        let casts = to_fp16(&mut g, true);
        assert!(matches!(g.inits["fc.weight"], Const::F16(_)));
        assert!(matches!(g.inits["ln.weight"], Const::F32(_)), "LayerNorm parameters stay fp32");
        assert!(g.inputs.iter().chain(&g.outputs).all(|v| v.elem == Elem::F32));
        // input->fp16, fc->fp32 before LN, LN->fp16, ->fp32 before Softmax, Softmax->fp16, output->fp32.
        assert_eq!(casts, 6);
        let order: Vec<_> = g.nodes.iter().map(|n| n.op).collect();
        assert_eq!(order, vec!["Cast", "Gemm", "Cast", "LayerNormalization", "Cast", "Cast", "Softmax", "Cast", "Cast"]);
        let ln = g.nodes.iter().find(|n| n.op == "LayerNormalization").unwrap();
        let cast_in = g.nodes.iter().find(|n| n.outputs[0] == ln.inputs[0]).unwrap();
        assert_eq!((cast_in.op, &cast_in.attrs[0].1), ("Cast", &Attr::Int(1)), "LN input is cast to FLOAT");
        assert_eq!(g.nodes.last().unwrap().outputs[0], "sm", "the graph output keeps its name");
    }

    /// Token ids stay int64 inputs (no Cast), Resize scales stay float, a scalar eps stays nonzero.
    #[test]
    fn fp16_leaves_int64_inputs_resize_scales_and_eps() {
        let mut g = Graph::default();
        g.inputs.push(vi("x", &[2, 3, 4]));
        g.inputs.push(ValueInfo { name: "ids".into(), elem: Elem::I64, dims: vec![Dim::Fixed(2), Dim::Fixed(2)] });
        g.inits.insert("shape".into(), Const::i64s(&[0, 0, 1]));
        g.inits.insert("scales".into(), Const::F32(arr(&[4], |_| 2.0)));
        g.inits.insert("eps".into(), Const::scalar_f32(1e-12));
        g.nodes.push(node("ids3", "Reshape", &["ids", "shape"], vec![]));
        g.nodes.push(node("keep", "GatherND", &["x", "ids3"], vec![("batch_dims".into(), Attr::Int(1))]));
        g.nodes.push(node("clamp", "Max", &["keep", "eps"], vec![]));
        g.nodes.push(node("img", "Reshape", &["clamp", "shape"], vec![]));
        g.nodes.push(node("up", "Resize", &["img", "", "scales"], vec![]));
        g.outputs.push(vi("up", &[2, 2, 6, 2]));
        for keep_io in [true, false] {
            let mut g = g.clone();
            to_fp16(&mut g, keep_io);
            assert_eq!(g.inputs[1].elem, Elem::I64);
            assert!(g.nodes.iter().filter(|n| n.op == "Cast").all(|n| n.inputs[0] != "ids"), "ids are not cast");
            assert!(matches!(g.inits["scales"], Const::F32(_)), "Resize scales are tensor(float)");
            let Const::F16(eps) = &g.inits["eps"] else { panic!("eps is fp16") };
            assert!(eps.iter().all(|v| v.to_f32() > 0.0), "1e-12 flushed to zero");
        }
    }

    #[test]
    fn fp16_io_when_asked() {
        let mut g = ln_graph();
        let casts = to_fp16(&mut g, false);
        assert_eq!(casts, 4);
        assert!(g.inputs.iter().chain(&g.outputs).all(|v| v.elem == Elem::F16));
    }
}

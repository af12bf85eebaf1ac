//! Sinks "keep index 0" slices towards the graph inputs, so the nodes after
//! the last point that needs every index compute only the kept one.
//!
//! A ViT with class-token pooling ends in `Slice(tokens, [0:1], axis 1)`: of
//! the last block's 197 tokens only the class token reaches the output. Its
//! MLP, attention projection, residual adds and norms act per token, and the
//! attention itself per query row, so the slice can move up through them to
//! the query (`q`) and the residual input, which are the first tensors other
//! tokens still need (keys and values). For ViT-S/16 at 224 pixels that drops
//! about 0.6 of 9.2 GFLOP per image.
//!
//! [`sink_index_slices`] moves a slice `[0:1]` (step 1, one axis) above the node
//! producing its input when every reader of that input is such a slice and the
//! node acts independently along that axis (see [`through`]); the node's other
//! inputs get slices of their own, which move on in later rounds. It stops at a
//! tensor with other readers, at graph outputs and at ops it does not know.
//!
//! Broadcasting: an input whose dimension on the sliced axis is 1 broadcasts
//! along it; slicing `[0:1]` of a size-1 dimension leaves it unchanged, so
//! every activation input along the axis can be sliced without knowing its
//! size. Initializers are left alone when their dimension there is 1 (or
//! missing), and stop the move otherwise. Each output element is computed by
//! the same op on the same values, so results match the unsliced graph up to
//! the kernels' summation order for a different row count.

use std::collections::{HashMap, HashSet};

use crate::graph::{Graph, Node};
use crate::tensor::{Attr, Const};

/// Ops that map each element on its own: slicing commutes with them on every
/// axis of their first input (Clip's min/max are scalars).
const ELEMENTWISE: &[&str] = &["Abs", "Cast", "Clip", "Erf", "Exp", "Gelu", "Identity", "Neg", "Relu", "Sigmoid", "Sqrt", "Tanh"];
/// Binary ops with multidirectional broadcasting.
const BROADCAST: &[&str] = &["Add", "Sub", "Mul", "Div"];

fn attr_int(n: &Node, name: &str) -> Option<i64> {
    n.attrs.iter().find(|(k, _)| k == name).and_then(|(_, a)| if let Attr::Int(v) = a { Some(*v) } else { None })
}

fn attr_ints(n: &Node, name: &str) -> Option<Vec<i64>> {
    n.attrs.iter().find(|(k, _)| k == name).and_then(|(_, a)| if let Attr::Ints(v) = a { Some(v.clone()) } else { None })
}

fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    (0..rank as i64).contains(&a).then_some(a as usize)
}

fn init_i64s(g: &Graph, t: &str) -> Option<Vec<i64>> {
    g.inits.get(t).and_then(Const::as_i64).map(|a| a.iter().copied().collect())
}

/// The rank of every tensor whose rank follows from the graph's declared
/// inputs and initializers through the ops below; other tensors are absent.
pub fn infer_ranks(g: &Graph) -> HashMap<String, usize> {
    let mut r: HashMap<String, usize> = g.inputs.iter().map(|i| (i.name.clone(), i.dims.len())).collect();
    r.extend(g.inits.iter().map(|(k, c)| (k.clone(), c.dims().len())));
    for n in &g.nodes {
        let rin = |k: usize| n.inputs.get(k).and_then(|t| r.get(t)).copied();
        let rank = match n.op {
            "Add" | "Sub" | "Mul" | "Div" => n.inputs.iter().map(|t| r.get(t).copied()).collect::<Option<Vec<_>>>().and_then(|v| v.into_iter().max()),
            "MatMul" => match (rin(0), rin(1)) {
                (Some(a), Some(b)) if a >= 2 && b >= 2 => Some(a.max(b)),
                _ => None,
            },
            "Transpose" => attr_ints(n, "perm").map(|p| p.len()).or(rin(0)),
            "Reshape" => n.inputs.get(1).and_then(|t| init_i64s(g, t)).map(|s| s.len()),
            "Gemm" | "Flatten" => Some(2),
            "Shape" => Some(1),
            "Expand" => match (rin(0), n.inputs.get(1).and_then(|t| g.inits.get(t)).map(Const::len)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            },
            op if ELEMENTWISE.contains(&op) => rin(0),
            // Every input of a Concat has its rank (the class token's comes from an Expand to a computed shape).
            "Concat" => n.inputs.iter().find_map(|t| r.get(t)).copied(),
            "LayerNormalization" | "Softmax" | "Slice" | "Conv" | "BatchNormalization" | "MaxPool" | "GlobalAveragePool" => rin(0),
            _ => None,
        };
        if let (Some(rank), [out]) = (rank, n.outputs.as_slice()) {
            r.insert(out.clone(), rank);
        }
    }
    r
}

/// The axis of a `Slice` keeping index 0 (`starts [0]`, `ends [1]`, step 1) of one axis.
fn pick_axis(g: &Graph, ranks: &HashMap<String, usize>, n: &Node) -> Option<usize> {
    if n.op != "Slice" || !(3..=5).contains(&n.inputs.len()) || n.outputs.len() != 1 {
        return None;
    }
    let rank = *ranks.get(&n.inputs[0])?;
    let (starts, ends) = (init_i64s(g, &n.inputs[1])?, init_i64s(g, &n.inputs[2])?);
    let axes = match n.inputs.get(3) {
        Some(t) => init_i64s(g, t)?,
        None => vec![0],
    };
    let steps_ok = n.inputs.get(4).is_none_or(|t| init_i64s(g, t).is_some_and(|s| s == [1]));
    (starts == [0] && ends == [1] && axes.len() == 1 && steps_ok).then(|| norm_axis(axes[0], rank)).flatten()
}

/// For a node whose output is sliced to index 0 of `axis`: the `(input, axis)`
/// pairs to slice instead, or `None` when the slice cannot move above it.
/// Inputs absent from the list (weights, broadcast constants) stay as they are.
pub fn through(g: &Graph, ranks: &HashMap<String, usize>, n: &Node, axis: usize) -> Option<Vec<(usize, usize)>> {
    let r = *ranks.get(n.outputs.first()?)?;
    // Broadcasting input `k`: the axis counted from the right, or nothing when
    // the input lacks it; constants must broadcast (size 1) there.
    let broadcast = |k: usize| -> Option<Option<(usize, usize)>> {
        let t = &n.inputs[k];
        let rk = *ranks.get(t)?;
        if axis + rk < r {
            return Some(None);
        }
        let a = axis + rk - r;
        match g.inits.get(t) {
            Some(c) => (c.dims()[a] == 1).then_some(None),
            None => Some(Some((k, a))),
        }
    };
    match n.op {
        op if ELEMENTWISE.contains(&op) => Some(vec![(0, axis)]),
        op if BROADCAST.contains(&op) => (0..n.inputs.len()).map(broadcast).collect::<Option<Vec<_>>>().map(|v| v.into_iter().flatten().collect()),
        "LayerNormalization" => (axis < norm_axis(attr_int(n, "axis").unwrap_or(-1), r)?).then(|| vec![(0, axis)]),
        "Softmax" => (axis != norm_axis(attr_int(n, "axis").unwrap_or(-1), r)?).then(|| vec![(0, axis)]),
        "Transpose" => {
            let perm = attr_ints(n, "perm").unwrap_or_else(|| (0..r as i64).rev().collect());
            Some(vec![(0, usize::try_from(*perm.get(axis)?).ok()?)])
        }
        "Reshape" => {
            // Dims copied from the input (`0`, allowzero off) up to the axis keep
            // the layout before it; the rest (a `-1` included) is per index.
            let shape = init_i64s(g, n.inputs.get(1)?)?;
            let copied = shape.iter().take(axis + 1).all(|&d| d == 0) && shape.len() > axis;
            (copied && attr_int(n, "allowzero").unwrap_or(0) == 0 && *ranks.get(&n.inputs[0])? > axis).then(|| vec![(0, axis)])
        }
        "Slice" => {
            // Another slice commutes when it leaves this axis alone; never
            // swap two index-0 slices (they would swap back and forth).
            if pick_axis(g, ranks, n).is_some() || n.inputs[1..].iter().any(|t| !g.inits.contains_key(t)) {
                return None;
            }
            let axes = match n.inputs.get(3) {
                Some(t) => init_i64s(g, t)?,
                None => (0..init_i64s(g, &n.inputs[1])?.len() as i64).collect(),
            };
            let axes: Option<Vec<usize>> = axes.iter().map(|&a| norm_axis(a, r)).collect();
            (!axes?.contains(&axis)).then(|| vec![(0, axis)])
        }
        "MatMul" => {
            let (ra, rb) = (*ranks.get(&n.inputs[0])?, *ranks.get(&n.inputs[1])?);
            if axis + 1 == r {
                None
            } else if axis + 2 == r {
                // Output rows are the rows of A.
                (!g.inits.contains_key(&n.inputs[0])).then(|| vec![(0, ra - 2)])
            } else {
                // A batch axis: both operands broadcast over it.
                let keep = |k: usize, rk: usize| -> Option<Option<(usize, usize)>> {
                    if axis + rk < r {
                        return Some(None);
                    }
                    let a = axis + rk - r;
                    match g.inits.get(&n.inputs[k]) {
                        Some(c) => (c.dims()[a] == 1).then_some(None),
                        None => Some(Some((k, a))),
                    }
                };
                Some([keep(0, ra)?, keep(1, rb)?].into_iter().flatten().collect())
            }
        }
        _ => None,
    }
}

/// Moves index-0 slices up as far as they go (see the module docs). Returns
/// how many nodes now run on the sliced tensors instead of the full ones.
pub fn sink_index_slices(g: &mut Graph) -> usize {
    let mut ranks = infer_ranks(g);
    let mut moved = 0;
    while let Some((pi, axis, readers)) = next_move(g, &ranks) {
        let outputs: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
        // The node takes over the name of one reader's output (a graph output if one is).
        let keep = readers.iter().copied().find(|&c| outputs.contains(g.nodes[c].outputs[0].as_str())).unwrap_or(readers[0]);
        let new_out = g.nodes[keep].outputs[0].clone();
        for &c in &readers {
            let o = g.nodes[c].outputs[0].clone();
            if o != new_out {
                g.rename_uses(&o, &new_out);
            }
        }
        let plan = through(g, &ranks, &g.nodes[pi], axis).expect("checked by next_move");
        let mut p = g.nodes[pi].clone();
        // Slices to place right before the node: new ones, and existing equal
        // ones found after it (they read only `src` and constants, so can move up).
        let mut before: Vec<Node> = Vec::new();
        let mut moved_up: HashSet<usize> = HashSet::new();
        for (k, a) in plan {
            let src = p.inputs[k].clone();
            let existing = (0..g.nodes.len()).find(|&j| !readers.contains(&j) && g.nodes[j].inputs.first() == Some(&src) && pick_axis(g, &ranks, &g.nodes[j]) == Some(a));
            p.inputs[k] = match existing {
                Some(j) => {
                    if j > pi && moved_up.insert(j) {
                        before.push(g.nodes[j].clone());
                    }
                    g.nodes[j].outputs[0].clone()
                }
                None => {
                    let name = g.fresh_name(&format!("{src}.index0_axis{a}"));
                    let consts = [("starts", 0), ("ends", 1), ("axes", a as i64)].map(|(s, v)| {
                        let c = g.fresh_name(&format!("{name}.{s}"));
                        g.inits.insert(c.clone(), Const::i64s(&[v]));
                        c
                    });
                    ranks.insert(name.clone(), ranks[&src]);
                    let n = Node { name: name.clone(), op: "Slice", inputs: std::iter::once(src).chain(consts).collect(), outputs: vec![name.clone()], attrs: vec![] };
                    // Reserve the name against the next `fresh_name`.
                    g.nodes.push(n.clone());
                    moved_up.insert(g.nodes.len() - 1);
                    before.push(n);
                    name
                }
            };
        }
        p.outputs[0] = new_out;
        let old = std::mem::take(&mut g.nodes);
        for (i, n) in old.into_iter().enumerate() {
            if i == pi {
                g.nodes.append(&mut before);
                g.nodes.push(p.clone());
            } else if !readers.contains(&i) && !moved_up.contains(&i) {
                g.nodes.push(n);
            }
        }
        moved += 1;
    }
    if moved > 0 {
        crate::passes::eliminate_dead(g);
    }
    moved
}

/// The next node to move a slice above: `(node, axis, reader slices)`.
fn next_move(g: &Graph, ranks: &HashMap<String, usize>) -> Option<(usize, usize, Vec<usize>)> {
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for t in &n.inputs {
            readers.entry(t.as_str()).or_default().push(i);
        }
    }
    let outputs: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    for (pi, p) in g.nodes.iter().enumerate() {
        let [t] = p.outputs.as_slice() else { continue };
        let Some(rs) = readers.get(t.as_str()) else { continue };
        if outputs.contains(t.as_str()) {
            continue;
        }
        let axes: Option<Vec<usize>> = rs.iter().map(|&c| (g.nodes[c].inputs[0] == *t && !g.nodes[c].inputs[1..].contains(t)).then(|| pick_axis(g, ranks, &g.nodes[c])).flatten()).collect();
        let Some(axes) = axes else { continue };
        if axes.windows(2).any(|w| w[0] != w[1]) {
            continue;
        }
        let graph_outs = rs.iter().filter(|&&c| outputs.contains(g.nodes[c].outputs[0].as_str())).count();
        if graph_outs > 1 || through(g, ranks, p, axes[0]).is_none() {
            continue;
        }
        let mut rs = rs.clone();
        rs.dedup();
        return Some((pi, axes[0], rs));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Dim, Elem, ValueInfo};
    use crate::tensor;
    use ndarray::{ArrayD, Axis, Dimension, IxDyn};

    fn node(name: &str, op: &'static str, inputs: &[&str], attrs: Vec<(String, Attr)>) -> Node {
        Node { name: name.into(), op, inputs: inputs.iter().map(|s| s.to_string()).collect(), outputs: vec![name.into()], attrs }
    }
    fn arr(shape: &[usize], seed: f32) -> ArrayD<f32> {
        let n = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| ((i as f32 + 1.0) * seed).sin() * 0.5).collect()).unwrap()
    }
    fn perm(p: &[i64]) -> Vec<(String, Attr)> {
        vec![("perm".into(), Attr::Ints(p.to_vec()))]
    }

    /// A pre-norm transformer block with class-token pooling, as the ViT
    /// records it: x (B=2, N=5, C=8), 2 heads of 4.
    fn vit_tail() -> Graph {
        let mut g = Graph::default();
        let (c, h, d) = (8usize, 2i64, 4i64);
        g.inputs.push(ValueInfo { name: "x".into(), elem: Elem::F32, dims: vec![Dim::Sym("batch".into()), Dim::Fixed(5), Dim::Fixed(c as i64)] });
        for (k, shape, seed) in
            [("qkv.w", vec![c, 3 * c], 0.3), ("qkv.b", vec![3 * c], 0.7), ("proj.w", vec![c, c], 0.11), ("proj.b", vec![c], 0.5), ("fc.w", vec![c, c], 0.23), ("fc.b", vec![c], 0.9), ("ln.w", vec![c], 1.3), ("ln.b", vec![c], 0.2)]
        {
            g.inits.insert(k.into(), Const::F32(arr(&shape, seed)));
        }
        g.inits.insert("scale".into(), Const::scalar_f32(0.5));
        let ints = [("qkv.shape", vec![0, 0, 3, h, d]), ("head.shape", vec![0, 0, h, d]), ("merge.shape", vec![0, 0, c as i64]), ("flat.shape", vec![0, -1])];
        for (k, v) in ints.iter().cloned().chain([("s0", vec![0]), ("s1", vec![1]), ("s2", vec![2]), ("s3", vec![3]), ("ax1", vec![1]), ("ax2", vec![2])]) {
            g.inits.insert(k.into(), Const::i64s(&v));
        }
        let ln = || vec![("axis".to_string(), Attr::Int(-1)), ("epsilon".to_string(), Attr::Float(1e-6))];
        g.nodes = vec![
            node("norm1", "LayerNormalization", &["x", "ln.w", "ln.b"], ln()),
            node("qkv.mm", "MatMul", &["norm1", "qkv.w"], vec![]),
            node("qkv", "Add", &["qkv.mm", "qkv.b"], vec![]),
            node("qkv.r", "Reshape", &["qkv", "qkv.shape"], vec![]),
            node("q", "Slice", &["qkv.r", "s0", "s1", "ax2"], vec![]),
            node("k", "Slice", &["qkv.r", "s1", "s2", "ax2"], vec![]),
            node("v", "Slice", &["qkv.r", "s2", "s3", "ax2"], vec![]),
            node("q.r", "Reshape", &["q", "head.shape"], vec![]),
            node("k.r", "Reshape", &["k", "head.shape"], vec![]),
            node("v.r", "Reshape", &["v", "head.shape"], vec![]),
            node("q.t", "Transpose", &["q.r"], perm(&[0, 2, 1, 3])),
            node("k.t", "Transpose", &["k.r"], perm(&[0, 2, 3, 1])),
            node("v.t", "Transpose", &["v.r"], perm(&[0, 2, 1, 3])),
            node("q.s", "Mul", &["q.t", "scale"], vec![]),
            node("qk", "MatMul", &["q.s", "k.t"], vec![]),
            node("att", "Softmax", &["qk"], vec![("axis".into(), Attr::Int(-1))]),
            node("av", "MatMul", &["att", "v.t"], vec![]),
            node("av.t", "Transpose", &["av"], perm(&[0, 2, 1, 3])),
            node("merge", "Reshape", &["av.t", "merge.shape"], vec![]),
            node("proj.mm", "MatMul", &["merge", "proj.w"], vec![]),
            node("proj", "Add", &["proj.mm", "proj.b"], vec![]),
            node("res1", "Add", &["x", "proj"], vec![]),
            node("norm2", "LayerNormalization", &["res1", "ln.w", "ln.b"], ln()),
            node("fc.mm", "MatMul", &["norm2", "fc.w"], vec![]),
            node("fc", "Add", &["fc.mm", "fc.b"], vec![]),
            node("act", "Relu", &["fc"], vec![]),
            node("gate", "Mul", &["fc", "act"], vec![]),
            node("res2", "Add", &["res1", "gate"], vec![]),
            node("norm", "LayerNormalization", &["res2", "ln.w", "ln.b"], ln()),
            node("cls", "Slice", &["norm", "s0", "s1", "ax1"], vec![]),
            node("features", "Reshape", &["cls", "flat.shape"], vec![]),
        ];
        g.outputs.push(ValueInfo { name: "features".into(), elem: Elem::F32, dims: vec![Dim::Sym("batch".into()), Dim::Fixed(c as i64)] });
        g
    }

    /// Naive evaluation of the ops above (float64 sums), for before/after comparisons.
    fn run(g: &Graph, x: &ArrayD<f32>) -> ArrayD<f32> {
        let mut env: HashMap<String, Const> = g.inits.clone().into_iter().collect();
        env.insert("x".into(), Const::F32(x.clone()));
        for n in &g.nodes {
            let ins: Vec<&Const> = n.inputs.iter().map(|t| &env[t]).collect();
            let f = |k: usize| ins[k].as_f32().unwrap();
            let y = match n.op {
                "Relu" => f(0).mapv(|v| v.max(0.0)),
                "MatMul" => {
                    let (a, b) = (f(0), f(1));
                    let (m, k, nn) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1], b.shape()[b.ndim() - 1]);
                    let batch = tensor::broadcast_shape(&a.shape()[..a.ndim() - 2], &b.shape()[..b.ndim() - 2]).unwrap();
                    let mut full = batch.clone();
                    full.extend([m, nn]);
                    let (mut sa, mut sb) = (batch.clone(), batch.clone());
                    sa.extend([m, k]);
                    sb.extend([k, nn]);
                    let (a, b) = (a.broadcast(IxDyn(&sa)).unwrap(), b.broadcast(IxDyn(&sb)).unwrap());
                    ArrayD::from_shape_fn(IxDyn(&full), |ix| {
                        let r = ix.ndim();
                        (0..k)
                            .map(|kk| {
                                let (mut ia, mut ib) = (ix.clone(), ix.clone());
                                ia[r - 1] = kk;
                                ib[r - 2] = kk;
                                a[&ia] as f64 * b[&ib] as f64
                            })
                            .sum::<f64>() as f32
                    })
                }
                "Softmax" => {
                    let mut y = f(0).clone();
                    for mut row in y.lanes_mut(Axis(f(0).ndim() - 1)) {
                        let m = row.fold(f32::MIN, |a, &b| a.max(b));
                        row.mapv_inplace(|v| (v - m).exp());
                        let s = row.sum();
                        row.mapv_inplace(|v| v / s);
                    }
                    y
                }
                "LayerNormalization" => {
                    let mut y = f(0).clone();
                    for mut row in y.lanes_mut(Axis(f(0).ndim() - 1)) {
                        let mean = row.mean().unwrap();
                        let var = row.mapv(|v| (v - mean).powi(2)).mean().unwrap();
                        row.mapv_inplace(|v| (v - mean) / (var + 1e-6).sqrt());
                    }
                    &(&y * f(1)) + f(2)
                }
                op => tensor::eval(op, &n.attrs, &ins).unwrap_or_else(|| panic!("{op}")).as_f32().unwrap().clone(),
            };
            env.insert(n.outputs[0].clone(), Const::F32(y));
        }
        env["features"].as_f32().unwrap().clone()
    }

    #[test]
    fn class_token_slice_moves_up_to_the_query_and_the_residual() {
        let mut g = vit_tail();
        let x = arr(&[2, 5, 8], 0.37);
        let want = run(&g, &x);
        let n_before = g.nodes.len();
        // norm, res2, gate, act, fc, fc.mm, norm2, res1, proj, proj.mm, merge,
        // av.t, av, att, qk, q.s, q.t, q.r (then stops at `q`: its input is shared).
        assert_eq!(sink_index_slices(&mut g), 18);
        let got = run(&g, &x);
        assert_eq!(got.shape(), &[2, 8]);
        // A NaN makes the error infinite (`f32::max` would drop it).
        let err = (&got - &want).fold(0.0f32, |a, &b| if b.is_finite() { a.max(b.abs()) } else { f32::INFINITY });
        assert!(err < 1e-6, "max abs err {err}");
        // The class-token slice is gone; two index-0 slices read the query and x.
        let r = infer_ranks(&g);
        let picks: Vec<(&str, usize)> = g.nodes.iter().filter_map(|n| pick_axis(&g, &r, n).map(|a| (n.inputs[0].as_str(), a))).collect();
        assert_eq!(picks, vec![("qkv.r", 2), ("q", 1), ("x", 1)]);
        assert_eq!(g.nodes.len(), n_before + 1);
        // Keys and values still see every token.
        let k = g.nodes.iter().find(|n| n.name == "qk").unwrap();
        assert_eq!(k.inputs[1], "k.t");
        assert!(g.nodes.iter().any(|n| n.name == "v.t" && n.inputs == ["v.r"]));
        // Topological order holds.
        let mut seen: HashSet<&str> = g.inits.keys().map(|s| s.as_str()).chain(["x"]).collect();
        for n in &g.nodes {
            assert!(n.inputs.iter().all(|t| seen.contains(t.as_str())), "{} reads a tensor made later", n.name);
            seen.insert(&n.outputs[0]);
        }
        assert_eq!(sink_index_slices(&mut g), 0, "a second run finds nothing");
    }

    #[test]
    fn slices_stop_at_shared_tensors_outputs_and_unknown_ops() {
        // Mean pooling (no slice): nothing moves.
        let mut g = vit_tail();
        let i = g.nodes.iter().position(|n| n.name == "cls").unwrap();
        g.nodes[i] = node("cls", "ReduceMean", &["norm"], vec![("axes".into(), Attr::Ints(vec![1]))]);
        assert_eq!(sink_index_slices(&mut g), 0);
        // The tensor before the slice is also a graph output: it must stay whole.
        let mut g = vit_tail();
        g.outputs.push(ValueInfo { name: "norm".into(), elem: Elem::F32, dims: vec![] });
        assert_eq!(sink_index_slices(&mut g), 0);
        // A slice keeping index 1 is not moved.
        let mut g = vit_tail();
        let i = g.nodes.iter().position(|n| n.name == "cls").unwrap();
        g.nodes[i].inputs = vec!["norm".into(), "s1".into(), "s2".into(), "ax1".into()];
        assert_eq!(sink_index_slices(&mut g), 0);
        // Slicing the normalised axis of a LayerNorm is not per-index.
        let mut g = vit_tail();
        g.inits.insert("ax2".into(), Const::i64s(&[2]));
        let i = g.nodes.iter().position(|n| n.name == "cls").unwrap();
        g.nodes[i].inputs[3] = "ax2".into();
        assert_eq!(sink_index_slices(&mut g), 0);
    }

    #[test]
    fn constants_that_vary_along_the_axis_stop_the_move() {
        // pos_embed-like (1, N, C) constant added before the slice: stop there.
        let mut g = Graph::default();
        g.inputs.push(ValueInfo { name: "x".into(), elem: Elem::F32, dims: vec![Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(2)] });
        g.inits.insert("pos".into(), Const::F32(arr(&[1, 3, 2], 0.5)));
        g.inits.insert("bias".into(), Const::F32(arr(&[1, 1, 2], 0.9)));
        for (k, v) in [("s0", 0), ("s1", 1), ("ax1", 1)] {
            g.inits.insert(k.into(), Const::i64s(&[v]));
        }
        g.nodes = vec![
            node("a", "Add", &["x", "pos"], vec![]),
            node("b", "Add", &["a", "bias"], vec![]),
            node("r", "Relu", &["b"], vec![]),
            node("y", "Slice", &["r", "s0", "s1", "ax1"], vec![]),
        ];
        g.outputs.push(ValueInfo { name: "y".into(), elem: Elem::F32, dims: vec![] });
        assert_eq!(sink_index_slices(&mut g), 2, "through Relu and the broadcast bias");
        let ops: Vec<(&str, &str)> = g.nodes.iter().map(|n| (n.op, n.inputs[0].as_str())).collect();
        assert_eq!(ops, vec![("Add", "x"), ("Slice", "a"), ("Add", "a.index0_axis1"), ("Relu", "b.index0_axis1")]);
        assert_eq!(g.nodes.last().unwrap().outputs[0], "y", "the graph output keeps its name");
    }

    #[test]
    fn concat_takes_the_rank_of_any_known_input() {
        // The ViT's class token is an Expand to a computed shape (rank unknown)
        // concatenated with the patch tokens.
        let mut g = Graph::default();
        g.inputs.push(ValueInfo { name: "x".into(), elem: Elem::F32, dims: vec![Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(2)] });
        g.inits.insert("cls".into(), Const::F32(arr(&[1, 1, 2], 0.5)));
        g.nodes = vec![
            node("shape", "Shape", &["x"], vec![]),
            node("e", "Expand", &["cls", "shape"], vec![]),
            node("cat", "Concat", &["e", "x"], vec![("axis".into(), Attr::Int(1))]),
        ];
        let r = infer_ranks(&g);
        assert_eq!((r.get("shape"), r.get("e"), r.get("cat")), (Some(&1), None, Some(&3)));
    }
}

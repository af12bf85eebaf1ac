//! Rewrites that make the graph match the subgraph patterns ONNX Runtime fuses.
//!
//! ORT's `GeluFusion` (level 2, "extended") matches the erf GELU only in the form
//! `Div(x, sqrt 2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5)` (the form torch.onnx
//! writes); after it, `BiasGeluFusion` folds the preceding bias `Add` in too. The
//! recorder writes `Mul(x, 1/sqrt 2)` instead, which ORT 1.31 leaves as 5 separate
//! elementwise kernels per MLP (checked by dumping both ViT-S/16 graphs through
//! `SessionOptions.optimized_model_filepath`: torch.onnx's gets 12 `BiasGelu`,
//! ours kept 12 `Erf`). [`gelu_div_form`] rewrites the scale into the division.
//!
//! Numerics: `x / sqrt 2` and `x * (1 / sqrt 2)` (PyTorch's CPU kernel multiplies
//! by `M_SQRT1_2`) differ by at most one rounding of the scaled value; ORT then runs
//! its own fused GELU kernel, as it does for torch.onnx's graph.

use crate::graph::Graph;
use crate::tensor::Const;

/// Replaces each `Mul(x, c)` with `c` a scalar initializer equal to `1/sqrt 2`
/// (in either input) whose output feeds only an `Erf` by `Div(x, sqrt 2)`.
/// The node keeps its name and output; the constant becomes `{node}.sqrt2`
/// (the old one is dropped when nothing else reads it). Returns how many were rewritten.
pub fn gelu_div_form(g: &mut Graph) -> usize {
    let mut rewritten = 0;
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if n.op != "Mul" || n.inputs.len() != 2 || n.outputs.len() != 1 {
            continue;
        }
        let is_inv_sqrt2 = |t: &str| {
            g.inits
                .get(t)
                .and_then(Const::as_f32)
                .is_some_and(|a| a.len() == 1 && a.iter().all(|&v| v == std::f32::consts::FRAC_1_SQRT_2))
        };
        let Some(c) = (0..2).find(|&k| is_inv_sqrt2(&n.inputs[k])) else { continue };
        let out = &n.outputs[0];
        let readers: Vec<&str> = g.nodes.iter().filter(|m| m.inputs.iter().any(|t| t == out)).map(|m| m.op).collect();
        if readers != ["Erf"] || g.outputs.iter().any(|o| &o.name == out) {
            continue;
        }
        let x = n.inputs[1 - c].clone();
        let old = n.inputs[c].clone();
        let shape = g.inits[&old].as_f32().expect("checked f32").raw_dim();
        let name = g.fresh_name(&format!("{}.sqrt2", n.name));
        g.inits.insert(name.clone(), Const::F32(ndarray::ArrayD::from_elem(shape, std::f32::consts::SQRT_2)));
        let n = &mut g.nodes[i];
        n.op = "Div";
        n.inputs = vec![x, name];
        if g.use_count(&old) == 0 {
            g.inits.remove(&old);
        }
        rewritten += 1;
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Node;

    fn node(name: &str, op: &'static str, inputs: &[&str], output: &str) -> Node {
        Node { name: name.into(), op, inputs: inputs.iter().map(|s| s.to_string()).collect(), outputs: vec![output.into()], attrs: vec![] }
    }

    fn gelu_graph(c: f32) -> Graph {
        let mut g = Graph::default();
        g.inits.insert("act.inv_sqrt2".into(), Const::scalar_f32(c));
        g.inits.insert("act.one".into(), Const::scalar_f32(1.0));
        g.inits.insert("act.half".into(), Const::scalar_f32(0.5));
        g.nodes = vec![
            node("act.scale", "Mul", &["x", "act.inv_sqrt2"], "s"),
            node("act.erf", "Erf", &["s"], "e"),
            node("act.add1", "Add", &["e", "act.one"], "e1"),
            node("act.mulx", "Mul", &["x", "e1"], "xe"),
            node("act", "Mul", &["xe", "act.half"], "y"),
        ];
        g
    }

    #[test]
    fn rewrites_the_erf_gelu_scale_into_a_division_by_sqrt2() {
        let mut g = gelu_graph(std::f32::consts::FRAC_1_SQRT_2);
        assert_eq!(gelu_div_form(&mut g), 1);
        let n = &g.nodes[0];
        assert_eq!((n.op, n.name.as_str(), n.outputs[0].as_str()), ("Div", "act.scale", "s"));
        assert_eq!(n.inputs[0], "x");
        assert_eq!(g.inits[&n.inputs[1]].as_f32().unwrap().iter().copied().collect::<Vec<_>>(), vec![std::f32::consts::SQRT_2]);
        assert!(!g.inits.contains_key("act.inv_sqrt2"), "unused constant dropped");
        // The other Muls (x * (1 + erf), * 0.5) are untouched; a second run finds nothing.
        assert_eq!((g.count_op("Mul"), g.count_op("Div")), (2, 1));
        assert_eq!(gelu_div_form(&mut g), 0);
    }

    #[test]
    fn leaves_other_scales_and_other_readers_alone() {
        let mut g = gelu_graph(0.7);
        assert_eq!(gelu_div_form(&mut g), 0);
        // 1/sqrt 2 whose product is also read by a non-Erf node.
        let mut g = gelu_graph(std::f32::consts::FRAC_1_SQRT_2);
        g.nodes.push(node("other", "Relu", &["s"], "r"));
        assert_eq!(gelu_div_form(&mut g), 0);
        assert_eq!(g.count_op("Div"), 0);
    }
}

//! Which ONNX opsets can express each op the exporter emits, in one table.
//!
//! Every op the recorder, the passes or the fusions write is registered here with
//! the first opset whose definition accepts the form we emit (attributes versus
//! inputs, axis semantics), and the last one where that form is known to hold
//! (`None`: every opset up to [`crate::recorder::OPSETS`]'s end). [`check`] runs on
//! every exported graph: an op missing from the table or outside its range at the
//! chosen `--opset` is an [`ExportError::OpOpset`], never a file a runtime rejects.
use crate::error::ExportError;
use crate::graph::Graph;

/// One registered op: `(op_type, since, until)`; each row says why `since`.
pub const OPS: &[(&str, i64, Option<i64>)] = &[
    ("Add", 7, None),                 // multidirectional broadcasting
    ("BatchNormalization", 9, None),  // no `spatial` attribute, 5 inputs, 1 output
    ("Cast", 6, None),                // `to` as an int enum
    ("Clip", 11, None),               // min/max as inputs (relu6)
    ("Concat", 11, None),             // negative axis
    ("Conv", 1, None),                //
    ("ConvTranspose", 11, None),      // output_padding with symmetric pads, group
    ("Div", 7, None),                 // broadcasting (GELU in ORT's fused form)
    ("Erf", 9, None),                 //
    ("Expand", 8, None),              //
    ("Flatten", 1, None),             //
    ("GatherND", 12, None),           // batch_dims (gather_tokens)
    ("Gelu", 20, None),               // introduced in 20
    ("Gemm", 11, None),               // optional C (bias-free linear)
    ("GlobalAveragePool", 1, None),   //
    ("Identity", 1, None),            //
    ("LayerNormalization", 17, None), // introduced in 17
    ("MatMul", 1, None),              //
    ("Max", 8, None),                 // multidirectional broadcasting (l2_normalize eps clamp)
    ("MaxPool", 1, None),             //
    ("Mul", 7, None),                 // multidirectional broadcasting
    ("ReduceL2", 1, None),            // axes: attribute through 17, input from 18 (the recorder writes the opset's form)
    ("ReduceMean", 1, None),          // axes: attribute through 17, input from 18 (likewise)
    ("Relu", 6, None),                // no `consumed_inputs`
    ("Reshape", 5, None),             // shape as an input; 0 copies the dim (allowzero = 0)
    ("Resize", 13, None),             // optional roi (empty name) before scales; pytorch_half_pixel, nearest_mode floor
    ("Shape", 15, None),              // `start` / `end` attributes
    ("Slice", 10, None),              // starts/ends/axes as inputs
    ("Softmax", 13, None),            // softmax along one axis (older: flattened to 2-D)
    ("Sqrt", 6, None),                //
    ("Sub", 7, None),                 // multidirectional broadcasting
    ("Transpose", 1, None),           //
];

/// The `(since, until)` of `op`, or `None` when the exporter never registered it.
pub fn range(op: &str) -> Option<(i64, Option<i64>)> {
    OPS.iter().find(|(o, _, _)| *o == op).map(|&(_, s, u)| (s, u))
}

/// Checks that `opset` can express one node's op.
pub fn check_op(node: &str, op: &str, opset: i64) -> Result<(), ExportError> {
    let err = |supported: String| ExportError::OpOpset { node: node.into(), op: op.into(), opset, supported };
    match range(op) {
        None => Err(err("none: the op is not registered in exporter/src/opsets.rs".into())),
        Some((since, until)) if opset < since || until.is_some_and(|u| opset > u) => {
            Err(err(until.map_or(format!(">= {since}"), |u| format!("{since}..={u}"))))
        }
        Some(_) => Ok(()),
    }
}

/// Checks every node of `g` against the table at `opset`; the first failure names its node.
pub fn check(g: &Graph, opset: i64) -> Result<(), ExportError> {
    g.nodes.iter().try_for_each(|n| check_op(&n.name, n.op, opset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Node;

    fn graph(ops: &[&'static str]) -> Graph {
        let mut g = Graph::default();
        for (i, op) in ops.iter().enumerate() {
            g.nodes.push(Node { name: format!("n{i}.{op}"), op, inputs: vec![], outputs: vec![format!("t{i}")], attrs: vec![] });
        }
        g
    }

    #[test]
    fn table_is_sorted_unique_and_within_the_recorder_range() {
        let names: Vec<&str> = OPS.iter().map(|r| r.0).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "one row per op, alphabetical");
        for &(op, since, until) in OPS {
            assert!(since >= 1 && since <= *crate::recorder::OPSETS.end(), "{op}: since {since}");
            assert!(until.is_none_or(|u| u >= since), "{op}: empty range");
        }
    }

    #[test]
    fn gelu_needs_20_layer_norm_17() {
        assert!(check(&graph(&["Gelu"]), 20).is_ok());
        let e = check(&graph(&["Conv", "Gelu"]), 19).unwrap_err();
        assert!(matches!(&e, ExportError::OpOpset { node, op: o, opset: 19, .. } if node == "n1.Gelu" && o == "Gelu"), "{e}");
        assert!(e.to_string().contains(">= 20"), "{e}");
        assert!(check(&graph(&["LayerNormalization"]), 16).is_err());
        assert!(check(&graph(&["LayerNormalization", "Softmax", "Shape"]), 17).is_ok());
    }

    #[test]
    fn unregistered_op_is_an_error_naming_the_node() {
        let e = check(&graph(&["Relu", "Upsample"]), 17).unwrap_err();
        assert!(matches!(&e, ExportError::OpOpset { node, .. } if node == "n1.Upsample"), "{e}");
        assert!(e.to_string().contains("not registered"), "{e}");
    }

    #[test]
    fn every_op_an_export_writes_is_registered_at_every_supported_opset() {
        use pretext_models::{Backbone, BackboneConfig, MlpHead, ParamKind};
        // Values do not matter to which ops are written: every tensor is 0.5.
        for name in ["resnet18-cifar", "resnet50", "vit-tiny-cifar", "mobilenet_v2"] {
            let cfg = BackboneConfig::from_name(name).unwrap();
            let b = Backbone::new(&cfg);
            let head = MlpHead::simclr("projection_head", b.embed_dim(), 16, 8);
            let tensors = b
                .params()
                .into_iter()
                .chain(head.params())
                .filter(|s| s.kind != ParamKind::Counter)
                .map(|s| (s.name, ndarray::ArrayD::from_elem(s.shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), 0.5f32)))
                .collect();
            let heads = serde_json::json!({ "projection_head": pretext_models::HeadSpec::Mlp(head) }).to_string();
            let metadata = [(pretext_models::HEADS_KEY.to_string(), heads)].into();
            let ckpt = crate::Checkpoint { path: format!("{name}.safetensors").into(), tensors, metadata };
            for opset in crate::recorder::OPSETS {
                for fp16 in [false, true] {
                    let opts = crate::ExportOptions { opset, fp16, heads: vec!["projection_head".into()], ..Default::default() };
                    let (m, _) = crate::export(&cfg, &ckpt, &opts).unwrap_or_else(|e| panic!("{name} opset {opset} fp16 {fp16}: {e}"));
                    check(&m.graph, opset).unwrap();
                }
            }
        }
    }
}

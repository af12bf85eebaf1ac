//! fp16 graphs in tract: compute them in fp32 where the CPU has no fp16 arithmetic.
//!
//! The exporter's `--fp16` graphs store fp16 weights and compute in fp16 between
//! casts. On x86_64, tract has no fp16 arithmetic kernels, and running such a
//! graph natively loses far more than the graph's own fp16 storage does, and is
//! slower. Measured by the former test `tract_fp16_native_vs_upcast` in
//! `tests/parity_backbones.rs` (random-init ResNet-50 width 8 and MobileNetV2, 64 px,
//! 4 photos, 1 thread; now `tract_fp16_matches_onnxruntime`):
//!
//! | model        | native: min cosine, run | upcast: min cosine, run | ORT cosine |
//! |--------------|-------------------------|-------------------------|------------|
//! | ResNet-50 w8 | 0.9878, 185-197 ms      | 0.9992, 13-16 ms        | 0.9992     |
//! | MobileNetV2  | 0.9923, 137-168 ms      | 0.9990, 25-48 ms        | 0.9990     |
//!
//! (cosine to the fp32 tch forward; upcast gives ONNX Runtime's cosine to 6 digits.)
//!
//! So fp16 graphs are upcast everywhere but on aarch64 ([`UPCAST_F16`], no option:
//! native fp16 on x86_64 was the losing A/B option, 10x slower and less accurate
//! above, and was removed in issue #17). The upcast translates the typed graph
//! from fp16 to fp32 at plan-build time with tract's own
//! [`FloatPrecisionTranslator`]: every fp16 constant becomes an fp16 constant
//! followed by a cast (folded at optimization), fp16 casts become fp32 casts, and
//! every op then runs in fp32: the weights keep their fp16 rounding, activations
//! are no longer rounded to fp16 between ops. The file on disk keeps its fp16
//! weights; the plan in memory holds them in fp32 (twice the memory of a native
//! plan). fp32 graphs are left untouched. On aarch64, tract has fp16 FMA kernels
//! and fp16 graphs run as they are.
use tract_onnx::prelude::*;
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
use tract_onnx::tract_core::transform::ModelTransform;

/// Whether plans compute fp16 graphs in fp32: everywhere but on aarch64 (see the module doc).
pub const UPCAST_F16: bool = !cfg!(target_arch = "aarch64");

/// Whether any value of the typed graph is fp16.
pub(crate) fn has_f16(model: &TypedModel) -> bool {
    model.nodes().iter().any(|n| n.outputs.iter().any(|o| o.fact.datum_type == DatumType::F16))
}

/// Types, translates fp16 to fp32 when `upcast` and the graph has fp16 values, then
/// optimizes with the convolutions channel-last (see [`crate::tract_layout`]): the
/// replacement of `InferenceModel::into_optimized`. The backend passes [`UPCAST_F16`].
pub(crate) fn into_optimized(model: InferenceModel, upcast: bool) -> TractResult<TypedModel> {
    let mut typed = model.into_typed()?;
    if upcast && has_f16(&typed) {
        FloatPrecisionTranslator::new(DatumType::F16, DatumType::F32).transform(&mut typed)?;
    }
    crate::tract_layout::channel_last_convs(&mut typed)?;
    typed.declutter()?;
    typed.optimize()?;
    Ok(typed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb;

    fn value_info(name: &str, elem: pb::tensor_proto::DataType, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        let shape = pb::TensorShapeProto { dim: dims.iter().map(|&d| Dimension { value: Some(Value::DimValue(d)), ..Default::default() }).collect() };
        let tt = pb::type_proto::Tensor { elem_type: elem as i32, shape: Some(shape) };
        pb::ValueInfoProto { name: name.into(), r#type: Some(pb::TypeProto { value: Some(pb::type_proto::Value::TensorType(tt)), ..Default::default() }), ..Default::default() }
    }

    fn node(op: &str, name: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        }
    }

    fn cast_to(elem: pb::tensor_proto::DataType) -> Vec<pb::AttributeProto> {
        vec![pb::AttributeProto { name: "to".into(), r#type: pb::attribute_proto::AttributeType::Int as i32, i: elem as i64, ..Default::default() }]
    }

    /// The exporter's fp16 pattern around one long reduction of ones:
    /// `y = cast_f32(op(cast_f16(x), ones_f16))`, op = MatMul (x: f32 [1, k],
    /// w: [k, 1]) or a 1x1 Conv (x: f32 [1, k, 2, 2], w: [1, k, 1, 1]).
    fn sum_of_ones(k: usize, conv: bool) -> InferenceModel {
        use pb::tensor_proto::DataType as D;
        let ones = half::f16::ONE.to_bits().to_le_bytes().repeat(k);
        let k = k as i64;
        let (xd, wd, yd, op): (Vec<i64>, Vec<i64>, Vec<i64>, _) =
            if conv { (vec![1, k, 2, 2], vec![1, k, 1, 1], vec![1, 1, 2, 2], "Conv") } else { (vec![1, k], vec![k, 1], vec![1, 1], "MatMul") };
        let w = pb::TensorProto { name: "w".into(), dims: wd, data_type: D::Float16 as i32, raw_data: ones, ..Default::default() };
        let graph = pb::GraphProto {
            name: "sum".into(),
            node: vec![
                node("Cast", "x_fp16", &["x"], "xh", cast_to(D::Float16)),
                node(op, "sum", &["xh", "w"], "yh", vec![]),
                node("Cast", "y_fp32", &["yh"], "y", cast_to(D::Float)),
            ],
            initializer: vec![w],
            input: vec![value_info("x", D::Float, &xd)],
            output: vec![value_info("y", D::Float, &yd)],
            ..Default::default()
        };
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(graph),
            ..Default::default()
        };
        tract_onnx::onnx().model_for_proto_model(&proto).unwrap()
    }

    fn run(k: usize, conv: bool, upcast: bool) -> (f32, bool) {
        let typed = into_optimized(sum_of_ones(k, conv), upcast).unwrap();
        // The plan's own input shape (NHWC for the convolution); the input is all ones.
        let shape = typed.input_fact(0).unwrap().shape.as_concrete().unwrap().to_vec();
        let f16_left = has_f16(&typed);
        let x = tract_ndarray::ArrayD::<f32>::ones(shape).into_tensor();
        let y = typed.into_runnable().unwrap().run(tvec!(x.into_tvalue())).unwrap();
        let y = y[0].cast_to::<f32>().unwrap().to_plain_array_view::<f32>().unwrap().iter().copied().next().unwrap();
        (y, f16_left)
    }

    #[test]
    fn upcast_leaves_no_fp16_and_keeps_fp32_results() {
        for conv in [false, true] {
            // 2049 ones: exact in fp32, not an fp16 number (spacing 2 above 2048).
            let (up, f16_left) = run(2049, conv, true);
            assert_eq!(up, 2049.0, "conv={conv}");
            assert!(!f16_left, "no fp16 value survives the upcast (conv={conv})");
            // Native, the aarch64 plan.
            let (native, f16_left) = run(2049, conv, false);
            assert!(f16_left, "native keeps the fp16 ops (conv={conv})");
            // tract fuses the casts around this lone product: exact here too.
            // The backbones show where native fp16 loses (module doc).
            assert!((native - 2049.0).abs() <= 1.0, "conv={conv}: {native}");
        }
    }

    #[test]
    fn has_f16_tells_fp16_graphs_from_fp32() {
        let mut m = sum_of_ones(8, true);
        let typed = m.clone().into_typed().unwrap();
        assert!(has_f16(&typed));
        // An fp32-only graph: has_f16 is false, so the translator never runs on it.
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(pb::GraphProto {
                node: vec![node("Relu", "r", &["x"], "y", vec![])],
                input: vec![value_info("x", pb::tensor_proto::DataType::Float, &[1, 4])],
                output: vec![value_info("y", pb::tensor_proto::DataType::Float, &[1, 4])],
                ..Default::default()
            }),
            ..Default::default()
        };
        m = tract_onnx::onnx().model_for_proto_model(&proto).unwrap();
        assert!(!has_f16(&m.clone().into_typed().unwrap()));
        assert!(!has_f16(&into_optimized(m, true).unwrap()));
    }

    #[test]
    fn x86_64_upcasts_f16() {
        // The measured default (module doc): x86_64 has no fp16 kernels in tract.
        assert!(!cfg!(target_arch = "x86_64") || UPCAST_F16);
    }
}

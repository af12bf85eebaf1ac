//! The plan-build pass that lays tract's convolutions out channel-last.
//!
//! Every 2-D float convolution computes in NHWC between two axis moves, `Move(1, 3)`
//! before and `Move(3, 1)` after; tract's declutter (`ChangeAxes`) then cancels the moves
//! between consecutive convolutions and pushes them through the element-wise ops, so the
//! graph runs channel-last from the first convolution to the pooling and the input and
//! output keep their NCHW / `[N, C]` shapes.
//! Why: tract 0.23.9's NCHW depthwise kernel vectorizes along W only at input stride 1 and
//! in full 8-wide blocks (`tract_linalg::x86_64::depthwise`); stride-2 layers and the
//! ragged ends of 14- and 7-wide rows take a scalar walk with one dependent add per tap,
//! 28.5 % of MobileNetV2's batch-1 time (`perf`, 1 thread). Channel-last, its depthwise
//! op runs taps outer, channels inner: contiguous and vectorized for any stride or width.
//! Dense convolutions gain too: a 1x1 convolution is a plain matrix product, and 3x3 ones
//! gather contiguous channel vectors.
//! Measured against the graph's own NCHW layout (docs/benchmarks.md, "Session 3 changes",
//! CPU time per image, 1 thread): MobileNetV2 28.7 -> 25.0 ms (1.15x; 1.21-1.36x in two
//! shorter runs), ResNet-18 CIFAR, ResNet-50 and ViT-S unchanged within the clock tick.
//! The NCHW layout, and its pass that unstrided W-strided depthwise convolutions, were
//! removed as the losing option (issue #17).
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::source::TypedSource;

/// Every 2-D float NCHW convolution computes in NHWC between axis moves (see the module
/// doc); returns how many.
pub(crate) fn channel_last_convs(model: &mut TypedModel) -> TractResult<usize> {
    let candidates: Vec<usize> = model
        .eval_order()?
        .into_iter()
        .filter(|&id| {
            model.node(id).op_as::<Conv>().is_some_and(|c| {
                c.pool_spec.data_format == DataFormat::NCHW
                    && c.q_params.is_none()
                    && c.pool_spec.rank() == 2
                    && model.outlet_fact(model.node(id).inputs[0]).is_ok_and(|f| f.datum_type.is_float() && f.rank() == 4)
            })
        })
        .collect();
    for &id in &candidates {
        let node = model.node(id);
        let mut conv = node.op_as::<Conv>().expect("filtered above").clone();
        conv.pool_spec.data_format = DataFormat::NHWC;
        let mut patch = TypedModelPatch::new(format!("channel-last {}", node.name));
        let mut taps = patch.taps(model, &node.inputs)?;
        taps[0] = patch.wire_node(format!("{}.to_nhwc", node.name), AxisOp::Move(1, 3), &[taps[0]])?[0];
        let y = patch.wire_node(format!("{}.nhwc", node.name), conv, &taps)?[0];
        let y = patch.wire_node(format!("{}.to_nchw", node.name), AxisOp::Move(3, 1), &[y])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
    }
    if !candidates.is_empty() {
        channel_last_input(model)?;
        model.compact()?;
    }
    Ok(candidates.len())
}

/// Model property set when the plan's input is NHWC: the backend then transposes its
/// NCHW input before running the plan.
pub(crate) const NHWC_INPUT: &str = pretext_models::tensorfile::keys::NHWC_INPUT;

/// Makes the rank-4 input NHWC, followed by `Move(3, 1)` back to NCHW; declutter cancels
/// that move against the first convolution's, so no layout change is left in the plan.
/// Without it, declutter may instead pull the first convolutions back to NCHW to absorb
/// the input move (it folds it into the first 1x1 convolution's einsum).
fn channel_last_input(model: &mut TypedModel) -> TractResult<()> {
    let &[input] = model.input_outlets()? else { return Ok(()) };
    let fact = model.outlet_fact(input)?.clone();
    if fact.rank() != 4 || !fact.datum_type.is_float() {
        return Ok(());
    }
    let consumers = model.outlet_successors(input).to_vec();
    let s = fact.shape.to_tvec();
    let nhwc = fact.datum_type.fact([s[0].clone(), s[2].clone(), s[3].clone(), s[1].clone()]);
    let source = model.node_mut(input.node);
    source.op = Box::new(TypedSource::new(nhwc.clone()));
    model.set_outlet_fact(input, nhwc)?;
    let name = format!("{}.to_nchw", model.node(input.node).name);
    let nchw = model.wire_node(name, AxisOp::Move(3, 1), &[input])?[0];
    for inlet in consumers {
        model.add_edge(nchw, inlet)?;
    }
    model.properties.insert(NHWC_INPUT.into(), rctensor0(true));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture's typed graph at batch 2: 3 depthwise convolutions (two strided
    /// along W) and 2 dense ones.
    fn typed() -> TypedModel {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/depthwise.onnx");
        let mut m = tract_onnx::onnx().model_for_path(path).unwrap();
        m.set_input_fact(0, f32::fact([2, 3, 19, 23]).into()).unwrap();
        m.into_typed().unwrap()
    }

    fn count<O: Op>(m: &TypedModel, pred: impl Fn(&O) -> bool) -> usize {
        m.nodes().iter().filter(|n| n.op_as::<O>().is_some_and(&pred)).count()
    }

    #[test]
    fn channel_last_puts_every_convolution_in_nhwc_and_declutter_cancels_the_moves() {
        let mut m = typed();
        assert_eq!(channel_last_convs(&mut m).unwrap(), 5);
        m.declutter().unwrap();
        // The 1x1 convolution became a matrix product (EinSum); the other 4 stay NHWC.
        assert_eq!(count::<Conv>(&m, |c| c.pool_spec.data_format == DataFormat::NHWC), 4);
        assert_eq!(count::<Conv>(&m, |c| c.pool_spec.data_format == DataFormat::NCHW), 0);
        // The input is NHWC and every move cancelled: no layout change is left.
        assert!(m.properties.contains_key(NHWC_INPUT));
        let input = m.outlet_fact(m.input_outlets().unwrap()[0]).unwrap().shape.as_concrete().map(|s| s.to_vec());
        assert_eq!(input, Some(vec![2, 19, 23, 3]));
        assert_eq!(count::<AxisOp>(&m, |a| matches!(a, AxisOp::Move(..))), 0);
    }
}

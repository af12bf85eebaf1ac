//! Plan-build passes that choose how tract lays out convolutions.
//!
//! [`ConvLayout::ChannelLast`] (the default): every 2-D float convolution computes in
//! NHWC between two axis moves, `Move(1, 3)` before and `Move(3, 1)` after; tract's
//! declutter (`ChangeAxes`) then cancels the moves between consecutive convolutions and
//! pushes them through the element-wise ops, so the graph runs channel-last from the first
//! convolution to the pooling and the input and output keep their NCHW / `[N, C]` shapes.
//! Why: tract 0.23.9's NCHW depthwise kernel vectorizes along W only at input stride 1 and
//! in full 8-wide blocks (`tract_linalg::x86_64::depthwise`); stride-2 layers and the
//! ragged ends of 14- and 7-wide rows take a scalar walk with one dependent add per tap,
//! 28.5 % of MobileNetV2's batch-1 time (`perf`, 1 thread). Channel-last, its depthwise
//! op runs taps outer, channels inner: contiguous and vectorized for any stride or width.
//! Dense convolutions gain too: a 1x1 convolution is a plain matrix product, and 3x3 ones
//! gather contiguous channel vectors. Measured figures are in `examples/tract_layouts.rs`
//! and docs/benchmarks.md.
//!
//! [`ConvLayout::AsGraph`] leaves the layout to tract, with one fix: a depthwise
//! convolution strided along W runs at stride 1 along W followed by a downsample (2x the
//! multiply-adds in the vector kernel, same values: column `j` of a stride-`s`
//! convolution is column `s * j` of the stride-1 one with the same padding, and
//! `ceil((H + pads - k + 1) / s) = floor((H + pads - k) / s) + 1` columns remain). It runs
//! between declutter and codegen: declutter would fold the downsample back into the
//! stride (`fuse_downsample_into_conv`), while codegen turns the convolution into tract's
//! `DepthWise` op first and leaves the downsample after it.
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::source::TypedSource;
use tract_onnx::tract_core::ops::Downsample;

/// How convolutions are laid out in tract's plan (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvLayout {
    /// Channel-last (NHWC) convolutions, whatever the graph's layout.
    #[default]
    ChannelLast,
    /// The graph's layout, strided depthwise convolutions unstrided along W.
    AsGraph,
}

/// The pass that must run before tract's declutter.
pub(crate) fn before_declutter(model: &mut TypedModel, layout: ConvLayout) -> TractResult<()> {
    if layout == ConvLayout::ChannelLast {
        channel_last_convs(model)?;
    }
    Ok(())
}

/// The pass that must run after tract's declutter and before its codegen.
pub(crate) fn after_declutter(model: &mut TypedModel, layout: ConvLayout) -> TractResult<()> {
    if layout == ConvLayout::AsGraph {
        unstride_depthwise_w(model)?;
    }
    Ok(())
}

/// Rewrites every NCHW depthwise convolution strided along W (see the module doc); returns
/// how many were rewritten.
fn unstride_depthwise_w(model: &mut TypedModel) -> TractResult<usize> {
    let candidates: Vec<usize> = model
        .eval_order()?
        .into_iter()
        .filter(|&id| model.node(id).op_as::<Conv>().is_some_and(|c| eligible(model, id, c)))
        .collect();
    for &id in &candidates {
        let node = model.node(id);
        let conv = node.op_as::<Conv>().expect("filtered above").clone();
        let input = model.outlet_fact(node.inputs[0])?.shape.as_concrete().expect("filtered above").to_vec();
        let want = model.outlet_fact(OutletId::new(id, 0))?.clone();
        let ps = &conv.pool_spec;
        let data = ps.data_format.shape(input)?;
        let w = ps.rank() - 1;
        let stride = ps.stride(w);
        let padding = ps.computed_padding(data.hw_dims());
        let mut unstrided = conv.clone();
        unstrided.pool_spec.padding =
            PaddingSpec::Explicit(padding.iter().map(|p| p.pad_before).collect(), padding.iter().map(|p| p.pad_after).collect());
        let mut strides: TVec<usize> = ps.strides().iter().copied().collect();
        strides[w] = 1;
        unstrided.pool_spec.strides = Some(strides);

        let mut patch = TypedModelPatch::new(format!("unstride depthwise {}", node.name));
        let taps = patch.taps(model, &node.inputs)?;
        let y = patch.wire_node(format!("{}.stride1_w", node.name), unstrided, &taps)?[0];
        let y = patch.wire_node(
            format!("{}.downsample_w", node.name),
            Downsample::new(data.h_axis() + w, stride as isize, 0),
            &[y],
        )?[0];
        let got = patch.outlet_fact(y)?;
        if got.shape != want.shape || got.datum_type != want.datum_type {
            return Err(TractError::msg(format!("unstriding depthwise conv {}: {:?} instead of {:?}", node.name, got, want)));
        }
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
    }
    if !candidates.is_empty() {
        model.compact()?;
    }
    Ok(candidates.len())
}

/// Float depthwise convolution (`group` = input = output channels), strided along W with
/// no dilation there, on a concrete input shape.
fn eligible(model: &TypedModel, id: usize, conv: &Conv) -> bool {
    let node = model.node(id);
    let ps = &conv.pool_spec;
    let w = match ps.rank() {
        0 => return false,
        r => r - 1,
    };
    let Ok(fact) = model.outlet_fact(node.inputs[0]) else { return false };
    conv.q_params.is_none()
        && ps.data_format == DataFormat::NCHW
        && fact.datum_type.is_float()
        && fact.shape.as_concrete().is_some()
        && conv.group > 1
        && conv.group == conv.input_channels()
        && conv.group == conv.output_channels()
        && ps.stride(w) > 1
        && ps.dilation(w) == 1
}

/// Every 2-D float NCHW convolution computes in NHWC between axis moves (see the module
/// doc); returns how many.
fn channel_last_convs(model: &mut TypedModel) -> TractResult<usize> {
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

    #[test]
    fn as_graph_unstrides_the_depthwise_convolutions_strided_along_w() {
        let mut m = typed();
        m.declutter().unwrap();
        let strided = count::<Conv>(&m, |c| c.group > 1 && c.pool_spec.stride(1) == 2);
        assert_eq!(strided, 2);
        assert_eq!(unstride_depthwise_w(&mut m).unwrap(), 2);
        assert_eq!(count::<Conv>(&m, |c| c.group > 1 && c.pool_spec.stride(1) == 2), 0);
        assert_eq!(count::<Downsample>(&m, |d| d.stride == 2), 2);
    }
}

//! Constant tensors held by the exporter (initializers) and the small
//! evaluator used for constant folding and export-time resampling.
//!
//! Only the ops that appear on constant paths of our models are evaluated
//! (Transpose, Reshape, Slice, Add, Mul, Div, Max, Concat, Identity, and
//! ReduceL2 over the last axis for weight normalisation); anything else is
//! left in the graph.

use half::f16;
use ndarray::{ArrayD, Axis, IxDyn, Slice};

/// A constant tensor: an initializer or a folded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    F32(ArrayD<f32>),
    F16(ArrayD<f16>),
    I64(ArrayD<i64>),
}

impl Const {
    pub fn dims(&self) -> Vec<i64> {
        let s = match self {
            Const::F32(a) => a.shape(),
            Const::F16(a) => a.shape(),
            Const::I64(a) => a.shape(),
        };
        s.iter().map(|&d| d as i64).collect()
    }
    pub fn len(&self) -> usize {
        match self {
            Const::F32(a) => a.len(),
            Const::F16(a) => a.len(),
            Const::I64(a) => a.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes in the serialized (raw little-endian) form.
    pub fn byte_len(&self) -> usize {
        match self {
            Const::F32(a) => a.len() * 4,
            Const::F16(a) => a.len() * 2,
            Const::I64(a) => a.len() * 8,
        }
    }
    pub fn i64s(v: &[i64]) -> Self {
        Const::I64(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).expect("1-D"))
    }
    pub fn scalar_f32(v: f32) -> Self {
        Const::F32(ArrayD::from_elem(IxDyn(&[]), v))
    }
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Const::F32(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<&ArrayD<i64>> {
        match self {
            Const::I64(a) => Some(a),
            _ => None,
        }
    }
    /// Raw little-endian bytes, the ONNX `raw_data` layout (row-major).
    pub fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Const::F32(a) => a.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Const::F16(a) => a.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            Const::I64(a) => a.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// An attribute value, as far as the evaluator needs them.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(String),
}

fn attr_int(attrs: &[(String, Attr)], name: &str) -> Option<i64> {
    attrs.iter().find(|(n, _)| n == name).and_then(|(_, a)| if let Attr::Int(v) = a { Some(*v) } else { None })
}
fn attr_ints(attrs: &[(String, Attr)], name: &str) -> Option<Vec<i64>> {
    attrs.iter().find(|(n, _)| n == name).and_then(|(_, a)| if let Attr::Ints(v) = a { Some(v.clone()) } else { None })
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 { (axis + rank as i64) as usize } else { axis as usize }
}

/// Evaluates one node on constant inputs; `None` when the op (or this use
/// of it) is not supported, in which case the node stays in the graph.
pub fn eval(op: &str, attrs: &[(String, Attr)], inputs: &[&Const]) -> Option<Const> {
    match (op, inputs) {
        ("Identity", [x]) => Some((*x).clone()),
        ("Transpose", [Const::F32(x)]) => {
            let perm: Vec<usize> = match attr_ints(attrs, "perm") {
                Some(p) => p.iter().map(|&v| v as usize).collect(),
                None => (0..x.ndim()).rev().collect(),
            };
            Some(Const::F32(x.view().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned()))
        }
        ("Reshape", [Const::F32(x), Const::I64(shape)]) => {
            let mut dims: Vec<i64> = shape.iter().enumerate().map(|(i, &d)| if d == 0 { x.shape()[i] as i64 } else { d }).collect();
            let known: i64 = dims.iter().filter(|&&d| d != -1).product();
            if let Some(p) = dims.iter().position(|&d| d == -1) {
                dims[p] = x.len() as i64 / known.max(1);
            }
            let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            let data: Vec<f32> = x.iter().copied().collect();
            ArrayD::from_shape_vec(IxDyn(&dims), data).ok().map(Const::F32)
        }
        ("Slice", [Const::F32(x), Const::I64(starts), Const::I64(ends), rest @ ..]) => {
            let axes: Vec<i64> = match rest.first() {
                Some(Const::I64(a)) => a.iter().copied().collect(),
                None => (0..starts.len() as i64).collect(),
                _ => return None,
            };
            if let Some(Const::I64(steps)) = rest.get(1) {
                if steps.iter().any(|&s| s != 1) {
                    return None;
                }
            }
            let mut v = x.view();
            for ((&s, &e), &a) in starts.iter().zip(ends.iter()).zip(axes.iter()) {
                let ax = norm_axis(a, x.ndim());
                let n = x.shape()[ax] as i64;
                let clamp = |i: i64| if i < 0 { (i + n).max(0) } else { i.min(n) };
                let (s, e) = (clamp(s), clamp(e).max(clamp(s)));
                v.slice_axis_inplace(Axis(ax), Slice::from(s as usize..e as usize));
            }
            Some(Const::F32(v.to_owned()))
        }
        ("Add", [Const::F32(a), Const::F32(b)]) => {
            broadcast_shape(a.shape(), b.shape())?;
            Some(Const::F32(a + b))
        }
        ("Mul", [Const::F32(a), Const::F32(b)]) => {
            broadcast_shape(a.shape(), b.shape())?;
            Some(Const::F32(a * b))
        }
        ("Div", [Const::F32(a), Const::F32(b)]) => {
            broadcast_shape(a.shape(), b.shape())?;
            Some(Const::F32(a / b))
        }
        ("Max", [Const::F32(a), Const::F32(b)]) => {
            let shape = broadcast_shape(a.shape(), b.shape())?;
            let (a, b) = (a.broadcast(IxDyn(&shape))?, b.broadcast(IxDyn(&shape))?);
            Some(Const::F32(ndarray::Zip::from(&a).and(&b).map_collect(|&p, &q| p.max(q))))
        }
        // Over the last axis only, keepdims (l2_normalize of a weight); axes as attribute (<= 17) or input (>= 18).
        ("ReduceL2", [Const::F32(x), rest @ ..]) => {
            let axes = match rest {
                [Const::I64(a)] => a.iter().copied().collect(),
                [] => attr_ints(attrs, "axes")?,
                _ => return None,
            };
            let last = x.ndim().checked_sub(1)?;
            if attr_int(attrs, "keepdims") == Some(0) || axes.iter().map(|&a| norm_axis(a, x.ndim())).ne([last]) {
                return None;
            }
            let n = x.map_axis(Axis(last), |row| row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt() as f32);
            Some(Const::F32(n.insert_axis(Axis(last))))
        }
        ("Concat", xs) => {
            let axis = attr_int(attrs, "axis")?;
            let arrs: Option<Vec<_>> = xs.iter().map(|c| c.as_f32().map(|a| a.view())).collect();
            let arrs = arrs?;
            let ax = norm_axis(axis, arrs.first()?.ndim());
            ndarray::concatenate(Axis(ax), &arrs).ok().map(Const::F32)
        }
        _ => None,
    }
}

/// Numpy-style broadcast of two shapes, `None` when incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
            let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Bicubic resize of an (N, C, H, W) array, as PyTorch's
/// `upsample_bicubic2d(align_corners=False)`: source coordinate
/// `(dst + 0.5) * in / out - 0.5`, Keys cubic convolution with A = -0.75,
/// taps clamped to the border (no antialiasing).
///
/// # Shapes
/// (N, C, H, W) -> (N, C, out_h, out_w)
pub fn bicubic_resize(x: &ArrayD<f32>, out_h: usize, out_w: usize) -> ArrayD<f32> {
    let s = x.shape();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let taps = |in_len: usize, out_len: usize| -> Vec<([usize; 4], [f64; 4])> {
        let scale = in_len as f64 / out_len as f64;
        (0..out_len)
            .map(|o| {
                let src = (o as f64 + 0.5) * scale - 0.5;
                let i0 = src.floor();
                let t = src - i0;
                let idx = [-1i64, 0, 1, 2].map(|k| (i0 as i64 + k).clamp(0, in_len as i64 - 1) as usize);
                (idx, cubic_weights(t))
            })
            .collect()
    };
    let (ty, tx) = (taps(h, out_h), taps(w, out_w));
    let x = x.as_standard_layout();
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[n, c, out_h, out_w]));
    for b in 0..n {
        for ch in 0..c {
            for (oy, (iy, wy)) in ty.iter().enumerate() {
                for (ox, (ix, wx)) in tx.iter().enumerate() {
                    let mut acc = 0.0f64;
                    for a in 0..4 {
                        let mut row = 0.0f64;
                        for bb in 0..4 {
                            row += wx[bb] * x[[b, ch, iy[a], ix[bb]]] as f64;
                        }
                        acc += wy[a] * row;
                    }
                    out[[b, ch, oy, ox]] = acc as f32;
                }
            }
        }
    }
    out
}

/// Keys' cubic convolution weights for the taps at -1, 0, 1, 2 around a
/// fractional offset `t`, with A = -0.75 (PyTorch's choice).
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Converts f32 to f16 (round to nearest even, saturating to +-inf like numpy).
pub fn to_f16(a: &ArrayD<f32>) -> ArrayD<f16> {
    a.mapv(f16::from_f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_matches_torch_on_a_ramp() {
        // torch.nn.functional.interpolate(torch.arange(16.).reshape(1,1,4,4), size=(8,8),
        // mode="bicubic", align_corners=False)[0,0,0,:4] and a 3x3 downsample.
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 4, 4]), (0..16).map(|v| v as f32).collect()).unwrap();
        let up = bicubic_resize(&x, 8, 8);
        let want = [-0.52734375f32, -0.23046875, 0.24609375, 0.875];
        for (i, w) in want.iter().enumerate() {
            assert!((up[[0, 0, 0, i]] - w).abs() < 1e-4, "{i}: {} vs {w}", up[[0, 0, 0, i]]);
        }
        let down = bicubic_resize(&x, 3, 3);
        assert!((down[[0, 0, 0, 0]] - 0.6308).abs() < 1e-3 && (down[[0, 0, 1, 1]] - 7.5).abs() < 1e-4);
    }

    #[test]
    fn bicubic_identity_at_same_size() {
        let x = ArrayD::from_shape_fn(IxDyn(&[1, 2, 5, 5]), |i| (i[1] * 31 + i[2] * 7 + i[3] * 3) as f32 % 11.0);
        let y = bicubic_resize(&x, 5, 5);
        assert!(x.iter().zip(y.iter()).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn evaluator_reshape_transpose_slice_concat() {
        let x = Const::F32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0., 1., 2., 3., 4., 5.]).unwrap());
        let t = eval("Transpose", &[("perm".into(), Attr::Ints(vec![1, 0]))], &[&x]).unwrap();
        assert_eq!(t.as_f32().unwrap().iter().copied().collect::<Vec<_>>(), vec![0., 3., 1., 4., 2., 5.]);
        let r = eval("Reshape", &[], &[&x, &Const::i64s(&[0, -1, 1])]).unwrap();
        assert_eq!(r.dims(), vec![2, 3, 1]);
        let s = eval("Slice", &[], &[&x, &Const::i64s(&[1]), &Const::i64s(&[i64::MAX]), &Const::i64s(&[1])]).unwrap();
        assert_eq!(s.as_f32().unwrap().iter().copied().collect::<Vec<_>>(), vec![1., 2., 4., 5.]);
        let c = eval("Concat", &[("axis".into(), Attr::Int(0))], &[&x, &x]).unwrap();
        assert_eq!(c.dims(), vec![4, 3]);
        let b = Const::F32(ArrayD::from_shape_vec(IxDyn(&[3]), vec![10., 20., 30.]).unwrap());
        let a = eval("Add", &[], &[&x, &b]).unwrap();
        assert_eq!(a.as_f32().unwrap()[[1, 2]], 35.0);
        assert!(eval("Add", &[], &[&x, &Const::F32(ArrayD::zeros(IxDyn(&[4])))]).is_none());
        assert!(eval("Conv", &[], &[&x]).is_none());
    }

    /// F.normalize(x, dim=-1) of [[0, 1, 2], [3, 4, 5]]: rows / sqrt(5), / sqrt(50), both axes forms.
    #[test]
    fn evaluator_l2_normalize_chain() {
        let x = Const::F32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0., 1., 2., 3., 4., 5.]).unwrap());
        let keep = ("keepdims".to_string(), Attr::Int(1));
        let n17 = eval("ReduceL2", &[("axes".into(), Attr::Ints(vec![-1])), keep.clone()], &[&x]).unwrap();
        let n18 = eval("ReduceL2", &[keep.clone()], &[&x, &Const::i64s(&[1])]).unwrap();
        assert_eq!(n17, n18);
        assert_eq!(n17.dims(), vec![2, 1]);
        assert!(eval("ReduceL2", &[keep], &[&x, &Const::i64s(&[0])]).is_none(), "only the last axis");
        let m = eval("Max", &[], &[&n17, &Const::scalar_f32(6.0)]).unwrap();
        let y = eval("Div", &[], &[&x, &m]).unwrap();
        let y = y.as_f32().unwrap();
        assert!((y[[0, 2]] - 2.0 / 6.0).abs() < 1e-7, "clamped to 6 > sqrt(5)");
        assert!((y[[1, 1]] - 4.0 / 50f32.sqrt()).abs() < 1e-7);
    }
}

//! Numerical verification of an exported graph: the graph runs in tract and
//! in ONNX Runtime on real images, and every output of each backend is
//! compared with a reference (the tch forward of the same checkpoint,
//! `pretext_trainer::reference`, or PyTorch's own outputs): max abs error and
//! the smallest per-row cosine. A NaN or infinity on either side fails.
//!
//! Used by `pretext export --verify` and the parity tests.
//!
//! ```no_run
//! # fn reference() -> Vec<(String, ndarray::ArrayD<f32>)> { unimplemented!() }
//! use pretext_runtime::verify;
//! let x = verify::load_images("../shared/data/cifar10-jpg.tar.gz".as_ref(), 8, 97, 32, [0.5; 3], [0.25; 3])?;
//! let rows = verify::verify("model.onnx".as_ref(), &x, &[], &reference())?;
//! print!("{}", verify::format_table(&rows));
//! verify::check(&rows, verify::Tolerance::MaxAbs(1e-4))?;
//! # Ok::<(), pretext_runtime::verify::VerifyError>(())
//! ```
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use pretext_data::preprocess;

use crate::{compare, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Data(#[from] pretext_data::DataError),
    #[error(transparent)]
    Preprocess(#[from] preprocess::PreprocessError),
    #[error("no JPEG/PNG images found in {0}")]
    NoImages(PathBuf),
    #[error("{backend}: {model}: {reason}")]
    Backend { backend: &'static str, model: PathBuf, reason: String },
    #[error("non-finite (NaN or infinite) values fail verification: {0}")]
    NonFinite(String),
    #[error("{backend} returned {got} outputs, the reference {expected}")]
    OutputCount { backend: &'static str, got: usize, expected: usize },
    #[error("{backend}: output {output} has shape {got:?}, the reference {expected:?}")]
    OutputShape { backend: &'static str, output: String, got: Vec<usize>, expected: Vec<usize> },
    #[error("{count} output/backend pairs over tolerance ({tolerance}): {rows}")]
    OverTolerance { count: usize, tolerance: String, rows: String },
}

/// Decodes up to `n` JPEG/PNG images of a `.tar.gz` or a folder (every
/// `stride`-th in path order, see [`pretext_data::sample_images`]), resized to
/// `size`x`size` (PIL's antialiased bilinear) and normalised with `mean`/`std`.
///
/// # Shapes
/// -> (n, 3, size, size)
pub fn load_images(src: &Path, n: usize, stride: usize, size: u32, mean: [f32; 3], std: [f32; 3]) -> Result<ArrayD<f32>, VerifyError> {
    load_images_as(src, n, stride, size, mean, std, "RGB")
}

/// [`load_images`] in the model's channel order: `RGB` (3 channels), or `L`
/// (1 channel, CIE L* / 100 normalised with `mean[0]`/`std[0]`: a colorization backbone).
///
/// # Shapes
/// -> (n, 3, size, size) or (n, 1, size, size)
pub fn load_images_as(src: &Path, n: usize, stride: usize, size: u32, mean: [f32; 3], std: [f32; 3], order: &str) -> Result<ArrayD<f32>, VerifyError> {
    if order == "L" {
        let files = pretext_data::sample_images(src, n, stride)?;
        if files.is_empty() {
            return Err(VerifyError::NoImages(src.to_path_buf()));
        }
        let mut x = Vec::with_capacity(files.len() * (size * size) as usize);
        for (name, bytes) in &files {
            let img = preprocess::decode_bytes(bytes, name)?;
            x.extend(preprocess::lightness_chw(&preprocess::resize_bilinear_aa(&img, size, size), mean[0], std[0]));
        }
        return Ok(ArrayD::from_shape_vec(IxDyn(&[files.len(), 1, size as usize, size as usize]), x).expect("size x size values per image"));
    }
    let files = pretext_data::sample_images(src, n, stride)?;
    if files.is_empty() {
        return Err(VerifyError::NoImages(src.to_path_buf()));
    }
    let mut x = Vec::with_capacity(files.len() * 3 * (size * size) as usize);
    for (name, bytes) in &files {
        let img = preprocess::decode_bytes(bytes, name)?;
        x.extend(preprocess::normalize_chw(&preprocess::resize_bilinear_aa(&img, size, size), mean, std));
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&[files.len(), 3, size as usize, size as usize]), x).expect("3 x size x size values per image"))
}

/// Each backend's outputs, in the graph's output order.
pub type Runs = Vec<(&'static str, Vec<ArrayD<f32>>)>;

/// Runs a single-input ONNX file in tract and in ONNX Runtime.
pub fn run_onnx(model: &Path, x: &ArrayD<f32>) -> Result<Runs, VerifyError> {
    let tract = crate::open_tract(model)?;
    let ort = crate::open_ort(model, &crate::OrtOptions::default())?;
    Ok(vec![("tract", tract.run(x.clone())?), ("onnxruntime", ort.run(x.clone())?)])
}

/// Runs an ONNX file whose inputs are the image and then `extra` int64
/// tensors (an MAE decoder's `ids_keep`, `ids_restore`) in tract and in ONNX Runtime.
pub fn run_onnx_with(model: &Path, x: &ArrayD<f32>, extra: &[&ArrayD<i64>]) -> Result<Runs, VerifyError> {
    if extra.is_empty() {
        return run_onnx(model, x);
    }
    use tract_onnx::prelude::*;
    let tract_err = |e: TractError| VerifyError::Backend { backend: "tract", model: model.into(), reason: format!("{e:#}") };
    let mut g = tract_onnx::onnx().model_for_path(model).map_err(tract_err)?.with_input_fact(0, f32::fact(x.shape()).into()).map_err(tract_err)?;
    for (i, e) in extra.iter().enumerate() {
        g = g.with_input_fact(i + 1, i64::fact(e.shape()).into()).map_err(tract_err)?;
    }
    let plan = g.into_optimized().and_then(|g| g.into_runnable()).map_err(tract_err)?;
    let ins: TVec<TValue> = std::iter::once(x.clone().into_tensor().into()).chain(extra.iter().map(|e| (*e).clone().into_tensor().into())).collect();
    let outs = plan.run(ins).map_err(tract_err)?;
    let tract_outs = outs.iter().map(|t| Ok(t.to_plain_array_view::<f32>()?.to_owned())).collect::<TractResult<Vec<_>>>().map_err(tract_err)?;

    let ort_err = |e: ort::Error| VerifyError::Backend { backend: "onnxruntime", model: model.into(), reason: e.to_string() };
    let mut session = ort::session::Session::builder(crate::ort_environment()?).map_err(ort_err)?.commit_from_file(model).map_err(ort_err)?;
    let xs = x.as_standard_layout().into_owned();
    let es: Vec<ArrayD<i64>> = extra.iter().map(|e| e.as_standard_layout().into_owned()).collect();
    let mut ins: Vec<ort::session::SessionInputValue> = vec![ort::value::TensorRef::from_array_view(&xs).map_err(ort_err)?.into()];
    for e in &es {
        ins.push(ort::value::TensorRef::from_array_view(e).map_err(ort_err)?.into());
    }
    let outputs = session.run(ins.as_slice()).map_err(ort_err)?;
    let ort_outs = outputs.iter().map(|(_, v)| Ok(v.try_extract_array::<f32>()?.to_owned())).collect::<Result<Vec<_>, ort::Error>>().map_err(ort_err)?;
    Ok(vec![("tract", tract_outs), ("onnxruntime", ort_outs)])
}

/// max |a - b|; +inf when either side holds a NaN or infinity (see [`compare`]).
pub fn max_abs(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    compare::max_abs_diff(a, b) as f32
}

/// The smallest per-row cosine similarity between two (N, ...) arrays (rows are the
/// leading axis); -inf when either side holds a NaN or infinity.
pub fn min_cosine(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    let row = a.len() / a.shape().first().copied().unwrap_or(1).max(1);
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    match (a.as_slice(), b.as_slice()) {
        (Some(a), Some(b)) => compare::min_cosine(a, b, row) as f32,
        _ => f32::NEG_INFINITY,
    }
}

/// One comparison row.
#[derive(Debug, Clone)]
pub struct Row {
    pub output: String,
    pub backend: &'static str,
    pub max_abs: f32,
    pub cosine: f32,
    /// Largest |value| of the reference, to read `max_abs` against.
    pub ref_max: f32,
}

/// Compares every backend's outputs with the reference (named outputs), by position.
pub fn compare(reference: &[(String, ArrayD<f32>)], runs: &[(&'static str, Vec<ArrayD<f32>>)]) -> Result<Vec<Row>, VerifyError> {
    let mut non_finite = Vec::new();
    let mut count = |name: &str, from: &str, a: &ArrayD<f32>| {
        let k = compare::count_non_finite(a);
        if k > 0 {
            non_finite.push(format!("output `{name}` from {from}: {k} of {} values", a.len()));
        }
    };
    for (name, r) in reference {
        count(name, "tch (the reference)", r);
    }
    for (backend, outs) in runs {
        for ((name, _), o) in reference.iter().zip(outs) {
            count(name, backend, o);
        }
    }
    if !non_finite.is_empty() {
        return Err(VerifyError::NonFinite(non_finite.join("; ")));
    }
    let mut rows = Vec::new();
    for (backend, outs) in runs {
        if outs.len() != reference.len() {
            return Err(VerifyError::OutputCount { backend, got: outs.len(), expected: reference.len() });
        }
        for ((name, r), o) in reference.iter().zip(outs) {
            if r.shape() != o.shape() {
                return Err(VerifyError::OutputShape { backend, output: name.clone(), got: o.shape().to_vec(), expected: r.shape().to_vec() });
            }
            rows.push(Row { output: name.clone(), backend, max_abs: max_abs(r, o), cosine: min_cosine(r, o), ref_max: compare::max_abs(r) as f32 });
        }
    }
    Ok(rows)
}

/// Runs `model` in tract and ONNX Runtime on `x` (and `extra` int64 inputs)
/// and compares every output with `reference`.
pub fn verify(model: &Path, x: &ArrayD<f32>, extra: &[&ArrayD<i64>], reference: &[(String, ArrayD<f32>)]) -> Result<Vec<Row>, VerifyError> {
    compare(reference, &run_onnx_with(model, x, extra)?)
}

/// What a row must meet: fp32 graphs a max abs error, fp16 graphs a minimum cosine.
#[derive(Debug, Clone, Copy)]
pub enum Tolerance {
    MaxAbs(f32),
    MinCosine(f32),
}

impl Tolerance {
    /// Whether `r` meets it; a NaN never does.
    pub fn passes(&self, r: &Row) -> bool {
        match *self {
            Tolerance::MaxAbs(t) => r.max_abs <= t,
            Tolerance::MinCosine(c) => r.cosine >= c,
        }
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tolerance::MaxAbs(t) => write!(f, "max abs err <= {t:e}"),
            Tolerance::MinCosine(c) => write!(f, "cosine >= {c}"),
        }
    }
}

/// Ok when every row meets `tol`, else an error listing the rows that do not.
pub fn check(rows: &[Row], tol: Tolerance) -> Result<(), VerifyError> {
    let bad: Vec<&Row> = rows.iter().filter(|r| !tol.passes(r)).collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(VerifyError::OverTolerance { count: bad.len(), tolerance: tol.to_string(), rows: format!("{bad:?}") })
}

pub fn format_table(rows: &[Row]) -> String {
    let mut s = format!("{:<16} {:<12} {:>12} {:>10} {:>10}\n", "output", "backend", "max|err|", "cosine", "max|ref|");
    for r in rows {
        s += &format!("{:<16} {:<12} {:>12.3e} {:>10.6} {:>10.3}\n", r.output, r.backend, r.max_abs, r.cosine, r.ref_max);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&[1, v.len()]), v.to_vec()).unwrap()
    }

    #[test]
    fn a_nan_fails_and_names_output_and_backend() {
        let reference = vec![("features".to_string(), a(&[1.0, 2.0]))];
        let e = compare(&reference, &[("tract", vec![a(&[1.0, f32::NAN])])]).unwrap_err().to_string();
        assert!(e.contains("features") && e.contains("tract") && e.contains("1 of 2"), "{e}");
    }

    #[test]
    fn rows_and_tolerances() {
        let reference = vec![("features".to_string(), a(&[3.0, 4.0]))];
        let rows = compare(&reference, &[("tract", vec![a(&[3.0, 4.5])]), ("onnxruntime", vec![a(&[3.0, 4.0])])]).unwrap();
        assert_eq!((rows[0].max_abs, rows[0].ref_max, rows[1].max_abs), (0.5, 4.0, 0.0));
        // cos([3,4],[3,4.5]) = (9+18)/(5*sqrt(29.25))
        assert!((rows[0].cosine - 27.0 / (5.0 * 29.25f32.sqrt())).abs() < 1e-6);
        assert!(check(&rows, Tolerance::MaxAbs(0.5)).is_ok());
        let e = check(&rows, Tolerance::MaxAbs(0.1)).unwrap_err().to_string();
        assert!(e.starts_with("1 output/backend pairs") && e.contains("tract"), "{e}");
        assert!(!Tolerance::MaxAbs(1.0).passes(&Row { max_abs: f32::NAN, ..rows[0].clone() }));
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let reference = vec![("features".to_string(), a(&[1.0, 2.0]))];
        let e = compare(&reference, &[("tract", vec![a(&[1.0, 2.0, 3.0])])]).unwrap_err().to_string();
        assert!(e.contains("[1, 3]") && e.contains("[1, 2]"), "{e}");
    }
}

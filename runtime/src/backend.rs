//! The backend trait: one loaded ONNX graph, run on NCHW f32 batches, shared across threads.
use ndarray::ArrayD;

use crate::RuntimeError;

/// The inference engines, as a user names one (`pretext --backend`); [`crate::BackendKind`]
/// is an engine with its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Engine {
    /// Pure Rust, no native library.
    #[default]
    Tract,
    /// ONNX Runtime, the library at `ORT_DYLIB_PATH` (cargo feature `ort`).
    #[cfg(feature = "ort")]
    Ort,
}

/// A loaded ONNX model ready to run. Built once (session/plan), then shared by
/// reference across threads: `run` takes `&self`.
pub trait Backend: Send + Sync {
    /// Backend name, e.g. `tract` or `ort[cpu]`.
    fn name(&self) -> &str;
    /// Runs the graph on one NCHW f32 batch; returns every graph output, in graph
    /// order, converted to f32 (fp16 outputs are widened).
    ///
    /// # Shapes
    /// `input`: `[N, C, H, W]` -> one array per graph output, leading dim `N`.
    fn run(&self, input: ArrayD<f32>) -> Result<Vec<ArrayD<f32>>, RuntimeError>;
    /// Graph output names, in the order `run` returns them.
    fn output_names(&self) -> &[String];
    /// The input shape as declared by the graph; `None` for a symbolic dimension.
    fn input_shape(&self) -> &[Option<usize>];
}

/// Formats a possibly symbolic shape, e.g. `[N, 3, 32, 32]`.
pub(crate) fn fmt_shape(s: &[Option<usize>]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.map(|v| v.to_string()).unwrap_or_else(|| "N".into())).collect();
    format!("[{}]", parts.join(", "))
}

/// Checks a batch against the declared input shape (rank 4, fixed dims equal).
pub(crate) fn check_input(backend: &str, declared: &[Option<usize>], got: &[usize]) -> Result<(), RuntimeError> {
    let ok = got.len() == declared.len()
        && got.iter().zip(declared).all(|(g, d)| d.is_none_or(|d| d == *g))
        && got.first().is_some_and(|n| *n > 0);
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InputShape { backend: backend.to_string(), got: got.to_vec(), expected: fmt_shape(declared) })
    }
}

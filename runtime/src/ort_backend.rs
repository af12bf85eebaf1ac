//! ONNX Runtime backend through `ort` (load-dynamic), behind the `ort` cargo feature.
//!
//! The library is loaded once per process from `ORT_DYLIB_PATH` (run time), else
//! from the path baked in at compile time. CPU is the default; CUDA and TensorRT are
//! opt-in, and a requested provider that fails to register is an error
//! ([`RuntimeError::Provider`]), never a silent CPU fallback (ort#567).
//!
//! An optimized-model cache (ORT format, memory-mapped) was tried and removed in issue
//! #17: it only sped up opening a model, for 240 lines of code; its measurements are in
//! docs/benchmarks.md ("ORT optimized-model cache").
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::ArrayD;
use ort::ep::ExecutionProvider as _;
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::backend::{check_input, fmt_shape, Backend};
use crate::RuntimeError;

/// Execution provider to run the graph on; the device and TensorRT settings are
/// [`OrtOptions`] fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    #[cfg_attr(feature = "clap", value(name = "tensorrt"))]
    TensorRt,
}

impl ExecutionProvider {
    fn label(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "ort[cpu]",
            ExecutionProvider::Cuda => "ort[cuda]",
            ExecutionProvider::TensorRt => "ort[tensorrt]",
        }
    }
}

/// Graph optimization level (ONNX Runtime's `GraphOptimizationLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum GraphOptLevel {
    Disable,
    Basic,
    Extended,
    /// The default: ~20 % faster than the others on ResNet-18 CIFAR batch 8 (NCHWc layout
    /// transformer; docs/benchmarks.md, "Choices that measurement decided").
    #[default]
    All,
}

/// Session options of the ort backend.
#[derive(Debug, Clone, Default)]
pub struct OrtOptions {
    pub provider: ExecutionProvider,
    /// GPU device id (CUDA, TensorRT).
    pub device_id: i32,
    /// TensorRT: build fp16 engines.
    pub trt_fp16: bool,
    /// TensorRT: engine cache directory; `None` = no engine cache.
    pub trt_engine_cache: Option<PathBuf>,
    pub opt_level: GraphOptLevel,
    /// Intra-op threads; `None` lets ONNX Runtime choose.
    pub intra_threads: Option<usize>,
    /// Inter-op threads; `None` lets ONNX Runtime choose.
    pub inter_threads: Option<usize>,
    /// Whether idle intra-op threads spin (`session.intra_op.allow_spinning`); `None`
    /// keeps ONNX Runtime's default (spin). Spinning saves a wake-up per parallel
    /// section on idle cores and costs a time slice on busy ones: ViT-S/16 batch 1
    /// with 2 threads at load average 2.9 took 155 ms without and 195-198 ms with it.
    pub intra_spinning: Option<bool>,
}

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Path of libonnxruntime: `ORT_DYLIB_PATH` at run time, else at compile time.
pub fn ort_dylib_path() -> Option<String> {
    std::env::var("ORT_DYLIB_PATH").ok().or_else(|| option_env!("ORT_DYLIB_PATH").map(String::from))
}

/// The process-wide ONNX Runtime environment (ONNX Runtime allows one per process).
/// Other crates that need ort sessions should build them on this environment.
pub fn ort_environment() -> Result<&'static Environment, RuntimeError> {
    let r = ENV.get_or_init(|| {
        let path = ort_dylib_path().ok_or_else(|| "ORT_DYLIB_PATH is not set (neither at run time nor at build time)".to_string())?;
        let builder = ort::init_from(&path).map_err(|e| format!("{path}: {e}"))?;
        builder.with_name("pretext").build().map_err(|e| format!("{path}: {e}"))
    });
    r.as_ref().map_err(|reason| RuntimeError::OrtLibrary {
        path: ort_dylib_path().unwrap_or_default(),
        reason: reason.clone(),
    })
}

pub struct OrtBackend {
    label: &'static str,
    session: Mutex<Session>,
    outputs: Vec<String>,
    input_shape: Vec<Option<usize>>,
}

/// Opens an ONNX file with ONNX Runtime.
pub fn open_ort(path: &Path, opts: &OrtOptions) -> Result<Box<dyn Backend>, RuntimeError> {
    Ok(Box::new(OrtBackend::open(path, opts)?))
}

fn ort_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ort(e.to_string())
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load { path: path.to_path_buf(), backend: "ort", reason: e.to_string() }
}

/// Whether the loaded ONNX Runtime library was built with this provider
/// (registration can still fail at session creation, which is then an error).
pub fn provider_compiled_in(p: &ExecutionProvider) -> Result<bool, RuntimeError> {
    ort_environment()?;
    Ok(match p {
        ExecutionProvider::Cpu => true,
        ExecutionProvider::Cuda => ort::ep::CUDA::is_available().map_err(ort_err)?,
        ExecutionProvider::TensorRt => ort::ep::TensorRT::is_available().map_err(ort_err)?,
    })
}

fn register_provider(b: &mut SessionBuilder, opts: &OrtOptions) -> Result<(), RuntimeError> {
    let p = &opts.provider;
    let fail = |reason: String| RuntimeError::Provider { provider: p.label().to_string(), reason };
    let res = match p {
        ExecutionProvider::Cpu => return Ok(()),
        ExecutionProvider::Cuda => {
            if !ort::ep::CUDA::is_available().unwrap_or(false) {
                return Err(fail(format!("this ONNX Runtime build ({}) has no CUDA provider", ort_dylib_path().unwrap_or_default())));
            }
            ort::ep::CUDA::default().with_device_id(opts.device_id).register(b)
        }
        ExecutionProvider::TensorRt => {
            if !ort::ep::TensorRT::is_available().unwrap_or(false) {
                return Err(fail(format!("this ONNX Runtime build ({}) has no TensorRT provider", ort_dylib_path().unwrap_or_default())));
            }
            let mut ep = ort::ep::TensorRT::default().with_device_id(opts.device_id).with_fp16(opts.trt_fp16);
            if let Some(dir) = &opts.trt_engine_cache {
                ep = ep.with_engine_cache(true).with_engine_cache_path(dir.display().to_string());
            }
            ep.register(b)
        }
    };
    res.map_err(|e| fail(e.to_string()))
}

impl OrtBackend {
    /// Opens `path` with ONNX Runtime.
    pub fn open(path: &Path, opts: &OrtOptions) -> Result<Self, RuntimeError> {
        let session = Self::builder(opts)?.commit_from_file(path).map_err(|e| load_err(path, e))?;
        Self::from_session(path, opts, session)
    }

    /// A session builder with `opts`' level, threads, spinning and provider.
    fn builder(opts: &OrtOptions) -> Result<SessionBuilder, RuntimeError> {
        let level = match opts.opt_level {
            GraphOptLevel::Disable => GraphOptimizationLevel::Disable,
            GraphOptLevel::Basic => GraphOptimizationLevel::Level1,
            GraphOptLevel::Extended => GraphOptimizationLevel::Level2,
            GraphOptLevel::All => GraphOptimizationLevel::All,
        };
        let mut b = Session::builder(ort_environment()?).map_err(ort_err)?.with_optimization_level(level).map_err(ort_err)?;
        if let Some(n) = opts.intra_threads {
            b = b.with_intra_threads(n).map_err(ort_err)?;
        }
        if let Some(n) = opts.inter_threads {
            b = b.with_inter_threads(n).map_err(ort_err)?;
        }
        if let Some(spin) = opts.intra_spinning {
            b = b.with_intra_op_spinning(spin).map_err(ort_err)?;
        }
        register_provider(&mut b, opts)?;
        Ok(b)
    }

    /// The backend around `session`, checking that the model has one rank-4 input.
    fn from_session(path: &Path, opts: &OrtOptions, session: Session) -> Result<Self, RuntimeError> {
        let [input] = session.inputs() else {
            return Err(RuntimeError::InputCount { path: path.to_path_buf(), count: session.inputs().len() });
        };
        let mut declared: Vec<Option<usize>> = match input.dtype() {
            // ONNX Runtime reports an input without a declared shape as rank 0.
            ValueType::Tensor { shape, .. } if shape.is_empty() => vec![None; 4],
            ValueType::Tensor { shape, .. } => shape.iter().map(|&d| (d > 0).then_some(d as usize)).collect(),
            other => return Err(load_err(path, format!("input `{}` is a {other:?}, not a tensor", input.name()))),
        };
        if declared.len() != 4 {
            let (input, rank, shape) = (input.name().to_string(), declared.len(), fmt_shape(&declared));
            return Err(RuntimeError::InputRank { path: path.to_path_buf(), input, rank, shape });
        }
        declared[0] = None;
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(OrtBackend { label: opts.provider.label(), session: Mutex::new(session), outputs, input_shape: declared })
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &str {
        self.label
    }

    fn run(&self, input: ArrayD<f32>) -> Result<Vec<ArrayD<f32>>, RuntimeError> {
        let shape = input.shape().to_vec();
        check_input(self.label, &self.input_shape, &shape)?;
        let run_err = |e: ort::Error| RuntimeError::Run { backend: self.label.to_string(), shape: shape.clone(), reason: e.to_string() };
        let input = input.as_standard_layout().into_owned();
        let tensor = TensorRef::from_array_view(&input).map_err(run_err)?;
        let mut session = self.session.lock().map_err(|_| RuntimeError::Ort("session mutex poisoned".into()))?;
        let outputs = session.run(ort::inputs![tensor]).map_err(run_err)?;
        let mut result = Vec::with_capacity(self.outputs.len());
        for (name, value) in outputs.iter() {
            let ty = match value.dtype() {
                ValueType::Tensor { ty, .. } => *ty,
                other => {
                    return Err(RuntimeError::OutputType { backend: self.label.into(), output: name.to_string(), dtype: format!("{other:?}") })
                }
            };
            let arr = match ty {
                TensorElementType::Float32 => value.try_extract_array::<f32>().map_err(run_err)?.to_owned(),
                TensorElementType::Float16 => value.try_extract_array::<half::f16>().map_err(run_err)?.mapv(|v| v.to_f32()),
                TensorElementType::Float64 => value.try_extract_array::<f64>().map_err(run_err)?.mapv(|v| v as f32),
                t => return Err(RuntimeError::OutputType { backend: self.label.into(), output: name.to_string(), dtype: format!("{t:?}") }),
            };
            result.push(arr);
        }
        Ok(result)
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn input_shape(&self) -> &[Option<usize>] {
        &self.input_shape
    }
}

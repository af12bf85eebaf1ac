//! ONNX Runtime backend through `ort` (load-dynamic), behind the `ort` cargo feature.
//!
//! The library is loaded once per process from `ORT_DYLIB_PATH` (run time), else
//! from the path baked in at compile time. CPU is the default; CUDA and TensorRT are
//! opt-in, and a requested provider that fails to register is an error
//! ([`RuntimeError::Provider`]), never a silent CPU fallback (ort#567).
//!
//! Optimized-model cache ([`OrtOptions::optimized_cache`]): the first open of a model
//! saves ONNX Runtime's optimized graph (`optimized_model_filepath`) under the cache
//! directory, keyed by the sha256 of the model file, the ONNX Runtime build, the
//! optimization level, the provider and the CPU's SIMD level (the level-3 NCHWc
//! layout transformer writes hardware-specific blocked ops); later opens load that
//! file with graph optimization disabled, skipping the optimizer. A cache write that
//! fails is not an error (the session is already built); the key makes a stale entry
//! unreachable rather than wrong. CPU provider only: CUDA/TensorRT graphs are
//! partitioned per device and have TensorRT's own engine cache.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::ArrayD;
use ort::ep::ExecutionProvider as _;
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::backend::{check_input, Backend};
use crate::tract_backend::{image_input, read_proto};
use crate::RuntimeError;

/// Execution provider to run the graph on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda { device_id: i32 },
    TensorRt { device_id: i32, fp16: bool, engine_cache: Option<PathBuf> },
}

impl ExecutionProvider {
    fn label(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "ort[cpu]",
            ExecutionProvider::Cuda { .. } => "ort[cuda]",
            ExecutionProvider::TensorRt { .. } => "ort[tensorrt]",
        }
    }
}

/// Graph optimization level (ONNX Runtime's `GraphOptimizationLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphOptLevel {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

/// Session options of the ort backend.
#[derive(Debug, Clone, Default)]
pub struct OrtOptions {
    pub provider: ExecutionProvider,
    pub opt_level: GraphOptLevel,
    /// Intra-op threads; `None` lets ONNX Runtime choose.
    pub intra_threads: Option<usize>,
    /// Inter-op threads; `None` lets ONNX Runtime choose.
    pub inter_threads: Option<usize>,
    /// Directory of the optimized-model cache (see the module doc); `None` = no cache.
    pub optimized_cache: Option<PathBuf>,
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
    cache: CacheUse,
}

/// What the optimized-model cache did at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache configured (or not applicable to the provider).
    Off,
    /// Loaded the optimized model from this file.
    Hit(PathBuf),
    /// Optimized the model and saved the result to this file.
    Stored(PathBuf),
    /// Optimized the model; saving to this file failed (reason).
    StoreFailed(PathBuf, String),
}

/// The cache file of `model` (`<stem>.<key>.ort.onnx` in `dir`): the key hashes the
/// model's bytes, the ONNX Runtime build string, the optimization level, the provider
/// and the CPU's SIMD level.
pub fn optimized_cache_path(dir: &Path, model: &Path, opts: &OrtOptions) -> Result<PathBuf, RuntimeError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(model).map_err(|source| RuntimeError::Io { path: model.to_path_buf(), source })?;
    ort_environment()?;
    let mut h = Sha256::new();
    h.update(Sha256::digest(&bytes));
    h.update(ort::info().as_bytes());
    h.update(format!("{:?}|{}|{}", opts.opt_level, opts.provider.label(), simd_level()).as_bytes());
    let key = crate::extractor::hex(&h.finalize());
    let stem = model.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    Ok(dir.join(format!("{stem}.{}.ort.onnx", &key[..16])))
}

fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "x86_64-avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "x86_64-avx2";
        }
    }
    std::env::consts::ARCH
}

/// Opens an ONNX file with ONNX Runtime.
pub fn open_ort(path: &Path, opts: &OrtOptions) -> Result<Box<dyn Backend>, RuntimeError> {
    Ok(Box::new(OrtBackend::open(path, opts)?))
}

fn ort_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ort(e.to_string())
}

/// Whether the loaded ONNX Runtime library was built with this provider
/// (registration can still fail at session creation, which is then an error).
pub fn provider_compiled_in(p: &ExecutionProvider) -> Result<bool, RuntimeError> {
    ort_environment()?;
    Ok(match p {
        ExecutionProvider::Cpu => true,
        ExecutionProvider::Cuda { .. } => ort::ep::CUDA::is_available().map_err(ort_err)?,
        ExecutionProvider::TensorRt { .. } => ort::ep::TensorRT::is_available().map_err(ort_err)?,
    })
}

fn register_provider(b: &mut SessionBuilder, p: &ExecutionProvider) -> Result<(), RuntimeError> {
    let fail = |reason: String| RuntimeError::Provider { provider: p.label().to_string(), reason };
    let res = match p {
        ExecutionProvider::Cpu => return Ok(()),
        ExecutionProvider::Cuda { device_id } => {
            if !ort::ep::CUDA::is_available().unwrap_or(false) {
                return Err(fail(format!("this ONNX Runtime build ({}) has no CUDA provider", ort_dylib_path().unwrap_or_default())));
            }
            ort::ep::CUDA::default().with_device_id(*device_id).register(b)
        }
        ExecutionProvider::TensorRt { device_id, fp16, engine_cache } => {
            if !ort::ep::TensorRT::is_available().unwrap_or(false) {
                return Err(fail(format!("this ONNX Runtime build ({}) has no TensorRT provider", ort_dylib_path().unwrap_or_default())));
            }
            let mut ep = ort::ep::TensorRT::default().with_device_id(*device_id).with_fp16(*fp16);
            if let Some(dir) = engine_cache {
                ep = ep.with_engine_cache(true).with_engine_cache_path(dir.display().to_string());
            }
            ep.register(b)
        }
    };
    res.map_err(|e| fail(e.to_string()))
}

impl OrtBackend {
    pub fn open(path: &Path, opts: &OrtOptions) -> Result<Self, RuntimeError> {
        // Parse with the protobuf reader first: clear errors for truncated files and bad input ranks.
        let proto = read_proto(path)?;
        let mut declared = image_input(path, &proto)?;
        declared[0] = None;
        let env = ort_environment()?;
        let mut b = Session::builder(env).map_err(ort_err)?;
        let level = match opts.opt_level {
            GraphOptLevel::Disable => GraphOptimizationLevel::Disable,
            GraphOptLevel::Basic => GraphOptimizationLevel::Level1,
            GraphOptLevel::Extended => GraphOptimizationLevel::Level2,
            GraphOptLevel::All => GraphOptimizationLevel::All,
        };
        let cache_file = match (&opts.optimized_cache, &opts.provider, opts.opt_level) {
            (Some(dir), ExecutionProvider::Cpu, l) if l != GraphOptLevel::Disable => Some(optimized_cache_path(dir, path, opts)?),
            _ => None,
        };
        let hit = cache_file.as_ref().filter(|f| f.is_file()).cloned();
        // A cached graph is already optimized; `tmp` receives a fresh one (renamed into place after the commit).
        let tmp = match (&cache_file, &hit) {
            (Some(f), None) => Some(f.with_extension(format!("tmp{}", std::process::id()))),
            _ => None,
        };
        let level = if hit.is_some() { GraphOptimizationLevel::Disable } else { level };
        b = b.with_optimization_level(level).map_err(ort_err)?;
        if let Some(t) = &tmp {
            if let Some(dir) = t.parent() {
                std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io { path: dir.to_path_buf(), source })?;
            }
            b = b.with_optimized_model_path(t).map_err(ort_err)?;
        }
        if let Some(n) = opts.intra_threads {
            b = b.with_intra_threads(n).map_err(ort_err)?;
        }
        if let Some(n) = opts.inter_threads {
            b = b.with_inter_threads(n).map_err(ort_err)?;
        }
        if let Some(spin) = opts.intra_spinning {
            b = b.with_intra_op_spinning(spin).map_err(ort_err)?;
        }
        register_provider(&mut b, &opts.provider)?;
        let session = match (b.commit_from_file(hit.as_deref().unwrap_or(path)), &hit) {
            (Ok(s), _) => s,
            // An unreadable cache entry (e.g. written by a crashed process) is dropped and rebuilt.
            (Err(_), Some(h)) => {
                std::fs::remove_file(h).map_err(|source| RuntimeError::Io { path: h.clone(), source })?;
                return Self::open(path, opts);
            }
            (Err(e), None) => return Err(RuntimeError::Load { path: path.to_path_buf(), backend: "ort", reason: e.to_string() }),
        };
        let cache = match (hit, tmp, cache_file) {
            (Some(h), _, _) => CacheUse::Hit(h),
            (None, Some(t), Some(f)) => match std::fs::rename(&t, &f) {
                Ok(()) => CacheUse::Stored(f),
                Err(e) => {
                    let _ = std::fs::remove_file(&t);
                    CacheUse::StoreFailed(f, e.to_string())
                }
            },
            _ => CacheUse::Off,
        };
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(OrtBackend { label: opts.provider.label(), session: Mutex::new(session), outputs, input_shape: declared, cache })
    }

    /// What the optimized-model cache did when this session was opened.
    pub fn cache_use(&self) -> &CacheUse {
        &self.cache
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

//! ONNX Runtime backend through `ort` (load-dynamic), behind the `ort` cargo feature.
//!
//! The library is loaded once per process from `ORT_DYLIB_PATH` (run time), else
//! from the path baked in at compile time. CPU is the default; CUDA and TensorRT are
//! opt-in, and a requested provider that fails to register is an error
//! ([`RuntimeError::Provider`]), never a silent CPU fallback (ort#567).
//!
//! Optimized-model cache ([`OrtOptions::optimized_cache`], CPU provider, level above
//! `disable`): the first open of a model saves ONNX Runtime's optimized graph in ORT
//! format (`session.save_model_format = ORT`) as `<stem>.<key>.ort` in the cache
//! directory, with a metadata file `<stem>.<key>.json` beside it. Later opens load the
//! `.ort` file memory-mapped (`session.use_memory_mapped_ort_model`) with its
//! initializers used in place (`session.use_ort_model_bytes_for_initializers`) and graph
//! optimization off: no protobuf parse, no optimizer, no copy of the weights.
//!
//! - **Key** (the file name): a sha256 of the model's canonical path, the ONNX Runtime
//!   build string, the optimization level, the provider, the CPU's SIMD level (the
//!   level-3 NCHWc transformer writes hardware-specific blocked ops) and the entry format
//!   version. Nothing in the key reads the model's bytes.
//! - **Source check** (the metadata): the model's size, mtime and ctime in nanoseconds,
//!   device and inode, taken before and after the optimizing open (an entry is not stored
//!   if they moved in between) and compared on every hit. ctime catches a same-size
//!   rewrite whose mtime was restored (`touch -r`, `cp -p`, `rsync -t`): user space cannot
//!   set it. A same-size rewrite within the file system's timestamp granularity is the
//!   one case stat cannot see, so, as git does for its index, an entry is only stored
//!   when the model's mtime is at least [`RACY_WINDOW`] in the past (then any later write
//!   moves the mtime); a model opened sooner after it was written is optimized and served
//!   but not cached ([`CacheUse::StoreFailed`]). Models with external data files are not
//!   covered by the check (only the `.onnx` file is stat'ed).
//! - **Entry check**: the metadata records the entry's length and CRC-32, verified on
//!   every hit (a read of the page-cached file, ~15 ms per 90 MB) before ONNX Runtime maps
//!   it, through the same open file (`/proc/self/fd/N`) so a concurrent replacement cannot
//!   slip in between. A missing, stale, truncated or corrupt entry, or one ONNX Runtime
//!   refuses, is rebuilt ([`CacheUse::Rebuilt`]), never an error.
//! - **Writes**: entry then metadata, each to a temporary file renamed into place, so a
//!   reader sees either a complete old pair, a complete new pair, or a mismatch that the
//!   CRC rejects. Entries are never modified in place, which matters because a live
//!   session maps its entry: truncating one by hand under a running process would fault.
//!
//! CPU provider only: CUDA/TensorRT graphs are partitioned per device and have
//! TensorRT's own engine cache. A cache write that fails is not an error (the session is
//! already built).
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use ndarray::ArrayD;
use ort::ep::ExecutionProvider as _;
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::backend::{check_input, fmt_shape, Backend};
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
    /// No cache configured (or not applicable to the provider or level).
    Off,
    /// Loaded the optimized model from this entry.
    Hit(PathBuf),
    /// Optimized the model and saved the result to this entry (there was none).
    Stored(PathBuf),
    /// The entry was stale, truncated or corrupt (reason); optimized the model again and
    /// replaced it.
    Rebuilt(PathBuf, String),
    /// Optimized the model; saving it to this entry failed or was declined (reason).
    StoreFailed(PathBuf, String),
}

/// Version of the entry format and of the metadata's meaning; part of the key.
const CACHE_FORMAT: u32 = 2;

/// How old a model's mtime must be before its stat identifies its content (see the
/// module doc): above the timestamp granularity of common file systems (ext4/xfs: a
/// kernel tick; ext3/HFS+: 1 s; FAT: 2 s) with a margin.
pub const RACY_WINDOW: Duration = Duration::from_secs(3);

/// The stat fields that identify a model file's content (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct SourceStamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    dev: u64,
    ino: u64,
}

/// The metadata file of a cache entry.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct EntryMeta {
    format: u32,
    source: PathBuf,
    stamp: SourceStamp,
    entry_len: u64,
    entry_crc32: u32,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io { path: path.to_path_buf(), source }
}

/// The stamp of `path` and its mtime.
fn stamp(path: &Path) -> std::io::Result<(SourceStamp, SystemTime)> {
    let m = std::fs::metadata(path)?;
    let mtime = m.modified()?;
    let ns = |t: SystemTime| match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    #[cfg(unix)]
    let (ctime_ns, dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128, m.dev(), m.ino())
    };
    #[cfg(not(unix))]
    let (ctime_ns, dev, ino) = (0, 0, 0);
    Ok((SourceStamp { len: m.len(), mtime_ns: ns(mtime), ctime_ns, dev, ino }, mtime))
}

/// Length and CRC-32 of everything `r` yields.
fn crc32_of(mut r: impl std::io::Read) -> std::io::Result<(u64, u32)> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((len, h.finalize()));
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}

/// The cache entry of `model` (`<stem>.<key>.ort` in `dir`; its metadata is the same
/// path with extension `json`). The key hashes the model's canonical path (not its
/// bytes), the ONNX Runtime build string, the optimization level, the provider, the
/// CPU's SIMD level and the entry format; see the module doc.
pub fn optimized_cache_path(dir: &Path, model: &Path, opts: &OrtOptions) -> Result<PathBuf, RuntimeError> {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(model).map_err(io_err(model))?;
    ort_environment()?;
    let mut h = Sha256::new();
    h.update(format!("pretext-ort-cache/{CACHE_FORMAT}\0").as_bytes());
    h.update(canonical.as_os_str().as_encoded_bytes());
    h.update(b"\0");
    h.update(ort::info().as_bytes());
    h.update(format!("\0{:?}|{}|{}", opts.opt_level, opts.provider.label(), simd_level()).as_bytes());
    let key = crate::extractor::hex(&h.finalize());
    let stem = canonical.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    Ok(dir.join(format!("{stem}.{}.ort", &key[..16])))
}

/// Why the entry `entry` of `model` cannot be used (`Ok(None)`: there is none), or the
/// entry opened and verified against its metadata.
fn check_entry(model: &Path, entry: &Path) -> Result<Option<std::fs::File>, String> {
    let meta_path = entry.with_extension("json");
    let text = match std::fs::read(&meta_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", meta_path.display())),
    };
    let meta: EntryMeta = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    if meta.format != CACHE_FORMAT {
        return Err(format!("entry format {} (expected {CACHE_FORMAT})", meta.format));
    }
    let (now, _) = stamp(model).map_err(|e| format!("{}: {e}", model.display()))?;
    if now != meta.stamp {
        return Err(format!("{} changed since the entry was made ({:?} -> {now:?})", model.display(), meta.stamp));
    }
    let mut file = std::fs::File::open(entry).map_err(|e| format!("{}: {e}", entry.display()))?;
    let (len, crc) = crc32_of(&mut file).map_err(|e| format!("{}: {e}", entry.display()))?;
    if (len, crc) != (meta.entry_len, meta.entry_crc32) {
        return Err(format!(
            "{}: {len} bytes with CRC-32 {crc:08x}, the metadata says {} bytes with {:08x}",
            entry.display(),
            meta.entry_len,
            meta.entry_crc32
        ));
    }
    Ok(Some(file))
}

/// A temporary name beside `path`, unique in this process and across processes.
fn temp_beside(path: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

/// Moves the freshly written entry `tmp` to `entry` and writes its metadata, given
/// the model's stamp before the optimizing open. `Err` = declined or failed (reason).
fn store_entry(model: &Path, before: &(SourceStamp, SystemTime), tmp: &Path, entry: &Path) -> Result<(), String> {
    let (after, mtime) = stamp(model).map_err(|e| format!("{}: {e}", model.display()))?;
    if after != before.0 {
        return Err(format!("{} changed while it was optimized", model.display()));
    }
    match SystemTime::now().duration_since(mtime) {
        Ok(age) if age >= RACY_WINDOW => {}
        _ => {
            return Err(format!(
                "{} was modified less than {} s ago (its mtime cannot yet identify its content)",
                model.display(),
                RACY_WINDOW.as_secs()
            ))
        }
    }
    let file = std::fs::File::open(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let (entry_len, entry_crc32) = crc32_of(file).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let source = std::fs::canonicalize(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let meta = EntryMeta { format: CACHE_FORMAT, source, stamp: after, entry_len, entry_crc32 };
    let meta_path = entry.with_extension("json");
    let meta_tmp = temp_beside(&meta_path);
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
    std::fs::write(&meta_tmp, text).map_err(|e| format!("{}: {e}", meta_tmp.display()))?;
    std::fs::rename(tmp, entry).map_err(|e| format!("{}: {e}", entry.display()))?;
    std::fs::rename(&meta_tmp, &meta_path).map_err(|e| {
        let _ = std::fs::remove_file(&meta_tmp);
        format!("{}: {e}", meta_path.display())
    })
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

fn load_err(path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load { path: path.to_path_buf(), backend: "ort", reason: e.to_string() }
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
    /// Opens `path` with ONNX Runtime, through the optimized-model cache when one is
    /// configured (see the module doc).
    pub fn open(path: &Path, opts: &OrtOptions) -> Result<Self, RuntimeError> {
        ort_environment()?;
        let entry = match (&opts.optimized_cache, &opts.provider, opts.opt_level) {
            (Some(dir), ExecutionProvider::Cpu, l) if l != GraphOptLevel::Disable => Some(optimized_cache_path(dir, path, opts)?),
            _ => None,
        };
        let Some(entry) = entry else {
            let session = Self::builder(opts, opts.opt_level)?.commit_from_file(path).map_err(|e| load_err(path, e))?;
            return Self::from_session(path, opts, session, CacheUse::Off);
        };
        let stale = match check_entry(path, &entry) {
            Ok(Some(file)) => match Self::open_entry(opts, &entry, &file) {
                Ok(session) => return Self::from_session(path, opts, session, CacheUse::Hit(entry)),
                Err(e) => Some(format!("ONNX Runtime refused {}: {e}", entry.display())),
            },
            Ok(None) => None,
            Err(reason) => Some(reason),
        };
        let before = stamp(path).map_err(io_err(path))?;
        let dir = entry.parent().unwrap_or(Path::new("."));
        let tmp = temp_beside(&entry);
        let saving = std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display())).and_then(|()| {
            let b = Self::builder(opts, opts.opt_level).map_err(|e| e.to_string())?;
            let b = b.with_config_entry("session.save_model_format", "ORT").map_err(|e| e.to_string())?;
            b.with_optimized_model_path(&tmp).map_err(|e| e.to_string())?.commit_from_file(path).map_err(|e| e.to_string())
        });
        let (session, cache) = match saving {
            Ok(session) => match (store_entry(path, &before, &tmp, &entry), stale) {
                (Ok(()), None) => (session, CacheUse::Stored(entry)),
                (Ok(()), Some(reason)) => (session, CacheUse::Rebuilt(entry, reason)),
                (Err(reason), _) => {
                    let _ = std::fs::remove_file(&tmp);
                    (session, CacheUse::StoreFailed(entry, reason))
                }
            },
            // The cache directory may be at fault rather than the model: open without saving,
            // whose error (if any) is the model's.
            Err(reason) => {
                let _ = std::fs::remove_file(&tmp);
                let session = Self::builder(opts, opts.opt_level)?.commit_from_file(path).map_err(|e| load_err(path, e))?;
                (session, CacheUse::StoreFailed(entry, reason))
            }
        };
        Self::from_session(path, opts, session, cache)
    }

    /// A session builder with `opts`' threads, spinning and provider at `level`.
    fn builder(opts: &OrtOptions, level: GraphOptLevel) -> Result<SessionBuilder, RuntimeError> {
        let level = match level {
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
        register_provider(&mut b, &opts.provider)?;
        Ok(b)
    }

    /// A session on the verified cache entry `file` (opened from `entry`): memory-mapped,
    /// initializers in place, no graph optimization (the entry is already optimized).
    fn open_entry(opts: &OrtOptions, entry: &Path, file: &std::fs::File) -> Result<Session, ort::Error> {
        // The very file whose CRC was checked, even if `entry` is replaced meanwhile.
        #[cfg(target_os = "linux")]
        let at = {
            use std::os::fd::AsRawFd;
            let _ = entry;
            PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
        };
        #[cfg(not(target_os = "linux"))]
        let at = {
            let _ = file;
            entry.to_path_buf()
        };
        let b = Self::builder(opts, GraphOptLevel::Disable).map_err(|e| ort::Error::new(e.to_string()))?;
        b.with_config_entry("session.load_model_format", "ORT")?
            .with_config_entry("session.use_memory_mapped_ort_model", "1")?
            .with_config_entry("session.use_ort_model_bytes_for_initializers", "1")?
            .commit_from_file(at)
    }

    /// The backend around `session`, checking that the model has one rank-4 input.
    fn from_session(path: &Path, opts: &OrtOptions, session: Session, cache: CacheUse) -> Result<Self, RuntimeError> {
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

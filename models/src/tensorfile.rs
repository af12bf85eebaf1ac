//! Safetensors files, read and written in one place: every dtype pretext
//! uses, atomic writes ([`crate::io::atomic_write`]), the `pretext.*`
//! metadata as one typed struct ([`PretextMeta`], shared with the ONNX
//! `metadata_props`), and one error type naming the file, the tensor or key,
//! and what was expected and found. Libtorch-free: the trainer, exporter,
//! runtime and CLI all read and write through it.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use safetensors::Dtype;

/// Everything that can go wrong with a tensor file.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{path}: not a safetensors file ({reason})")]
    Foreign { path: PathBuf, reason: String },
    #[error("{path}: missing tensor '{key}' (expected shape {expected:?})")]
    Missing { path: PathBuf, key: String, expected: Vec<i64> },
    #[error("{path}: tensor '{key}' has shape {found:?}, the model expects {expected:?}")]
    Shape { path: PathBuf, key: String, expected: Vec<i64>, found: Vec<i64> },
    /// Dtype or layout: `found` is e.g. `F32 [2, 3, 1]`, `expected` e.g. `F32 [N, D]`.
    #[error("{path}: tensor '{key}' is {found}; expected {expected}")]
    Dtype { path: PathBuf, key: String, expected: String, found: String },
    #[error("{path}: {n} tensors the model does not have, e.g. {examples:?} (pass strict=false to ignore)")]
    Unexpected { path: PathBuf, n: usize, examples: Vec<String> },
    #[error("{path}: metadata '{key}' = {value:?}: {reason}")]
    Meta { path: PathBuf, key: String, value: String, reason: String },
}

type Result<T> = std::result::Result<T, TensorFileError>;

/// `F32 [2, 3]`: how errors show a tensor's dtype and shape.
pub fn describe(dtype: Dtype, shape: &[usize]) -> String {
    format!("{dtype:?} {shape:?}")
}

/// A host tensor to write: dtype, shape (i64, as [`crate::ParamSpec`] and
/// libtorch give it) and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: Dtype,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

impl HostTensor {
    pub fn f32(shape: &[usize], v: &[f32]) -> Self {
        HostTensor { dtype: Dtype::F32, shape: dims(shape), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    pub fn f16(shape: &[usize], v: &[half::f16]) -> Self {
        HostTensor { dtype: Dtype::F16, shape: dims(shape), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    pub fn bf16(shape: &[usize], v: &[half::bf16]) -> Self {
        HostTensor { dtype: Dtype::BF16, shape: dims(shape), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    pub fn f64(shape: &[usize], v: &[f64]) -> Self {
        HostTensor { dtype: Dtype::F64, shape: dims(shape), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    pub fn i64(shape: &[usize], v: &[i64]) -> Self {
        HostTensor { dtype: Dtype::I64, shape: dims(shape), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    pub fn i32(shape: &[usize], v: &[i32]) -> Self {
        HostTensor { dtype: Dtype::I32, shape: dims(shape), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    pub fn u32(shape: &[usize], v: &[u32]) -> Self {
        HostTensor { dtype: Dtype::U32, shape: dims(shape), data: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    pub fn u8(shape: &[usize], v: &[u8]) -> Self {
        HostTensor { dtype: Dtype::U8, shape: dims(shape), data: v.to_vec() }
    }
}

/// A [`HostTensor`] as the safetensors serializer sees it.
struct View<'a> {
    t: &'a HostTensor,
    shape: Vec<usize>,
}

impl safetensors::View for View<'_> {
    fn dtype(&self) -> Dtype {
        self.t.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.t.data)
    }
    fn data_len(&self) -> usize {
        self.t.data.len()
    }
}

/// The bytes of a safetensors file (tensors sorted by name, as the format wants).
pub fn to_bytes(path: &Path, tensors: &BTreeMap<String, HostTensor>, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let fail = |reason: String| TensorFileError::Write { path: path.into(), reason };
    let mut views = Vec::with_capacity(tensors.len());
    for (k, t) in tensors {
        let shape = t.shape.iter().map(|&d| usize::try_from(d)).collect::<std::result::Result<Vec<_>, _>>().map_err(|_| fail(format!("tensor '{k}' has shape {:?}", t.shape)))?;
        let want = shape.iter().product::<usize>() * t.dtype.bitsize() / 8;
        if want != t.data.len() {
            return Err(fail(format!("tensor '{k}' is {} but holds {} bytes, not {want}", describe(t.dtype, &shape), t.data.len())));
        }
        views.push((k, View { t, shape }));
    }
    safetensors::serialize(views, metadata).map_err(|e| fail(e.to_string()))
}

/// Writes a safetensors file atomically (unique temp file, fsync, rename, fsync of the folder).
pub fn write(path: &Path, tensors: &BTreeMap<String, HostTensor>, metadata: Option<HashMap<String, String>>) -> Result<()> {
    let bytes = to_bytes(path, tensors, metadata)?;
    crate::io::atomic_write(path, &bytes).map_err(|e| TensorFileError::Write { path: path.into(), reason: e.to_string() })
}

/// A tensor of a file: dtype, shape and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

/// A safetensors file read and validated (header, offsets, sizes) in memory.
#[derive(Debug)]
pub struct TensorFile {
    pub path: PathBuf,
    bytes: Vec<u8>,
    start: usize,
    header: safetensors::tensor::Metadata,
    /// The string metadata (`__metadata__`), empty when absent.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| TensorFileError::Read { path: path.into(), source })?;
        Self::from_bytes(path, bytes)
    }

    /// Parses safetensors bytes; `path` names the file in errors. A header that
    /// lies (sizes that do not match dtype x shape, overlapping or short data)
    /// is [`TensorFileError::Foreign`].
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let (n, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| TensorFileError::Foreign { path: path.into(), reason: e.to_string() })?;
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(TensorFile { path: path.into(), bytes, start: 8 + n, header, metadata })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v = self.header.offset_keys();
        v.sort_unstable();
        v
    }

    pub fn contains(&self, key: &str) -> bool {
        self.header.info(key).is_some()
    }

    /// A tensor's dtype, shape and bytes.
    pub fn get(&self, key: &str) -> Option<TensorRef<'_>> {
        let info = self.header.info(key)?;
        let (s, e) = info.data_offsets;
        Some(TensorRef { dtype: info.dtype, shape: &info.shape, data: &self.bytes[self.start + s..self.start + e] })
    }

    fn need(&self, key: &str, expected: &[i64]) -> Result<TensorRef<'_>> {
        self.get(key).ok_or_else(|| TensorFileError::Missing { path: self.path.clone(), key: key.into(), expected: expected.to_vec() })
    }

    fn wrong(&self, key: &str, t: TensorRef, expected: impl Into<String>) -> TensorFileError {
        TensorFileError::Dtype { path: self.path.clone(), key: key.into(), expected: expected.into(), found: describe(t.dtype, t.shape) }
    }

    /// A float tensor widened to f32 (F32, F16, BF16, F64), with its shape.
    pub fn f32(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.need(key, &[])?;
        let d = t.data;
        let v = match t.dtype {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect(),
            _ => return Err(self.wrong(key, t, "a float tensor (F32, F16, BF16 or F64)")),
        };
        Ok((t.shape.to_vec(), v))
    }

    /// An integer tensor widened to i64 (I64, I32, U32, U8), with its shape.
    pub fn i64(&self, key: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let t = self.need(key, &[])?;
        let d = t.data;
        let v = match t.dtype {
            Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
            Dtype::I32 => d.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
            Dtype::U32 => d.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
            Dtype::U8 => d.iter().map(|&b| b as i64).collect(),
            _ => return Err(self.wrong(key, t, "an integer tensor (I64, I32, U32 or U8)")),
        };
        Ok((t.shape.to_vec(), v))
    }

    /// `key` as f32 after checking its dtype is exactly `dtype`-compatible and its
    /// shape matches `shape` (`None` = any size on that axis); `layout` names the
    /// expectation in errors, e.g. `F32 [N, D]`.
    pub fn expect(&self, key: &str, dtype: Dtype, shape: &[Option<usize>], layout: &str) -> Result<TensorRef<'_>> {
        let t = self.need(key, &shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect::<Vec<_>>())?;
        let fits = t.dtype == dtype && t.shape.len() == shape.len() && t.shape.iter().zip(shape).all(|(&f, e)| e.is_none_or(|e| e == f));
        if !fits {
            return Err(self.wrong(key, t, layout));
        }
        Ok(t)
    }

    /// Checks `key` against a model's expected shape (missing, or another shape, is an error).
    pub fn check_shape(&self, key: &str, expected: &[i64]) -> Result<TensorRef<'_>> {
        let t = self.need(key, expected)?;
        let found: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        if found != expected {
            return Err(TensorFileError::Shape { path: self.path.clone(), key: key.into(), expected: expected.to_vec(), found });
        }
        Ok(t)
    }

    /// The `pretext.*` metadata, typed.
    pub fn pretext(&self) -> Result<PretextMeta> {
        PretextMeta::from_map(&self.metadata).map_err(|e| e.at(&self.path))
    }

    /// A string metadata entry, or an error naming the key.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(|s| s.as_str())
            .ok_or_else(|| TensorFileError::Meta { path: self.path.clone(), key: key.into(), value: String::new(), reason: "missing".into() })
    }
}

/// The `pretext.*` metadata keys: the only place they are spelled out.
pub mod keys {
    pub const ARCH: &str = "pretext.arch";
    pub const METHOD: &str = "pretext.method";
    pub const DATASET: &str = "pretext.dataset";
    pub const STEP: &str = "pretext.step";
    pub const INPUT_SIZE: &str = "pretext.input_size";
    pub const RESIZE: &str = "pretext.resize";
    pub const MEAN: &str = "pretext.mean";
    pub const STD: &str = "pretext.std";
    pub const HEADS: &str = "pretext.heads";
    pub const PREFIX: &str = "pretext.prefix";
    pub const EMBED_DIM: &str = "pretext.embed_dim";
    pub const CHANNEL_ORDER: &str = "pretext.channel_order";
    pub const OUTPUT: &str = "pretext.output";
    pub const PRODUCER: &str = "pretext.producer";
    pub const MASK_INPUTS: &str = "pretext.mask_inputs";
    /// Not file metadata: the tract model property set when a plan's input is NHWC.
    pub const NHWC_INPUT: &str = "pretext.nhwc_input";
}

/// The `pretext.*` metadata of a safetensors file (trainer, exporter input)
/// or of an ONNX model's `metadata_props` (exporter output, runtime input).
///
/// On disk each field is one string entry `pretext.<field>`: text fields as
/// they are, the others as JSON (`"64"`, `"[0.485,0.456,0.406]"`). Absent
/// entries are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PretextMeta {
    /// The [`crate::BackboneConfig`] JSON; kept as JSON because a foreign
    /// producer may describe another network (see [`PretextMeta::backbone`]).
    pub arch: Option<serde_json::Value>,
    /// Training method (`simclr`, ...).
    pub method: Option<String>,
    pub dataset: Option<String>,
    /// Training step the weights are from.
    pub step: Option<u64>,
    /// Eval preprocessing: crop side, shorter side before the crop, per-channel stats.
    pub input_size: Option<u32>,
    pub resize: Option<u32>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    /// Export name -> [`crate::HeadSpec`] JSON, each kept as JSON so that one head
    /// a reader cannot express does not hide the others.
    pub heads: Option<BTreeMap<String, serde_json::Value>>,
    /// Prefix of the exportable network's tensors (`student.` in a run's checkpoint).
    pub prefix: Option<String>,
    pub embed_dim: Option<usize>,
    pub channel_order: Option<String>,
    /// Name of the features output of an ONNX model.
    pub output: Option<String>,
    pub producer: Option<String>,
    /// How to feed an MAE decoder's mask inputs.
    pub mask_inputs: Option<String>,
}

/// A `pretext.*` entry that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("metadata '{key}' = {value:?}: {reason}")]
pub struct MetaError {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

impl MetaError {
    /// The same error, naming the file.
    pub fn at(self, path: &Path) -> TensorFileError {
        TensorFileError::Meta { path: path.into(), key: self.key.into(), value: self.value, reason: self.reason }
    }
}

/// Every field: key and whether it is stored as plain text (else JSON), as [`PretextMeta::to_map`] writes it.
const FIELDS: [(&str, bool); 15] = [
    (keys::ARCH, false),
    (keys::METHOD, true),
    (keys::DATASET, true),
    (keys::STEP, false),
    (keys::INPUT_SIZE, false),
    (keys::RESIZE, false),
    (keys::MEAN, false),
    (keys::STD, false),
    (keys::HEADS, false),
    (keys::PREFIX, true),
    (keys::EMBED_DIM, false),
    (keys::CHANNEL_ORDER, true),
    (keys::OUTPUT, true),
    (keys::PRODUCER, true),
    (keys::MASK_INPUTS, true),
];

fn field(key: &str) -> &str {
    key.strip_prefix("pretext.").unwrap_or(key)
}

impl PretextMeta {
    /// The entries of the set fields, `pretext.<field>` -> string (floats
    /// keep their shortest f32 form: `0.4914`, not `0.49140000343322754`).
    pub fn to_map(&self) -> HashMap<String, String> {
        fn json<T: Serialize>(v: &Option<T>) -> Option<String> {
            v.as_ref().and_then(|v| serde_json::to_string(v).ok())
        }
        [
            (keys::ARCH, self.arch.as_ref().map(|v| v.to_string())),
            (keys::METHOD, self.method.clone()),
            (keys::DATASET, self.dataset.clone()),
            (keys::STEP, json(&self.step)),
            (keys::INPUT_SIZE, json(&self.input_size)),
            (keys::RESIZE, json(&self.resize)),
            (keys::MEAN, json(&self.mean)),
            (keys::STD, json(&self.std)),
            (keys::HEADS, json(&self.heads)),
            (keys::PREFIX, self.prefix.clone()),
            (keys::EMBED_DIM, json(&self.embed_dim)),
            (keys::CHANNEL_ORDER, self.channel_order.clone()),
            (keys::OUTPUT, self.output.clone()),
            (keys::PRODUCER, self.producer.clone()),
            (keys::MASK_INPUTS, self.mask_inputs.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect()
    }

    /// Reads the `pretext.*` entries of `map` (other entries are ignored); an
    /// entry that does not parse as its field's type is an error naming it.
    pub fn from_map(map: &HashMap<String, String>) -> std::result::Result<Self, MetaError> {
        let mut obj = serde_json::Map::new();
        for (key, text) in FIELDS {
            let Some(raw) = map.get(key) else { continue };
            let bad = |reason: String| MetaError { key, value: raw.clone(), reason };
            let v = if text { serde_json::Value::String(raw.clone()) } else { serde_json::from_str(raw.trim()).map_err(|e| bad(e.to_string()))? };
            // Each field on its own, so that the error names its key.
            let one = serde_json::Value::Object([(field(key).to_string(), v.clone())].into_iter().collect());
            serde_json::from_value::<PretextMeta>(one).map_err(|e| bad(e.to_string()))?;
            obj.insert(field(key).to_string(), v);
        }
        serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| MetaError { key: "pretext.*", value: String::new(), reason: e.to_string() })
    }

    /// `arch` as a backbone config (`None` when absent).
    pub fn backbone(&self) -> std::result::Result<Option<crate::BackboneConfig>, MetaError> {
        let Some(v) = &self.arch else { return Ok(None) };
        serde_json::from_value(v.clone()).map(Some).map_err(|e| MetaError { key: keys::ARCH, value: v.to_string(), reason: format!("not a backbone config: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pretext-tensorfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A file with one header, written by hand (the safetensors layout: u64
    /// header length, JSON header, data).
    fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn every_dtype_round_trips() {
        let d = tmp_dir("dtypes");
        let p = d.join("all.safetensors");
        let f32s = [1.5f32, -2.25, 3.0e-8, f32::MAX, 0.0, -0.0];
        let halfs: Vec<half::f16> = [1.5f32, -2.0, 65504.0, 6.0e-8].iter().map(|&x| half::f16::from_f32(x)).collect();
        let bf16s: Vec<half::bf16> = [1.5f32, -3.0e38, 1.0e-30].iter().map(|&x| half::bf16::from_f32(x)).collect();
        let tensors: BTreeMap<String, HostTensor> = [
            ("a.f32", HostTensor::f32(&[2, 3], &f32s)),
            ("b.f16", HostTensor::f16(&[4], &halfs)),
            ("c.bf16", HostTensor::bf16(&[3, 1], &bf16s)),
            ("d.f64", HostTensor::f64(&[2], &[0.1, -1e300])),
            ("e.i64", HostTensor::i64(&[3], &[i64::MIN, -1, i64::MAX])),
            ("f.i32", HostTensor::i32(&[2], &[i32::MIN, 7])),
            ("g.u32", HostTensor::u32(&[2], &[u32::MAX, 0])),
            ("h.u8", HostTensor::u8(&[1, 3], &[0, 128, 255])),
            ("i.empty", HostTensor::f32(&[0, 5], &[])),
            ("j.scalar", HostTensor::i64(&[], &[42])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        write(&p, &tensors, Some(HashMap::from([("note".to_string(), "x".to_string())]))).unwrap();
        let f = TensorFile::read(&p).unwrap();
        assert_eq!(f.names(), tensors.keys().cloned().collect::<Vec<_>>());
        assert_eq!(f.metadata["note"], "x");
        for (k, t) in &tensors {
            let r = f.get(k).unwrap();
            assert_eq!((r.dtype, dims(r.shape), r.data), (t.dtype, t.shape.clone(), t.data.as_slice()), "{k}");
        }
        assert_eq!(f.f32("a.f32").unwrap(), (vec![2, 3], f32s.to_vec()));
        assert_eq!(f.f32("b.f16").unwrap().1, vec![1.5, -2.0, 65504.0, half::f16::from_f32(6.0e-8).to_f32()]);
        assert_eq!(f.f32("c.bf16").unwrap().1, bf16s.iter().map(|x| x.to_f32()).collect::<Vec<_>>());
        assert_eq!(f.f32("d.f64").unwrap().1, vec![0.1f64 as f32, f32::NEG_INFINITY]);
        assert_eq!(f.i64("e.i64").unwrap().1, vec![i64::MIN, -1, i64::MAX]);
        assert_eq!(f.i64("f.i32").unwrap().1, vec![i32::MIN as i64, 7]);
        assert_eq!(f.i64("g.u32").unwrap().1, vec![u32::MAX as i64, 0]);
        assert_eq!(f.i64("h.u8").unwrap(), (vec![1, 3], vec![0, 128, 255]));
        assert_eq!(f.f32("i.empty").unwrap(), (vec![0, 5], vec![]));
        assert_eq!(f.i64("j.scalar").unwrap(), (vec![], vec![42]));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn wrong_dtype_missing_tensor_and_wrong_shape_name_the_tensor() {
        let d = tmp_dir("wrong");
        let p = d.join("w.safetensors");
        let tensors = BTreeMap::from([("labels".to_string(), HostTensor::i32(&[4], &[0, 1, 2, 3])), ("w".to_string(), HostTensor::f32(&[2, 2], &[1.0; 4]))]);
        write(&p, &tensors, None).unwrap();
        let f = TensorFile::read(&p).unwrap();
        let e = f.f32("labels").unwrap_err().to_string();
        assert!(e.contains("w.safetensors") && e.contains("'labels' is I32 [4]") && e.contains("float"), "{e}");
        let e = f.i64("w").unwrap_err().to_string();
        assert!(e.contains("'w' is F32 [2, 2]") && e.contains("integer"), "{e}");
        let e = f.expect("labels", Dtype::I64, &[Some(4)], "I64 [4]").unwrap_err().to_string();
        assert!(e.contains("'labels' is I32 [4]; expected I64 [4]"), "{e}");
        let e = f.expect("w", Dtype::F32, &[None, Some(3)], "F32 [N, 3]").unwrap_err().to_string();
        assert!(e.contains("'w' is F32 [2, 2]; expected F32 [N, 3]"), "{e}");
        assert!(f.expect("w", Dtype::F32, &[None, Some(2)], "F32 [N, 2]").is_ok());
        let e = f.check_shape("w", &[2, 3]).unwrap_err().to_string();
        assert!(e.contains("tensor 'w' has shape [2, 2], the model expects [2, 3]"), "{e}");
        let e = f.check_shape("absent", &[7]).unwrap_err().to_string();
        assert!(e.contains("w.safetensors") && e.contains("missing tensor 'absent'") && e.contains("[7]"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_host_tensor_whose_bytes_do_not_fit_its_shape_is_not_written() {
        let t = HostTensor { dtype: Dtype::F32, shape: vec![2, 3], data: vec![0; 20] };
        let e = to_bytes(Path::new("o.safetensors"), &BTreeMap::from([("t".to_string(), t)]), None).unwrap_err().to_string();
        assert!(e.contains("o.safetensors: cannot write") && e.contains("'t' is F32 [2, 3] but holds 20 bytes, not 24"), "{e}");
    }

    #[test]
    fn truncated_foreign_and_lying_files_are_refused() {
        let p = Path::new("x.safetensors");
        let good = to_bytes(p, &BTreeMap::from([("t".to_string(), HostTensor::f32(&[2, 3], &[1.0; 6]))]), None).unwrap();
        assert!(TensorFile::from_bytes(p, good.clone()).is_ok());
        for cut in [0, 4, 8, 20, good.len() - 1] {
            let e = TensorFile::from_bytes(p, good[..cut].to_vec()).unwrap_err();
            assert!(matches!(e, TensorFileError::Foreign { .. }), "cut at {cut}: {e}");
        }
        let e = TensorFile::from_bytes(p, b"PK\x03\x04 a zip file, not tensors at all".to_vec()).unwrap_err();
        assert!(e.to_string().contains("x.safetensors: not a safetensors file"), "{e}");
        // The header says [2, 3] F32 (24 bytes) but the offsets cover 8.
        let lying = raw_file(r#"{"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,8]}}"#, &[0; 8]);
        assert!(matches!(TensorFile::from_bytes(p, lying).unwrap_err(), TensorFileError::Foreign { .. }));
        // Offsets past the end of the data.
        let short = raw_file(r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4]);
        assert!(matches!(TensorFile::from_bytes(p, short).unwrap_err(), TensorFileError::Foreign { .. }));
        // Trailing bytes nobody owns.
        let long = raw_file(r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 12]);
        assert!(matches!(TensorFile::from_bytes(p, long).unwrap_err(), TensorFileError::Foreign { .. }));
        let e = TensorFile::read(Path::new("/nonexistent/dir/x.safetensors")).unwrap_err();
        assert!(matches!(e, TensorFileError::Read { .. }) && e.to_string().contains("/nonexistent/dir/x.safetensors"), "{e}");
    }

    #[test]
    fn metadata_round_trips_in_the_on_disk_format() {
        let m = PretextMeta {
            arch: Some(serde_json::json!({"arch": "resnet", "depth": 18})),
            method: Some("123".into()),
            dataset: Some("cifar10".into()),
            step: Some(1000),
            input_size: Some(32),
            resize: Some(36),
            mean: Some([0.4914, 0.4822, 0.4465]),
            std: Some([0.5, 0.5, 0.5]),
            heads: Some(BTreeMap::from([("proj".to_string(), serde_json::json!({"kind": "mlp"}))])),
            prefix: Some("student.".into()),
            embed_dim: Some(512),
            channel_order: Some("RGB".into()),
            output: Some("features".into()),
            producer: Some("pretext 0.1.0".into()),
            mask_inputs: Some("ids_keep: ...".into()),
        };
        let map = m.to_map();
        assert_eq!(map.len(), 15);
        assert_eq!(map["pretext.method"], "123", "text stays text");
        assert_eq!(map["pretext.embed_dim"], "512");
        assert_eq!(map["pretext.mean"], "[0.4914,0.4822,0.4465]");
        assert_eq!(map["pretext.prefix"], "student.");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&map["pretext.arch"]).unwrap(), serde_json::json!({"arch": "resnet", "depth": 18}));
        assert_eq!(PretextMeta::from_map(&map).unwrap(), m);
        // Through a file, next to entries that are not pretext's.
        let d = tmp_dir("meta");
        let p = d.join("m.safetensors");
        let mut all = map.clone();
        all.insert("step".into(), "7".into());
        write(&p, &BTreeMap::new(), Some(all)).unwrap();
        let f = TensorFile::read(&p).unwrap();
        assert_eq!(f.pretext().unwrap(), m);
        assert_eq!(f.meta_str("step").unwrap(), "7");
        assert!(f.meta_str("minutes").unwrap_err().to_string().contains("'minutes'"));
        assert_eq!(PretextMeta::from_map(&HashMap::new()).unwrap(), PretextMeta::default());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_metadata_names_its_key() {
        for (key, value) in [("pretext.input_size", "big"), ("pretext.mean", "[0.5, 0.5]"), ("pretext.step", "-3"), ("pretext.heads", "[1]"), ("pretext.embed_dim", "NaN")] {
            let e = PretextMeta::from_map(&HashMap::from([(key.to_string(), value.to_string())])).unwrap_err();
            assert_eq!((e.key, e.value.as_str()), (key, value), "{e}");
        }
        let m = PretextMeta { arch: Some(serde_json::json!({"kind": "tiny_cnn"})), ..Default::default() };
        assert_eq!(m.backbone().unwrap_err().key, keys::ARCH);
        let cfg = crate::BackboneConfig::from_name("resnet18").unwrap();
        let m = PretextMeta { arch: Some(serde_json::to_value(&cfg).unwrap()), ..Default::default() };
        assert_eq!(m.backbone().unwrap(), Some(cfg));
    }

    /// Threads writing different contents to one path: the file read back is
    /// always one writer's tensors and metadata, whole.
    #[test]
    fn concurrent_writers_never_produce_a_torn_file() {
        let d = tmp_dir("concurrent");
        let p = d.join("g.safetensors");
        let versions: Vec<BTreeMap<String, HostTensor>> =
            (0..6).map(|i| BTreeMap::from([("features".to_string(), HostTensor::f32(&[1000 + i, 16], &vec![i as f32; (1000 + i) * 16]))])).collect();
        for _ in 0..3 {
            std::thread::scope(|s| {
                for (i, v) in versions.iter().enumerate() {
                    let p = &p;
                    s.spawn(move || write(p, v, Some(HashMap::from([("writer".to_string(), i.to_string())]))).unwrap());
                }
            });
            let f = TensorFile::read(&p).unwrap();
            let i: usize = f.meta_str("writer").unwrap().parse().unwrap();
            let (shape, v) = f.f32("features").unwrap();
            assert_eq!(shape, vec![1000 + i, 16]);
            assert!(v.iter().all(|&x| x == i as f32), "writer {i}'s metadata with another writer's data");
            assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no temp file left");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}

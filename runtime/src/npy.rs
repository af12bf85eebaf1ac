//! Minimal `.npy` (format 1.0) reader/writer for little-endian f32, C order:
//! the feature files of `pretext extract` and the test fixtures.
use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use pretext_models::tensorfile::TensorFileError;

use crate::RuntimeError;

fn bad(path: &Path, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Gallery { path: path.to_path_buf(), reason: format!("npy: {}", reason.into()) }
}

/// Writes `data` with `shape` as `<f4` C-order `.npy`, atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), RuntimeError> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pretext_models::io::atomic_write(path, &out).map_err(|e| TensorFileError::Write { path: path.into(), reason: e.to_string() }.into())
}

/// Reads a `<f4` C-order `.npy` file.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io { path: path.to_path_buf(), source })?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "missing magic"));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(path, format!("unsupported version {v}"))),
    };
    let header = bytes.get(hstart..hstart + hlen).ok_or_else(|| bad(path, "truncated header"))?;
    let header = String::from_utf8_lossy(header);
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad(path, format!("only little-endian f32 C-order arrays are supported, header: {header}")));
    }
    let s = header.split("'shape': (").nth(1).and_then(|r| r.split(')').next()).ok_or_else(|| bad(path, "no shape"))?;
    let shape: Vec<usize> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().map_err(|_| bad(path, format!("bad shape ({s})"))))
        .collect::<Result<_, _>>()?;
    let data = &bytes[hstart + hlen..];
    let need = shape.iter().try_fold(4usize, |n, &d| n.checked_mul(d));
    if need != Some(data.len()) {
        let need = need.map(|n| n.to_string()).unwrap_or_else(|| "more than usize::MAX".into());
        return Err(bad(path, format!("shape {shape:?} needs {need} bytes, found {}", data.len())));
    }
    let v: Vec<f32> = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), v).expect("sizes checked"))
}

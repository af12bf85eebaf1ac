//! The decode cache: one file per source, named by a sha256 key over the
//! source's fingerprint, the cache format version and the load options.
//!
//! Layout: `b"PTXDSET\0"`, `u32` version, `u64` metadata length, metadata
//! (JSON), `u64` pixel length, pixels, then sha256 of everything before it.
//! A file whose magic, version, lengths or checksum do not match is rebuilt.
//! Files are written atomically ([`pretext_models::io::atomic_write_with`]);
//! writing one removes older caches of a source with the same file name.
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dataset::{Dataset, OpenOptions};
use crate::error::{DataError, Result};

const MAGIC: &[u8; 8] = b"PTXDSET\0";
/// Bump when the loaders' output or this layout changes.
const VERSION: u32 = 3;

pub(crate) fn cache_path(dir: &Path, source: &Path, opts: &OpenOptions) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(VERSION.to_le_bytes());
    h.update(crate::source::fingerprint(source)?);
    h.update(serde_json::to_vec(&opts.classes).unwrap_or_default());
    let key: [u8; 32] = h.finalize().into();
    let hex: String = key[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = source.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "dataset".into());
    Ok(dir.join(format!("{name}-{hex}.ptds")))
}

pub(crate) fn write(file: &Path, d: &Dataset) -> Result<()> {
    let fail = |reason: String| DataError::CacheWrite { path: file.to_path_buf(), reason };
    let meta = serde_json::to_vec(d).map_err(|e| fail(e.to_string()))?;
    pretext_models::io::atomic_write_with(file, |f| {
        let mut h = Sha256::new();
        let mut put = |bytes: &[u8]| -> std::io::Result<()> {
            h.update(bytes);
            f.write_all(bytes)
        };
        put(MAGIC)?;
        put(&VERSION.to_le_bytes())?;
        put(&(meta.len() as u64).to_le_bytes())?;
        put(&meta)?;
        put(&(d.pixels.len() as u64).to_le_bytes())?;
        put(&d.pixels)?;
        let sum: [u8; 32] = h.finalize().into();
        f.write_all(&sum)
    })
    .map_err(|e| fail(e.to_string()))?;
    prune(file);
    Ok(())
}

/// Removes older caches of a source of the same file name (`<name>-<key>.ptds`
/// with another key): a source that changed, or an older cache version.
fn prune(file: &Path) {
    let (Some(dir), Some(fname)) = (file.parent(), file.file_name().map(|f| f.to_string_lossy().to_string())) else { return };
    let Some(stem) = fname.strip_suffix(".ptds").and_then(|f| f.rsplit_once('-')).map(|s| s.0.to_string()) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        let key = n.strip_prefix(&format!("{stem}-")).and_then(|k| k.strip_suffix(".ptds"));
        if n != fname && key.is_some_and(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit())) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Reads and verifies a cache file; the error is why it cannot be trusted.
pub(crate) fn read(file: &Path) -> std::result::Result<Dataset, String> {
    let mut f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let total = f.metadata().map_err(|e| e.to_string())?.len();
    let mut h = Sha256::new();
    let mut take = |f: &mut std::fs::File, n: u64, what: &str| -> std::result::Result<Vec<u8>, String> {
        let mut buf = vec![0u8; n as usize];
        f.read_exact(&mut buf).map_err(|e| format!("truncated reading {what}: {e}"))?;
        h.update(&buf);
        Ok(buf)
    };
    let min = 8 + 4 + 8 + 8 + 32;
    if total < min {
        return Err(format!("file is {total} bytes, shorter than any cache"));
    }
    if take(&mut f, 8, "magic")? != MAGIC {
        return Err("bad magic".into());
    }
    let version = u32::from_le_bytes(take(&mut f, 4, "version")?.try_into().unwrap());
    if version != VERSION {
        return Err(format!("version {version}, expected {VERSION}"));
    }
    let meta_len = u64::from_le_bytes(take(&mut f, 8, "length")?.try_into().unwrap());
    if meta_len > total - min {
        return Err(format!("metadata length {meta_len} exceeds file size {total}"));
    }
    let meta = take(&mut f, meta_len, "metadata")?;
    let pix_len = u64::from_le_bytes(take(&mut f, 8, "length")?.try_into().unwrap());
    // A corrupt length must not overflow the sum.
    let said = (min + meta_len).checked_add(pix_len).filter(|&s| s == total);
    if said.is_none() {
        return Err(format!("lengths say {} + {meta_len} + {pix_len} bytes, file has {total}", min));
    }
    let pixels = take(&mut f, pix_len, "pixels")?;
    let mut sum = [0u8; 32];
    f.read_exact(&mut sum).map_err(|e| format!("truncated checksum: {e}"))?;
    let want: [u8; 32] = h.finalize().into();
    if sum != want {
        return Err("checksum mismatch".into());
    }
    let mut d: Dataset = serde_json::from_slice(&meta).map_err(|e| format!("bad metadata: {e}"))?;
    let mut offsets = Vec::with_capacity(d.dims.len() + 1);
    offsets.push(0usize);
    for &(w, h) in &d.dims {
        offsets.push(offsets.last().unwrap() + w as usize * h as usize * 3);
    }
    if *offsets.last().unwrap() != pixels.len() {
        return Err("image sizes do not add up to the pixel length".into());
    }
    d.offsets = offsets;
    d.pixels = pixels;
    Ok(d)
}

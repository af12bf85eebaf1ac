//! Errors of the dataset loaders and the decode cache.
//!
//! Every variant names the file it is about. Members of an archive are named
//! `archive.tar.gz:member/path`.
use std::path::PathBuf;

/// What can go wrong opening, decoding or caching a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a dataset layout pretext knows ({reason})")]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{}", unreadable(path, files))]
    Unreadable { path: PathBuf, files: Vec<(String, String)> },
    #[error("{file}: bad annotation XML: {reason}")]
    Xml { file: String, reason: String },
    #[error("{file}: wrong IDX magic: expected 0x{expected:08x}, found 0x{found:08x}")]
    IdxMagic { file: String, expected: u32, found: u32 },
    #[error("{file}: bad IDX file: {reason}")]
    Idx { file: String, reason: String },
    #[error("{file}: bad CIFAR binary file: {reason}")]
    CifarBin { file: String, reason: String },
    #[error("{file}: bad CSV at line {line}: {reason}")]
    Csv { file: String, line: usize, reason: String },
    #[error("{file}: unknown class {class:?} (known: {known:?})")]
    UnknownClass { file: String, class: String, known: Vec<String> },
    #[error("{file}: missing, but {listed_by} lists it")]
    MissingFile { file: String, listed_by: String },
    #[error("{path}: dataset has no images")]
    Empty { path: PathBuf },
    #[error("{path}: cannot write cache: {reason}")]
    CacheWrite { path: PathBuf, reason: String },
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// `<dataset>: N unreadable image files: <file>: <reason>` per line, the first 20.
fn unreadable(path: &std::path::Path, files: &[(String, String)]) -> String {
    let n = files.len();
    let mut s = format!("{}: {n} image file{} do{} not decode (truncated or corrupt):", path.display(), if n == 1 { "" } else { "s" }, if n == 1 { "es" } else { "" });
    for (file, reason) in files.iter().take(20) {
        s += &format!("\n  {file}: {reason}");
    }
    if n > 20 {
        s += &format!("\n  ... and {} more", n - 20);
    }
    s
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}

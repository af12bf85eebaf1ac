//! A read-only view of a dataset source: a directory tree or a tarball held in
//! memory, both addressed by `/`-separated relative paths.
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{io, DataError, Result};

pub(crate) enum Source {
    Dir { root: PathBuf, files: Vec<String> },
    Archive { path: PathBuf, files: BTreeMap<String, Vec<u8>> },
}

/// True when `path` names a tarball by its extension.
pub(crate) fn is_tarball(path: &Path) -> bool {
    let n = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    n.ends_with(".tar.gz") || n.ends_with(".tgz") || n.ends_with(".tar")
}

/// [`Source::display`] of `rel` in the source opened from `path`, without opening it.
pub(crate) fn display_in(path: &Path, rel: &str) -> String {
    if path.is_file() && is_tarball(path) {
        format!("{}:{rel}", path.display())
    } else {
        let root = if path.is_file() { path.parent().unwrap_or(Path::new(".")) } else { path };
        root.join(rel).display().to_string()
    }
}

impl Source {
    /// Opens `path`: a tarball is read into memory, a directory is listed, and
    /// any other file stands for the directory that holds it.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        if path.is_file() && is_tarball(path) {
            return read_tar(path);
        }
        let root = if path.is_file() { path.parent().unwrap_or(Path::new(".")).to_path_buf() } else { path.to_path_buf() };
        let mut files = Vec::new();
        walk(&root, &root, &mut files, &mut |_, _| {})?;
        files.sort();
        Ok(Source::Dir { root, files })
    }

    pub(crate) fn files(&self) -> Vec<&str> {
        match self {
            Source::Dir { files, .. } => files.iter().map(|s| s.as_str()).collect(),
            Source::Archive { files, .. } => files.keys().map(|s| s.as_str()).collect(),
        }
    }

    pub(crate) fn has(&self, rel: &str) -> bool {
        match self {
            Source::Dir { files, .. } => files.binary_search_by(|f| f.as_str().cmp(rel)).is_ok(),
            Source::Archive { files, .. } => files.contains_key(rel),
        }
    }

    pub(crate) fn read(&self, rel: &str) -> Result<Cow<'_, [u8]>> {
        match self {
            Source::Dir { root, .. } => {
                let p = root.join(rel);
                std::fs::read(&p).map(Cow::Owned).map_err(io(p))
            }
            Source::Archive { files, .. } => files.get(rel).map(|v| Cow::Borrowed(v.as_slice())).ok_or_else(|| {
                DataError::MissingFile { file: self.display(rel), listed_by: "the dataset layout".into() }
            }),
        }
    }

    /// How errors name a member: a full path, or `archive:member`.
    pub(crate) fn display(&self, rel: &str) -> String {
        match self {
            Source::Dir { root, .. } => root.join(rel).display().to_string(),
            Source::Archive { path, .. } => format!("{}:{rel}", path.display()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        match self {
            Source::Dir { root, .. } => root,
            Source::Archive { path, .. } => path,
        }
    }
}

fn read_tar(path: &Path) -> Result<Source> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut head = [0u8; 2];
    let gz = {
        let mut r = std::fs::File::open(path).map_err(io(path))?;
        r.read_exact(&mut head).is_ok() && head == [0x1f, 0x8b]
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, f)))
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let mut ar = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    let bad = |e: std::io::Error| DataError::UnknownFormat { path: path.to_path_buf(), reason: format!("broken tarball: {e}") };
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(bad)?.to_string_lossy().trim_start_matches("./").to_string();
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut buf).map_err(bad)?;
        files.insert(name, buf);
    }
    Ok(Source::Archive { path: path.to_path_buf(), files })
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>, visit: &mut dyn FnMut(&str, &std::fs::Metadata)) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let p = e.path();
        let md = std::fs::metadata(&p).map_err(io(&p))?;
        if md.is_dir() {
            walk(root, &p, out, visit)?;
        } else if md.is_file() {
            let rel = p.strip_prefix(root).unwrap_or(&p).components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            visit(&rel, &md);
            out.push(rel);
        }
    }
    Ok(())
}

/// A checksum of a source: sha256 of the file for tarballs, and for
/// directories sha256 over each file's relative path, size and mtime.
pub(crate) fn fingerprint(path: &Path) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    if path.is_file() && is_tarball(path) {
        let mut f = std::fs::File::open(path).map_err(io(path))?;
        std::io::copy(&mut f, &mut h).map_err(io(path))?;
    } else {
        let root = if path.is_file() { path.parent().unwrap_or(Path::new(".")) } else { path };
        let mut entries = Vec::new();
        let mut files = Vec::new();
        walk(root, root, &mut files, &mut |rel, md| {
            let mtime = md.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
            entries.push(format!("{rel}\0{}\0{mtime}\n", md.len()));
        })?;
        entries.sort();
        for e in entries {
            h.update(e.as_bytes());
        }
    }
    Ok(h.finalize().into())
}

/// Up to `n` images (`.jpg`, `.jpeg`, `.png`) of a directory tree or tarball,
/// every `stride`-th in path order, as (name, bytes); a name is the full path,
/// or `archive:member`. An image-folder set with a `test/` split (CIFAR-10's)
/// contributes only that split, so checks run on held-out images.
pub fn sample_images(path: &Path, n: usize, stride: usize) -> Result<Vec<(String, Vec<u8>)>> {
    let src = Source::open(path)?;
    let is_img = |f: &&str| {
        let l = f.to_lowercase();
        l.ends_with(".jpg") || l.ends_with(".jpeg") || l.ends_with(".png")
    };
    let all: Vec<&str> = src.files().into_iter().filter(is_img).collect();
    let test: Vec<&str> = all.iter().copied().filter(|f| f.starts_with("test/")).collect();
    let pick = if test.is_empty() { all } else { test };
    pick.into_iter().step_by(stride.max(1)).take(n).map(|f| Ok((src.display(f), src.read(f)?.into_owned()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Images only, path order, every `stride`-th, at most `n`; a `test/` split wins over the rest.
    #[test]
    fn sample_images_strides_in_path_order_and_prefers_the_test_split() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, rel.as_bytes()).unwrap();
        };
        for rel in ["b/2.png", "a/1.JPG", "a/0.jpg", "a/notes.txt", "c/3.jpeg"] {
            put(rel);
        }
        let names = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(_, b)| String::from_utf8(b).unwrap()).collect::<Vec<_>>();
        assert_eq!(names(sample_images(dir.path(), 10, 1).unwrap()), ["a/0.jpg", "a/1.JPG", "b/2.png", "c/3.jpeg"]);
        assert_eq!(names(sample_images(dir.path(), 10, 2).unwrap()), ["a/0.jpg", "b/2.png"]);
        assert_eq!(names(sample_images(dir.path(), 1, 2).unwrap()), ["a/0.jpg"]);
        put("test/x/9.png");
        assert_eq!(names(sample_images(dir.path(), 10, 1).unwrap()), ["test/x/9.png"]);
    }
}

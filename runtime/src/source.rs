//! Labeled image sources for extraction and k-NN: image files, folders of
//! images, or the splits of one dataset (a folder or tarball `pretext_data`
//! reads), addressed as `(split, index within split)` items.
use std::path::{Path, PathBuf};

use ndarray::Array2;
use pretext_data::progress::Progress;
use pretext_data::{Dataset, OpenOptions};

use crate::{Extractor, RuntimeError};

/// One image of a [`Source`]: `(split, index within split)`.
pub type Item = (usize, usize);

/// Image files, or splits of one dataset.
pub enum Source {
    Files(Vec<PathBuf>),
    Data { ds: Box<Dataset>, splits: Vec<String> },
}

/// `.jpg`, `.jpeg` or `.png`, any case.
pub fn is_image(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// Opens a dataset with a progress bar (a plain line in logs) for the first decode.
pub fn open_dataset(path: &Path) -> Result<Dataset, RuntimeError> {
    let pb = Progress::new("dataset", 0);
    let opts = OpenOptions { progress: Some(pb.callback()), ..Default::default() };
    let ds = Dataset::open(path, &opts)?;
    pb.finish_and_clear();
    Ok(ds)
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let rd = std::fs::read_dir(dir).map_err(|source| RuntimeError::Io { path: dir.into(), source })?;
    Ok(rd.flatten().map(|e| e.path()).collect())
}

impl Source {
    /// Image files and folders of images (without subfolders), or exactly one
    /// dataset; `split` picks one of its splits (default: every split, in order).
    pub fn resolve(inputs: &[PathBuf], split: Option<&str>) -> Result<Source, RuntimeError> {
        let bad = |path: &Path, reason: String| RuntimeError::Source { path: path.into(), reason };
        let mut files = vec![];
        for p in inputs {
            if p.is_file() && is_image(p) {
                files.push(p.clone());
            } else if p.is_dir() && !list(p)?.iter().any(|e| e.is_dir()) {
                let mut v: Vec<PathBuf> = list(p)?.into_iter().filter(|p| is_image(p)).collect();
                v.sort();
                files.extend(v);
            } else if inputs.len() == 1 {
                let ds = open_dataset(p)?;
                let splits = match split {
                    Some(s) if ds.split(s).is_none() => return Err(bad(p, format!("the dataset has no split `{s}`; splits: {:?}", ds.split_names()))),
                    Some(s) => vec![s.to_string()],
                    None => ds.split_names().iter().map(|s| s.to_string()).collect(),
                };
                return Ok(Source::Data { ds: Box::new(ds), splits });
            } else {
                return Err(bad(p, "neither an image (.jpg/.png) nor a directory of images".into()));
            }
        }
        if files.is_empty() {
            return Err(bad(Path::new(&inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")), "no images found".into()));
        }
        Ok(Source::Files(files))
    }

    /// Every item, or `limit` of them evenly strided (`i * n / limit`), so a
    /// limited run still covers every class (the trainer's `Split::subset`).
    pub fn items(&self, limit: Option<usize>) -> Vec<Item> {
        let v: Vec<Item> = match self {
            Source::Files(f) => (0..f.len()).map(|i| (0, i)).collect(),
            Source::Data { ds, splits } => splits
                .iter()
                .enumerate()
                .flat_map(|(si, s)| (0..ds.split(s).map(|v| v.len()).unwrap_or(0)).map(move |i| (si, i)))
                .collect(),
        };
        match limit {
            Some(n) if n < v.len() => (0..n).map(|k| v[k * v.len() / n]).collect(),
            _ => v,
        }
    }

    /// The file (or archive member) an item comes from.
    pub fn name(&self, (s, i): Item) -> String {
        match self {
            Source::Files(f) => f[i].display().to_string(),
            Source::Data { ds, splits } => ds.split(&splits[s]).map(|v| v.file(i).to_string()).unwrap_or_default(),
        }
    }

    /// The class label of an item (`None` for files and unlabeled datasets).
    pub fn label(&self, (s, i): Item) -> Option<u32> {
        match self {
            Source::Files(_) => None,
            Source::Data { ds, splits } => ds.split(&splits[s]).and_then(|v| ds.label(v.pool_index(i))),
        }
    }

    /// Every item's label, or an error naming the first unlabeled image.
    pub fn labels(&self, items: &[Item]) -> Result<Vec<u32>, RuntimeError> {
        items
            .iter()
            .map(|&it| self.label(it).ok_or_else(|| RuntimeError::Source { path: self.name(it).into(), reason: "no class label (a detection dataset, or image files?)".into() }))
            .collect()
    }

    pub fn classes(&self) -> Vec<String> {
        match self {
            Source::Files(_) => vec![],
            Source::Data { ds, .. } => ds.classes().to_vec(),
        }
    }

    /// An item's image (decoded, or in memory), preprocessed by the extractor's transform.
    pub fn preprocess(&self, e: &Extractor, (s, i): Item) -> Result<Vec<f32>, RuntimeError> {
        match self {
            Source::Files(f) => Ok(e.transform().apply_file(&f[i])?),
            Source::Data { ds, splits } => {
                let v = ds.split(&splits[s]).ok_or_else(|| RuntimeError::Source { path: splits[s].clone().into(), reason: "no such split in the dataset".into() })?;
                let im = v.image(i);
                let rgb = image::RgbImage::from_raw(im.width, im.height, im.pixels.to_vec()).ok_or_else(|| RuntimeError::Source {
                    path: v.file(i).into(),
                    reason: format!("{} bytes for {}x{} RGB", im.pixels.len(), im.width, im.height),
                })?;
                Ok(e.transform().apply(&rgb, v.file(i))?)
            }
        }
    }

    /// Batched extraction of `items` with a progress bar (a plain line in logs).
    pub fn extract(&self, e: &Extractor, items: &[Item], batch_size: usize, what: &str) -> Result<Array2<f32>, RuntimeError> {
        let pb = Progress::new(what, items.len() as u64);
        let f = e.extract_many(items.len(), batch_size, |k| self.preprocess(e, items[k]), &|n| pb.inc(n as u64))?;
        pb.finish_and_clear();
        Ok(f)
    }
}

//! The in-memory dataset every loader produces, and [`Dataset::open`], which
//! sniffs the format of a path and loads it through the decode cache.
//!
//! Images are stored once in a pool as u8 HWC RGB (grayscale sources are
//! expanded to RGB; [`Dataset::source_channels`] keeps the original count).
//! A split is a list of indices into the pool, so detection splits that
//! overlap (VOC `trainval`) share their pixels. Classification loaders lay
//! each split out contiguously, so a split of same-sized images (CIFAR,
//! MNIST) is one `(N, H, W, C)` array: [`SplitView::images_nhwc`].
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::source::Source;

/// Classification (one label per image) or detection (boxes per image).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    Classification,
    Detection,
}

/// Which loader read the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// `<split>/<class>/*.jpg|png` in a directory or tarball.
    ImageFolder,
    /// The official CIFAR-10 or CIFAR-100 binary release.
    CifarBinary,
    /// MNIST / Fashion-MNIST IDX files, gzipped or not.
    Idx,
    /// Pascal VOC: `JPEGImages/`, `Annotations/`, `ImageSets/Main/{split}.txt`.
    Voc,
    /// `images/`, `annotations/` (VOC XML) and `data/{split}_labels.csv`.
    VocCsv,
}

/// An axis-aligned box in pixels, `(xmin, ymin, xmax, ymax)`, with its class index.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
    pub class: u32,
}

/// Something a loader left out on purpose (see the crate docs for the policy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skip {
    /// The file it was found in, relative to the dataset root (so cached
    /// datasets do not depend on where the source was opened from).
    pub file: String,
    /// What was skipped, e.g. `box #3 RBC (504,337)-(504,337)`.
    pub what: String,
    pub reason: String,
}

/// An image file that could not be decoded (truncated or corrupt), left out
/// of the dataset under [`OnBadImage::Skip`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unreadable {
    /// Relative to the dataset root, like [`Skip::file`].
    pub file: String,
    pub reason: String,
}

/// What [`Dataset::open`] does with image files that do not decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadImage {
    /// Fail with [`DataError::Unreadable`], naming every such file.
    #[default]
    Error,
    /// Leave them out (with their labels or boxes) and list them in [`Dataset::unreadable`].
    Skip,
}

impl std::str::FromStr for OnBadImage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(Self::Error),
            "skip" => Ok(Self::Skip),
            _ => Err(format!("unknown bad-image policy '{s}': expected skip or error")),
        }
    }
}

/// One decoded image: `height * width * 3` bytes, HWC RGB.
#[derive(Clone, Copy, Debug)]
pub struct ImageRef<'a> {
    pub width: u32,
    pub height: u32,
    pub pixels: &'a [u8],
}

/// A named split: indices into the dataset's image pool.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SplitDef {
    pub name: String,
    pub indices: Vec<u32>,
}

/// A decoded dataset: an image pool, per-image labels or boxes, and splits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dataset {
    pub(crate) name: String,
    pub(crate) task: Task,
    pub(crate) format: Format,
    pub(crate) classes: Vec<String>,
    /// CIFAR-100 only: the 20 superclass names.
    pub(crate) coarse_classes: Vec<String>,
    pub(crate) source_channels: u8,
    pub(crate) splits: Vec<SplitDef>,
    /// Source-relative file (or `file#record`) of each pool image.
    pub(crate) files: Vec<String>,
    pub(crate) dims: Vec<(u32, u32)>,
    /// Classification: one label per pool image; detection: empty.
    pub(crate) labels: Vec<u32>,
    /// CIFAR-100 only: one coarse label per pool image.
    pub(crate) coarse_labels: Vec<u32>,
    /// Detection: the kept boxes of each pool image; classification: empty.
    pub(crate) boxes: Vec<Vec<BBox>>,
    pub(crate) skipped: Vec<Skip>,
    /// Image files that did not decode; none in a dataset opened with [`OnBadImage::Error`].
    #[serde(default)]
    pub(crate) unreadable: Vec<Unreadable>,
    #[serde(skip)]
    pub(crate) pixels: Vec<u8>,
    #[serde(skip)]
    pub(crate) offsets: Vec<usize>,
}

/// Progress of a long decode: `(stage, done, total)`.
pub type ProgressFn = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// Options of [`Dataset::open`].
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// Where decoded caches live; `None`: `$PRETEXT_CACHE`, else
    /// `<repo or cwd>/.cache/pretext` (see [`default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Decode from the source even when a cache exists, and do not write one.
    pub no_cache: bool,
    /// Detection only: the allowed class names, in index order. An object of
    /// any other class is an error. `None`: the sorted names found.
    pub classes: Option<Vec<String>>,
    /// Called during decoding.
    pub progress: Option<ProgressFn>,
    /// Truncated or corrupt image files: an error (the default), or skipped.
    pub on_bad_image: OnBadImage,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions").field("cache_dir", &self.cache_dir).field("no_cache", &self.no_cache).field("classes", &self.classes).field("on_bad_image", &self.on_bad_image).finish()
    }
}

/// `$PRETEXT_CACHE`, else `.cache/pretext` under the nearest ancestor of the
/// working directory holding `.git`, else under the working directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PRETEXT_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let base = cwd.ancestors().find(|d| d.join(".git").exists()).unwrap_or(&cwd);
    base.join(".cache").join("pretext")
}

/// Whether [`Dataset::open_with_report`] found a valid cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from this cache file.
    Hit(PathBuf),
    /// Decoded from the source and written to this cache file.
    Written(PathBuf),
    /// The cache file was corrupt (reason); decoded again and rewritten.
    Rebuilt(PathBuf, String),
    /// Caching was off.
    Off,
    /// Decoded, but the cache could not be written (reason); the dataset is fine.
    WriteFailed(PathBuf, String),
}

impl Dataset {
    /// Opens a dataset at `path` (a directory, tarball or file), sniffing its
    /// format, and going through the decode cache. Image files that do not
    /// decode are handled by [`OpenOptions::on_bad_image`]; the cache holds the
    /// dataset without them either way, so both policies share it.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Self> {
        Self::open_with_report(path, opts).map(|(d, _)| d)
    }

    /// [`Dataset::open`], also saying whether the cache was used.
    pub fn open_with_report(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<(Self, CacheStatus)> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(DataError::Io { path: path.to_path_buf(), source: std::io::Error::from(std::io::ErrorKind::NotFound) });
        }
        if opts.no_cache {
            return Ok((Self::decode(path, opts)?, CacheStatus::Off));
        }
        let checked = |d: Self, status| d.checked(path, opts).map(|d| (d, status));
        let dir = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
        let file = crate::cache::cache_path(&dir, path, opts)?;
        let mut rebuilt = None;
        if file.exists() {
            match crate::cache::read(&file) {
                Ok(d) => return checked(d, CacheStatus::Hit(file)),
                Err(reason) => rebuilt = Some(reason),
            }
        }
        let d = Self::decode_all(path, opts)?;
        if let Err(e) = crate::cache::write(&file, &d) {
            return checked(d, CacheStatus::WriteFailed(file, e.to_string()));
        }
        checked(d, match rebuilt {
            Some(r) => CacheStatus::Rebuilt(file, r),
            None => CacheStatus::Written(file),
        })
    }

    /// Decodes from the source, ignoring any cache.
    pub fn decode(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Self> {
        Self::decode_all(path.as_ref(), opts)?.checked(path.as_ref(), opts)
    }

    /// Decodes every image, leaving out (and listing) those that do not decode.
    fn decode_all(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let src = Source::open(path)?;
        let mut d = crate::formats::load(&src, opts)?;
        d.name = dataset_name(path);
        if d.offsets.len() <= 1 && d.unreadable.is_empty() {
            return Err(DataError::Empty { path: path.to_path_buf() });
        }
        Ok(d)
    }

    /// Applies [`OpenOptions::on_bad_image`] to a decoded or cached dataset.
    fn checked(self, path: &Path, opts: &OpenOptions) -> Result<Self> {
        if opts.on_bad_image == OnBadImage::Error && !self.unreadable.is_empty() {
            let files = self.unreadable.iter().map(|u| (crate::source::display_in(path, &u.file), u.reason.clone())).collect();
            return Err(DataError::Unreadable { path: path.to_path_buf(), files });
        }
        if self.offsets.len() <= 1 {
            return Err(DataError::Empty { path: path.to_path_buf() });
        }
        Ok(self)
    }

    /// A short name from the path: `cifar10-jpg` for `.../cifar10-jpg.tar.gz`.
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn task(&self) -> Task {
        self.task
    }
    pub fn format(&self) -> Format {
        self.format
    }
    /// Class names, in label-index order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    /// CIFAR-100 superclass names; empty otherwise.
    pub fn coarse_classes(&self) -> &[String] {
        &self.coarse_classes
    }
    /// Channels of the source images before expansion to RGB (1 for gray).
    pub fn source_channels(&self) -> u8 {
        self.source_channels
    }
    /// What was skipped while loading, with reasons.
    pub fn skipped(&self) -> &[Skip] {
        &self.skipped
    }
    /// Image files left out because they do not decode (only under
    /// [`OnBadImage::Skip`]; with [`OnBadImage::Error`] they fail the open).
    pub fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }
    /// Split names, in load order (train first).
    pub fn split_names(&self) -> Vec<&str> {
        self.splits.iter().map(|s| s.name.as_str()).collect()
    }
    pub fn splits(&self) -> impl Iterator<Item = SplitView<'_>> {
        self.splits.iter().map(move |def| SplitView { ds: self, def })
    }
    pub fn split(&self, name: &str) -> Option<SplitView<'_>> {
        self.splits().find(|s| s.name() == name)
    }
    /// Number of distinct images (splits may share images).
    pub fn num_images(&self) -> usize {
        self.dims.len()
    }
    /// Image `i` of the pool.
    pub fn image(&self, i: usize) -> ImageRef<'_> {
        let (width, height) = self.dims[i];
        ImageRef { width, height, pixels: &self.pixels[self.offsets[i]..self.offsets[i + 1]] }
    }
    /// Source-relative file of pool image `i` (`file#record` for packed formats).
    pub fn file(&self, i: usize) -> &str {
        &self.files[i]
    }
    /// Kept boxes of pool image `i`; empty for classification.
    pub fn boxes(&self, i: usize) -> &[BBox] {
        self.boxes.get(i).map(|b| b.as_slice()).unwrap_or(&[])
    }
    /// Label of pool image `i`; `None` for detection.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.get(i).copied()
    }

    /// Builds the pool from the decode results of `rels`, the images of
    /// `files`, `labels`, `boxes` and split indices the loader laid out:
    /// images that did not decode are left out of all of them and listed in
    /// `unreadable`; splits left empty are dropped.
    pub(crate) fn set_decoded(&mut self, rels: Vec<String>, decoded: Vec<std::result::Result<crate::formats::Decoded, String>>) {
        let mut index = vec![None; rels.len()];
        let mut images = Vec::with_capacity(rels.len());
        let mut files = Vec::with_capacity(rels.len());
        let mut channels = None;
        for (i, (rel, r)) in rels.into_iter().zip(decoded).enumerate() {
            match r {
                Ok((w, h, px, ch)) => {
                    index[i] = Some(images.len() as u32);
                    images.push((w, h, px));
                    files.push(rel);
                    channels = channels.max(Some(ch));
                }
                Err(reason) => self.unreadable.push(Unreadable { file: rel, reason }),
            }
        }
        fn keep<T>(v: &mut Vec<T>, index: &[Option<u32>]) {
            if v.len() == index.len() {
                let mut i = 0;
                v.retain(|_| (index[i].is_some(), i += 1).0);
            }
        }
        keep(&mut self.labels, &index);
        keep(&mut self.coarse_labels, &index);
        keep(&mut self.boxes, &index);
        for s in &mut self.splits {
            s.indices = s.indices.iter().filter_map(|&i| index[i as usize]).collect();
        }
        self.splits.retain(|s| !s.indices.is_empty());
        self.source_channels = channels.unwrap_or(3);
        self.files = files;
        self.set_images(images);
    }

    /// Builds the pool from decoded images (used by the loaders).
    pub(crate) fn set_images(&mut self, images: Vec<(u32, u32, Vec<u8>)>) {
        let total: usize = images.iter().map(|i| i.2.len()).sum();
        self.pixels = Vec::with_capacity(total);
        self.offsets = Vec::with_capacity(images.len() + 1);
        self.offsets.push(0);
        self.dims = Vec::with_capacity(images.len());
        for (w, h, px) in images {
            self.pixels.extend_from_slice(&px);
            self.offsets.push(self.pixels.len());
            self.dims.push((w, h));
        }
    }

    pub(crate) fn empty(task: Task, format: Format) -> Self {
        Dataset {
            name: String::new(),
            task,
            format,
            classes: vec![],
            coarse_classes: vec![],
            source_channels: 3,
            splits: vec![],
            files: vec![],
            dims: vec![],
            labels: vec![],
            coarse_labels: vec![],
            boxes: vec![],
            skipped: vec![],
            unreadable: vec![],
            pixels: vec![0; 0],
            offsets: vec![0],
        }
    }
}

fn dataset_name(path: &Path) -> String {
    let p = if path.is_file() && !crate::source::is_tarball(path) { path.parent().unwrap_or(path) } else { path };
    let n = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "dataset".into());
    for ext in [".tar.gz", ".tgz", ".tar"] {
        if let Some(s) = n.strip_suffix(ext) {
            return s.to_string();
        }
    }
    n
}

/// One split of a [`Dataset`].
#[derive(Clone, Copy)]
pub struct SplitView<'a> {
    ds: &'a Dataset,
    def: &'a SplitDef,
}

impl<'a> SplitView<'a> {
    pub fn name(&self) -> &'a str {
        &self.def.name
    }
    pub fn len(&self) -> usize {
        self.def.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.def.indices.is_empty()
    }
    pub fn dataset(&self) -> &'a Dataset {
        self.ds
    }
    /// Pool index of the split's `i`-th image.
    pub fn pool_index(&self, i: usize) -> usize {
        self.def.indices[i] as usize
    }
    pub fn image(&self, i: usize) -> ImageRef<'a> {
        self.ds.image(self.pool_index(i))
    }
    pub fn file(&self, i: usize) -> &'a str {
        self.ds.file(self.pool_index(i))
    }
    pub fn boxes(&self, i: usize) -> &'a [BBox] {
        self.ds.boxes(self.pool_index(i))
    }
    /// Labels of the split's images; empty for detection.
    pub fn labels(&self) -> Vec<u32> {
        if self.ds.labels.is_empty() {
            return vec![];
        }
        self.def.indices.iter().map(|&i| self.ds.labels[i as usize]).collect()
    }
    /// CIFAR-100 coarse labels; empty otherwise.
    pub fn coarse_labels(&self) -> Vec<u32> {
        if self.ds.coarse_labels.is_empty() {
            return vec![];
        }
        self.def.indices.iter().map(|&i| self.ds.coarse_labels[i as usize]).collect()
    }
    /// `(pixels, [N, H, W, 3])` when all images share one size and lie
    /// contiguously in the pool (always so for classification loaders).
    pub fn images_nhwc(&self) -> Option<(&'a [u8], [usize; 4])> {
        let idx = &self.def.indices;
        let first = *idx.first()? as usize;
        let contiguous = idx.iter().enumerate().all(|(k, &i)| i as usize == first + k);
        let (w, h) = self.ds.dims[first];
        if !contiguous || idx.iter().any(|&i| self.ds.dims[i as usize] != (w, h)) {
            return None;
        }
        let start = self.ds.offsets[first];
        let end = self.ds.offsets[first + idx.len()];
        Some((&self.ds.pixels[start..end], [idx.len(), h as usize, w as usize, 3]))
    }
}

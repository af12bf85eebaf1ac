//! Format sniffing and the classification loaders: image folders, the CIFAR
//! binary release and IDX files. Detection loaders live in [`crate::voc`].
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::dataset::{Dataset, Format, OpenOptions, SplitDef, Task};
use crate::error::{DataError, Result};
use crate::source::Source;

/// Sniffs the layout of `src` and loads it.
pub(crate) fn load(src: &Source, opts: &OpenOptions) -> Result<Dataset> {
    let files = src.files();
    if let Some(root) = find_root(&files, "Annotations/", ".xml", "JPEGImages/") {
        return crate::voc::load_voc(src, &root, opts);
    }
    if let Some(root) = find_root(&files, "annotations/", ".xml", "images/") {
        return crate::voc::load_voc_csv(src, &root, opts);
    }
    if let Some(f) = files.iter().find(|f| f.ends_with("data_batch_1.bin") || f.ends_with("test_batch.bin")) {
        return load_cifar(src, &f[..f.rfind('/').map_or(0, |i| i + 1)], false);
    }
    if let Some(f) = files.iter().find(|f| f.ends_with("fine_label_names.txt")) {
        return load_cifar(src, &f[..f.rfind('/').map_or(0, |i| i + 1)], true);
    }
    if files.iter().any(|f| f.contains("-images-idx3-ubyte")) {
        return load_idx(src);
    }
    load_folder(src, opts)
}

/// The prefix `p` such that `p + ann + *.ext` exists and some file starts with `p + img`.
fn find_root(files: &[&str], ann: &str, ext: &str, img: &str) -> Option<String> {
    files.iter().find_map(|f| {
        let i = f.find(ann).filter(|&i| i == 0 || f.as_bytes()[i - 1] == b'/')?;
        let root = &f[..i];
        (f.ends_with(ext) && files.iter().any(|g| g.starts_with(&format!("{root}{img}")))).then(|| root.to_string())
    })
}

/// Train first, then trainval, val, test, then the rest by name.
pub(crate) fn split_order(name: &str) -> (u8, String) {
    let rank = match name {
        "train" => 0,
        "trainval" => 1,
        "val" | "valid" | "validation" => 2,
        "test" => 3,
        _ => 4,
    };
    (rank, name.to_string())
}

pub(crate) fn is_image(f: &str) -> bool {
    let l = f.to_ascii_lowercase();
    l.ends_with(".jpg") || l.ends_with(".jpeg") || l.ends_with(".png")
}

/// `(width, height, HWC RGB pixels, source channels)` of one decoded image.
pub(crate) type Decoded = (u32, u32, Vec<u8>, u8);

/// Decodes one encoded image, or says why it does not decode (a truncated
/// or corrupt file, see [`crate::decode`]).
fn decode_image(bytes: &[u8]) -> std::result::Result<Decoded, String> {
    let img = crate::decode::decode(bytes)?;
    let ch = img.color().channel_count();
    let rgb = img.into_rgb8();
    Ok((rgb.width(), rgb.height(), rgb.into_raw(), ch))
}

/// Decodes `rels` in parallel, in order, reporting progress: each image,
/// or why it does not decode. A file that cannot be read is an error.
pub(crate) fn decode_all(src: &Source, rels: &[String], opts: &OpenOptions) -> Result<Vec<std::result::Result<Decoded, String>>> {
    let done = AtomicU64::new(0);
    let total = rels.len() as u64;
    rels.par_iter()
        .map(|rel| {
            let bytes = src.read(rel)?;
            let r = decode_image(&bytes);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(p) = &opts.progress {
                if n.is_multiple_of(256) || n == total {
                    p("decode", n, total);
                }
            }
            Ok(r)
        })
        .collect()
}

/// `<split>/<class>/*.jpg|png`, optionally under a common prefix, or
/// `<class>/*.jpg|png` (one split named `all`).
fn load_folder(src: &Source, opts: &OpenOptions) -> Result<Dataset> {
    let unknown = |reason: String| DataError::UnknownFormat { path: src.path().to_path_buf(), reason };
    let images: Vec<&str> = src.files().into_iter().filter(|f| is_image(f)).collect();
    let Some(first) = images.first() else {
        return Err(unknown("no images, VOC annotations, CIFAR .bin or IDX files found".into()));
    };
    let depth = first.split('/').count();
    if depth < 2 {
        return Err(unknown(format!("image {first} is not inside a class folder")));
    }
    let prefix: Vec<&str> = first.split('/').take(depth.saturating_sub(3)).collect();
    // (split, class) -> files
    let mut groups: BTreeMap<((u8, String), String), Vec<String>> = BTreeMap::new();
    for f in &images {
        let parts: Vec<&str> = f.split('/').collect();
        if parts.len() != depth || parts[..prefix.len()] != prefix[..] {
            return Err(unknown(format!("mixed layout: {first} and {f} sit at different depths")));
        }
        let (split, class) = if depth == 2 { ("all", parts[0]) } else { (parts[depth - 3], parts[depth - 2]) };
        groups.entry((split_order(split), class.to_string())).or_default().push(f.to_string());
    }
    let classes: Vec<String> = groups.keys().map(|k| k.1.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut d = Dataset::empty(Task::Classification, Format::ImageFolder);
    let mut rels = Vec::new();
    for (((_, split), class), mut files) in groups {
        files.sort();
        let label = classes.iter().position(|c| *c == class).unwrap() as u32;
        if d.splits.last().map(|s| &s.name) != Some(&split) {
            d.splits.push(SplitDef { name: split, indices: vec![] });
        }
        let s = d.splits.last_mut().unwrap();
        for f in files {
            s.indices.push(rels.len() as u32);
            d.labels.push(label);
            rels.push(f);
        }
    }
    let decoded = decode_all(src, &rels, opts)?;
    d.classes = classes;
    d.set_decoded(rels, decoded);
    Ok(d)
}

fn read_names(src: &Source, rel: &str) -> Result<Vec<String>> {
    if !src.has(rel) {
        return Err(DataError::MissingFile { file: src.display(rel), listed_by: "the CIFAR binary layout".into() });
    }
    let text = String::from_utf8_lossy(&src.read(rel)?).to_string();
    Ok(text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
}

/// The official CIFAR-10 (`data_batch_{1..5}.bin`, `test_batch.bin`,
/// `batches.meta.txt`; records of 1 label byte + 3072 CHW pixels) or CIFAR-100
/// (`train.bin`, `test.bin`, `{fine,coarse}_label_names.txt`; records of a
/// coarse and a fine label byte + 3072 pixels) binary release.
fn load_cifar(src: &Source, root: &str, hundred: bool) -> Result<Dataset> {
    let mut d = Dataset::empty(Task::Classification, Format::CifarBinary);
    let (splits, label_bytes): (Vec<(&str, Vec<String>)>, usize) = if hundred {
        d.classes = read_names(src, &format!("{root}fine_label_names.txt"))?;
        d.coarse_classes = read_names(src, &format!("{root}coarse_label_names.txt"))?;
        (vec![("train", vec!["train.bin".into()]), ("test", vec!["test.bin".into()])], 2)
    } else {
        d.classes = read_names(src, &format!("{root}batches.meta.txt"))?;
        let train = (1..=5).map(|i| format!("data_batch_{i}.bin")).filter(|f| src.has(&format!("{root}{f}"))).collect();
        (vec![("train", train), ("test", vec!["test_batch.bin".into()])], 1)
    };
    let rec = label_bytes + 3072;
    let mut images = Vec::new();
    for (split, files) in splits {
        let mut indices = vec![];
        for f in files {
            let rel = format!("{root}{f}");
            if !src.has(&rel) {
                continue;
            }
            let bytes = src.read(&rel)?;
            let file = src.display(&rel);
            if bytes.is_empty() || bytes.len() % rec != 0 {
                return Err(DataError::CifarBin { file, reason: format!("length {} is not a positive multiple of the {rec}-byte record", bytes.len()) });
            }
            for (k, r) in bytes.chunks_exact(rec).enumerate() {
                let label = r[label_bytes - 1] as u32;
                if label as usize >= d.classes.len() {
                    return Err(DataError::CifarBin { file, reason: format!("record {k}: label {label} but {} class names", d.classes.len()) });
                }
                if hundred {
                    let coarse = r[0] as u32;
                    if coarse as usize >= d.coarse_classes.len() {
                        return Err(DataError::CifarBin { file, reason: format!("record {k}: coarse label {coarse} but {} coarse names", d.coarse_classes.len()) });
                    }
                    d.coarse_labels.push(coarse);
                }
                let px = &r[label_bytes..];
                let mut hwc = vec![0u8; 3072];
                for (p, o) in hwc.chunks_exact_mut(3).enumerate() {
                    o.copy_from_slice(&[px[p], px[1024 + p], px[2048 + p]]);
                }
                indices.push(images.len() as u32);
                d.labels.push(label);
                d.files.push(format!("{rel}#{k}"));
                images.push((32, 32, hwc));
            }
        }
        if !indices.is_empty() {
            d.splits.push(SplitDef { name: split.into(), indices });
        }
    }
    d.set_images(images);
    Ok(d)
}

const IDX_IMAGES: u32 = 0x0000_0803;
const IDX_LABELS: u32 = 0x0000_0801;
const FASHION: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Reads an IDX file (gunzipping if needed): `(dims, data)` after checking the magic.
fn read_idx(src: &Source, rel: &str, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = src.display(rel);
    let raw = src.read(rel)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut v).map_err(|e| DataError::Idx { file: file.clone(), reason: format!("gzip: {e}") })?;
        v
    } else {
        raw.into_owned()
    };
    if bytes.len() < 4 {
        return Err(DataError::Idx { file, reason: format!("only {} bytes", bytes.len()) });
    }
    let found = u32::from_be_bytes(bytes[..4].try_into().unwrap());
    if found != magic {
        return Err(DataError::IdxMagic { file, expected: magic, found });
    }
    let nd = (magic & 0xff) as usize;
    if bytes.len() < 4 + 4 * nd {
        return Err(DataError::Idx { file, reason: "truncated header".into() });
    }
    let dims: Vec<usize> = (0..nd).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let data = bytes[4 + 4 * nd..].to_vec();
    let want = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if want != Some(data.len()) {
        let need = want.map(|w| w.to_string()).unwrap_or_else(|| "more than usize::MAX".into());
        return Err(DataError::Idx { file, reason: format!("dims {dims:?} need {need} bytes, found {}", data.len()) });
    }
    Ok((dims, data))
}

/// MNIST-style `{split}-images-idx3-ubyte[.gz]` + `{split}-labels-idx1-ubyte[.gz]`;
/// `t10k` is named `test`. Class names are Fashion-MNIST's when the source
/// path mentions "fashion", else the digits.
fn load_idx(src: &Source) -> Result<Dataset> {
    let mut d = Dataset::empty(Task::Classification, Format::Idx);
    d.source_channels = 1;
    let mut found: Vec<(&str, String)> = src.files().into_iter().filter_map(|f| {
        let name = f.rsplit('/').next()?;
        let stem = name.split("-images-idx3-ubyte").next()?;
        (name != stem).then(|| (f, stem.to_string()))
    }).collect();
    found.sort_by_key(|(_, s)| split_order(if s == "t10k" { "test" } else { s }));
    let mut images = Vec::new();
    let mut max_label = 0;
    for (rel, stem) in found {
        let want = rel.replace("-images-idx3-ubyte", "-labels-idx1-ubyte");
        let plain = want.trim_end_matches(".gz").to_string();
        let Some(lrel) = [plain.clone(), format!("{plain}.gz")].into_iter().find(|l| src.has(l)) else {
            return Err(DataError::MissingFile { file: src.display(&want), listed_by: src.display(rel) });
        };
        let (idims, pixels) = read_idx(src, rel, IDX_IMAGES)?;
        let (ldims, labels) = read_idx(src, &lrel, IDX_LABELS)?;
        if ldims[0] != idims[0] {
            return Err(DataError::Idx { file: src.display(&lrel), reason: format!("{} labels for {} images in {}", ldims[0], idims[0], src.display(rel)) });
        }
        let (h, w) = (idims[1], idims[2]);
        let mut indices = vec![];
        for (k, (g, &l)) in pixels.chunks_exact(h * w).zip(&labels).enumerate() {
            indices.push(images.len() as u32);
            images.push((w as u32, h as u32, g.iter().flat_map(|&v| [v, v, v]).collect::<Vec<u8>>()));
            d.labels.push(l as u32);
            d.files.push(format!("{rel}#{k}"));
            max_label = max_label.max(l as usize);
        }
        let name = if stem == "t10k" { "test".to_string() } else { stem };
        d.splits.push(SplitDef { name, indices });
    }
    let fashion = src.path().to_string_lossy().to_lowercase().contains("fashion");
    d.classes = (0..=max_label).map(|i| if fashion && i < 10 { FASHION[i].to_string() } else { i.to_string() }).collect();
    d.set_images(images);
    Ok(d)
}

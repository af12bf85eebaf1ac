//! Dataset summaries (`pretext data inspect`) and contact sheets.
use std::collections::BTreeMap;

use image::{imageops, Rgb, RgbImage};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::dataset::{Dataset, Format, Skip, Task, Unreadable};
use crate::font::{draw_text, text_width};

/// Figures of one split.
#[derive(Clone, Debug)]
pub struct SplitSummary {
    pub name: String,
    pub images: usize,
    /// Classification: images per class; detection: boxes per class.
    pub per_class: Vec<usize>,
    /// Smallest and largest `(width, height)` by area, and the most common one with its count.
    pub size_min: (u32, u32),
    pub size_max: (u32, u32),
    pub size_mode: ((u32, u32), usize),
    /// Smallest and largest width, and height, over the split.
    pub width_range: (u32, u32),
    pub height_range: (u32, u32),
    /// Detection: total kept boxes and min / max boxes on one image.
    pub boxes: usize,
    pub boxes_per_image: (usize, usize),
}

/// A group of pool images with identical pixels.
#[derive(Clone, Debug)]
pub struct Duplicate {
    /// sha256 over width, height and pixels (hex, first 16 digits).
    pub hash: String,
    pub files: Vec<String>,
    /// The splits holding any of them.
    pub splits: Vec<String>,
}

/// What `pretext data inspect` prints.
#[derive(Clone, Debug)]
pub struct Summary {
    pub name: String,
    pub task: Task,
    pub format: Format,
    pub classes: Vec<String>,
    pub source_channels: u8,
    pub num_images: usize,
    pub splits: Vec<SplitSummary>,
    pub skipped: Vec<Skip>,
    /// Image files that do not decode (a dataset opened with [`crate::OnBadImage::Skip`]).
    pub unreadable: Vec<Unreadable>,
    pub duplicates: Vec<Duplicate>,
}

impl Summary {
    pub fn of(d: &Dataset) -> Self {
        let splits = d
            .splits()
            .map(|s| {
                let mut per_class = vec![0usize; d.classes().len()];
                let mut sizes: BTreeMap<(u32, u32), usize> = BTreeMap::new();
                let (mut boxes, mut bmin, mut bmax) = (0, usize::MAX, 0);
                for i in 0..s.len() {
                    let p = s.pool_index(i);
                    let im = d.image(p);
                    *sizes.entry((im.width, im.height)).or_default() += 1;
                    match d.task() {
                        Task::Classification => per_class[d.label(p).unwrap_or(0) as usize] += 1,
                        Task::Detection => {
                            let b = d.boxes(p);
                            b.iter().for_each(|b| per_class[b.class as usize] += 1);
                            boxes += b.len();
                            bmin = bmin.min(b.len());
                            bmax = bmax.max(b.len());
                        }
                    }
                }
                let area = |s: &(u32, u32)| s.0 as u64 * s.1 as u64;
                SplitSummary {
                    name: s.name().to_string(),
                    images: s.len(),
                    per_class,
                    size_min: sizes.keys().copied().min_by_key(area).unwrap_or_default(),
                    size_max: sizes.keys().copied().max_by_key(area).unwrap_or_default(),
                    size_mode: sizes.iter().max_by_key(|(_, &n)| n).map(|(&k, &n)| (k, n)).unwrap_or_default(),
                    width_range: (sizes.keys().map(|s| s.0).min().unwrap_or(0), sizes.keys().map(|s| s.0).max().unwrap_or(0)),
                    height_range: (sizes.keys().map(|s| s.1).min().unwrap_or(0), sizes.keys().map(|s| s.1).max().unwrap_or(0)),
                    boxes,
                    boxes_per_image: if boxes == 0 && bmin == usize::MAX { (0, 0) } else { (bmin, bmax) },
                }
            })
            .collect();
        Summary {
            name: d.name().to_string(),
            task: d.task(),
            format: d.format(),
            classes: d.classes().to_vec(),
            source_channels: d.source_channels(),
            num_images: d.num_images(),
            splits,
            skipped: d.skipped().to_vec(),
            unreadable: d.unreadable().to_vec(),
            duplicates: duplicates(d),
        }
    }
}

/// Groups pool images by a hash of their pixels.
pub fn duplicates(d: &Dataset) -> Vec<Duplicate> {
    let hashes: Vec<[u8; 32]> = (0..d.num_images())
        .into_par_iter()
        .map(|i| {
            let im = d.image(i);
            let mut h = Sha256::new();
            h.update(im.width.to_le_bytes());
            h.update(im.height.to_le_bytes());
            h.update(im.pixels);
            h.finalize().into()
        })
        .collect();
    let mut groups: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
    for (i, h) in hashes.into_iter().enumerate() {
        groups.entry(h).or_default().push(i);
    }
    let mut split_of: Vec<Vec<String>> = vec![vec![]; d.num_images()];
    for s in d.splits() {
        for i in 0..s.len() {
            split_of[s.pool_index(i)].push(s.name().to_string());
        }
    }
    let mut out: Vec<Duplicate> = groups
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(h, v)| {
            let mut splits: Vec<String> = v.iter().flat_map(|&i| split_of[i].clone()).collect();
            splits.sort();
            splits.dedup();
            Duplicate { hash: h[..8].iter().map(|b| format!("{b:02x}")).collect(), files: v.iter().map(|&i| d.file(i).to_string()).collect(), splits }
        })
        .collect();
    out.sort_by(|a, b| a.files.cmp(&b.files));
    out
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "dataset {} ({:?}, {:?}), {} distinct images, source channels {}", self.name, self.format, self.task, self.num_images, self.source_channels)?;
        writeln!(f, "classes ({}): {}", self.classes.len(), self.classes.join(", "))?;
        let what = if self.task == Task::Detection { "boxes" } else { "images" };
        for s in &self.splits {
            writeln!(f, "split {}: {} images", s.name, s.images)?;
            let (w0, h0) = s.size_min;
            let (w1, h1) = s.size_max;
            let ((wm, hm), nm) = s.size_mode;
            writeln!(f, "  image size: min {w0}x{h0}, max {w1}x{h1} (by area), mode {wm}x{hm} ({nm} images)")?;
            writeln!(f, "  width {}..{}, height {}..{}", s.width_range.0, s.width_range.1, s.height_range.0, s.height_range.1)?;
            if self.task == Task::Detection {
                writeln!(f, "  boxes: {} ({} to {} per image, mean {:.2})", s.boxes, s.boxes_per_image.0, s.boxes_per_image.1, s.boxes as f64 / s.images.max(1) as f64)?;
            }
            for (c, n) in self.classes.iter().zip(&s.per_class) {
                writeln!(f, "  {what} of {c}: {n}")?;
            }
        }
        writeln!(f, "skipped: {}", self.skipped.len())?;
        for s in &self.skipped {
            writeln!(f, "  {}: {}: {}", s.file, s.what, s.reason)?;
        }
        writeln!(f, "unreadable image files: {}", self.unreadable.len())?;
        for u in &self.unreadable {
            writeln!(f, "  {}: {}", u.file, u.reason)?;
        }
        writeln!(f, "duplicate groups (identical pixels): {}", self.duplicates.len())?;
        for d in &self.duplicates {
            writeln!(f, "  {} [{}]: {}", d.hash, d.splits.join(","), d.files.join(" = "))?;
        }
        Ok(())
    }
}

const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190], [255, 225, 25],
];

fn color(c: usize) -> Rgb<u8> {
    Rgb(PALETTE[c % PALETTE.len()])
}

/// A grid of up to `per_class` samples of the first split per class (rows
/// labelled with class names); detection samples show their boxes.
pub fn contact_sheet(d: &Dataset, per_class: usize) -> RgbImage {
    let det = d.task() == Task::Detection;
    let tile: u32 = if det { 160 } else { 64 };
    let (pad, text_px) = (4u32, 16.0);
    let split = d.splits().next();
    let mut rows: Vec<Vec<usize>> = vec![vec![]; d.classes().len()];
    if let Some(s) = split {
        for i in 0..s.len() {
            let p = s.pool_index(i);
            for (c, row) in rows.iter_mut().enumerate() {
                let has = if det { d.boxes(p).iter().any(|b| b.class as usize == c) } else { d.label(p) == Some(c as u32) };
                if has && row.len() < per_class {
                    row.push(p);
                }
            }
        }
    }
    let label_w = d.classes().iter().map(|c| text_width(c, text_px)).max().unwrap_or(0) + 2 * pad;
    let header = text_px as u32 + 2 * pad;
    let width = label_w + per_class.max(1) as u32 * (tile + pad) + pad;
    let height = header + rows.len().max(1) as u32 * (tile + pad) + pad;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([24, 24, 24]));
    let title = format!("{} {} ({} per class)", d.name(), split.map_or("", |s| s.name()), per_class);
    draw_text(&mut sheet, pad as i32, pad as i32, &title, text_px, Rgb([255, 255, 255]));
    for (c, row) in rows.iter().enumerate() {
        let y0 = header + c as u32 * (tile + pad);
        let name_color = if det { color(c) } else { Rgb([230, 230, 230]) };
        draw_text(&mut sheet, pad as i32, (y0 + tile / 2) as i32 - text_px as i32 / 2, &d.classes()[c], text_px, name_color);
        for (k, &p) in row.iter().enumerate() {
            let im = d.image(p);
            let src = RgbImage::from_raw(im.width, im.height, im.pixels.to_vec()).expect("pool image has w*h*3 bytes");
            let f = (tile as f32 / im.width as f32).min(tile as f32 / im.height as f32);
            let (w, h) = (((im.width as f32 * f) as u32).max(1), ((im.height as f32 * f) as u32).max(1));
            let filter = if f >= 1.0 { imageops::FilterType::Nearest } else { imageops::FilterType::Triangle };
            let mut t = imageops::resize(&src, w, h, filter);
            if det {
                for b in d.boxes(p) {
                    let r = |v: f32, max: u32| ((v * f) as i64).clamp(0, max as i64 - 1) as u32;
                    rect(&mut t, r(b.xmin, w), r(b.ymin, h), r(b.xmax, w), r(b.ymax, h), color(b.class as usize));
                }
            }
            let x0 = label_w + k as u32 * (tile + pad);
            imageops::overlay(&mut sheet, &t, x0 as i64, y0 as i64);
        }
    }
    sheet
}

fn rect(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>) {
    for x in x0..=x1 {
        img.put_pixel(x, y0, c);
        img.put_pixel(x, y1, c);
    }
    for y in y0..=y1 {
        img.put_pixel(x0, y, c);
        img.put_pixel(x1, y, c);
    }
}

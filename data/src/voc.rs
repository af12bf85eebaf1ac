//! Detection loaders: Pascal VOC (`Annotations/*.xml`, `JPEGImages/`,
//! `ImageSets/Main/{split}.txt`) and the `images/` + `annotations/` +
//! `{split}_labels.csv` layout (e.g. the raccoon set).
use std::collections::{BTreeMap, BTreeSet};

use crate::dataset::{BBox, Dataset, Format, OpenOptions, Skip, SplitDef, Task};
use crate::error::{DataError, Result};
use crate::formats::{decode_all, split_order};
use crate::source::Source;

/// One `<object>` of a VOC annotation.
struct Object {
    name: String,
    b: [f32; 4],
}

fn parse_xml(bytes: &[u8], file: &str) -> Result<Vec<Object>> {
    let bad = |reason: String| DataError::Xml { file: file.to_string(), reason };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let doc = roxmltree::Document::parse(text).map_err(|e| bad(e.to_string()))?;
    fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
        n.children().find(|c| c.has_tag_name(tag))
    }
    let mut out = vec![];
    for (k, obj) in doc.descendants().filter(|n| n.has_tag_name("object")).enumerate() {
        let name = child(obj, "name").and_then(|n| n.text()).map(|t| t.trim().to_string()).ok_or_else(|| bad(format!("object #{k} has no <name>")))?;
        let bb = child(obj, "bndbox").ok_or_else(|| bad(format!("object #{k} ({name}) has no <bndbox>")))?;
        let mut b = [0f32; 4];
        for (v, tag) in b.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
            let t = child(bb, tag).and_then(|n| n.text()).ok_or_else(|| bad(format!("object #{k} ({name}) has no <{tag}>")))?;
            *v = t.trim().parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| bad(format!("object #{k} ({name}): <{tag}> is {t:?}, not a finite number")))?;
        }
        out.push(Object { name, b });
    }
    Ok(out)
}

/// Loads annotations, applies the skip policy, decodes images.
/// `items`: `(image rel path, xml rel path, listed_by)` per pool image.
fn finish(src: &Source, items: Vec<(String, String, String)>, splits: Vec<SplitDef>, format: Format, opts: &OpenOptions) -> Result<Dataset> {
    let mut d = Dataset::empty(Task::Detection, format);
    let mut objects = Vec::with_capacity(items.len());
    for (img, xml, listed_by) in &items {
        for rel in [xml, img] {
            if !src.has(rel) {
                return Err(DataError::MissingFile { file: src.display(rel), listed_by: listed_by.clone() });
            }
        }
        objects.push(parse_xml(&src.read(xml)?, &src.display(xml))?);
    }
    d.classes = match &opts.classes {
        Some(c) => c.clone(),
        None => objects.iter().flatten().map(|o| o.name.clone()).collect::<BTreeSet<_>>().into_iter().collect(),
    };
    for ((_, xml, _), objs) in items.iter().zip(objects) {
        let mut kept = vec![];
        for (k, o) in objs.into_iter().enumerate() {
            let class = d.classes.iter().position(|c| *c == o.name).ok_or_else(|| DataError::UnknownClass {
                file: src.display(xml),
                class: o.name.clone(),
                known: d.classes.clone(),
            })?;
            let [xmin, ymin, xmax, ymax] = o.b;
            if xmax <= xmin || ymax <= ymin {
                d.skipped.push(Skip {
                    file: xml.clone(),
                    what: format!("box #{k} {} ({xmin},{ymin})-({xmax},{ymax})", o.name),
                    reason: if xmax == xmin || ymax == ymin { "zero area".into() } else { "inverted corners".into() },
                });
                continue;
            }
            kept.push(BBox { xmin, ymin, xmax, ymax, class: class as u32 });
        }
        d.boxes.push(kept);
    }
    let rels: Vec<String> = items.into_iter().map(|i| i.0).collect();
    let decoded = decode_all(src, &rels, opts)?;
    d.splits = splits;
    d.set_decoded(rels, decoded);
    Ok(d)
}

/// Pool of sorted unique keys and splits as indices into it.
fn pool(lists: Vec<(String, Vec<String>)>) -> (Vec<String>, Vec<SplitDef>) {
    let keys: Vec<String> = lists.iter().flat_map(|l| l.1.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    let splits = lists
        .into_iter()
        .map(|(name, ids)| SplitDef { name, indices: ids.iter().map(|i| keys.binary_search(i).unwrap() as u32).collect() })
        .collect();
    (keys, splits)
}

pub(crate) fn load_voc(src: &Source, root: &str, opts: &OpenOptions) -> Result<Dataset> {
    let sets = format!("{root}ImageSets/Main/");
    let mut lists: Vec<(String, Vec<String>)> = vec![];
    for f in src.files() {
        let Some(name) = f.strip_prefix(&sets).and_then(|n| n.strip_suffix(".txt")) else { continue };
        if name.contains('_') || name.contains('/') {
            continue; // per-class lists such as `aeroplane_train.txt`
        }
        let text = String::from_utf8_lossy(&src.read(f)?).to_string();
        let mut seen = BTreeSet::new();
        let ids = text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).filter(|i| seen.insert(i.clone())).collect();
        lists.push((name.to_string(), ids));
    }
    if lists.is_empty() {
        let ann = format!("{root}Annotations/");
        let ids = src.files().iter().filter_map(|f| f.strip_prefix(&ann)?.strip_suffix(".xml").map(str::to_string)).collect();
        lists.push(("all".into(), ids));
    }
    lists.sort_by_key(|l| split_order(&l.0));
    let listed_by: BTreeMap<String, String> = lists.iter().rev().flat_map(|(n, ids)| {
        let by = src.display(&format!("{sets}{n}.txt"));
        ids.iter().map(move |i| (i.clone(), by.clone()))
    }).collect();
    let (ids, splits) = pool(lists);
    let items = ids
        .iter()
        .map(|id| {
            let img = ["jpg", "jpeg", "png", "JPG"].iter().map(|e| format!("{root}JPEGImages/{id}.{e}")).find(|r| src.has(r)).unwrap_or_else(|| format!("{root}JPEGImages/{id}.jpg"));
            (img, format!("{root}Annotations/{id}.xml"), listed_by.get(id).cloned().unwrap_or_default())
        })
        .collect();
    finish(src, items, splits, Format::Voc, opts)
}

const STANDARD: [&str; 6] = ["train", "trainval", "val", "valid", "validation", "test"];

pub(crate) fn load_voc_csv(src: &Source, root: &str, opts: &OpenOptions) -> Result<Dataset> {
    let csvs: Vec<(String, &str)> = src
        .files()
        .into_iter()
        .filter(|f| f.starts_with(root))
        .filter_map(|f| Some((f.rsplit('/').next()?.strip_suffix("_labels.csv")?.to_string(), f)))
        .collect();
    let standard = csvs.iter().any(|(s, _)| STANDARD.contains(&s.as_str()));
    let mut lists: Vec<(String, Vec<String>)> = vec![];
    let mut listed_by = BTreeMap::new();
    for (split, f) in csvs.iter().filter(|(s, _)| !standard || STANDARD.contains(&s.as_str())) {
        let file = src.display(f);
        let text = String::from_utf8_lossy(&src.read(f)?).to_string();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').map(str::trim).collect();
        let col = header.iter().position(|h| *h == "filename").ok_or_else(|| DataError::Csv { file: file.clone(), line: 1, reason: format!("no `filename` column in header {header:?}") })?;
        let mut seen = BTreeSet::new();
        let mut names = vec![];
        for (k, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let name = line.split(',').nth(col).map(str::trim).filter(|n| !n.is_empty()).ok_or_else(|| DataError::Csv { file: file.clone(), line: k + 2, reason: "no filename".into() })?;
            if seen.insert(name.to_string()) {
                listed_by.entry(name.to_string()).or_insert_with(|| file.clone());
                names.push(name.to_string());
            }
        }
        lists.push((split.clone(), names));
    }
    if lists.is_empty() {
        let img = format!("{root}images/");
        let names = src.files().iter().filter_map(|f| f.strip_prefix(&img)).filter(|f| crate::formats::is_image(f)).map(str::to_string).collect();
        lists.push(("all".into(), names));
    }
    lists.sort_by_key(|l| split_order(&l.0));
    let (names, splits) = pool(lists);
    let items = names
        .iter()
        .map(|n| {
            let stem = n.rsplit_once('.').map_or(n.as_str(), |s| s.0);
            (format!("{root}images/{n}"), format!("{root}annotations/{stem}.xml"), listed_by.get(n).cloned().unwrap_or_else(|| "images/".into()))
        })
        .collect();
    finish(src, items, splits, Format::VocCsv, opts)
}

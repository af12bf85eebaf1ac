//! Synthetic datasets in the official layouts, and bad input: each case
//! checks the error text (or the counted skip) it produces.
use std::fs;
use std::io::Write;
use std::path::Path;

use pretext_data::{CacheStatus, DataError, Dataset, OnBadImage, OpenOptions};

fn no_cache() -> OpenOptions {
    OpenOptions { no_cache: true, ..Default::default() }
}

fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, seed]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn png_gray(w: u32, h: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 16 + y) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn put(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn voc_xml(objects: &[(&str, [i32; 4])]) -> String {
    let objs: String = objects
        .iter()
        .map(|(n, b)| format!("<object><name>{n}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>", b[0], b[1], b[2], b[3]))
        .collect();
    format!("<annotation><size><width>16</width><height>8</height></size>{objs}</annotation>")
}

/// A 2-image VOC set: `a` has a cat and a zero-area dog, `b` a dog.
fn voc(root: &Path) {
    put(root, "VOC/JPEGImages/a.jpg", &jpeg(16, 8, 1));
    put(root, "VOC/JPEGImages/b.jpg", &jpeg(16, 8, 2));
    put(root, "VOC/Annotations/a.xml", voc_xml(&[("cat", [1, 1, 9, 7]), ("dog", [4, 4, 4, 6])]).as_bytes());
    put(root, "VOC/Annotations/b.xml", voc_xml(&[("dog", [0, 0, 15, 7])]).as_bytes());
    put(root, "VOC/ImageSets/Main/train.txt", b"a\n");
    put(root, "VOC/ImageSets/Main/test.txt", b"b\n");
    put(root, "VOC/ImageSets/Main/cat_train.txt", b"a  1\n");
}

#[test]
fn voc_layout_with_zero_area_skip() {
    let t = tempfile::tempdir().unwrap();
    voc(t.path());
    let d = Dataset::open(t.path(), &no_cache()).unwrap();
    assert_eq!(d.classes(), ["cat", "dog"]);
    assert_eq!(d.split_names(), ["train", "test"]);
    assert_eq!(d.boxes(0).len(), 1);
    assert_eq!((d.boxes(0)[0].xmin, d.boxes(0)[0].ymax, d.boxes(0)[0].class), (1.0, 7.0, 0));
    assert_eq!(d.boxes(1)[0].class, 1);
    assert_eq!(d.skipped().len(), 1);
    let s = &d.skipped()[0];
    assert!(s.file.ends_with("VOC/Annotations/a.xml"));
    assert_eq!((s.what.as_str(), s.reason.as_str()), ("box #1 dog (4,4)-(4,6)", "zero area"));
}

#[test]
fn broken_xml_names_the_file() {
    let t = tempfile::tempdir().unwrap();
    voc(t.path());
    put(t.path(), "VOC/Annotations/b.xml", b"<annotation><object><name>dog</name></annotation>");
    let e = Dataset::open(t.path(), &no_cache()).unwrap_err();
    assert!(matches!(e, DataError::Xml { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("VOC/Annotations/b.xml: bad annotation XML:"), "{msg}");
    eprintln!("{msg}");
    put(t.path(), "VOC/Annotations/b.xml", b"<annotation><object><name>dog</name><bndbox><xmin>1</xmin></bndbox></object></annotation>");
    let msg = Dataset::open(t.path(), &no_cache()).unwrap_err().to_string();
    assert!(msg.ends_with("b.xml: bad annotation XML: object #0 (dog) has no <ymin>"), "{msg}");
    put(t.path(), "VOC/Annotations/b.xml", voc_xml(&[("dog", [0, 0, 15, 7])]).replace("<ymax>7<", "<ymax>nan<").as_bytes());
    let msg = Dataset::open(t.path(), &no_cache()).unwrap_err().to_string();
    assert!(msg.ends_with("b.xml: bad annotation XML: object #0 (dog): <ymax> is \"nan\", not a finite number"), "{msg}");
}

#[test]
fn missing_annotation_and_unknown_class() {
    let t = tempfile::tempdir().unwrap();
    voc(t.path());
    let opts = OpenOptions { classes: Some(vec!["cat".into()]), ..no_cache() };
    let msg = Dataset::open(t.path(), &opts).unwrap_err().to_string();
    assert!(msg.contains("VOC/Annotations/a.xml: unknown class \"dog\" (known: [\"cat\"])"), "{msg}");
    fs::remove_file(t.path().join("VOC/Annotations/b.xml")).unwrap();
    let msg = Dataset::open(t.path(), &no_cache()).unwrap_err().to_string();
    assert!(msg.contains("VOC/Annotations/b.xml: missing, but ") && msg.ends_with("VOC/ImageSets/Main/test.txt lists it"), "{msg}");
}

/// `good` cut in its headers, just into its first scan, and mid-scan; a PNG
/// cut inside its IDAT chunk, and one without its IEND chunk.
fn broken_files(good_jpeg: &[u8], good_png: &[u8]) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let sos = good_jpeg.windows(2).position(|w| w == [0xff, 0xda]).unwrap();
    let scan = sos + 2 + u16::from_be_bytes([good_jpeg[sos + 2], good_jpeg[sos + 3]]) as usize;
    let idat = good_png.windows(4).position(|w| w == b"IDAT").unwrap();
    let iend = good_png.windows(4).position(|w| w == b"IEND").unwrap() - 4;
    vec![
        ("header.jpg", good_jpeg[..sos - 40].to_vec(), "in the headers, inside the DHT (Huffman table) segment"),
        ("first-scan.jpg", good_jpeg[..scan + 8].to_vec(), "in scan 1 (8 bytes of entropy-coded data)"),
        ("mid-scan.jpg", good_jpeg[..(scan + good_jpeg.len()) / 2].to_vec(), "in scan 1"),
        ("idat.png", good_png[..idat + 20].to_vec(), "inside the IDAT chunk"),
        ("no-iend.png", good_png[..iend].to_vec(), "before its IEND chunk"),
    ]
}

fn png_rgb(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 9) as u8, ((x ^ y) * 5) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn truncated_jpeg_in_image_folder() {
    let t = tempfile::tempdir().unwrap();
    let good = jpeg(32, 32, 3);
    put(t.path(), "train/cat/0.jpg", &good);
    put(t.path(), "train/dog/0.jpg", &good);
    let d = Dataset::open(t.path(), &no_cache()).unwrap();
    assert_eq!(d.split("train").unwrap().labels(), [0, 1]);
    put(t.path(), "train/dog/1.jpg", &good[..good.len() / 2]);
    let e = Dataset::open(t.path(), &no_cache()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, DataError::Unreadable { .. }));
    assert!(msg.contains("1 image file does not decode") && msg.contains("train/dog/1.jpg: truncated JPEG"), "{msg}");
    put(t.path(), "train/dog/1.jpg", b"not an image at all");
    let msg = Dataset::open(t.path(), &no_cache()).unwrap_err().to_string();
    assert!(msg.contains("train/dog/1.jpg: neither JPEG nor PNG"), "{msg}");
}

/// Every broken file is named with its reason (not only the first); under
/// `Skip` they are left out with their labels, and the intact images decode
/// to exactly what `image` decodes them to.
#[test]
fn every_unreadable_image_is_named_or_skipped() {
    let t = tempfile::tempdir().unwrap();
    let (good, good_png) = (jpeg(32, 32, 5), png_rgb(48, 40));
    put(t.path(), "train/cat/0.jpg", &good);
    put(t.path(), "train/dog/0.png", &good_png);
    put(t.path(), "test/cat/0.jpg", &good);
    let broken = broken_files(&good, &good_png);
    for (k, (name, bytes, _)) in broken.iter().enumerate() {
        put(t.path(), &format!("train/{}/{name}", ["cat", "dog"][k % 2]), bytes);
    }
    let e = Dataset::open(t.path(), &no_cache()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(msg.starts_with(&format!("{}: 5 image files do not decode (truncated or corrupt):", t.path().display())), "{msg}");
    for (k, (name, _, reason)) in broken.iter().enumerate() {
        let file = t.path().join(format!("train/{}/{name}", ["cat", "dog"][k % 2]));
        let line = msg.lines().find(|l| l.contains(&format!("{}: ", file.display()))).unwrap_or_else(|| panic!("{name} is not named:\n{msg}"));
        assert!(line.contains(reason), "{name}: {line}");
    }

    let d = Dataset::open(t.path(), &OpenOptions { on_bad_image: OnBadImage::Skip, ..no_cache() }).unwrap();
    let train = d.split("train").unwrap();
    assert_eq!((train.len(), train.labels(), train.file(0), train.file(1)), (2, vec![0, 1], "train/cat/0.jpg", "train/dog/0.png"));
    assert_eq!(d.split("test").unwrap().len(), 1);
    let mut listed: Vec<&str> = d.unreadable().iter().map(|u| u.file.rsplit('/').next().unwrap()).collect();
    listed.sort();
    assert_eq!(listed, ["first-scan.jpg", "header.jpg", "idat.png", "mid-scan.jpg", "no-iend.png"]);
    for (bytes, i) in [(&good, 0), (&good_png, 1)] {
        let want = image::load_from_memory(bytes).unwrap().to_rgb8();
        assert_eq!(train.image(i).pixels, want.as_raw().as_slice(), "{}", train.file(i));
    }
}

/// The cache holds the dataset without its unreadable files under either
/// policy; opening it with `Error` still fails, naming them.
#[test]
fn cached_skips_still_fail_an_error_open() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let good = jpeg(16, 16, 1);
    put(&data, "a/0.jpg", &good);
    put(&data, "b/0.jpg", &good);
    put(&data, "b/1.jpg", &good[..good.len() - 2]);
    let cache = OpenOptions { cache_dir: Some(t.path().join("cache")), ..Default::default() };
    let skip = OpenOptions { on_bad_image: OnBadImage::Skip, ..cache.clone() };
    let msg = Dataset::open_with_report(&data, &cache).unwrap_err().to_string();
    assert!(msg.contains("b/1.jpg: truncated JPEG") && msg.contains("in scan 1"), "{msg}");
    let (d, status) = Dataset::open_with_report(&data, &skip).unwrap();
    assert!(matches!(status, CacheStatus::Hit(_)), "{status:?}");
    assert_eq!((d.num_images(), d.unreadable().len()), (2, 1));
    let msg = Dataset::open_with_report(&data, &cache).unwrap_err().to_string();
    assert!(msg.contains("b/1.jpg: truncated JPEG"), "{msg}");
}

/// A VOC image that does not decode takes its boxes with it; a split left
/// without images is dropped.
#[test]
fn skipped_voc_image_takes_its_boxes() {
    let t = tempfile::tempdir().unwrap();
    voc(t.path());
    let good = jpeg(16, 8, 2);
    put(t.path(), "VOC/JPEGImages/b.jpg", &good[..good.len() / 2]);
    let d = Dataset::open(t.path(), &OpenOptions { on_bad_image: OnBadImage::Skip, ..no_cache() }).unwrap();
    assert_eq!((d.num_images(), d.split_names()), (1, vec!["train"]));
    assert_eq!(d.boxes(0).len(), 1);
    assert_eq!(d.unreadable()[0].file, "VOC/JPEGImages/b.jpg");
}

/// The eval transform's decoder is the same strict one: each cut is an
/// error naming the file.
#[test]
fn decode_file_names_each_broken_file() {
    let t = tempfile::tempdir().unwrap();
    let (good, good_png) = (jpeg(32, 32, 5), png_rgb(48, 40));
    for (name, bytes, reason) in broken_files(&good, &good_png) {
        let p = t.path().join(name);
        fs::write(&p, bytes).unwrap();
        let msg = pretext_data::preprocess::decode_file(&p).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("cannot decode image {} (JPEG/PNG expected): ", p.display())) && msg.contains(reason), "{msg}");
    }
    let p = t.path().join("good.jpg");
    fs::write(&p, &good).unwrap();
    assert_eq!(pretext_data::preprocess::decode_file(&p).unwrap(), image::load_from_memory(&good).unwrap().to_rgb8());
}

#[test]
fn class_folder_tarball_with_gray_png() {
    let t = tempfile::tempdir().unwrap();
    let tgz = t.path().join("tiny.tgz");
    let mut ar = tar::Builder::new(flate2::write::GzEncoder::new(fs::File::create(&tgz).unwrap(), flate2::Compression::fast()));
    for (name, bytes) in [("tiny/a/0.png", png_gray(4, 3)), ("tiny/b/0.png", png_gray(4, 3)), ("tiny/README", b"hi".to_vec())] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        ar.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    ar.into_inner().unwrap().finish().unwrap();
    let d = Dataset::open(&tgz, &no_cache()).unwrap();
    assert_eq!((d.name(), d.source_channels()), ("tiny", 1));
    // Three levels are `<split>/<class>/<file>`: the split is `tiny`.
    assert_eq!(d.split_names(), ["tiny"]);
    assert_eq!(d.classes(), ["a", "b"]);
    let (px, shape) = d.split("tiny").unwrap().images_nhwc().unwrap();
    assert_eq!(shape, [2, 3, 4, 3]);
    // Pixel (x=1, y=2) of the gray ramp is 1*16+2, repeated over RGB.
    let o = (2 * 4 + 1) * 3;
    assert_eq!(&px[o..o + 3], &[18, 18, 18]);
}

fn cifar_record(label_bytes: &[u8], seed: u8) -> Vec<u8> {
    let mut r = label_bytes.to_vec();
    for c in 0..3u32 {
        for p in 0..1024u32 {
            r.push((p as u8).wrapping_mul(3).wrapping_add(c as u8 * 50).wrapping_add(seed));
        }
    }
    r
}

#[test]
fn cifar10_and_cifar100_binary_layouts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("cifar-10-batches-bin");
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    put(&root, "batches.meta.txt", names.as_bytes());
    for i in 1..=5u8 {
        put(&root, &format!("data_batch_{i}.bin"), &[cifar_record(&[i], i), cifar_record(&[9], 100 + i)].concat());
    }
    put(&root, "test_batch.bin", &cifar_record(&[3], 7));
    let d = Dataset::open(&root, &no_cache()).unwrap();
    assert_eq!(d.classes().len(), 10);
    let train = d.split("train").unwrap();
    assert_eq!(train.labels(), [1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
    let (px, shape) = train.images_nhwc().unwrap();
    assert_eq!(shape, [10, 32, 32, 3]);
    // CHW planes -> HWC: pixel p of image 0 is (R, G, B) = (3p+1, 3p+51, 3p+101) mod 256.
    for p in [0usize, 5, 1023] {
        let want: Vec<u8> = (0..3).map(|c| (p as u8).wrapping_mul(3).wrapping_add(c * 50).wrapping_add(1)).collect();
        assert_eq!(&px[p * 3..p * 3 + 3], &want[..], "pixel {p}");
    }
    assert_eq!(d.split("test").unwrap().labels(), [3]);

    put(&root, "test_batch.bin", &cifar_record(&[3], 7)[..3000]);
    let msg = Dataset::open(&root, &no_cache()).unwrap_err().to_string();
    assert!(msg.ends_with("test_batch.bin: bad CIFAR binary file: length 3000 is not a positive multiple of the 3073-byte record"), "{msg}");

    let root = t.path().join("cifar-100-binary");
    put(&root, "fine_label_names.txt", (0..100).map(|i| format!("f{i}\n")).collect::<String>().as_bytes());
    put(&root, "coarse_label_names.txt", (0..20).map(|i| format!("c{i}\n")).collect::<String>().as_bytes());
    put(&root, "train.bin", &[cifar_record(&[4, 99], 0), cifar_record(&[19, 0], 1)].concat());
    put(&root, "test.bin", &cifar_record(&[0, 42], 2));
    let d = Dataset::open(&root, &no_cache()).unwrap();
    assert_eq!((d.classes().len(), d.coarse_classes().len()), (100, 20));
    assert_eq!(d.split("train").unwrap().labels(), [99, 0]);
    assert_eq!(d.split("train").unwrap().coarse_labels(), [4, 19]);
    assert_eq!(d.split("test").unwrap().labels(), [42]);
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
    v.extend(data);
    v
}

#[test]
fn idx_plain_and_gzip_and_wrong_magic() {
    let t = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..2 * 3 * 2).map(|i| i as u8 * 10).collect();
    put(t.path(), "train-images-idx3-ubyte", &idx(0x803, &[2, 3, 2], &pixels));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&idx(0x801, &[2], &[7, 2])).unwrap();
    put(t.path(), "train-labels-idx1-ubyte.gz", &gz.finish().unwrap());
    put(t.path(), "t10k-images-idx3-ubyte", &idx(0x803, &[1, 3, 2], &pixels[..6]));
    let msg = Dataset::open(t.path(), &no_cache()).unwrap_err().to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte: missing, but ") && msg.ends_with("t10k-images-idx3-ubyte lists it"), "{msg}");
    fs::remove_file(t.path().join("t10k-images-idx3-ubyte")).unwrap();
    // Plain images with gzipped labels.
    let d = Dataset::open(t.path(), &no_cache()).unwrap();
    let s = d.split("train").unwrap();
    assert_eq!(s.labels(), [7, 2]);
    assert_eq!(d.classes().len(), 8);
    let (px, shape) = s.images_nhwc().unwrap();
    assert_eq!(shape, [2, 3, 2, 3]);
    assert_eq!(&px[..6], &[0, 0, 0, 10, 10, 10]);

    // Labels where the images should be.
    put(t.path(), "train-images-idx3-ubyte", &idx(0x801, &[2], &[7, 2]));
    let e = Dataset::open(t.path(), &no_cache()).unwrap_err();
    assert!(matches!(e, DataError::IdxMagic { expected: 0x803, found: 0x801, .. }), "{e:?}");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(msg.ends_with("train-images-idx3-ubyte: wrong IDX magic: expected 0x00000803, found 0x00000801"), "{msg}");
    put(t.path(), "train-images-idx3-ubyte", &idx(0x803, &[2, 3, 2], &pixels[..5]));
    let msg = Dataset::open(t.path(), &no_cache()).unwrap_err().to_string();
    assert!(msg.ends_with("train-images-idx3-ubyte: bad IDX file: dims [2, 3, 2] need 12 bytes, found 5"), "{msg}");
    // Dims whose product overflows are an error, not an arithmetic panic.
    put(t.path(), "train-images-idx3-ubyte", &idx(0x803, &[u32::MAX; 3], &pixels[..5]));
    let msg = Dataset::open(t.path(), &no_cache()).unwrap_err().to_string();
    assert!(msg.ends_with("bad IDX file: dims [4294967295, 4294967295, 4294967295] need more than usize::MAX bytes, found 5"), "{msg}");
}

#[test]
fn corrupt_cache_is_rebuilt() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("set");
    put(&data, "train/cat/0.jpg", &jpeg(8, 8, 1));
    put(&data, "test/cat/0.jpg", &jpeg(8, 8, 2));
    let opts = OpenOptions { cache_dir: Some(t.path().join("cache")), ..Default::default() };
    let (d0, s) = Dataset::open_with_report(&data, &opts).unwrap();
    let CacheStatus::Written(file) = s else { panic!("{s:?}") };
    assert!(file.starts_with(t.path().join("cache")));
    assert!(matches!(Dataset::open_with_report(&data, &opts).unwrap().1, CacheStatus::Hit(_)));

    // A flipped pixel byte fails the checksum.
    let mut bytes = fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0xff;
    fs::write(&file, &bytes).unwrap();
    let (d1, s) = Dataset::open_with_report(&data, &opts).unwrap();
    assert_eq!(s, CacheStatus::Rebuilt(file.clone(), "checksum mismatch".into()));
    assert_eq!(d0.image(0).pixels, d1.image(0).pixels);
    // A truncated file fails the length check; garbage fails the magic.
    fs::write(&file, &bytes[..n - 100]).unwrap();
    let s = Dataset::open_with_report(&data, &opts).unwrap().1;
    assert!(matches!(&s, CacheStatus::Rebuilt(_, r) if r.starts_with("lengths say")), "{s:?}");
    // A pixel length near u64::MAX (magic 8, version 4, metadata length 8, metadata,
    // pixel length 8, ...) must not overflow the length check.
    let mut huge = fs::read(&file).unwrap();
    let meta_len = u64::from_le_bytes(huge[12..20].try_into().unwrap()) as usize;
    huge[20 + meta_len..28 + meta_len].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
    fs::write(&file, &huge).unwrap();
    let s = Dataset::open_with_report(&data, &opts).unwrap().1;
    assert!(matches!(&s, CacheStatus::Rebuilt(_, r) if r.starts_with("lengths say")), "{s:?}");
    fs::write(&file, vec![7u8; 100]).unwrap();
    assert_eq!(Dataset::open_with_report(&data, &opts).unwrap().1, CacheStatus::Rebuilt(file.clone(), "bad magic".into()));
    assert!(matches!(Dataset::open_with_report(&data, &opts).unwrap().1, CacheStatus::Hit(_)));
    // A changed source gets a new key.
    put(&data, "test/cat/1.jpg", &jpeg(8, 8, 3));
    let (d2, s) = Dataset::open_with_report(&data, &opts).unwrap();
    let CacheStatus::Written(file2) = s else { panic!("{s:?}") };
    assert_ne!(file2, file);
    assert_eq!(d2.split("test").unwrap().len(), 2);
    // The stale cache is pruned, and no temp files are left next to the cache.
    let left: Vec<_> = fs::read_dir(t.path().join("cache")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left, [file2]);
}

#[test]
fn truncated_tarball_and_unwritable_cache() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("set");
    put(&data, "train/cat/0.jpg", &jpeg(8, 8, 1));
    // A cache "directory" that is a file cannot be written: the load still succeeds.
    put(t.path(), "blocker", b"x");
    let opts = OpenOptions { cache_dir: Some(t.path().join("blocker/cache")), ..Default::default() };
    let (d, s) = Dataset::open_with_report(&data, &opts).unwrap();
    assert!(matches!(s, CacheStatus::WriteFailed(..)), "{s:?}");
    assert_eq!(d.num_images(), 1);

    let tgz = t.path().join("set.tar.gz");
    let mut ar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    ar.append_dir_all("set", &data).unwrap();
    let bytes = ar.into_inner().unwrap().finish().unwrap();
    fs::write(&tgz, &bytes).unwrap();
    assert_eq!(Dataset::open(&tgz, &no_cache()).unwrap().split_names(), ["train"]);
    fs::write(&tgz, &bytes[..bytes.len() / 2]).unwrap();
    let msg = Dataset::open(&tgz, &no_cache()).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}: not a dataset layout pretext knows (broken tarball:", tgz.display())), "{msg}");
}

#[test]
fn unknown_layout_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    put(t.path(), "notes.txt", b"hello");
    let msg = Dataset::open(t.path(), &no_cache()).unwrap_err().to_string();
    assert!(msg.contains("not a dataset layout pretext knows"), "{msg}");
    let msg = Dataset::open(t.path().join("nope"), &no_cache()).unwrap_err().to_string();
    assert!(msg.contains("nope"), "{msg}");
}

//! The loaders on the real datasets in `/work/shared/data` (read-only; found
//! relative to the repo as `../shared/data`) and Fashion-MNIST from
//! `/usr/share/datasets`, asserting their published figures. All but the
//! CIFAR cold/warm test go through the default cache, so reruns are fast.
use std::path::PathBuf;
use std::time::Instant;

use pretext_data::inspect::Summary;
use pretext_data::{CacheStatus, Dataset, Format, OpenOptions, Task};

fn shared(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(name);
    assert!(p.exists(), "{} is missing: the real datasets live in ../shared/data next to the repo", p.display());
    p
}

fn counts(labels: &[u32], n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    labels.iter().for_each(|&l| c[l as usize] += 1);
    c
}

#[test]
fn cifar10_jpg_tarball_cold_then_warm() {
    let cache = tempfile::tempdir().unwrap();
    let opts = OpenOptions { cache_dir: Some(cache.path().to_path_buf()), ..Default::default() };
    let t = Instant::now();
    let (cold, status) = Dataset::open_with_report(shared("cifar10-jpg.tar.gz"), &opts).unwrap();
    let cold_s = t.elapsed().as_secs_f64();
    assert!(matches!(status, CacheStatus::Written(_)), "{status:?}");
    let t = Instant::now();
    let (warm, status) = Dataset::open_with_report(shared("cifar10-jpg.tar.gz"), &opts).unwrap();
    let warm_s = t.elapsed().as_secs_f64();
    assert!(matches!(status, CacheStatus::Hit(_)), "{status:?}");
    eprintln!("CIFAR-10 jpg tarball: cold (decode + write cache) {cold_s:.2} s, warm (cache) {warm_s:.2} s");

    for d in [&cold, &warm] {
        assert_eq!(d.format(), Format::ImageFolder);
        assert_eq!(d.name(), "cifar10-jpg");
        assert_eq!(d.classes(), ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]);
        assert_eq!(d.split_names(), ["train", "test"]);
        assert_eq!(d.source_channels(), 3);
        for (split, n) in [("train", 5000), ("test", 1000)] {
            let s = d.split(split).unwrap();
            assert_eq!(s.len(), 10 * n);
            assert_eq!(counts(&s.labels(), 10), vec![n; 10]);
            let (px, shape) = s.images_nhwc().unwrap();
            assert_eq!(shape, [10 * n, 32, 32, 3]);
            assert_eq!(px.len(), 10 * n * 3072);
        }
    }
    let (a, b) = (cold.split("test").unwrap(), warm.split("test").unwrap());
    assert_eq!(a.images_nhwc().unwrap().0, b.images_nhwc().unwrap().0, "cache round trip changed pixels");
    assert_eq!(a.labels(), b.labels());
    // A known file decodes to the same pixels straight from the archive's JPEG.
    assert!(a.file(0).ends_with("test/airplane/0000.jpg"), "{}", a.file(0));
}

#[test]
fn bccd_voc_figures_and_zero_area_skips() {
    let d = Dataset::open(shared("bccd-voc.tar.gz"), &OpenOptions::default()).unwrap();
    assert_eq!((d.task(), d.format()), (Task::Detection, Format::Voc));
    assert_eq!(d.num_images(), 364);
    assert_eq!(d.classes(), ["Platelets", "RBC", "WBC"]);
    let sizes: Vec<(&str, usize)> = d.splits().map(|s| (s.name(), s.len())).collect();
    assert_eq!(sizes, [("train", 205), ("trainval", 292), ("val", 87), ("test", 72)]);
    let mut per_class = [0usize; 3];
    (0..d.num_images()).flat_map(|i| d.boxes(i)).for_each(|b| per_class[b.class as usize] += 1);
    // 4,888 boxes in the XML: RBC 4,155 / WBC 372 / Platelets 361, minus the two zero-area RBC boxes.
    assert_eq!(per_class, [361, 4153, 372]);
    let skipped: Vec<String> = d.skipped().iter().map(|s| format!("{} {} {}", s.file, s.what, s.reason)).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].starts_with("BCCD/Annotations/BloodImage_00338.xml") && skipped[0].contains("RBC (504,337)-(504,337) zero area"), "{}", skipped[0]);
    assert!(skipped[1].starts_with("BCCD/Annotations/BloodImage_00343.xml") && skipped[1].contains("RBC (181,329)-(181,329) zero area"), "{}", skipped[1]);
    assert!((0..d.num_images()).all(|i| (d.image(i).width, d.image(i).height) == (640, 480)));
    let s = Summary::of(&d);
    assert_eq!(s.splits.iter().map(|s| s.boxes).sum::<usize>(), s.splits.iter().map(|s| s.per_class.iter().sum::<usize>()).sum::<usize>());
}

#[test]
fn raccoon_csv_layout_and_duplicates() {
    let d = Dataset::open(shared("raccoon-voc.tar.gz"), &OpenOptions::default()).unwrap();
    assert_eq!((d.task(), d.format()), (Task::Detection, Format::VocCsv));
    assert_eq!(d.num_images(), 200);
    assert_eq!(d.classes(), ["raccoon"]);
    let sizes: Vec<(&str, usize)> = d.splits().map(|s| (s.name(), s.len())).collect();
    assert_eq!(sizes, [("train", 160), ("test", 40)]);
    assert_eq!((0..d.num_images()).map(|i| d.boxes(i).len()).sum::<usize>(), 217);
    assert!(d.skipped().is_empty());
    let s = Summary::of(&d);
    assert_eq!(s.splits.iter().map(|s| s.boxes).collect::<Vec<_>>(), [173, 44]);
    let (w_min, w_max) = (s.splits.iter().map(|s| s.width_range.0).min().unwrap(), s.splits.iter().map(|s| s.width_range.1).max().unwrap());
    assert_eq!((w_min, w_max), (178, 2000));
    let mut dups: Vec<Vec<String>> = s.duplicates.iter().map(|d| d.files.iter().map(|f| f.rsplit('/').next().unwrap().to_string()).collect()).collect();
    dups.iter_mut().for_each(|g| g.sort());
    dups.sort();
    assert_eq!(dups, [["raccoon-11.jpg", "raccoon-116.jpg"], ["raccoon-120.jpg", "raccoon-83.jpg"], ["raccoon-52.jpg", "raccoon-74.jpg"], ["raccoon-65.jpg", "raccoon-98.jpg"]]);
    assert!(s.duplicates.iter().all(|d| d.splits == ["train"]));
}

#[test]
fn fashion_mnist_idx() {
    let dir = PathBuf::from("/usr/share/datasets/fashion-mnist");
    assert!(dir.join("train-images-idx3-ubyte.gz").exists(), "Fashion-MNIST is missing from {}: run scripts/setup.sh (apt package dataset-fashion-mnist)", dir.display());
    let d = Dataset::open(&dir, &OpenOptions::default()).unwrap();
    assert_eq!(d.format(), Format::Idx);
    assert_eq!(d.source_channels(), 1);
    assert_eq!(d.classes().len(), 10);
    assert_eq!(d.classes()[0], "T-shirt/top");
    assert_eq!(d.classes()[9], "Ankle boot");
    for (split, n) in [("train", 60000), ("test", 10000)] {
        let s = d.split(split).unwrap();
        let (px, shape) = s.images_nhwc().unwrap();
        assert_eq!(shape, [n, 28, 28, 3]);
        // Gray expanded to RGB: the three channels are equal.
        assert!(px.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        assert_eq!(counts(&s.labels(), 10), vec![n / 10; 10]);
    }
}

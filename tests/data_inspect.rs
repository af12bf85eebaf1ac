//! `pretext data inspect` end to end on the raccoon set (through the cache)
//! and on a broken dataset.
use std::path::PathBuf;
use std::process::Command;

fn pretext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
}

#[test]
fn inspect_raccoon_reports_duplicates_and_writes_a_sheet() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/raccoon-voc.tar.gz");
    assert!(src.exists(), "{} is missing", src.display());
    let out = tempfile::tempdir().unwrap();
    let o = pretext().args(["data", "inspect"]).arg(&src).arg("--out").arg(out.path()).args(["--per-class", "3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    for line in ["classes (1): raccoon", "split train: 160 images", "split test: 40 images", "  boxes of raccoon: 173", "  boxes of raccoon: 44", "  width 178..2000,", "duplicate groups (identical pixels): 4"] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert!(stdout.contains("[train]: images/raccoon-11.jpg = images/raccoon-116.jpg"), "{stdout}");
    let png = out.path().join("inspect-raccoon-voc.png");
    let img = image::open(&png).unwrap();
    // One row of 3 tiles of 160 px plus label column, header (16 px text + 2 x 4 px) and padding.
    assert_eq!(img.height(), 24 + 164 + 4);
    assert!(img.width() > 3 * 164);
}

#[test]
fn inspect_broken_dataset_fails_with_the_file_name() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("train-images-idx3-ubyte");
    std::fs::write(&p, [0u8, 0, 8, 1, 0, 0, 0, 0]).unwrap();
    std::fs::write(t.path().join("train-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 0]).unwrap();
    let o = pretext().args(["data", "inspect"]).arg(t.path()).arg("--no-cache").output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("train-images-idx3-ubyte: wrong IDX magic: expected 0x00000803, found 0x00000801"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

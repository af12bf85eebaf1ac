//! Truncated and corrupt images, end to end (issue #19): `pretext extract`
//! refuses them with both backends, naming the file; `pretext data inspect`
//! lists every one; Pillow refuses the same cuts.
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures").join(name)
}

fn pretext(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext")).args(args).env("PRETEXT_CACHE", std::env::temp_dir().join("pretext-badimg-test-cache")).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A real photo cut in its headers, in its first scan and mid-scan, and a PNG
/// without the end of its IDAT chunk: `(file name, bytes)`.
fn broken() -> Vec<(&'static str, Vec<u8>)> {
    let photo = std::fs::read(fixture("raccoon-151.jpg")).unwrap();
    let sos = photo.windows(2).position(|w| w == [0xff, 0xda]).unwrap();
    let scan = sos + 2 + u16::from_be_bytes([photo[sos + 2], photo[sos + 3]]) as usize;
    let img = image::RgbImage::from_fn(40, 40, |x, y| image::Rgb([(x * 6) as u8, (y * 6) as u8, 90]));
    let mut png = std::io::Cursor::new(vec![]);
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
    vec![
        ("header.jpg", photo[..300.min(sos - 10)].to_vec()),
        ("first-scan.jpg", photo[..scan + 100].to_vec()),
        ("mid-scan.jpg", photo[..(scan + photo.len()) / 2].to_vec()),
        ("idat.png", png[..idat + 30].to_vec()),
    ]
}

#[test]
fn extract_refuses_and_inspect_lists_broken_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join("train").join(class)).unwrap();
        let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, if class == "a" { 30 } else { 220 }]));
        img.save(data.join("train").join(class).join("ok.png")).unwrap();
    }
    let files = broken();
    for (k, (name, bytes)) in files.iter().enumerate() {
        std::fs::write(data.join("train").join(["a", "b"][k % 2]).join(name), bytes).unwrap();
    }
    let path_of = |k: usize| data.join("train").join(["a", "b"][k % 2]).join(files[k].0);
    let model = fixture("tiny_cnn.onnx");
    let npy = dir.path().join("f.npy");

    // One broken file among good ones, with each backend: an error naming it, no features file.
    for backend in ["tract", "ort"] {
        for k in 0..files.len() {
            let bad = path_of(k);
            let (ok, out, err) = pretext(&["extract", s(&model), s(&data.join("train/a/ok.png")), s(&bad), "-o", s(&npy), "--resize", "40", "--backend", backend]);
            assert!(!ok, "{backend}: {} was accepted:\n{out}", files[k].0);
            let want = format!("cannot decode image {} (JPEG/PNG expected): truncated {}", bad.display(), if files[k].0.ends_with(".png") { "PNG" } else { "JPEG" });
            assert!(err.contains(&want), "{backend}, {}: no {want:?} in\n{err}", files[k].0);
            assert!(!npy.exists() && !err.contains("panicked"), "{err}");
        }
    }
    // The dataset: every broken file is named.
    let (ok, _, err) = pretext(&["extract", s(&model), s(&data), "-o", s(&npy), "--resize", "40"]);
    assert!(!ok && err.contains("4 image files do not decode"), "{err}");
    for k in 0..files.len() {
        assert!(err.contains(&format!("{}: truncated", path_of(k).display())), "{} not named:\n{err}", files[k].0);
    }

    // data inspect: the whole report, every unreadable file with its reason, then a failure.
    let (ok, out, err) = pretext(&["data", "inspect", s(&data), "--no-cache", "--out", s(dir.path())]);
    assert!(!ok, "{out}");
    assert!(out.contains("split train: 2 images") && out.contains("unreadable image files: 4"), "{out}");
    for (k, (name, _)) in files.iter().enumerate() {
        let rel = format!("train/{}/{name}: ", ["a", "b"][k % 2]);
        let line = out.lines().find(|l| l.trim_start().starts_with(&rel)).unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        assert!(line.contains("truncated"), "{line}");
    }
    assert!(out.contains("in the headers") && out.contains("in scan 1") && out.contains("inside the IDAT chunk"), "{out}");
    assert!(err.contains("4 image files do not decode (listed above as unreadable)"), "{err}");
    assert!(dir.path().join("inspect-toy.png").exists());
}

/// The oracle: Pillow refuses the same files (the header cut when opening,
/// the scan cuts when loading) and reads the intact photo.
#[test]
fn pillow_refuses_the_same_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = vec![];
    for (name, bytes) in broken() {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        paths.push(p);
    }
    let py = std::env::var("PRETEXT_PYTHON").expect("PRETEXT_PYTHON must point at the venv python (set by .cargo/config.toml from scripts/setup.sh)");
    let script = "import sys\nfrom PIL import Image\nfor p in sys.argv[1:]:\n    try:\n        Image.open(p).load()\n        print(p, 'ok')\n    except Exception as e:\n        print(p, 'refused', type(e).__name__, e)\n";
    let out = Command::new(&py).arg("-c").arg(script).arg(fixture("raccoon-151.jpg")).args(&paths).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].ends_with(" ok"), "{stdout}");
    for (p, line) in paths.iter().zip(&lines[1..]) {
        assert!(line.starts_with(&format!("{} refused", p.display())), "Pillow read {}: {line}", p.display());
    }
}

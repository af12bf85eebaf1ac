//! `pretext extract` and `pretext knn build|classify|eval` end to end on the runtime fixtures.
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures").join(name)
}

fn pretext(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext")).args(args).env("PRETEXT_CACHE", std::env::temp_dir().join("pretext-cli-test-cache")).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// An image-folder dataset `<split>/<class>/*.png`: class `a` dark images, class `b` bright ones.
fn make_dataset(root: &Path) {
    for split in ["train", "test"] {
        for (c, base) in [("a", 30u8), ("b", 220u8)] {
            let d = root.join(split).join(c);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..6u8 {
                let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([base.wrapping_add(i * 3), base.wrapping_add((x % 7) as u8), base.wrapping_add((y % 5) as u8)]));
                img.save(d.join(format!("{split}{i}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn extract_build_classify_eval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("toy");
    make_dataset(&data);
    let model = fixture("tiny_cnn.onnx");
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let npy = dir.path().join("f.npy");
    let (ok, log) = pretext(&["extract", m, fixture("raccoon-39.jpg").to_str().unwrap(), fixture("raccoon-150.jpg").to_str().unwrap(), "-o", npy.to_str().unwrap(), "--resize", "40"]);
    assert!(ok, "{log}");
    let f = pretext_runtime::npy::read_f32(&npy).unwrap();
    assert_eq!(f.shape(), [2, 12]);

    let gallery = dir.path().join("g.safetensors");
    let (ok, log) = pretext(&["knn", "build", m, "--data", d, "--split", "train", "-o", gallery.to_str().unwrap(), "--batch-size", "5"]);
    assert!(ok, "{log}");
    let g = pretext_runtime::Gallery::load(&gallery).unwrap();
    assert_eq!((g.len(), g.dim(), g.classes.clone()), (12, 12, vec!["a".to_string(), "b".to_string()]));

    let (ok, log) = pretext(&["knn", "eval", m, gallery.to_str().unwrap(), "--data", d, "--split", "test", "--latency-samples", "4"]);
    assert!(ok, "{log}");
    assert!(log.contains("k=20") && log.contains("k=200") && log.contains("p50") && log.contains("images/s"), "{log}");

    let img = data.join("test/b/test0.png");
    let (ok, log) = pretext(&["knn", "classify", m, gallery.to_str().unwrap(), img.to_str().unwrap(), "--k", "3"]);
    assert!(ok, "{log}");
    assert!(log.contains("test0.png\tb") || log.contains("test0.png\ta"), "{log}");

    // The gallery against another model: a clear error naming both hashes.
    let foreign = fixture("tiny_cnn_foreign.onnx");
    let (ok, log) = pretext(&[
        "knn", "classify", foreign.to_str().unwrap(), gallery.to_str().unwrap(), img.to_str().unwrap(),
        "--input-size", "32", "--resize", "32", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
    ]);
    assert!(!ok && log.contains(&g.model_sha256) && log.contains("rebuild the gallery"), "{log}");

    // A foreign model without the options names the option to pass.
    let (ok, log) = pretext(&["extract", foreign.to_str().unwrap(), img.to_str().unwrap(), "-o", npy.to_str().unwrap()]);
    assert!(!ok && log.contains("--input-size"), "{log}");
}

/// The losing A/B options (issue #17) are gone from `--help` and are clap errors:
/// symbolic tract plans, whole-batch tract runs, the as-graph layout, native fp16 and
/// the ORT model cache (`extract` and `knn` share these flags), and bench's copies.
#[test]
fn removed_runtime_options_are_gone() {
    let extract = ["--tract-symbolic", "--tract-batch", "--tract-layout", "--tract-f16", "--ort-cache"];
    let bench = ["--tract-plan", "--tract-batch", "--tract-layout"];
    for (cmd, removed, kept) in [
        (&["extract"][..], &extract[..], &["--backend", "--tract-threads", "--provider", "--opt-level"][..]),
        (&["knn", "build"][..], &extract[..], &["--backend", "--tract-threads"][..]),
        (&["bench"][..], &bench[..], &["--tract-threads", "--ort-opt-level"][..]),
    ] {
        let (ok, help) = pretext(&[cmd, &["--help"]].concat());
        assert!(ok, "{help}");
        for flag in kept {
            assert!(help.contains(flag), "{cmd:?} --help lacks {flag}:\n{help}");
        }
        for flag in removed {
            assert!(!help.contains(flag), "{cmd:?} --help still mentions {flag}:\n{help}");
            let (ok, log) = pretext(&[cmd, &[*flag, "x"]].concat());
            assert!(!ok && log.contains(&format!("unexpected argument '{flag}'")), "{cmd:?} {flag}: {log}");
        }
    }
    // The surviving option enums come from the runtime (clap::ValueEnum): their values
    // are listed, and a removed value is refused by name.
    let (_, help) = pretext(&["extract", "--help"]);
    for v in ["- tract:", "- ort:", "cpu, cuda, tensorrt", "- extended", "- all:"] {
        assert!(help.contains(v), "extract --help lacks `{v}`:\n{help}");
    }
    let (ok, log) = pretext(&["extract", "m.onnx", "i.jpg", "-o", "f.npy", "--backend", "tract-symbolic"]);
    assert!(!ok && log.contains("invalid value 'tract-symbolic'"), "{log}");
}

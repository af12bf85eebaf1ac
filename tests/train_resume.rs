//! `kill -9` in the middle of `pretext train`, then `--resume`: the run ends
//! with the same weights as an uninterrupted run with the same seed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn write_dataset(root: &Path) {
    // Two classes of 32x32 PNGs in `<split>/<class>/`, pixel patterns that differ per class.
    for (split, n) in [("train", 48), ("test", 8)] {
        for class in ["a", "b"] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n / 2 {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let v = if class == "a" { (x * 7 + y * 3 + i * 11) % 256 } else { ((x ^ y) * 9 + i * 5) % 256 };
                    image::Rgb([v as u8, (v * 3 % 256) as u8, (255 - v) as u8])
                });
                img.save(dir.join(format!("{i:03}.png"))).unwrap();
            }
        }
    }
}

fn train(method: &str, data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pretext"));
    c.args(["train", "--method", method, "--backbone", "resnet18-cifar", "--width", "4", "--epochs", "20", "--batch-size", "16", "--seed", "7", "--checkpoint-every", "1", "--knn-every=-1", "--threads", "1", "--quiet"]);
    c.arg("--data").arg(data).arg("--out").arg(out).args(extra);
    c.env("PRETEXT_CACHE", data.parent().unwrap().join("cache"));
    c
}

fn step_of(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("checkpoint.json")).ok().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()).and_then(|v| v["step"].as_u64()).unwrap_or(0)
}

fn kill_then_resume(method: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let full = tmp.path().join("full");
    let st = train(method, &data, &full, &[]).status().unwrap();
    assert!(st.success());
    assert_eq!(step_of(&full), 60);

    let cut = tmp.path().join("cut");
    let mut child = train(method, &data, &cut, &[]).spawn().unwrap();
    let t0 = Instant::now();
    while step_of(&cut) < 10 {
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint after 5 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let killed_at = step_of(&cut);
    assert!(killed_at < 60, "the run finished before it could be killed; make it longer");
    let st = train(method, &data, &cut, &["--resume"]).status().unwrap();
    assert!(st.success());
    assert_eq!(step_of(&cut), 60);

    let a = safetensors_tensors(&full.join("checkpoint.safetensors"));
    let b = safetensors_tensors(&cut.join("checkpoint.safetensors"));
    assert_eq!(a.len(), b.len());
    let mut max_diff = 0f32;
    for (k, va) in &a {
        let vb = &b[k];
        assert_eq!(va.len(), vb.len(), "{k}");
        for (x, y) in va.iter().zip(vb) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    assert!(max_diff <= 1e-5, "killed at step {killed_at}, resumed: weights differ by {max_diff}");
    // A missing checkpoint is no crash: --resume on an empty dir starts fresh. Bad data is a clear error.
    let out = train(method, Path::new("/nonexistent/data"), &tmp.path().join("x"), &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/data"), "{err}");
}

/// BYOL: EMA teacher, momentum buffers, BatchNorm statistics.
#[test]
fn byol_kill_then_resume_gives_the_same_weights() {
    kill_then_resume("byol");
}

/// MoCo v2: additionally the queue and its pointer.
#[test]
fn moco_kill_then_resume_gives_the_same_weights_and_queue() {
    kill_then_resume("moco_v2");
}

fn safetensors_tensors(p: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(k, v)| (k, v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        .collect()
}

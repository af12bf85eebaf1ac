//! `pretext train` writes a complete run dir, `--config` re-runs it exactly,
//! `pretext eval` reads the exported backbone, and a diverging run stops with
//! a clear error that leaves the last good checkpoint.

use std::path::Path;
use std::process::Command;

fn write_dataset(root: &Path) {
    for (split, n) in [("train", 32), ("test", 16)] {
        for (c, class) in ["a", "b"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n / 2 {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    let v = if c == 0 { (x * 8 + i) % 256 } else { (y * 8 + i) % 256 };
                    image::Rgb([v as u8, 128, (255 - v) as u8])
                });
                img.save(dir.join(format!("{i:03}.png"))).unwrap();
            }
        }
    }
}

fn pretext(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pretext"));
    c.env("PRETEXT_CACHE", data.parent().unwrap().join("cache"));
    c
}

fn weights(p: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(k, t)| (k, t.data().to_vec())).collect();
    v.sort();
    v
}

#[test]
fn run_dir_config_rerun_and_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let run = tmp.path().join("run");
    let out = pretext(&data)
        .args(["train", "--method", "simclr", "--backbone", "resnet18-cifar", "--width", "4", "--epochs", "2", "--batch-size", "8", "--threads", "1", "--quiet"])
        .arg("--data").arg(&data).arg("--out").arg(&run)
        .output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("finished after 8 steps") && stdout.contains("k-NN top-1"), "{stdout}");
    for f in ["config.toml", "metrics.jsonl", "checkpoint.safetensors", "checkpoint.json", "backbone.safetensors", "loss.png", "knn.png"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().filter(|l| l.contains("knn20")).count() >= 2, "{metrics}");
    let bytes = std::fs::read(run.join("backbone.safetensors")).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = md.metadata().clone().unwrap();
    let arch: pretext_models::BackboneConfig = serde_json::from_str(&md["pretext.arch"]).unwrap();
    assert!(matches!(arch, pretext_models::BackboneConfig::Resnet(ref r) if r.width == 4));
    assert_eq!(md["pretext.method"], "simclr");
    assert!(weights(&run.join("backbone.safetensors")).iter().any(|(k, _)| k == "layer4.1.bn2.running_var"));
    assert!(!weights(&run.join("backbone.safetensors")).iter().any(|(k, _)| k.starts_with("projection_head")));

    // Re-run from the saved config into another dir: identical weights.
    let again = tmp.path().join("again");
    let st = pretext(&data).arg("train").arg("--config").arg(run.join("config.toml")).arg("--out").arg(&again).arg("--quiet").status().unwrap();
    assert!(st.success());
    assert_eq!(weights(&run.join("backbone.safetensors")), weights(&again.join("backbone.safetensors")));

    // Eval reads the run dir and prints the random-init baseline next to it.
    let out = pretext(&data).args(["eval", "knn"]).arg(&run).arg("--data").arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("checkpoint: k-NN") && s.contains("random init: k-NN"), "{s}");
    // --limit takes an evenly strided subset of each split; --train-limit overrides the train side.
    let out = pretext(&data).args(["eval", "knn"]).arg(&run).arg("--data").arg(&data).args(["--limit", "6", "--no-baseline"]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && s.contains("6 training / 6 test images") && s.contains("checkpoint: k-NN"), "{s}{}", String::from_utf8_lossy(&out.stderr));
    let out = pretext(&data).args(["eval", "knn"]).arg(&run).arg("--data").arg(&data).args(["--limit", "6", "--train-limit", "10", "--no-baseline"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 training / 6 test images"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = pretext(&data).args(["eval", "linear"]).arg(&run).arg("--data").arg(&data).args(["--epochs", "5"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("linear probe top-1"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = pretext(&data).args(["eval", "finetune"]).arg(&run).arg("--data").arg(&data).args(["--epochs", "1", "--no-baseline"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("fine-tuned top-1"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn non_finite_loss_stops_and_keeps_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let run = tmp.path().join("run");
    let out = pretext(&data)
        .args(["train", "--method", "byol", "--backbone", "resnet18-cifar", "--width", "4", "--epochs", "50", "--batch-size", "8", "--threads", "1", "--quiet", "--knn-every=-1", "--checkpoint-every", "1", "--lr", "1e30"])
        .arg("--data").arg(&data).arg("--out").arg(&run)
        .output().unwrap();
    assert!(!out.status.success(), "a run at lr 1e30 must diverge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("non-finite loss") && err.contains("checkpoint.safetensors"), "{err}");
    // The checkpoint left behind is readable and all-finite.
    for (k, bytes) in weights(&run.join("checkpoint.safetensors")) {
        if k.starts_with("student.") && !k.ends_with("num_batches_tracked") {
            assert!(bytes.chunks_exact(4).all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite()), "{k} is not finite");
        }
    }
}

fn tensor_f32(p: &Path, key: &str) -> Vec<f32> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(key).unwrap_or_else(|_| panic!("{key} not in {}", p.display())).data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn first_and_last_knn(run: &Path) -> (String, String) {
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let knn: Vec<String> = metrics.lines().filter_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v.get("knn20").map(|a| format!("{a} {}", v["knn200"]))
    }).collect();
    (knn.first().unwrap().clone(), knn.last().unwrap().clone())
}

#[test]
fn init_weights_loads_student_and_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let base = ["train", "--method", "byol", "--backbone", "resnet18-cifar", "--epochs", "1", "--batch-size", "8", "--limit", "8", "--threads", "1", "--quiet", "--knn-every", "0"];
    // Run A: one step from seed 3; its final student becomes the init file.
    let a = tmp.path().join("a");
    let out = pretext(&data).args(base).args(["--width", "4", "--seed", "3"]).arg("--data").arg(&data).arg("--out").arg(&a).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let init = tmp.path().join("init.safetensors");
    {
        let bytes = std::fs::read(a.join("checkpoint.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().filter_map(|(k, v)| k.strip_prefix("student.").map(|s| (s.to_string(), v))).collect();
        assert!(views.iter().any(|(k, _)| k.starts_with("prediction_head.")));
        safetensors::serialize_to_file(views, None, &init).unwrap();
    }
    // Run B: another seed, lr 0, starting from the file: its step-0 k-NN is
    // A's final k-NN, its student is the file, and its teacher was copied from it
    // (an EMA step between equal tensors leaves them unchanged).
    let b = tmp.path().join("b");
    let out = pretext(&data).args(base).args(["--width", "4", "--seed", "5", "--lr", "0"]).arg("--init-weights").arg(&init).arg("--data").arg(&data).arg("--out").arg(&b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(first_and_last_knn(&b).0, first_and_last_knn(&a).1);
    for key in ["conv1.weight", "layer4.1.conv2.weight", "projection_head.layers.0.weight", "prediction_head.layers.3.weight"] {
        let want = tensor_f32(&init, key);
        assert_eq!(tensor_f32(&b.join("checkpoint.safetensors"), &format!("student.{key}")), want, "student {key}");
        if !key.starts_with("prediction_head") {
            let t = tensor_f32(&b.join("checkpoint.safetensors"), &format!("teacher.{key}"));
            assert!(t.iter().zip(&want).all(|(x, y)| (x - y).abs() <= 1e-6 * y.abs().max(1e-3)), "teacher {key} was not copied from the init weights");
        }
    }
    assert!(std::fs::read_to_string(b.join("config.toml")).unwrap().contains("init_weights"));
    // A width mismatch names the tensor and both shapes.
    let out = pretext(&data).args(base).args(["--width", "8"]).arg("--init-weights").arg(&init).arg("--data").arg(&data).arg("--out").arg(tmp.path().join("c")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("init.safetensors") && err.contains("'conv1.weight' has shape [4, 3, 3, 3], the model expects [8, 3, 3, 3]"), "{err}");
}

fn shape(p: &Path, key: &str) -> Option<Vec<usize>> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(key).ok().map(|t| t.shape().to_vec())
}

/// Heads are sized for the backbone at --width (embed dim 8 x 4 = 32 here), not
/// for the preset's width 64; the head flags override; SimSiam's output BatchNorm
/// has running statistics but no affine parameters.
#[test]
fn head_sizes_follow_width_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let base = ["train", "--backbone", "resnet18-cifar", "--width", "4", "--epochs", "1", "--batch-size", "8", "--limit", "8", "--threads", "1", "--quiet", "--knn-every=-1"];
    let run = tmp.path().join("byol");
    let out = pretext(&data).args(base).args(["--method", "byol"]).arg("--data").arg(&data).arg("--out").arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    // BYOL preset: hidden = 4 x embed dim clamped to [64, 2048], out = min(256, hidden).
    assert_eq!((cfg["method"]["proj_hidden"].as_integer(), cfg["method"]["proj_out"].as_integer()), (Some(128), Some(128)));
    assert_eq!(shape(&run.join("checkpoint.safetensors"), "student.projection_head.layers.0.weight"), Some(vec![128, 32]));

    let run = tmp.path().join("simsiam");
    let out = pretext(&data).args(base).args(["--method", "simsiam", "--proj-hidden", "24", "--proj-out", "12", "--pred-hidden", "6"]).arg("--data").arg(&data).arg("--out").arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ck = run.join("checkpoint.safetensors");
    assert_eq!(shape(&ck, "student.projection_head.layers.0.weight"), Some(vec![24, 32]));
    assert_eq!(shape(&ck, "student.projection_head.layers.6.weight"), Some(vec![12, 24]));
    assert_eq!(shape(&ck, "student.prediction_head.layers.0.weight"), Some(vec![6, 12]));
    assert_eq!(shape(&ck, "student.projection_head.layers.7.running_var"), Some(vec![12]));
    assert_eq!(shape(&ck, "student.projection_head.layers.7.weight"), None, "SimSiam's output BatchNorm is non-affine");

    let out = pretext(&data).args(base).args(["--method", "simclr", "--proj-out", "0"]).arg("--data").arg(&data).arg("--out").arg(tmp.path().join("bad")).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--proj-out must be positive"), "{}", String::from_utf8_lossy(&out.stderr));
}

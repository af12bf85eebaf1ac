//! `kill -9` in the middle of `pretext train`, then `--resume`: the resumed
//! invocation starts at the killed one's last checkpoint, and the run ends with
//! bit-identical weights, teacher, method state and optimizer state to an
//! uninterrupted run with the same seed, at one libtorch thread.

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

fn train(method: &str, backbone: &[&str], data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pretext"));
    c.args(["train", "--method", method]).args(backbone);
    c.args(["--epochs", "20", "--batch-size", "16", "--seed", "7", "--checkpoint-every", "1", "--knn-every=-1", "--threads", "1", "--quiet"]);
    c.arg("--data").arg(data).arg("--out").arg(out).args(extra);
    c.env("PRETEXT_CACHE", data.parent().unwrap().join("cache"));
    c
}

// Width 8: at `--width 4` the trainer segfaults at main fcb390f (all methods, also before this test changed).
const RESNET: &[&str] = &["--backbone", "resnet18-cifar", "--width", "8"];

fn step_of(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("checkpoint.json")).ok().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()).and_then(|v| v["step"].as_u64()).unwrap_or(0)
}

/// The `step` of every line of a run's metrics.jsonl.
fn metric_steps(dir: &Path) -> Vec<u64> {
    let s = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    s.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect()
}

/// Trains 60 steps (3 per epoch) uninterrupted, then again killed with SIGKILL
/// after step 10 and resumed; the resumed invocation must say and log that it
/// starts where the killed one stopped, and end with bit-identical tensors
/// (every `student.`, `teacher.`, `state.` and `optim.` tensor, every dtype).
fn kill_then_resume(method: &str, backbone: &[&str], extra: &[&str], parts: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let full = tmp.path().join("full");
    let st = train(method, backbone, &data, &full, extra).status().unwrap();
    assert!(st.success());
    assert_eq!(step_of(&full), 60);

    let cut = tmp.path().join("cut");
    let mut child = train(method, backbone, &data, &cut, extra).spawn().unwrap();
    let t0 = Instant::now();
    while step_of(&cut) < 10 {
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint after 5 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let killed_at = step_of(&cut);
    assert!(killed_at < 60, "the run finished before it could be killed; make it longer");
    let logged_before = metric_steps(&cut).len();
    let out = train(method, backbone, &data, &cut, &[extra, &["--resume"]].concat()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(step_of(&cut), 60);
    // It resumed at the killed run's last checkpoint, not at step 0: it says so, and
    // its metrics are exactly those of steps killed_at+1..=60 (every epoch end, 3 steps).
    let said = format!("resuming {} at step {killed_at} (epoch {})", cut.display(), killed_at / 3);
    assert!(err.contains(&said), "expected `{said}` on stderr:\n{err}");
    let logged: Vec<u64> = metric_steps(&cut).split_off(logged_before);
    let want: Vec<u64> = (killed_at + 1..=60).filter(|s| s % 3 == 0 || s % 20 == 0).collect();
    assert_eq!(logged, want, "metrics of the resumed invocation (killed at step {killed_at})");

    let a = safetensors_bytes(&full.join("checkpoint.safetensors"));
    let b = safetensors_bytes(&cut.join("checkpoint.safetensors"));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for p in parts {
        assert!(a.keys().any(|k| k.starts_with(p)), "{method}: no `{p}*` tensor in the checkpoint: {:?}", a.keys().collect::<Vec<_>>());
    }
    let differ: Vec<&String> = a.iter().filter(|(k, va)| b[*k] != **va).map(|(k, _)| k).collect();
    assert!(differ.is_empty(), "killed at step {killed_at}, resumed: {} of {} tensors differ from the uninterrupted run, e.g. {:?}", differ.len(), a.len(), &differ[..differ.len().min(5)]);
    // A missing checkpoint is no crash: --resume on an empty dir starts fresh. Bad data is a clear error.
    let out = train(method, backbone, Path::new("/nonexistent/data"), &tmp.path().join("x"), extra).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/data"), "{err}");
}

/// BYOL: EMA teacher, momentum buffers, BatchNorm statistics.
#[test]
fn byol_kill_then_resume_gives_the_same_weights() {
    kill_then_resume("byol", RESNET, &[], &["student.", "teacher.", "optim."]);
}

/// MoCo v2: additionally the queue and its pointer.
#[test]
fn moco_kill_then_resume_gives_the_same_weights_and_queue() {
    kill_then_resume("moco_v2", RESNET, &[], &["student.", "teacher.", "state.", "optim."]);
}

/// DINO: AdamW moments, the center, the teacher-temperature warmup and the
/// frozen last layer (schedules of the step), two local crops.
#[test]
fn dino_kill_then_resume_gives_the_same_weights_and_center() {
    let extra = ["--n-local", "2", "--proj-hidden", "32", "--warmup-teacher-epochs", "10", "--freeze-last-layer", "2"];
    kill_then_resume("dino", RESNET, &extra, &["student.", "teacher.", "state.", "optim."]);
}

/// MAE: AdamW moments and the random masks (a one-block ViT).
#[test]
fn mae_kill_then_resume_gives_the_same_weights() {
    kill_then_resume("mae", &["--backbone", "vit-tiny-cifar", "--depth", "1"], &[], &["student.", "optim."]);
}

/// Every tensor of a safetensors file: name -> (dtype, shape, raw bytes).
fn safetensors_bytes(p: &Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(k, v)| (k, (format!("{:?}", v.dtype()), v.shape().to_vec(), v.data().to_vec()))).collect()
}

/// NNCLR: the support set and its pointer (40 rows at batch 16: the third batch is cut at the end).
#[test]
fn nnclr_kill_then_resume_gives_the_same_weights_and_support_set() {
    kill_then_resume("nnclr", RESNET, &["--support-size", "40"], &["student.", "state.", "optim."]);
}

/// TiCo: the momentum encoder and the running covariance.
#[test]
fn tico_kill_then_resume_gives_the_same_weights_and_covariance() {
    kill_then_resume("tico", RESNET, &[], &["student.", "teacher.", "state.", "optim."]);
}

/// SwAV: both queues and their pointers (used from epoch 2), the prototypes frozen for 5 steps, two local crops.
#[test]
fn swav_kill_then_resume_gives_the_same_weights_and_queues() {
    let extra = ["--n-local", "2", "--queue-length", "40", "--queue-start-epoch", "2", "--freeze-prototypes-steps", "5"];
    kill_then_resume("swav", RESNET, &extra, &["student.", "state.", "optim."]);
}

/// NPID: the memory bank (one row per training image, fed by the images' indices) and NCE's Z.
#[test]
fn npid_kill_then_resume_gives_the_same_weights_and_memory_bank() {
    kill_then_resume("npid", RESNET, &["--nce-k", "64"], &["student.", "state.memory", "state.nce_z", "optim."]);
}

/// PIRL: the memory bank, Z, and the jigsaw transform drawn from the step's RNG.
#[test]
fn pirl_kill_then_resume_gives_the_same_weights_and_memory_bank() {
    kill_then_resume("pirl", RESNET, &["--nce-k", "64"], &["student.", "state.memory", "state.nce_z", "optim."]);
}

/// Colorization: the running prior counts of the ab bins (class rebalancing) and the 1-channel stem.
#[test]
fn colorization_kill_then_resume_gives_the_same_weights_and_prior() {
    kill_then_resume("colorization", RESNET, &["--head-hidden", "8"], &["student.", "state.prior_counts", "optim."]);
}

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

/// A truncated image in the data stops training by default, naming it;
/// `--on-bad-image skip` trains without it and lists it.
#[test]
fn bad_image_stops_training_or_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let png = std::fs::read(data.join("train/a/000.png")).unwrap();
    let bad = data.join("train/b/cut.png");
    std::fs::write(&bad, &png[..png.len() / 2]).unwrap();
    let run = tmp.path().join("run");
    let train = |extra: &[&str]| {
        pretext(&data)
            .args(["train", "--method", "simclr", "--backbone", "resnet18-cifar", "--width", "4", "--epochs", "1", "--batch-size", "8", "--stop-after", "1", "--knn-every=-1", "--threads", "1", "--quiet"])
            .arg("--data").arg(&data).arg("--out").arg(&run).args(extra)
            .output().unwrap()
    };
    let out = train(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("1 image file does not decode") && err.contains(&format!("{}: truncated PNG", bad.display())), "{err}");
    assert!(!run.join("checkpoint.safetensors").exists());
    let out = train(&["--on-bad-image", "skip"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("skipping 1 image file of {} that does not decode:", data.display())) && err.contains("train/b/cut.png: truncated PNG"), "{err}");
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("on_bad_image = \"skip\""));
    let out = train(&["--on-bad-image", "ignore"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("expected skip or error"), "{err}");
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
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("method.proj_out = 0 is not allowed: expected an integer in [1, inf)"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `pretext train --help` lists every method of the registry (name, aliases,
/// summary) and one flag per method setting with its defaults.
#[test]
fn help_is_generated_from_the_registry() {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext")).args(["train", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for m in pretext_trainer::methods::REGISTRY {
        assert!(help.contains(m.name) && help.contains(m.summary), "{} missing from:\n{help}", m.name);
        for a in m.aliases {
            assert!(help.contains(a), "alias {a} missing");
        }
        for f in m.fields {
            assert!(help.contains(&f.flag()) && help.contains(&format!("{} {}", m.name, f.default)), "{} {} missing from:\n{help}", m.name, f.flag());
        }
    }
}

/// A bad setting: how it is given, and the run's method and backbone.
struct Bad {
    setting: &'static str,
    method: &'static str,
    backbone: &'static str,
    /// Extra flags, or `None` for a config-file case.
    flags: Option<Vec<&'static str>>,
    /// Config-file edit: `(section, key, TOML value)`; section "" is the top level.
    edit: Option<(&'static str, &'static str, &'static str)>,
    /// What the message must name.
    must: &'static [&'static str],
}

fn flag(setting: &'static str, method: &'static str, backbone: &'static str, flags: &[&'static str], must: &'static [&'static str]) -> Bad {
    Bad { setting, method, backbone, flags: Some(flags.to_vec()), edit: None, must }
}

fn file(setting: &'static str, method: &'static str, backbone: &'static str, edit: (&'static str, &'static str, &'static str), must: &'static [&'static str]) -> Bad {
    Bad { setting, method, backbone, flags: None, edit: Some(edit), must }
}

/// Every nonsensical setting, from a flag and from a `--config` file, is
/// refused before training with the field, the value and the allowed range;
/// `docs/config-errors.md` is the table of these cases and their messages
/// (`UPDATE_DOCS=1` rewrites it).
#[test]
fn bad_settings_are_refused_with_field_value_and_range() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let (r18, vit) = ("resnet18-cifar", "vit-tiny-cifar");
    let cases = vec![
        flag("unknown method", "nope", r18, &[], &["method.name = nope", "one of simclr"]),
        flag("epochs 0", "simclr", r18, &["--epochs", "0"], &["epochs = 0", "[1, inf)"]),
        flag("batch size 0", "simclr", r18, &["--batch-size", "0"], &["batch_size = 0", "[1, inf)"]),
        flag("batch size larger than the data", "simclr", r18, &["--batch-size", "64"], &["batch_size = 64", "[1, 32]"]),
        flag("batch size larger than --limit", "simclr", r18, &["--limit", "4"], &["batch_size = 8", "[1, 4]", "limit = 4"]),
        flag("non-finite lr", "simclr", r18, &["--lr", "NaN"], &["lr = NaN", "[0, inf)"]),
        flag("infinite lr", "simclr", r18, &["--lr", "inf"], &["lr = inf", "[0, inf)"]),
        flag("negative lr", "simclr", r18, &["--lr=-0.1"], &["lr = -0.1", "[0, inf)"]),
        flag("negative weight decay", "simclr", r18, &["--weight-decay=-1"], &["weight_decay = -1", "[0, inf)"]),
        flag("warmup longer than training", "simclr", r18, &["--warmup-epochs", "3"], &["warmup_epochs = 3", "[0, 2]"]),
        flag("negative clip_grad", "simclr", r18, &["--clip-grad=-1"], &["clip_grad = -1", "[0, inf)"]),
        flag("negative threads", "simclr", r18, &["--threads=-2"], &["threads = -2", "[0, inf)"]),
        flag("negative max_minutes", "simclr", r18, &["--max-minutes=-1"], &["max_minutes = -1", "[0, inf)"]),
        flag("non-finite knn_every", "simclr", r18, &["--knn-every", "NaN"], &["knn_every = NaN", "finite"]),
        flag("width 0", "simclr", r18, &["--width", "0"], &["width = 0", "[1, 4096]"]),
        flag("width on a ViT", "simclr", vit, &["--width", "8"], &["width = 8", "ResNets only"]),
        flag("depth 0", "simclr", vit, &["--depth", "0"], &["depth = 0", "[1, 64]"]),
        flag("unknown device", "simclr", r18, &["--device", "tpu"], &["unknown device 'tpu'", "cpu, cuda or cuda:N"]),
        flag("unknown backbone", "simclr", "resnet19", &[], &["backbone = resnet19"]),
        flag("temperature 0", "simclr", r18, &["--temperature", "0"], &["method.temperature = 0", "(0, inf)"]),
        flag("projection out 0", "simclr", r18, &["--proj-out", "0"], &["method.proj_out = 0", "[1, inf)"]),
        flag("a setting the method does not have", "simclr", r18, &["--queue-size", "10"], &["--queue-size", "moco_v2", "not of simclr"]),
        flag("queue size 0", "moco", r18, &["--queue-size", "0"], &["method.queue_size = 0", "[1, inf)"]),
        flag("tau above 1", "byol", r18, &["--tau", "1.5"], &["method.tau = 1.5", "[0, 1]"]),
        flag("prediction hidden not an integer", "simsiam", r18, &["--pred-hidden", "2.5"], &["method.pred_hidden = 2.5", "an integer in [1, inf)"]),
        flag("local crops beyond the limit", "dino", r18, &["--n-local", "100"], &["method.n_local = 100", "[0, 32]"]),
        flag("negative local crops", "dino", r18, &["--n-local=-1"], &["method.n_local = -1", "[0, 32]"]),
        flag("student temperature 0", "dino", r18, &["--student-temp", "0"], &["method.student_temp = 0", "(0, inf)"]),
        flag("center momentum above 1", "dino", r18, &["--center-momentum", "2"], &["method.center_momentum = 2", "[0, 1]"]),
        flag("mask ratio 1.5", "mae", vit, &["--mask-ratio", "1.5"], &["method.mask_ratio = 1.5", "[0, 1)"]),
        flag("mask ratio that keeps no patch", "mae", vit, &["--mask-ratio", "0.995"], &["method.mask_ratio = 0.995", "64 patches"]),
        flag("decoder heads not dividing decoder dim", "mae", vit, &["--decoder-heads", "3"], &["method.decoder_heads = 3", "divisor of method.decoder_dim = 128"]),
        flag("decoder depth 0", "mae", vit, &["--decoder-depth", "0"], &["method.decoder_depth = 0", "[1, inf)"]),
        flag("MAE on a ResNet", "mae", r18, &[], &["backbone", "a ViT"]),
        flag("rotation head hidden negative", "rotation", r18, &["--head-hidden=-1"], &["method.head_hidden = -1", "[0, inf)"]),
        flag("one jigsaw permutation", "jigsaw", r18, &["--num-permutations", "1"], &["method.num_permutations = 1", "[2, 1000]"]),
        flag("NPID bank momentum above 1", "npid", r18, &["--bank-momentum", "1.5"], &["method.bank_momentum = 1.5", "[0, 1]"]),
        flag("NPID negative noise rows", "npid", r18, &["--nce-k=-1"], &["method.nce_k = -1", "[0, inf)"]),
        flag("counting margin negative", "counting", r18, &["--margin=-1"], &["method.margin = -1", "[0, inf)"]),
        flag("context prediction fc6 width 0", "context_prediction", r18, &["--proj-out", "0"], &["method.proj_out = 0", "[1, inf)"]),
        flag("PIRL lambda above 1", "pirl", r18, &["--lambda", "2"], &["method.lambda = 2", "[0, 1]"]),
        flag("context encoder on a ViT", "context_encoder", vit, &[], &["backbone = a ViT", "a ResNet for context_encoder"]),
        flag("colorization on a ViT", "colorization", vit, &[], &["backbone = a ViT", "a ResNet for colorization"]),
        flag("colorization lambda 0", "colorization", r18, &["--rebalance-lambda", "0"], &["method.rebalance_lambda = 0", "(0, 1]"]),
        flag("colorization sigma 0", "colorization", r18, &["--sigma", "0"], &["method.sigma = 0", "(0, inf)"]),
        flag("CPC steps beyond the patch rows", "cpc_v2", r18, &["--steps", "7"], &["method.steps = 7", "at most 6", "7 rows of 8-px patches on 32-px views"]),
        flag("CPC patch larger than the views", "cpc_v2", r18, &["--patch-size", "40"], &["method.patch_size = 40", "at most the views' 32 px"]),
        flag("CPC context layers 0", "cpc_v2", r18, &["--context-layers", "0"], &["method.context_layers = 0", "[1, inf)"]),
        file("temperature 0", "simclr", r18, ("method", "temperature", "0.0"), &["method.temperature = 0", "(0, inf)"]),
        file("queue size 0", "moco_v2", r18, ("method", "queue_size", "0"), &["method.queue_size = 0", "[1, inf)"]),
        file("mask ratio 1.5", "mae", vit, ("method", "mask_ratio", "1.5"), &["method.mask_ratio = 1.5", "[0, 1)"]),
        file("decoder heads not dividing decoder dim", "mae", vit, ("method", "decoder_heads", "3"), &["method.decoder_heads = 3", "divisor"]),
        file("local crops beyond the limit", "dino", r18, ("method", "n_local", "100"), &["method.n_local = 100", "[0, 32]"]),
        file("teacher temperature NaN", "dino", r18, ("method", "teacher_temp", "nan"), &["method.teacher_temp = NaN", "(0, inf)"]),
        file("unknown method", "simclr", r18, ("method", "name", "\"nope\""), &["method.name = nope", "one of simclr"]),
        file("a setting of another method", "simclr", r18, ("method", "queue_size", "4096"), &["unknown field `queue_size`", "proj_hidden, proj_out, temperature"]),
        file("batch size 0", "simclr", r18, ("", "batch_size", "0"), &["batch_size = 0", "[1, inf)"]),
        file("epochs 0", "simclr", r18, ("", "epochs", "0"), &["epochs = 0", "[1, inf)"]),
        file("non-finite lr", "simclr", r18, ("", "lr", "nan"), &["lr = NaN", "[0, inf)"]),
        file("negative final weight decay", "simclr", r18, ("", "final_weight_decay", "-1.0"), &["final_weight_decay = -1", "[0, inf)"]),
        file("SGD momentum above 1", "simclr", r18, ("", "momentum", "1.5"), &["momentum = 1.5", "[0, 1]"]),
        file("negative threads", "simclr", r18, ("", "threads", "-1"), &["threads = -1", "[0, inf)"]),
        file("a misspelt setting", "simclr", r18, ("", "epoch", "3"), &["unknown field `epoch`"]),
        file("unknown bad-image policy", "simclr", r18, ("", "on_bad_image", "\"ignore\""), &["on_bad_image", "unknown variant `ignore`", "`error`", "`skip`"]),
    ];
    // The run's settings unless the case sets them itself (clap refuses a flag given twice).
    let base = |flags: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec!["train", "--quiet"];
        for (k, val) in [("--epochs", "--epochs=2"), ("--batch-size", "--batch-size=8"), ("--threads", "--threads=1"), ("--knn-every", "--knn-every=-1")] {
            if !flags.iter().any(|f| f.split('=').next() == Some(k)) {
                v.push(val);
            }
        }
        v
    };
    let mut table = String::from("# Refused settings\n\nGenerated by `tests/train_cli.rs` (`bad_settings_are_refused_with_field_value_and_range`), which runs each case through `pretext train` and checks the message; do not edit by hand: `UPDATE_DOCS=1 cargo nextest run -p pretext --test train_cli -E 'test(bad_settings)'` rewrites it. Every case fails before libtorch runs a step. `<tmp>` stands for the test's temporary dir.\n\n| setting | given as | error |\n|---|---|---|\n");
    for (i, c) in cases.iter().enumerate() {
        let run = tmp.path().join(format!("run{i}"));
        let mut cmd = pretext(&data);
        cmd.args(base(c.flags.as_deref().unwrap_or(&[]))).args(["--method", c.method, "--backbone", c.backbone]).arg("--data").arg(&data).arg("--out").arg(&run);
        let given = match (&c.flags, c.edit) {
            (Some(flags), _) => {
                cmd.args(flags);
                let mut g = format!("`--method {} --backbone {}", c.method, c.backbone);
                for f in flags {
                    g += &format!(" {f}");
                }
                g + "`"
            }
            (None, Some((section, key, value))) => {
                // A valid config of the method, edited: the file a user re-runs with --config.
                let out = pretext(&data).args(base(&[])).args(["--method", c.method, "--backbone", c.backbone, "--dry-run"]).arg("--data").arg(&data).arg("--out").arg(&run).output().unwrap();
                assert!(out.status.success(), "{}: {}", c.setting, String::from_utf8_lossy(&out.stderr));
                let mut t: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
                let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}")).unwrap()["v"].clone();
                let target = if section.is_empty() { &mut t } else { t.get_mut(section).unwrap().as_table_mut().unwrap() };
                target.insert(key.to_string(), v);
                let path = tmp.path().join(format!("bad{i}.toml"));
                std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
                cmd = pretext(&data);
                cmd.args(["train", "--quiet", "--config"]).arg(&path);
                format!("config file: `{}{key} = {value}`", if section.is_empty() { String::new() } else { format!("[{section}] ") })
            }
            _ => unreachable!(),
        };
        let out = cmd.env("RUST_BACKTRACE", "0").env("RUST_LIB_BACKTRACE", "0").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).replace(&tmp.path().display().to_string(), "<tmp>");
        let err = err.split("Stack backtrace:").next().unwrap_or_default().to_string();
        assert!(!out.status.success(), "{} ({given}) was accepted", c.setting);
        for m in c.must {
            assert!(err.contains(m), "{} ({given}): the message lacks {m:?}:\n{err}", c.setting);
        }
        assert!(!err.contains("panicked") && !err.contains("libtorch") && !run.join("checkpoint.safetensors").exists(), "{}: {err}", c.setting);
        let msg: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "Caused by:").collect();
        let msg = msg.join(" / ").trim_start_matches("Error: ").replace('|', "\\|");
        table += &format!("| {} | {} | {} |\n", c.setting, given.replace('|', "\\|"), msg);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config-errors.md");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &table).unwrap();
    }
    assert!(std::fs::read_to_string(&path).unwrap_or_default() == table, "{} is not the table this test generates: rerun with UPDATE_DOCS=1", path.display());
}

/// A colorization run trains a 1-channel ResNet; its k-NN (during training and
/// `eval knn`), linear probe and fine-tuning feed it the L channel.
#[test]
fn colorization_run_evaluates_its_one_channel_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let run = tmp.path().join("run");
    let out = pretext(&data)
        .args(["train", "--method", "colorization", "--backbone", "resnet18-cifar", "--width", "8", "--head-hidden", "8", "--epochs", "1", "--batch-size", "8", "--threads", "1", "--quiet"])
        .arg("--data").arg(&data).arg("--out").arg(&run)
        .output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("k-NN top-1"), "{}", String::from_utf8_lossy(&out.stdout));
    let bytes = std::fs::read(run.join("backbone.safetensors")).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let arch: pretext_models::BackboneConfig = serde_json::from_str(&md.metadata().clone().unwrap()["pretext.arch"]).unwrap();
    assert_eq!(arch.in_channels(), 1);
    assert!(weights(&run.join("backbone.safetensors")).iter().any(|(k, v)| k == "conv1.weight" && v.len() == 8 * 3 * 3 * 4), "conv1.weight is not (8, 1, 3, 3)");
    for (args, said) in [(&["knn"][..], "checkpoint: k-NN"), (&["linear", "--epochs", "2"][..], "linear probe top-1"), (&["finetune", "--epochs", "1", "--no-baseline"][..], "fine-tuned top-1")] {
        let out = pretext(&data).arg("eval").args(&args[..1]).arg(&run).arg("--data").arg(&data).args(&args[1..]).output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(said), "eval {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}

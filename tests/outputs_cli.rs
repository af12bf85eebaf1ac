//! Every graph output, end to end: `pretext extract --output <name>` for a
//! classifier's logits (torchvision ResNet-18, against PyTorch) and a SimCLR
//! projection head from a 2-step run (against lightly's head applied to the
//! extracted features); an unknown output name lists the graph's outputs; and
//! `pretext export --verify` fails on a NaN output, naming output and backend.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use pretext_runtime::compare::max_abs_diff;

/// Max abs difference to PyTorch.
const TOL: f64 = pretext_runtime::compare::tol::F32 as f64;

fn pretext(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env("PRETEXT_CACHE", std::env::temp_dir().join("pretext-outputs-test-cache"))
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs `script` in the venv python (fails, never skips, without it).
fn python(script: &str, args: &[&Path]) {
    let py = std::env::var("PRETEXT_PYTHON").expect("PRETEXT_PYTHON must point at the venv python (set by .cargo/config.toml from scripts/setup.sh)");
    let out = Command::new(&py).arg("-c").arg(script).args(args).output().unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    assert!(out.status.success(), "python failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn resnet18_state_dict(dir: &Path) -> PathBuf {
    let gz = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/resnet18.safetensors.gz");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap()).read_to_end(&mut bytes).unwrap();
    let out = dir.join("resnet18.safetensors");
    std::fs::write(&out, bytes).unwrap();
    out
}

/// `n` crops of `size` x `size` from a real photo, as lossless PNGs (so that
/// PIL and the image crate read the same pixels, and at the model's input size
/// the runtime's resize and crop are the identity).
fn photo_crops(dir: &Path, n: u32, size: u32) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/raccoon-151.rgb.png");
    let img = image::open(src).unwrap().to_rgb8();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("crop{i}.png"));
            image::imageops::crop_imm(&img, 10 + 40 * i, 5 + 20 * i, size, size).to_image().save(&p).unwrap();
            p
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Preprocessing as the ONNX metadata says (mean/std; images already at the input size).
const PY_INPUT: &str = "
import json, sys, numpy as np, onnx, torch
from PIL import Image
from safetensors.torch import load_file
def inputs(model, imgs):
    meta = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
    mean = np.array(json.loads(meta['pretext.mean']), dtype=np.float32)
    std = np.array(json.loads(meta['pretext.std']), dtype=np.float32)
    x = [((np.asarray(Image.open(p).convert('RGB'), dtype=np.float32) / 255 - mean) / std).transpose(2, 0, 1) for p in imgs]
    return torch.from_numpy(np.stack(x))
";

#[test]
fn extract_classifier_logits_match_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let ck = resnet18_state_dict(dir.path());
    let onnx = dir.path().join("r18.onnx");
    let (ok, out) = pretext(&["export", s(&ck), "-o", s(&onnx), "--arch", "resnet18", "--image-size", "64", "--with-head", "fc"]);
    assert!(ok, "{out}");
    let imgs = photo_crops(dir.path(), 3, 64);
    let logits = dir.path().join("logits.npy");
    let mut args = vec!["extract", s(&onnx)];
    args.extend(imgs.iter().map(|p| s(p)));
    let (ok, out) = pretext(&[&args[..], &["-o", s(&logits), "--output", "fc", "--resize", "64"]].concat());
    assert!(ok, "{out}");
    let feats = dir.path().join("features.npy");
    let (ok, out) = pretext(&[&args[..], &["-o", s(&feats), "--resize", "64"]].concat());
    assert!(ok, "{out}");
    assert_eq!(pretext_runtime::npy::read_f32(&feats).unwrap().shape(), [3, 512]);

    let want = dir.path().join("want.npy");
    let script = format!(
        "{PY_INPUT}
import torchvision
model, ck, out, *imgs = sys.argv[1:]
m = torchvision.models.resnet18()
m.load_state_dict(load_file(ck))
m.eval()
with torch.no_grad():
    np.save(out, m(inputs(model, imgs)).numpy().astype(np.float32))
"
    );
    python(&script, &[&[onnx.as_path(), &ck, &want][..], &imgs.iter().map(|p| p.as_path()).collect::<Vec<_>>()].concat());
    let got = pretext_runtime::npy::read_f32(&logits).unwrap();
    let want = pretext_runtime::npy::read_f32(&want).unwrap();
    assert_eq!(got.shape(), [3, 1000]);
    assert_eq!(got.shape(), want.shape());
    let d = max_abs_diff(&got, &want);
    eprintln!("resnet18 logits: max |pretext extract - PyTorch| = {d:.3e} (max |logit| {:.3})", pretext_runtime::compare::max_abs(&want));
    assert!(d <= TOL, "logits differ from PyTorch by {d}");

    // An unknown output is an error listing the graph's outputs.
    let (ok, out) = pretext(&[&args[..], &["-o", s(&logits), "--output", "logits"]].concat());
    assert!(!ok && out.contains("no output named `logits`") && out.contains(r#"["features", "fc"]"#), "{out}");
}

/// Two classes of 32x32 PNGs in `train/<class>/`.
fn write_dataset(root: &Path, n: u32) {
    for class in ["a", "b"] {
        let dir = root.join("train").join(class);
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

#[test]
fn extract_simclr_projection_head_matches_lightly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data, 32);
    let run = dir.path().join("run");
    let (ok, out) = pretext(&[
        "train", "--method", "simclr", "--backbone", "resnet18-cifar", "--epochs", "1", "--batch-size", "16", "--knn-every=-1", "--seed", "3",
        "--quiet", "--data", s(&data), "--out", s(&run),
    ]);
    assert!(ok && out.contains("after 2 steps"), "{out}");
    let ck = run.join("checkpoint.safetensors");
    let onnx = dir.path().join("simclr.onnx");
    // The run's checkpoint names its architecture, prefix and heads: no --arch or --prefix.
    let (ok, out) = pretext(&["export", s(&ck), "-o", s(&onnx), "--with-head", "projection_head"]);
    assert!(ok, "{out}");
    let imgs: Vec<PathBuf> = (0..3).map(|i| data.join(format!("train/{}/{i:03}.png", ["a", "b"][i % 2]))).collect();
    let mut args = vec!["extract", s(&onnx)];
    args.extend(imgs.iter().map(|p| s(p)));
    let (feats, head) = (dir.path().join("features.npy"), dir.path().join("head.npy"));
    let (ok, out) = pretext(&[&args[..], &["-o", s(&feats)]].concat());
    assert!(ok, "{out}");
    let (ok, out) = pretext(&[&args[..], &["-o", s(&head), "--output", "projection_head"]].concat());
    assert!(ok, "{out}");

    // lightly's SimCLRProjectionHead with the run's head weights (strict load: the
    // names must be lightly's), in eval mode, on the extracted features.
    let want = dir.path().join("want.npy");
    let script = "
import sys, numpy as np, torch
from safetensors.torch import load_file
from lightly.models.modules.heads import SimCLRProjectionHead
ck, feats, out = sys.argv[1:]
p = 'student.projection_head.'
sd = {k[len(p):]: v for k, v in load_file(ck).items() if k.startswith(p)}
h = SimCLRProjectionHead(sd['layers.0.weight'].shape[1], sd['layers.0.weight'].shape[0], sd['layers.3.weight'].shape[0])
h.load_state_dict(sd)
h.eval()
with torch.no_grad():
    np.save(out, h(torch.from_numpy(np.load(feats))).numpy().astype(np.float32))
";
    python(script, &[&ck, &feats, &want]);
    let got = pretext_runtime::npy::read_f32(&head).unwrap();
    let want = pretext_runtime::npy::read_f32(&want).unwrap();
    assert_eq!(got.shape(), want.shape());
    assert_eq!(got.shape()[0], 3);
    let d = max_abs_diff(&got, &want);
    eprintln!("simclr projection head {:?}: max |pretext extract - lightly| = {d:.3e} (max |value| {:.3})", got.shape(), pretext_runtime::compare::max_abs(&want));
    assert!(d <= TOL, "projection head differs from lightly's by {d}");
}

/// A copy of `src` with the first value of `key` replaced by NaN.
fn with_nan(src: &Path, key: &str, dst: &Path) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    let t = tensors.iter_mut().find(|t| t.0 == key).unwrap();
    match t.1 {
        safetensors::Dtype::F32 => t.3[..4].copy_from_slice(&f32::NAN.to_le_bytes()),
        safetensors::Dtype::F16 => t.3[..2].copy_from_slice(&0x7e00u16.to_le_bytes()),
        d => panic!("{key} is {d:?}"),
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors.iter().map(|(k, d, sh, b)| (k.clone(), safetensors::tensor::TensorView::new(*d, sh.clone(), b).unwrap())).collect();
    std::fs::write(dst, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn export_verify_fails_on_a_nan_output() {
    let dir = tempfile::tempdir().unwrap();
    let ck = resnet18_state_dict(dir.path());
    let bad = dir.path().join("nan.safetensors");
    with_nan(&ck, "fc.weight", &bad);
    let onnx = dir.path().join("nan.onnx");
    // Row 0 of the classifier is NaN, so logit 0 is NaN for every image, in every backend;
    // the features stay finite.
    let (ok, out) = pretext(&["export", s(&bad), "-o", s(&onnx), "--arch", "resnet18", "--image-size", "64", "--with-head", "fc", "--verify", "--verify-count", "2"]);
    assert!(!ok, "a NaN output passed --verify:\n{out}");
    for backend in ["tch (the reference)", "tract", "onnxruntime"] {
        assert!(out.contains(&format!("output `fc` from {backend}: 2 of 2000 values")), "no line for {backend}:\n{out}");
    }
    assert!(out.contains("non-finite") && !out.contains("output `features` from"), "{out}");
    // fp16 (checked by cosine), a NaN in a BatchNorm's running variance: the reference
    // features are NaN (how each backend's ReLU treats NaN differs, so only tch is named).
    let bad16 = dir.path().join("nan_bn.safetensors");
    with_nan(&ck, "layer4.1.bn2.running_var", &bad16);
    let (ok, out) = pretext(&["export", s(&bad16), "-o", s(&onnx), "--arch", "resnet18", "--image-size", "64", "--fp16", "--verify", "--verify-count", "2"]);
    assert!(!ok, "a NaN output passed --verify --fp16:\n{out}");
    assert!(out.contains("non-finite") && out.contains("output `features` from tch (the reference)"), "{out}");
}

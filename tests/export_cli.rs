//! `pretext export` end to end: a torchvision state dict imported unchanged,
//! --verify's table and exit status, --with-head, bad checkpoints.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

fn resnet18_state_dict(dir: &Path) -> PathBuf {
    let gz = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/resnet18.safetensors.gz");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap()).read_to_end(&mut bytes).unwrap();
    let out = dir.join("resnet18.safetensors");
    std::fs::write(&out, bytes).unwrap();
    out
}

fn pretext(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext")).current_dir(env!("CARGO_MANIFEST_DIR")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn export_verify_torchvision_resnet18() {
    let dir = tempfile::tempdir().unwrap();
    let ck = resnet18_state_dict(dir.path());
    let onnx = dir.path().join("r18.onnx");
    let (ck, onnx) = (ck.to_str().unwrap(), onnx.to_str().unwrap());
    // Headless arch: fc.* is reported, not exported.
    let (ok, out) = pretext(&["export", ck, "-o", onnx, "--arch", "resnet18", "--image-size", "64", "--verify", "--verify-count", "4"]);
    assert!(ok, "{out}");
    assert!(out.contains("warning: 2 checkpoint tensors are not part of the exported graph"), "{out}");
    assert!(out.contains("features         tract") && out.contains("features         onnxruntime") && out.contains("verify: OK"), "{out}");
    // The classifier as an extra output, on photos.
    let (ok, out) = pretext(&[
        "export", ck, "-o", onnx, "--arch", "resnet18", "--image-size", "64", "--with-head", "fc", "--verify", "--verify-count", "3",
        "--verify-data", "../shared/data/raccoon-voc.tar.gz",
    ]);
    assert!(ok && out.contains("fc               onnxruntime"), "{out}");
    // Over tolerance -> non-zero exit.
    let (ok, out) = pretext(&["export", ck, "-o", onnx, "--arch", "resnet18", "--image-size", "64", "--verify", "--verify-count", "2", "--tol", "1e-12"]);
    assert!(!ok && out.contains("over tolerance"), "{out}");
    // fp16 checked by cosine.
    let (ok, out) = pretext(&["export", ck, "-o", onnx, "--arch", "resnet18", "--image-size", "64", "--fp16", "--verify", "--verify-count", "4"]);
    assert!(ok && out.contains(&format!("cosine >= {}", pretext_runtime::compare::tol::F16_COS)), "{out}");
}

#[test]
fn export_rejects_mismatched_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let ck = resnet18_state_dict(dir.path());
    let onnx = dir.path().join("m.onnx");
    let (ck, onnx_s) = (ck.to_str().unwrap(), onnx.to_str().unwrap());
    let (ok, out) = pretext(&["export", ck, "-o", onnx_s, "--arch", "resnet50"]);
    assert!(!ok && out.contains("'layer1.0.conv1.weight' has shape [64, 64, 3, 3], the model expects [64, 64, 1, 1]"), "{out}");
    let (ok, out) = pretext(&["export", ck, "-o", onnx_s, "--arch", "resnet34"]);
    assert!(!ok && out.contains("missing tensor 'layer1.2.conv1.weight'") && out.contains("[64, 64, 3, 3]"), "{out}");
    let (ok, out) = pretext(&["export", ck, "-o", onnx_s]);
    assert!(!ok && out.contains("pass --arch"), "{out}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, vec![0xffu8; 64]).unwrap();
    let (ok, out) = pretext(&["export", junk.to_str().unwrap(), "-o", onnx_s, "--arch", "resnet18"]);
    assert!(!ok && out.contains("not a safetensors file"), "{out}");
    assert!(!onnx.exists(), "nothing written on error");
}

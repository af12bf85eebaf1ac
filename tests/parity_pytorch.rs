//! Parity with PyTorch itself: torchvision resnet18 / mobilenet_v2 and timm
//! vit_tiny built in Python with random weights (scripts/gen_model_fixtures.py),
//! their state dicts imported unchanged, exported, and run in ONNX Runtime,
//! tract and the tch forward; all within 1e-4 of PyTorch's eval-mode output.
mod parity_util;

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use parity_util::*;
use pretext_exporter::ExportOptions;
use pretext_models::{BackboneConfig, MobileNetV2Config, ResNetConfig, VitConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

/// Un-gzips `<name>.safetensors.gz` into `dir`.
fn state_dict(name: &str, dir: &Path) -> PathBuf {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(fixture(&format!("{name}.safetensors.gz"))).unwrap()).read_to_end(&mut bytes).unwrap();
    let out = dir.join(format!("{name}.safetensors"));
    std::fs::write(&out, bytes).unwrap();
    out
}

fn io(name: &str) -> Vec<(String, ArrayD<f32>)> {
    let bytes = std::fs::read(fixture(&format!("{name}_io.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| {
            let data: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (k, ArrayD::from_shape_vec(IxDyn(t.shape()), data).unwrap())
        })
        .collect();
    // input, features, logits
    v.sort_by_key(|(k, _)| match k.as_str() {
        "input" => 0,
        "features" => 1,
        _ => 2,
    });
    v
}

fn check(name: &str, cfg: BackboneConfig, opts: ExportOptions) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = state_dict(name, dir.path());
    let io = io(name);
    let (x, torch_out) = (&io[0].1, &io[1..]);
    let ck = pretext_exporter::Checkpoint::load(&ckpt).unwrap();
    let (model, report) = pretext_exporter::export(&cfg, &ck, &opts).unwrap();
    assert!(report.unused.is_empty(), "{name}: unused tensors {:?}", report.unused);
    let file = dir.path().join(format!("{name}.onnx"));
    model.write(&file, opts.external_data_threshold).unwrap();
    let tch_out = verify::tch_forward(&ckpt, &cfg, &opts, x).unwrap();
    let mut runs = verify::run_onnx(&file, x).unwrap();
    runs.push(("tch", tch_out.into_iter().map(|(_, a)| a).collect()));
    let rows = verify::compare(torch_out, &runs).unwrap();
    let table = verify::format_table(&rows);
    eprintln!("{name} vs PyTorch:\n{table}");
    assert_eq!(rows.len(), 3 * torch_out.len());
    for r in &rows {
        assert!(r.max_abs <= TOL_F32, "{name}: {} differs from PyTorch by {:e}\n{table}", r.backend, r.max_abs);
    }
    onnx_check(&[file]);
}

#[test]
fn torchvision_resnet18_with_classifier() {
    let cfg = BackboneConfig::Resnet(ResNetConfig::resnet18().with_classes(1000));
    check("resnet18", cfg, ExportOptions { image_size: Some(64), ..Default::default() });
}

#[test]
fn torchvision_mobilenet_v2_width_quarter() {
    let cfg = BackboneConfig::MobilenetV2(MobileNetV2Config { width_mult: 0.25, num_classes: None });
    check("mobilenet_v2", cfg, ExportOptions { image_size: Some(64), ..Default::default() });
}

#[test]
fn timm_vit_tiny() {
    let cfg = BackboneConfig::Vit(VitConfig::vit_tiny_patch16_224().with_patch_and_size(8, 32).with_depth(2));
    check("vit_tiny", cfg, ExportOptions::default());
}

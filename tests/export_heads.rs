//! Every method's heads export from a run's checkpoint: train two steps,
//! then `pretext export <run>/checkpoint.safetensors --with-head <each head
//! the file lists> --verify`, with neither `--arch` nor `--prefix`; tract and
//! ONNX Runtime must agree with the tch forward within 1e-4 on every output.
//! Plus the DINO head against an independent tch computation, and the typed
//! error for a head the file does not list.

use std::path::Path;
use std::process::Command;

use pretext_exporter::{Checkpoint, ExportError, ExportOptions};
use pretext_runtime::compare::tol;
use pretext_models::{Backbone, BackboneConfig, HeadSpec, MlpHead, ResNetConfig, HEADS_KEY};
use pretext_runtime::verify;
use pretext_trainer::{Params, TchOps};
use tch::{Device, Kind, Tensor};

fn write_dataset(root: &Path) {
    // Two classes of 32x32 PNGs in `<split>/<class>/`, pixel patterns that differ per class.
    for (split, n) in [("train", 16), ("test", 4)] {
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

fn pretext(args: &[&str], cache: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext")).args(args).env("PRETEXT_CACHE", cache).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The keys of a file's `pretext.heads`.
fn listed_heads(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = md.metadata().clone().unwrap_or_default();
    let heads: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&meta[HEADS_KEY]).unwrap();
    heads.keys().cloned().collect()
}

/// Trains `method` two steps at a tiny size on a generated dataset: (temp dir, data, checkpoint, cache).
fn train_tiny(method: &str, backbone: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let run = tmp.path().join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut args = vec!["train", "--method", method, "--data", d, "--out", r, "--epochs", "1", "--batch-size", "8", "--stop-after", "2"];
    args.extend(["--knn-every=-1", "--threads", "1", "--seed", "3", "--quiet"]);
    args.extend(backbone);
    let cache = tmp.path().join("cache");
    let (ok, out) = pretext(&args, &cache);
    assert!(ok, "{method}: training failed:\n{out}");
    let ck = run.join("checkpoint.safetensors");
    (tmp, data, ck, cache)
}

/// Trains `method` two steps at a tiny size and exports its checkpoint with every head it lists.
fn export_run(method: &str, backbone: &[&str]) {
    let (tmp, data, ck, cache) = train_tiny(method, backbone);
    let d = data.to_str().unwrap();
    let heads = listed_heads(&ck);
    assert!(!heads.is_empty(), "{method}: the checkpoint lists no heads");
    assert_eq!(listed_heads(&ck.with_file_name("backbone.safetensors")), Vec::<String>::new(), "{method}: backbone.safetensors holds no head tensors");
    let onnx = tmp.path().join("model.onnx");
    let mut args = vec!["export", ck.to_str().unwrap(), "-o", onnx.to_str().unwrap(), "--verify", "--verify-data", d, "--verify-count", "4"];
    for h in &heads {
        args.extend(["--with-head", h.as_str()]);
    }
    let (ok, out) = pretext(&args, &cache);
    assert!(ok && out.contains("verify: OK"), "{method}: export of {heads:?} failed:\n{out}");
    // Every output on both backends, each error finite and within tol::F32 (read from the table, so a NaN cannot pass).
    for output in std::iter::once("features").chain(heads.iter().map(|h| h.as_str())) {
        for backend in ["tract", "onnxruntime"] {
            let row = out.lines().find(|l| l.split_whitespace().take(2).eq([output, backend])).unwrap_or_else(|| panic!("{method}: no row for {output} on {backend}:\n{out}"));
            let cols: Vec<f32> = row.split_whitespace().skip(2).map(|v| v.parse().unwrap()).collect();
            let (err, ref_max) = (cols[0], cols[2]);
            assert!(err.is_finite() && err <= tol::F32, "{method}: {output} on {backend}: max abs err {err}\n{out}");
            assert!(ref_max.is_finite() && ref_max > 0.0, "{method}: {output}: reference is all zeros or non-finite\n{out}");
        }
    }
    // `pretext extract --output <head>` serves every head over the features (the MAE decoder takes a
    // mask input, which extract does not feed): one row per image, tract and ORT within tol::F32.
    let imgs: Vec<String> = ["train/a/000.png", "train/b/001.png"].iter().map(|i| data.join(i).to_str().unwrap().to_string()).collect();
    for h in heads.iter().filter(|_| method != "mae") {
        let mut got = Vec::new();
        for backend in ["tract", "ort"] {
            let npy = tmp.path().join(format!("{h}-{backend}.npy"));
            let mut args = vec!["extract", onnx.to_str().unwrap()];
            args.extend(imgs.iter().map(|s| s.as_str()));
            args.extend(["-o", npy.to_str().unwrap(), "--output", h.as_str(), "--backend", backend]);
            let (ok, out) = pretext(&args, &cache);
            assert!(ok, "{method}: extract --output {h} --backend {backend} failed:\n{out}");
            got.push(pretext_runtime::npy::read_f32(&npy).unwrap());
        }
        assert_eq!(got[0].shape()[0], 2, "{method}: {h}: one row per image");
        assert_eq!(got[0].shape(), got[1].shape(), "{method}: {h}");
        let (a, b) = (got[0].as_slice().unwrap(), got[1].as_slice().unwrap());
        let d = pretext_runtime::compare::max_abs_diff(a, b);
        assert!(d <= tol::F32 as f64, "{method}: {h}: tract vs ORT extraction differs by {d}");
    }
}

const RESNET: &[&str] = &["--backbone", "resnet18-cifar", "--width", "8"];

#[test]
fn simclr_run_exports_its_heads() {
    export_run("simclr", RESNET);
}
#[test]
fn moco_v2_run_exports_its_heads() {
    export_run("moco_v2", RESNET);
}
#[test]
fn byol_run_exports_its_heads() {
    export_run("byol", RESNET);
}
#[test]
fn simsiam_run_exports_its_heads() {
    export_run("simsiam", RESNET);
}
#[test]
fn dino_run_exports_its_heads() {
    export_run("dino", &["--backbone", "resnet18-cifar", "--width", "8", "--n-local", "2"]);
}
#[test]
fn barlow_twins_run_exports_its_heads() {
    // Its gradients are ~25x SimCLR's: two steps on 16 images at the default lr 0.06 take the
    // features to ~1.5e6 and at lr 5e-3 to ~6.6e3, where 1e-4 absolute is below fp32's
    // resolution (errors 0.25 and 9.8e-4, relative 1.6e-7 and 1.5e-7). lr 1e-4 keeps them O(1).
    export_run("barlow_twins", &[RESNET, &["--lr", "1e-4"]].concat());
}
#[test]
fn vicreg_run_exports_its_heads() {
    export_run("vicreg", RESNET);
}
#[test]
fn mae_run_exports_its_decoder() {
    export_run("mae", &["--backbone", "vit-tiny-cifar", "--depth", "1"]);
}

/// A DINO head exports with its L2 normalisation and weight-normalised last
/// layer: the ONNX output equals DINO's `DINOHead.forward` written here in
/// raw tch (`F.normalize`, then `weight_norm` with g = 1). The old name-guessing
/// path rebuilt it as the bare 3-layer MLP (bottleneck-wide, unnormalised).
#[test]
fn dino_head_exports_with_l2_norm_and_weight_norm() {
    let cfg = BackboneConfig::Resnet(ResNetConfig::resnet18_cifar().with_width(4));
    let backbone = Backbone::new(&cfg);
    let head = MlpHead::dino("projection_head", backbone.embed_dim(), 48, 16, 40);
    tch::manual_seed(11);
    let mut specs = backbone.params();
    specs.extend(head.params());
    let p = Params::new(specs, Device::Cpu);
    // The stored last layer is not unit-norm: the export must normalise it.
    tch::no_grad(|| {
        let _ = p.get("projection_head.last_layer.weight").unwrap().shallow_clone().g_mul_scalar_(3.0);
    });
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("dino.safetensors");
    let heads = serde_json::json!({ "projection_head": HeadSpec::Mlp(head.clone()) }).to_string();
    let meta = [("pretext.arch".to_string(), serde_json::to_string(&cfg).unwrap()), (HEADS_KEY.to_string(), heads)].into();
    pretext_trainer::backend::write_safetensors(&ck, &p.to_named_blobs(""), Some(meta)).unwrap();

    let opts = ExportOptions { heads: vec!["projection_head".into()], ..Default::default() };
    let (model, _) = pretext_exporter::export(&cfg, &Checkpoint::load(&ck).unwrap(), &opts).unwrap();
    let onnx = dir.path().join("dino.onnx");
    model.write(&onnx, opts.external_data_threshold).unwrap();
    let x = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    let xa = ndarray::ArrayD::from_shape_vec(vec![3, 3, 32, 32], Vec::<f32>::try_from(x.flatten(0, -1)).unwrap()).unwrap();
    let runs = verify::run_onnx(&onnx, &xa).unwrap();

    let want = tch::no_grad(|| {
        let f = backbone.forward_features(&mut TchOps::new(&p, false), &x);
        let w = |k: &str| p.get(&format!("projection_head.{k}")).unwrap().shallow_clone();
        let h = f.linear(&w("layers.0.weight"), Some(w("layers.0.bias"))).gelu("none");
        let h = h.linear(&w("layers.2.weight"), Some(w("layers.2.bias"))).gelu("none");
        let h = h.linear(&w("layers.4.weight"), Some(w("layers.4.bias")));
        let normalize = |t: &Tensor| t / t.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true).clamp_min(1e-12);
        let v = w("last_layer.weight");
        normalize(&h).linear::<Tensor>(&(&v / v.norm_scalaropt_dim(2.0, [1i64].as_slice(), true)), None)
    });
    assert_eq!(want.size(), vec![3, 40]);
    let want: Vec<f32> = Vec::try_from(want.flatten(0, -1)).unwrap();
    for (backend, outs) in &runs {
        assert_eq!(outs.len(), 2, "{backend}: features and projection_head");
        let got = &outs[1];
        assert_eq!(got.shape(), &[3, 40], "{backend}: projection_head is the last layer's output");
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, |m, d| if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) });
        assert!(err <= tol::F32, "{backend}: DINO head max abs err {err}");
    }
}

/// `--with-head` of a name the file does not list is a typed error naming the
/// file and the head and listing what the file has; a head kind this exporter
/// does not know is one too, never a different graph.
#[test]
fn unknown_and_inexpressible_heads_are_typed_errors() {
    let cfg = BackboneConfig::Resnet(ResNetConfig::resnet18_cifar().with_width(4));
    let backbone = Backbone::new(&cfg);
    let head = MlpHead::simclr("projection_head", backbone.embed_dim(), 16, 8);
    let mut specs = backbone.params();
    specs.extend(head.params());
    let p = Params::new(specs, Device::Cpu);
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("simclr.safetensors");
    let heads = serde_json::json!({ "projection_head": HeadSpec::Mlp(head), "prototypes": { "kind": "prototypes", "n": 3000 } }).to_string();
    let meta = [("pretext.arch".to_string(), serde_json::to_string(&cfg).unwrap()), (HEADS_KEY.to_string(), heads)].into();
    pretext_trainer::backend::write_safetensors(&ck, &p.to_named_blobs(""), Some(meta)).unwrap();
    let ckpt = Checkpoint::load(&ck).unwrap();

    let export = |head: &str| pretext_exporter::export(&cfg, &ckpt, &ExportOptions { heads: vec![head.into()], ..Default::default() }).map(|_| ());
    assert!(export("projection_head").is_ok());
    let e = export("prediction_head").unwrap_err();
    assert!(matches!(&e, ExportError::UnknownHead { head, .. } if head == "prediction_head"), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("simclr.safetensors") && msg.contains("projection_head") && msg.contains("prototypes"), "{msg}");
    let e = export("prototypes").unwrap_err();
    assert!(matches!(&e, ExportError::Head { head, .. } if head == "prototypes"), "{e:?}");
    assert!(e.to_string().contains("cannot express"), "{e}");
    // A tensor name is not a head: `projection_head.layers.0` holds a linear weight but is not listed.
    let e = export("projection_head.layers.0").unwrap_err();
    assert!(matches!(&e, ExportError::UnknownHead { .. }), "{e:?}");
}

#[test]
fn dcl_run_exports_its_heads() {
    export_run("dcl", RESNET);
}
#[test]
fn dclw_run_exports_its_heads() {
    export_run("dclw", RESNET);
}
#[test]
fn moco_v3_run_exports_its_heads() {
    export_run("moco_v3", RESNET);
}
/// The ViT variant: 3-layer projector, predictor with its last BN, the patch projection frozen.
#[test]
fn moco_v3_vit_run_exports_its_heads() {
    export_run("moco_v3", &["--backbone", "vit-tiny-cifar", "--depth", "1", "--frozen-patch-embed", "1"]);
}
#[test]
fn nnclr_run_exports_its_heads() {
    export_run("nnclr", RESNET);
}
#[test]
fn fastsiam_run_exports_its_heads() {
    export_run("fastsiam", RESNET);
}
#[test]
fn tico_run_exports_its_heads() {
    export_run("tico", RESNET);
}
/// The prototypes head: projection, L2 normalisation, the bias-free prototypes layer.
#[test]
fn swav_run_exports_its_heads() {
    export_run("swav", &[RESNET, &["--n-local", "2", "--freeze-prototypes-steps", "1"]].concat());
}
#[test]
fn rotation_run_exports_its_heads() {
    export_run("rotation", RESNET);
}
/// Jigsaw lists fc6 (one tile's features); its puzzle classifier takes 9 tiles and is not listed.
#[test]
fn jigsaw_run_exports_its_heads() {
    export_run("jigsaw", RESNET);
}
/// NPID's head ends in the l2 normalisation.
#[test]
fn npid_run_exports_its_heads() {
    export_run("npid", RESNET);
}
/// Context prediction lists fc6 (one patch's features); the pair classifier is not listed.
#[test]
fn context_prediction_run_exports_its_heads() {
    export_run("context_prediction", RESNET);
}
#[test]
fn counting_run_exports_its_heads() {
    export_run("counting", RESNET);
}
/// PIRL lists f (the image head); g takes 9 tiles.
#[test]
fn pirl_run_exports_its_heads() {
    export_run("pirl", RESNET);
}

/// Context encoders list no head (the decoder paints from the feature map, not from the pooled
/// features): the run's backbone exports and verifies on tract and ORT, features within 1e-4.
#[test]
fn context_encoder_run_exports_its_backbone() {
    export_backbone_only("context_encoder");
}
/// CPC v2 lists no head (the context network and the W_k predictions work on the grid of patch
/// features): the run's backbone exports and verifies on tract and ORT, features within 1e-4.
#[test]
fn cpc_v2_run_exports_its_backbone() {
    export_backbone_only("cpc_v2");
}

/// Colorization: the backbone takes the 1-channel L input; --verify feeds it the L of the images.
#[test]
fn colorization_run_exports_its_one_channel_backbone() {
    let out = export_backbone_only("colorization");
    assert!(out.contains(", 1, 32, 32] (L;"), "--verify did not feed a 1-channel L input:\n{out}");
}

fn export_backbone_only(method: &str) -> String {
    let (tmp, data, ck, cache) = train_tiny(method, RESNET);
    let d = data.to_str().unwrap();
    assert_eq!(listed_heads(&ck), Vec::<String>::new());
    let onnx = tmp.path().join("model.onnx");
    let (ok, out) = pretext(&["export", ck.to_str().unwrap(), "-o", onnx.to_str().unwrap(), "--verify", "--verify-data", d, "--verify-count", "4"], &cache);
    assert!(ok && out.contains("verify: OK"), "export failed:\n{out}");
    for backend in ["tract", "onnxruntime"] {
        let row = out.lines().find(|l| l.split_whitespace().take(2).eq(["features", backend])).unwrap_or_else(|| panic!("no row for features on {backend}:\n{out}"));
        let cols: Vec<f32> = row.split_whitespace().skip(2).map(|v| v.parse().unwrap()).collect();
        assert!(cols[0].is_finite() && cols[0] <= 1e-4, "features on {backend}: max abs err {}\n{out}", cols[0]);
        assert!(cols[2].is_finite() && cols[2] > 0.0, "features: reference is all zeros or non-finite\n{out}");
    }
    out
}

/// `pretext colorize` on a colorization run: one strip per image, 3 panels of
/// 32 px zoomed x4; the first panel is gray (R = G = B), the last the original
/// (JPEG-free PNG input, no resize at 32 px), and another method's run is refused by name.
#[test]
fn colorization_run_colorizes_images_into_strips() {
    let (tmp, data, ck, cache) = train_tiny("colorization", RESNET);
    let img = data.join("test/a/000.png");
    let out = tmp.path().join("strips");
    let run = ck.parent().unwrap();
    let (ok, log) = pretext(&["colorize", run.to_str().unwrap(), img.to_str().unwrap(), "--out", out.to_str().unwrap()], &cache);
    assert!(ok, "colorize failed:\n{log}");
    let strip = image::open(out.join("000.png")).unwrap().to_rgb8();
    assert_eq!(strip.dimensions(), (3 * 128, 128));
    let original = image::open(&img).unwrap().to_rgb8();
    let mut colored = 0;
    for y in 0..32u32 {
        for x in 0..32u32 {
            let g = strip.get_pixel(x * 4, y * 4).0;
            assert!(g[0].abs_diff(g[1]) <= 1 && g[1].abs_diff(g[2]) <= 1, "gray panel at ({x}, {y}): {g:?}");
            let o = strip.get_pixel(256 + x * 4, y * 4).0;
            let want = original.get_pixel(x, y).0;
            assert!(o.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 1), "original panel at ({x}, {y}): {o:?} vs {want:?}");
            let c = strip.get_pixel(128 + x * 4, y * 4).0;
            colored += usize::from(c[0].abs_diff(c[1]) > 1 || c[1].abs_diff(c[2]) > 1);
        }
    }
    assert!(colored > 0, "the colourised panel is gray everywhere");
    let (tmp2, _, ck2, cache2) = train_tiny("rotation", RESNET);
    let (ok, log) = pretext(&["colorize", ck2.to_str().unwrap(), img.to_str().unwrap(), "--out", tmp2.path().join("x").to_str().unwrap()], &cache2);
    assert!(!ok && log.contains("a rotation run, not a colorization run"), "{log}");
}

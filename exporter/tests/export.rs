//! Export without libtorch: checkpoint errors, metadata, opsets, naming,
//! external data, fp16 structure. Numerical parity lives in the root
//! package's tests/parity_*.rs (they need tch, tract and ORT).
use std::collections::HashMap;
use std::path::Path;

use pretext_exporter::{export, export_file, proto, Checkpoint, ExportOptions};
use pretext_models::{Backbone, BackboneConfig, ParamKind, ResNetConfig, VitConfig};
use prost::Message;

/// Writes a checkpoint with deterministic pseudo-random values for every
/// spec except those in `skip`; `reshape` overrides shapes.
fn write_ckpt(path: &Path, cfg: &BackboneConfig, skip: &[&str], reshape: &[(&str, Vec<usize>)], meta: bool) {
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = Vec::new();
    let mut k = 1u32;
    for s in Backbone::new(cfg).params() {
        if skip.contains(&s.name.as_str()) {
            continue;
        }
        let mut shape: Vec<usize> = s.shape.iter().map(|&d| d as usize).collect();
        if let Some((_, sh)) = reshape.iter().find(|(n, _)| *n == s.name) {
            shape = sh.clone();
        }
        let n: usize = shape.iter().product();
        if s.kind == ParamKind::Counter {
            blobs.push((s.name.clone(), shape, 0i64.to_le_bytes().to_vec(), safetensors::Dtype::I64));
            continue;
        }
        let v: Vec<u8> = (0..n)
            .flat_map(|_| {
                k = k.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let u = (k >> 8) as f32 / (1u32 << 24) as f32;
                let x = if s.name.ends_with("running_var") { 0.5 + u } else { (u - 0.5) * 0.2 };
                x.to_le_bytes()
            })
            .collect();
        blobs.push((s.name.clone(), shape, v, safetensors::Dtype::F32));
    }
    struct V<'a>(&'a [usize], &'a [u8], safetensors::Dtype);
    impl safetensors::View for V<'_> {
        fn dtype(&self) -> safetensors::Dtype {
            self.2
        }
        fn shape(&self) -> &[usize] {
            self.0
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(self.1)
        }
        fn data_len(&self) -> usize {
            self.1.len()
        }
    }
    let views: Vec<(String, V)> = blobs.iter().map(|(n, s, d, t)| (n.clone(), V(s, d, *t))).collect();
    let m = meta.then(|| HashMap::from([("pretext.arch".to_string(), serde_json::to_string(cfg).unwrap()), ("pretext.method".into(), "simclr".into())]));
    std::fs::write(path, safetensors::serialize(views, m).unwrap()).unwrap();
}

fn small_resnet() -> BackboneConfig {
    BackboneConfig::Resnet(ResNetConfig::resnet18_cifar().with_width(8))
}
fn small_vit() -> BackboneConfig {
    BackboneConfig::Vit(VitConfig::vit_tiny_patch16_224().with_patch_and_size(4, 32).with_depth(1))
}

#[test]
fn bad_checkpoints_name_the_key_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_resnet();
    let f = dir.path().join("missing.safetensors");
    write_ckpt(&f, &cfg, &["layer2.0.conv1.weight"], &[], true);
    let err = export_file(&f, None, &dir.path().join("m.onnx"), &ExportOptions::default()).unwrap_err().to_string();
    assert!(err.contains("missing tensor 'layer2.0.conv1.weight'") && err.contains("[16, 8, 3, 3]"), "{err}");

    let f = dir.path().join("shape.safetensors");
    write_ckpt(&f, &cfg, &[], &[("layer1.0.bn1.running_var", vec![9])], true);
    let err = export_file(&f, None, &dir.path().join("m.onnx"), &ExportOptions::default()).unwrap_err().to_string();
    assert!(err.contains("'layer1.0.bn1.running_var' has shape [9], the model expects [8]"), "{err}");

    // A checkpoint of another architecture, given explicitly.
    let other = BackboneConfig::Resnet(ResNetConfig::resnet18_cifar().with_width(16));
    let f = dir.path().join("other.safetensors");
    write_ckpt(&f, &cfg, &[], &[], false);
    let ck = Checkpoint::load(&f).unwrap();
    let err = export(&other, &ck, &ExportOptions::default()).unwrap_err().to_string();
    assert!(err.contains("'conv1.weight' has shape [8, 3, 3, 3], the model expects [16, 3, 3, 3]"), "{err}");
    let err = export_file(&f, None, &dir.path().join("m.onnx"), &ExportOptions::default()).unwrap_err().to_string();
    assert!(err.contains("pass --arch"), "no metadata, no sibling config: {err}");

    let f = dir.path().join("foreign.safetensors");
    std::fs::write(&f, b"PK\x03\x04 this is a zip file, not safetensors").unwrap();
    let err = export_file(&f, None, &dir.path().join("m.onnx"), &ExportOptions::default()).unwrap_err().to_string();
    assert!(err.contains("foreign.safetensors: not a safetensors file"), "{err}");
}

#[test]
fn sibling_config_names_the_arch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_resnet();
    let f = dir.path().join("w.safetensors");
    write_ckpt(&f, &cfg, &[], &[], false);
    std::fs::write(dir.path().join("config.json"), serde_json::json!({ "arch": cfg }).to_string()).unwrap();
    export_file(&f, None, &dir.path().join("m.onnx"), &ExportOptions::default()).unwrap();
}

fn meta(m: &pretext_exporter::Model) -> HashMap<String, String> {
    m.metadata.iter().cloned().collect()
}

#[test]
fn metadata_props_are_exactly_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_resnet();
    let f = dir.path().join("w.safetensors");
    write_ckpt(&f, &cfg, &[], &[], true);
    let ck = Checkpoint::load(&f).unwrap();
    let (m, _) = export(&cfg, &ck, &ExportOptions::default()).unwrap();
    let md = meta(&m);
    let mut keys: Vec<_> = md.keys().cloned().collect();
    keys.sort();
    let want = [
        "pretext.arch", "pretext.channel_order", "pretext.dataset", "pretext.embed_dim", "pretext.input_size", "pretext.mean", "pretext.method", "pretext.output",
        "pretext.producer", "pretext.resize", "pretext.std",
    ];
    assert_eq!(keys, want);
    let arch: BackboneConfig = serde_json::from_str(&md["pretext.arch"]).unwrap();
    assert_eq!(arch, cfg);
    assert_eq!(md["pretext.embed_dim"], "64");
    assert_eq!((md["pretext.input_size"].as_str(), md["pretext.resize"].as_str()), ("32", "32"));
    assert_eq!(md["pretext.mean"], "[0.4914,0.4822,0.4465]");
    assert_eq!(md["pretext.method"], "simclr", "read from the checkpoint");
    assert_eq!(md["pretext.output"], "features");
    assert_eq!(md["pretext.channel_order"], "RGB");
    assert!(md["pretext.producer"].starts_with("pretext "));
    // A 224-class model: resize 256, ImageNet statistics, overridable.
    let opts = ExportOptions { image_size: Some(224), std: Some([0.5; 3]), dataset: Some("imagenet".into()), ..Default::default() };
    let (m, _) = export(&cfg, &ck, &opts).unwrap();
    let md = meta(&m);
    assert_eq!((md["pretext.input_size"].as_str(), md["pretext.resize"].as_str()), ("224", "256"));
    assert_eq!(md["pretext.mean"], "[0.485,0.456,0.406]");
    assert_eq!(md["pretext.std"], "[0.5,0.5,0.5]");
    assert_eq!(md["pretext.dataset"], "imagenet");
}

#[test]
fn nodes_and_initializers_carry_module_and_parameter_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_resnet();
    let f = dir.path().join("w.safetensors");
    write_ckpt(&f, &cfg, &[], &[], true);
    let ck = Checkpoint::load(&f).unwrap();
    let (m, report) = export(&cfg, &ck, &ExportOptions::default()).unwrap();
    let g = &m.graph;
    assert!(g.nodes.iter().any(|n| n.name == "layer3.1.conv2" && n.op == "Conv"));
    assert!(g.inits.contains_key("layer3.1.conv2.weight") && g.inits.contains_key("layer3.1.conv2.bias"));
    assert_eq!(g.count_op("BatchNormalization"), 0, "all BNs follow a conv");
    assert_eq!(report.folded_batch_norms, 20);
    let params: std::collections::HashSet<String> = Backbone::new(&cfg).params().into_iter().map(|p| p.name).collect();
    for k in g.inits.keys() {
        let conv_bias = k.strip_suffix(".bias").is_some_and(|c| params.contains(&format!("{c}.weight")));
        assert!(params.contains(k) || conv_bias, "initializer {k} is not a parameter path");
    }
    let p = m.to_proto();
    let inp = &p.graph.as_ref().unwrap().input[0];
    let Some(proto::type_proto::Value::TensorType(t)) = &inp.r#type.as_ref().unwrap().value else { panic!() };
    let d0 = &t.shape.as_ref().unwrap().dim[0];
    assert_eq!(d0.value, Some(proto::tensor_shape_proto::dimension::Value::DimParam("batch".into())), "dynamic batch axis");
    assert_eq!(p.opset_import[0].version, Some(17));
    assert_eq!(p.ir_version, Some(8));
}

#[test]
fn opset_17_uses_erf_and_20_uses_gelu() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_vit();
    let f = dir.path().join("w.safetensors");
    write_ckpt(&f, &cfg, &[], &[], true);
    let ck = Checkpoint::load(&f).unwrap();
    let (m17, _) = export(&cfg, &ck, &ExportOptions::default()).unwrap();
    assert_eq!((m17.graph.count_op("Erf"), m17.graph.count_op("Gelu")), (1, 0));
    assert_eq!(m17.graph.count_op("LayerNormalization"), 3);
    let (m20, _) = export(&cfg, &ck, &ExportOptions { opset: 20, ..Default::default() }).unwrap();
    assert_eq!((m20.graph.count_op("Erf"), m20.graph.count_op("Gelu")), (0, 1));
    assert_eq!(m20.ir_version, 9);
    let err = export(&cfg, &ck, &ExportOptions { opset: 13, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("opset 13 is not supported"), "{err}");
    // The linear weights' Transposes, the class-token sum and the pos-embed slice are folded.
    assert_eq!(m17.graph.count_op("Transpose"), 1 + 4, "patch flatten + 4 per attention block");
    assert!(m17.graph.inits.keys().any(|k| k == "blocks.0.attn.qkv.weight_t"));
}

#[test]
fn vit_last_block_tail_runs_on_the_class_token_only() {
    // Depth 2: the first block needs every token, the second only the class token
    // from its query on (keys and values still read all tokens).
    let dir = tempfile::tempdir().unwrap();
    let cfg = BackboneConfig::Vit(VitConfig::vit_tiny_patch16_224().with_patch_and_size(4, 32).with_depth(2));
    let f = dir.path().join("w.safetensors");
    write_ckpt(&f, &cfg, &[], &[], true);
    let ck = Checkpoint::load(&f).unwrap();
    let (m, _) = export(&cfg, &ck, &ExportOptions::default()).unwrap();
    let g = &m.graph;
    let producer = |t: &str| g.nodes.iter().find(|n| n.outputs.iter().any(|o| o == t)).unwrap();
    let slices_of = |t: &str| g.nodes.iter().filter(|n| n.op == "Slice" && n.inputs[0] == t).count();
    assert!(!g.nodes.iter().any(|n| n.name == "pool.cls"), "the pooling slice moved up");
    assert_eq!(slices_of("blocks.1.attn.q"), 1, "the last block's query is cut to the class token");
    assert_eq!(slices_of("blocks.0.add2"), 1, "and so is its residual input");
    // Walking back from the output through the last block's tail meets those two slices
    // and never the full-token tensors.
    let mut stack = vec!["features".to_string()];
    let mut seen = std::collections::HashSet::new();
    while let Some(t) = stack.pop() {
        if g.inits.contains_key(&t) || !seen.insert(t.clone()) {
            continue;
        }
        let n = producer(&t);
        if n.op == "Slice" && (n.inputs[0] == "blocks.1.attn.q" || n.inputs[0] == "blocks.0.add2") {
            continue;
        }
        assert!(n.name.starts_with("blocks.1.") || n.name == "norm" || n.name == "pool.flatten", "{} is reached without a slice", n.name);
        if !["blocks.1.attn.qk", "blocks.1.attn.av"].contains(&n.name.as_str()) {
            stack.extend(n.inputs.iter().cloned());
        } else {
            // Keys / values: full tokens by design; follow only the query / probabilities side.
            stack.push(n.inputs[0].clone());
        }
    }
    assert!(seen.len() > 20, "walked the block tail ({} tensors)", seen.len());
}

#[test]
fn vit_at_another_resolution_gets_a_frozen_resampled_pos_embed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_vit();
    let f = dir.path().join("w.safetensors");
    write_ckpt(&f, &cfg, &[], &[], true);
    let ck = Checkpoint::load(&f).unwrap();
    let (m, _) = export(&cfg, &ck, &ExportOptions { image_size: Some(64), ..Default::default() }).unwrap();
    assert!(!m.graph.nodes.iter().any(|n| n.op == "Resize"));
    assert!(!m.graph.inits.contains_key("pos_embed"), "only the resampled grid is stored, and the class position is folded");
    let tokens = m.graph.inits.get("pos_embed.to_tokens").expect("resampled position embedding initializer");
    assert_eq!(tokens.dims(), vec![1, 256, 192]);
}

#[test]
fn fp16_export_keeps_norms_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_vit();
    let f = dir.path().join("w.safetensors");
    write_ckpt(&f, &cfg, &[], &[], true);
    let ck = Checkpoint::load(&f).unwrap();
    let (m, r) = export(&cfg, &ck, &ExportOptions { fp16: true, ..Default::default() }).unwrap();
    assert!(matches!(m.graph.inits["blocks.0.norm1.weight"], pretext_exporter::tensor::Const::F32(_)));
    assert!(matches!(m.graph.inits["blocks.0.mlp.fc1.bias"], pretext_exporter::tensor::Const::F16(_)));
    assert!(r.casts >= 2 * 4, "casts around 3 LayerNorms and a Softmax, plus I/O");
    assert!(m.graph.inputs[0].elem == pretext_exporter::Elem::F32 && m.graph.outputs[0].elem == pretext_exporter::Elem::F32);
}

#[test]
fn external_data_above_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_resnet();
    let f = dir.path().join("w.safetensors");
    write_ckpt(&f, &cfg, &[], &[], true);
    let out = dir.path().join("m.onnx");
    let (_, files) = export_file(&f, None, &out, &ExportOptions { external_data_threshold: 10_000, ..Default::default() }).unwrap();
    assert_eq!(files, vec![out.clone(), dir.path().join("m.onnx.data")]);
    let p = proto::ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let ext: Vec<_> = p.graph.unwrap().initializer.into_iter().filter(|t| t.data_location == Some(1)).collect();
    assert!(!ext.is_empty());
    let data = std::fs::read(dir.path().join("m.onnx.data")).unwrap();
    for t in &ext {
        let kv: HashMap<_, _> = t.external_data.iter().map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap())).collect();
        assert_eq!(kv["location"], "m.onnx.data");
        let (off, len): (usize, usize) = (kv["offset"].parse().unwrap(), kv["length"].parse().unwrap());
        assert_eq!(off % 4096, 0);
        assert!(off + len <= data.len());
        assert!(t.raw_data.is_none());
    }
    // Below the threshold: a single file.
    let (_, files) = export_file(&f, None, &dir.path().join("n.onnx"), &ExportOptions::default()).unwrap();
    assert_eq!(files.len(), 1);
}

//! pretext exporter: lowers models written against [`pretext_models::Ops`]
//! to ONNX without libtorch.
//!
//! [`recorder::OnnxOps`] records a forward pass as nodes (named by module
//! path) and initializers (named by parameter path, loaded from a
//! safetensors [`Checkpoint`]); [`passes`] fold BatchNorm and constants,
//! drop dead nodes and convert to fp16; [`export`] ties it together and
//! writes the metadata the runtime reads (`pretext.*`).

pub mod proto {
    //! ONNX protobuf types, generated from the vendored `proto/onnx.proto`.
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
pub mod checkpoint;
pub mod error;
pub mod fuse;
pub mod graph;
pub mod opsets;
pub mod passes;
pub mod recorder;
pub mod tensor;
pub mod token_slice;

use std::collections::BTreeMap;
use std::path::Path;

use pretext_models::layers::Linear;
use pretext_models::{Act, Backbone, BackboneConfig, HeadBlock, MlpHead, Norm, Ops, ParamSpec};

pub use checkpoint::{Checkpoint, ARCH_KEY};
pub use error::ExportError;
pub use graph::{Dim, Elem, Graph, Model, ValueInfo, PROTOBUF_LIMIT};
pub use recorder::OnnxOps;

pub const DEFAULT_OPSET: i64 = 17;
/// IR version 8 is what opset 17 shipped with; newer opsets need newer IRs.
pub fn ir_version_for(opset: i64) -> i64 {
    match opset {
        ..=17 => 8,
        18..=20 => 9,
        _ => 10,
    }
}

pub const INPUT_NAME: &str = "input";
pub const FEATURES_OUTPUT: &str = "features";
pub const LOGITS_OUTPUT: &str = "logits";
/// Channel statistics of CIFAR-10's training set for 0..1 pixels.
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
pub const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Options of [`export`]. `Default` gives opset 17, fp32, BN and constant folding on.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub opset: i64,
    pub fp16: bool,
    /// With `fp16`: make the graph input and outputs fp16 too.
    pub fp16_io: bool,
    /// Run resolution (square); ViTs resample their position embedding.
    pub image_size: Option<i64>,
    /// Checkpoint prefixes of heads to export as extra outputs.
    pub heads: Vec<String>,
    /// Prefix of the backbone's tensors in the checkpoint (e.g. `backbone.`).
    pub prefix: String,
    pub fold_batch_norm: bool,
    pub fold_constants: bool,
    /// Initializer bytes above which weights go to an external data file.
    pub external_data_threshold: u64,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub method: Option<String>,
    pub dataset: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            opset: DEFAULT_OPSET,
            fp16: false,
            fp16_io: false,
            image_size: None,
            heads: Vec::new(),
            prefix: String::new(),
            fold_batch_norm: true,
            fold_constants: true,
            external_data_threshold: PROTOBUF_LIMIT,
            mean: None,
            std: None,
            method: None,
            dataset: None,
        }
    }
}

/// What an export produced besides the model.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Checkpoint tensors not used by the exported graph.
    pub unused: Vec<String>,
    pub folded_batch_norms: usize,
    pub folded_constants: usize,
    pub casts: usize,
    /// Output names, features first.
    pub outputs: Vec<String>,
}

/// The backbone config stored in the checkpoint's metadata (`pretext.arch`),
/// else in a sibling `<stem>.json` / `config.json` (an object with an `arch`
/// field holding the config or a backbone name).
pub fn arch_from_checkpoint(ckpt: &Checkpoint) -> Result<BackboneConfig, ExportError> {
    let bad = |reason: String| ExportError::Arch { path: ckpt.path.clone(), reason };
    if let Some(j) = ckpt.metadata.get(ARCH_KEY) {
        return serde_json::from_str(j).map_err(|e| bad(format!("metadata {ARCH_KEY} is not a backbone config: {e}")));
    }
    let stem = ckpt.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    for sib in [ckpt.path.with_file_name(format!("{stem}.json")), ckpt.path.with_file_name("config.json")] {
        let Ok(text) = std::fs::read_to_string(&sib) else { continue };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", sib.display())))?;
        let arch = v.get("arch").unwrap_or(&v);
        if let Some(name) = arch.as_str() {
            return BackboneConfig::from_name(name).map_err(|e| bad(e.to_string()));
        }
        return serde_json::from_value(arch.clone()).map_err(|e| bad(format!("{}: not a backbone config: {e}", sib.display())));
    }
    Err(bad(format!("no `{ARCH_KEY}` metadata and no sibling config; pass --arch")))
}

/// The classifier path of an architecture (`fc`, `head`, `classifier.1`).
pub fn classifier_path(config: &BackboneConfig) -> &'static str {
    match config {
        BackboneConfig::Resnet(_) => "fc",
        BackboneConfig::Vit(_) => "head",
        BackboneConfig::MobilenetV2(_) => "classifier.1",
    }
}

/// A head exported as an extra output: a linear classifier or an MLP head.
pub enum Head {
    Linear(Linear),
    Mlp(MlpHead),
}

impl Head {
    pub fn params(&self) -> Vec<ParamSpec> {
        match self {
            Head::Linear(l) => {
                let mut v = Vec::new();
                l.params(&mut v);
                v
            }
            Head::Mlp(m) => m.params(),
        }
    }
    /// # Shapes
    /// (N, in) -> (N, out)
    pub fn forward<O: Ops>(&self, o: &mut O, x: &O::T) -> O::T {
        match self {
            Head::Linear(l) => l.forward(o, x),
            Head::Mlp(m) => m.forward(o, x),
        }
    }
}

/// Rebuilds a head from the checkpoint: `{prefix}.weight` is a linear layer;
/// `{prefix}.layers.N.*` is an MLP head in lightly's layout, where a linear
/// has a 2-D weight, a BatchNorm has `running_mean`, and an index with no
/// tensors is an activation (ReLU, or GELU when metadata
/// `pretext.head.{prefix}.act` says so). Metadata `pretext.heads`, a JSON
/// object prefix -> [HeadBlock], overrides inference.
fn head_from_checkpoint(ckpt: &Checkpoint, prefix: &str) -> Result<Head, ExportError> {
    let bad = |reason: String| ExportError::Head { path: ckpt.path.clone(), prefix: prefix.into(), reason };
    if let Some(j) = ckpt.metadata.get("pretext.heads") {
        let m: BTreeMap<String, Vec<HeadBlock>> = serde_json::from_str(j).map_err(|e| bad(format!("metadata pretext.heads: {e}")))?;
        if let Some(blocks) = m.get(prefix) {
            return Ok(Head::Mlp(MlpHead::new(prefix, blocks.clone())));
        }
    }
    if let Some(w) = ckpt.get(&format!("{prefix}.weight")) {
        if w.ndim() != 2 {
            return Err(bad(format!("{prefix}.weight has shape {:?}, expected (out, in)", w.shape())));
        }
        let mut l = Linear::new(prefix, w.shape()[1] as i64, w.shape()[0] as i64);
        l.bias = ckpt.get(&format!("{prefix}.bias")).is_some();
        return Ok(Head::Linear(l));
    }
    let act = match ckpt.metadata.get(&format!("pretext.head.{prefix}.act")).map(|s| s.as_str()) {
        Some("gelu") => Act::Gelu,
        _ => Act::Relu,
    };
    let layer = |i: usize, leaf: &str| ckpt.get(&format!("{prefix}.layers.{i}.{leaf}"));
    let max = ckpt
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{prefix}.layers.")))
        .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
        .max()
        .ok_or_else(|| bad(format!("no tensors '{prefix}.weight' or '{prefix}.layers.N.*' in the checkpoint")))?;
    let mut blocks: Vec<HeadBlock> = Vec::new();
    let mut i = 0;
    while i <= max {
        let w = layer(i, "weight").filter(|w| w.ndim() == 2).ok_or_else(|| bad(format!("expected a linear layer at {prefix}.layers.{i}")))?;
        let mut b = HeadBlock::new(w.shape()[1] as i64, w.shape()[0] as i64, None, None);
        i += 1;
        if layer(i, "running_mean").is_some() {
            b.norm = Some(Norm::BatchNorm);
            i += 1;
        }
        if i <= max && layer(i, "weight").is_none() && layer(i, "running_mean").is_none() {
            b.act = Some(act);
            i += 1;
        }
        blocks.push(b);
    }
    let head = MlpHead::new(prefix, blocks);
    Ok(Head::Mlp(head))
}

/// Sanitised output name for a head prefix.
fn head_output(prefix: &str) -> String {
    prefix.replace('.', "_")
}

/// What gets exported: the run config, input side, the headless backbone,
/// and the heads with their output names (classifier first, as `logits`).
pub struct Resolved {
    pub config: BackboneConfig,
    pub size: i64,
    pub backbone: Backbone,
    pub heads: Vec<(String, Head)>,
}

/// Applies the options to the config (run resolution), splits off the
/// classifier as a head, rebuilds the requested heads from the checkpoint,
/// and checks every tensor they need against the checkpoint.
pub fn resolve(config: &BackboneConfig, ckpt: &Checkpoint, opts: &ExportOptions) -> Result<Resolved, ExportError> {
    let mut config = config.clone();
    if let (Some(s), BackboneConfig::Vit(v)) = (opts.image_size, &mut config) {
        *v = v.clone().at_resolution(s);
    }
    let size = opts.image_size.unwrap_or_else(|| config.default_image_size());
    // The features graph never contains the classifier; it is a head.
    let mut headless = config.clone();
    let classifier = match &mut headless {
        BackboneConfig::Resnet(c) => c.num_classes.take(),
        BackboneConfig::Vit(c) => c.num_classes.take(),
        BackboneConfig::MobilenetV2(c) => c.num_classes.take(),
    };
    let backbone = Backbone::new(&headless);
    ckpt.check(&backbone.params(), &opts.prefix)?;
    let mut heads: Vec<(String, Head)> = Vec::new();
    if let Some(n) = classifier {
        let p = classifier_path(&config);
        let head = Linear::new(p, backbone.embed_dim(), n);
        heads.push((LOGITS_OUTPUT.to_string(), Head::Linear(head)));
    }
    for prefix in &opts.heads {
        heads.push((head_output(prefix), head_from_checkpoint(ckpt, prefix)?));
    }
    for (_, h) in &heads {
        ckpt.check(&h.params(), "")?;
    }
    Ok(Resolved { config, size, backbone, heads })
}

/// Exports a backbone (and optional heads) from a checkpoint to an in-memory [`Model`].
pub fn export(config: &BackboneConfig, ckpt: &Checkpoint, opts: &ExportOptions) -> Result<(Model, ExportReport), ExportError> {
    let Resolved { config, size, backbone, heads } = resolve(config, ckpt, opts)?;

    let mut o = OnnxOps::new(ckpt, opts.opset)?;
    o.prefix = opts.prefix.clone();
    let batch = Dim::Sym("batch".into());
    let x = o.input(ValueInfo { name: INPUT_NAME.into(), elem: Elem::F32, dims: vec![batch.clone(), Dim::Fixed(3), Dim::Fixed(size), Dim::Fixed(size)] });
    let f = backbone.forward_features(&mut o, &x);
    let mut outs = vec![(FEATURES_OUTPUT.to_string(), f.clone(), backbone.embed_dim())];
    o.prefix = String::new();
    for (name, h) in &heads {
        let y = h.forward(&mut o, &f);
        let dim = match h {
            Head::Linear(l) => l.out_f,
            Head::Mlp(m) => m.out_dim(),
        };
        outs.push((name.clone(), y, dim));
    }
    let mut g = o.finish()?;
    for (name, t, dim) in &outs {
        if g.inputs.iter().any(|i| &i.name == t) || g.outputs.iter().any(|v| &v.name == t) {
            // An output that aliases another tensor gets its own Identity.
            let id = g.fresh_name(name);
            g.nodes.push(graph::Node { name: id.clone(), op: "Identity", inputs: vec![t.clone()], outputs: vec![name.clone()], attrs: vec![] });
        } else {
            g.rename_tensor(t, name);
        }
        g.outputs.push(ValueInfo { name: name.clone(), elem: Elem::F32, dims: vec![batch.clone(), Dim::Fixed(*dim)] });
    }
    let mut report = ExportReport { outputs: outs.iter().map(|o| o.0.clone()).collect(), ..Default::default() };
    passes::eliminate_dead(&mut g);
    if opts.fold_constants {
        report.folded_constants = passes::fold_constants(&mut g);
    }
    if opts.fold_batch_norm {
        report.folded_batch_norms = passes::fold_batch_norm(&mut g);
    }
    // Patterns ONNX Runtime fuses (see `fuse`).
    fuse::gelu_div_form(&mut g);
    // Only the kept class token runs through the last block's per-token tail.
    token_slice::sink_index_slices(&mut g);
    if opts.fp16 {
        report.casts = passes::to_fp16(&mut g, !opts.fp16_io);
    }
    let used: std::collections::HashSet<String> = backbone
        .params()
        .iter()
        .map(|p| format!("{}{}", opts.prefix, p.name))
        .chain(heads.iter().flat_map(|(_, h)| h.params()).map(|p| p.name))
        .collect();
    report.unused = ckpt.tensors.keys().filter(|k| !used.contains(*k)).cloned().collect();
    // Every node, the passes' and fusions' included, must exist at the chosen opset.
    opsets::check(&g, opts.opset)?;
    let metadata = metadata(&config, ckpt, opts, size, backbone.embed_dim());
    let model = Model { graph: g, opset: opts.opset, ir_version: ir_version_for(opts.opset), producer_version: env!("CARGO_PKG_VERSION").into(), metadata };
    Ok((model, report))
}

/// The `pretext.*` metadata props the runtime reads.
fn metadata(config: &BackboneConfig, ckpt: &Checkpoint, opts: &ExportOptions, size: i64, embed_dim: i64) -> Vec<(String, String)> {
    let meta = |k: &str| ckpt.metadata.get(k).cloned();
    let dataset = opts.dataset.clone().or_else(|| meta("pretext.dataset")).unwrap_or_else(|| "unknown".into());
    let method = opts.method.clone().or_else(|| meta("pretext.method")).unwrap_or_else(|| "none".into());
    let cifar_sized = size <= 64;
    let cifar_stats = dataset.to_lowercase().contains("cifar") || (cifar_sized && dataset == "unknown");
    let (mean, std) = if cifar_stats { (CIFAR_MEAN, CIFAR_STD) } else { (IMAGENET_MEAN, IMAGENET_STD) };
    let resize = if cifar_sized { size } else { (size as f64 / 0.875).round() as i64 };
    // `pretext train` records the eval preprocessing its k-NN used (ImageNet
    // statistics on every dataset); prefer it to the guesses above, the resize
    // only when exporting at the recorded input size.
    let stats = |k: &str| meta(k).and_then(|v| serde_json::from_str::<[f32; 3]>(&v).ok());
    let (mean, std) = match (stats("pretext.mean"), stats("pretext.std")) {
        (Some(m), Some(s)) => (m, s),
        _ => (mean, std),
    };
    let int = |k: &str| meta(k).and_then(|v| v.parse::<i64>().ok());
    let resize = match (int("pretext.input_size"), int("pretext.resize")) {
        (Some(s), Some(r)) if s == size => r,
        _ => resize,
    };
    let json = |v: [f32; 3]| serde_json::to_string(&v).expect("floats");
    vec![
        ("pretext.arch".into(), serde_json::to_string(config).expect("config serialises")),
        ("pretext.embed_dim".into(), embed_dim.to_string()),
        ("pretext.input_size".into(), size.to_string()),
        ("pretext.resize".into(), resize.to_string()),
        ("pretext.mean".into(), json(opts.mean.unwrap_or(mean))),
        ("pretext.std".into(), json(opts.std.unwrap_or(std))),
        ("pretext.channel_order".into(), "RGB".into()),
        ("pretext.output".into(), FEATURES_OUTPUT.into()),
        ("pretext.method".into(), method),
        ("pretext.dataset".into(), dataset),
        ("pretext.producer".into(), format!("pretext {}", env!("CARGO_PKG_VERSION"))),
    ]
}

/// Loads a checkpoint, exports it and writes `out`; returns the report and files written.
pub fn export_file(ckpt_path: &Path, config: Option<BackboneConfig>, out: &Path, opts: &ExportOptions) -> Result<(ExportReport, Vec<std::path::PathBuf>), ExportError> {
    let ckpt = Checkpoint::load(ckpt_path)?;
    let config = match config {
        Some(c) => c,
        None => arch_from_checkpoint(&ckpt)?,
    };
    let (model, report) = export(&config, &ckpt, opts)?;
    let files = model.write(out, opts.external_data_threshold)?;
    Ok((report, files))
}

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
use pretext_models::tensorfile::{keys, PretextMeta};
use pretext_models::{Backbone, BackboneConfig, HeadSpec, ParamSpec};

pub use checkpoint::Checkpoint;
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
/// The normalisation statistics written to the metadata (defined once, in `pretext-models`).
pub use pretext_models::{CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD};

/// Options of [`export`]. `Default` gives opset 17, fp32, BN and constant folding on.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub opset: i64,
    pub fp16: bool,
    /// With `fp16`: make the graph input and outputs fp16 too.
    pub fp16_io: bool,
    /// Run resolution (square); ViTs resample their position embedding.
    pub image_size: Option<i64>,
    /// Heads to export as extra outputs: names the file lists in `pretext.heads`, or the classifier's path.
    pub heads: Vec<String>,
    /// Prefix of the network's tensors in the checkpoint (e.g. `backbone.`); empty: the file's `pretext.prefix`.
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
    if let Some(c) = ckpt.pretext()?.backbone().map_err(|e| bad(e.to_string()))? {
        return Ok(c);
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
    Err(bad(format!("no `{}` metadata and no sibling config; pass --arch", keys::ARCH)))
}

/// The classifier path of an architecture (`fc`, `head`, `classifier.1`).
pub fn classifier_path(config: &BackboneConfig) -> &'static str {
    match config {
        BackboneConfig::Resnet(_) => "fc",
        BackboneConfig::Vit(_) => "head",
        BackboneConfig::MobilenetV2(_) => "classifier.1",
    }
}

/// A head exported as an extra output.
#[derive(Debug, Clone)]
pub enum Head {
    /// The architecture's classifier (`fc`, `head`, `classifier.1`).
    Classifier(Linear),
    /// A head the file lists in `pretext.heads`.
    Spec(HeadSpec),
}

impl Head {
    pub fn params(&self) -> Vec<ParamSpec> {
        match self {
            Head::Classifier(l) => {
                let mut v = Vec::new();
                l.params(&mut v);
                v
            }
            Head::Spec(h) => h.params(),
        }
    }
    /// The output's shape after the batch axis.
    pub fn out_shape(&self) -> Vec<i64> {
        match self {
            Head::Classifier(l) => vec![l.out_f],
            Head::Spec(h) => h.out_shape(),
        }
    }
}

/// Graph inputs of an MAE decoder's fixed mask, as MAE's `random_masking`
/// returns it: the visible patches (batch, K) and the inverse shuffle (batch, N), int64.
pub const IDS_KEEP_INPUT: &str = "ids_keep";
pub const IDS_RESTORE_INPUT: &str = "ids_restore";

/// The heads a file lists in its `pretext.heads` metadata, by export name
/// (each still JSON: one head this exporter cannot read must not hide the others).
pub fn listed_heads(ckpt: &Checkpoint) -> Result<BTreeMap<String, serde_json::Value>, ExportError> {
    Ok(ckpt.pretext()?.heads.unwrap_or_default())
}

/// The head `name`: one listed in the file's `pretext.heads`, or the
/// architecture's classifier when the file holds its weight (its class count
/// is the weight's first dimension). Anything else is an error listing both.
fn head_from_checkpoint(ckpt: &Checkpoint, config: &BackboneConfig, prefix: &str, name: &str) -> Result<Head, ExportError> {
    let listed = listed_heads(ckpt)?;
    if let Some(v) = listed.get(name) {
        return serde_json::from_value(v.clone()).map(Head::Spec).map_err(|e| ExportError::Head {
            path: ckpt.path.clone(),
            head: name.into(),
            reason: format!("{} describes it as {v}, which this exporter cannot express: {e}", keys::HEADS),
        });
    }
    let cls = classifier_path(config);
    let cls_weight = ckpt.get(&format!("{prefix}{cls}.weight")).filter(|w| w.ndim() == 2);
    if let (true, Some(w)) = (name == cls, cls_weight) {
        return Ok(Head::Classifier(Linear::new(cls, w.shape()[1] as i64, w.shape()[0] as i64)));
    }
    let mut available: Vec<String> = listed.keys().cloned().collect();
    if cls_weight.is_some() {
        available.push(format!("{cls} (the classifier)"));
    }
    let available = if available.is_empty() { format!("no heads (no {} metadata and no classifier '{cls}.weight')", keys::HEADS) } else { available.join(", ") };
    Err(ExportError::UnknownHead { path: ckpt.path.clone(), head: name.into(), available })
}

/// Sanitised output name for a head prefix.
fn head_output(prefix: &str) -> String {
    prefix.replace('.', "_")
}

/// What gets exported: the run config, input side, the headless backbone,
/// the heads with their output names (classifier first, as `logits`), and
/// the prefix every tensor is read under.
pub struct Resolved {
    pub config: BackboneConfig,
    pub size: i64,
    pub backbone: Backbone,
    pub heads: Vec<(String, Head)>,
    pub prefix: String,
}

/// The prefix of the exportable network's tensors: `opts.prefix` when given,
/// else the file's `pretext.prefix` (`student.` in a run's checkpoint).
pub fn tensor_prefix(ckpt: &Checkpoint, opts: &ExportOptions) -> String {
    if !opts.prefix.is_empty() {
        return opts.prefix.clone();
    }
    ckpt.metadata.get(keys::PREFIX).cloned().unwrap_or_default()
}

/// Applies the options to the config (run resolution), splits off the
/// classifier as a head, rebuilds the requested heads from the file's
/// `pretext.heads`, and checks every tensor they need against the checkpoint.
pub fn resolve(config: &BackboneConfig, ckpt: &Checkpoint, opts: &ExportOptions) -> Result<Resolved, ExportError> {
    let mut config = config.clone();
    if let (Some(s), BackboneConfig::Vit(v)) = (opts.image_size, &mut config) {
        *v = v.clone().at_resolution(s);
    }
    let size = opts.image_size.unwrap_or_else(|| config.default_image_size());
    let prefix = tensor_prefix(ckpt, opts);
    // The features graph never contains the classifier; it is a head.
    let mut headless = config.clone();
    let classifier = match &mut headless {
        BackboneConfig::Resnet(c) => c.num_classes.take(),
        BackboneConfig::Vit(c) => c.num_classes.take(),
        BackboneConfig::MobilenetV2(c) => c.num_classes.take(),
    };
    let backbone = Backbone::new(&headless);
    ckpt.check(&backbone.params(), &prefix)?;
    let mut heads: Vec<(String, Head)> = Vec::new();
    if let Some(n) = classifier {
        let p = classifier_path(&config);
        let head = Linear::new(p, backbone.embed_dim(), n);
        heads.push((LOGITS_OUTPUT.to_string(), Head::Classifier(head)));
    }
    for name in &opts.heads {
        let head = head_from_checkpoint(ckpt, &config, &prefix, name)?;
        let bad = |reason: String| ExportError::Head { path: ckpt.path.clone(), head: name.clone(), reason };
        if let Head::Spec(HeadSpec::MaeDecoder(d)) = &head {
            match &backbone {
                Backbone::Vit(v) if v.config.img_size == d.decoder.img_size => {}
                Backbone::Vit(v) => return Err(bad(format!("an MAE decoder runs at its trained resolution {} px, not {} (drop --image-size)", d.decoder.img_size, v.config.img_size))),
                _ => return Err(bad("an MAE decoder needs a ViT backbone; the file's arch is not one".into())),
            }
        }
        heads.push((head_output(name), head));
    }
    for (_, h) in &heads {
        ckpt.check(&h.params(), &prefix)?;
    }
    Ok(Resolved { config, size, backbone, heads, prefix })
}

/// Exports a backbone (and optional heads) from a checkpoint to an in-memory [`Model`].
pub fn export(config: &BackboneConfig, ckpt: &Checkpoint, opts: &ExportOptions) -> Result<(Model, ExportReport), ExportError> {
    let Resolved { config, size, backbone, heads, prefix } = resolve(config, ckpt, opts)?;

    let mut o = OnnxOps::new(ckpt, opts.opset)?;
    o.prefix = prefix.clone();
    let batch = Dim::Sym("batch".into());
    let x = o.input(ValueInfo { name: INPUT_NAME.into(), elem: Elem::F32, dims: vec![batch.clone(), Dim::Fixed(config.in_channels()), Dim::Fixed(size), Dim::Fixed(size)] });
    let f = backbone.forward_features(&mut o, &x);
    let mut outs = vec![(FEATURES_OUTPUT.to_string(), f.clone(), vec![backbone.embed_dim()])];
    let mut mask_doc = None;
    for (name, h) in &heads {
        let y = match (h, &backbone) {
            (Head::Classifier(l), _) => l.forward(&mut o, &f),
            (Head::Spec(HeadSpec::Mlp(m)), _) => m.forward(&mut o, &f),
            (Head::Spec(HeadSpec::MaeDecoder(d)), Backbone::Vit(v)) => {
                let ids = |o: &mut OnnxOps, name: &str, n: i64| o.input(ValueInfo { name: name.into(), elem: Elem::I64, dims: vec![batch.clone(), Dim::Fixed(n)] });
                let keep = ids(&mut o, IDS_KEEP_INPUT, d.visible());
                let restore = ids(&mut o, IDS_RESTORE_INPUT, d.num_patches());
                mask_doc = Some(format!(
                    "{name}: MAE decoder over a fixed mask; inputs {IDS_KEEP_INPUT} (batch, {k}) int64 = the visible patches (row-major patch index) in encoder order, {IDS_RESTORE_INPUT} (batch, {n}) int64 = the inverse shuffle (patch i is entry {IDS_RESTORE_INPUT}[i] of [visible..., masked...]), as MAE's random_masking returns them; output (batch, {n}, {pp}) = per-patch prediction of the normalised pixels (p*p*3, MAE patchify order)",
                    k = d.visible(),
                    n = d.num_patches(),
                    pp = d.out_dim()
                ));
                d.forward(&mut o, v, &x, &keep, &restore)
            }
            (Head::Spec(HeadSpec::MaeDecoder(_)), _) => unreachable!("resolve refuses an MAE decoder without a ViT"),
        };
        outs.push((name.clone(), y, h.out_shape()));
    }
    let mut g = o.finish()?;
    for (name, t, shape) in &outs {
        if g.inputs.iter().any(|i| &i.name == t) || g.outputs.iter().any(|v| &v.name == t) {
            // An output that aliases another tensor gets its own Identity.
            let id = g.fresh_name(name);
            g.nodes.push(graph::Node { name: id.clone(), op: "Identity", inputs: vec![t.clone()], outputs: vec![name.clone()], attrs: vec![] });
        } else {
            g.rename_tensor(t, name);
        }
        let dims = std::iter::once(batch.clone()).chain(shape.iter().map(|&d| Dim::Fixed(d))).collect();
        g.outputs.push(ValueInfo { name: name.clone(), elem: Elem::F32, dims });
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
        .into_iter()
        .chain(heads.iter().flat_map(|(_, h)| h.params()))
        .map(|p| format!("{prefix}{}", p.name))
        .collect();
    // A run's checkpoint also holds the teacher, optimizer and loss state: only the prefix's tensors count.
    report.unused = ckpt.tensors.keys().filter(|k| k.starts_with(&prefix) && !used.contains(*k)).cloned().collect();
    // Every node, the passes' and fusions' included, must exist at the chosen opset.
    opsets::check(&g, opts.opset)?;
    let mut metadata = metadata(&config, &ckpt.pretext()?, opts, size, backbone.embed_dim());
    if let Some(doc) = mask_doc {
        metadata.mask_inputs = Some(doc);
    }
    let mut metadata: Vec<(String, String)> = metadata.to_map().into_iter().collect();
    metadata.sort();
    let model = Model { graph: g, opset: opts.opset, ir_version: ir_version_for(opts.opset), producer_version: env!("CARGO_PKG_VERSION").into(), metadata };
    Ok((model, report))
}

/// The `pretext.*` metadata props the runtime reads.
fn metadata(config: &BackboneConfig, meta: &PretextMeta, opts: &ExportOptions, size: i64, embed_dim: i64) -> PretextMeta {
    let dataset = opts.dataset.clone().or_else(|| meta.dataset.clone()).unwrap_or_else(|| "unknown".into());
    let method = opts.method.clone().or_else(|| meta.method.clone()).unwrap_or_else(|| "none".into());
    let cifar_sized = size <= 64;
    let cifar_stats = dataset.to_lowercase().contains("cifar") || (cifar_sized && dataset == "unknown");
    let (mean, std) = if cifar_stats { (CIFAR_MEAN, CIFAR_STD) } else { (IMAGENET_MEAN, IMAGENET_STD) };
    let resize = if cifar_sized { size } else { (size as f64 / 0.875).round() as i64 };
    // `pretext train` records the eval preprocessing its k-NN used (ImageNet
    // statistics on every dataset); prefer it to the guesses above, the resize
    // only when exporting at the recorded input size.
    let (mean, std) = match (meta.mean, meta.std) {
        (Some(m), Some(s)) => (m, s),
        _ => (mean, std),
    };
    let resize = match (meta.input_size, meta.resize) {
        (Some(s), Some(r)) if s as i64 == size => r as i64,
        _ => resize,
    };
    // A 1-channel backbone (colorization) reads `(L* - 50) / 50`: L* / 100 normalised by 0.5, 0.5.
    let (order, mean, std) = if config.in_channels() == 1 { ("L", [0.5; 3], [0.5; 3]) } else { ("RGB", opts.mean.unwrap_or(mean), opts.std.unwrap_or(std)) };
    PretextMeta {
        arch: serde_json::to_value(config).ok(),
        embed_dim: Some(embed_dim as usize),
        input_size: Some(size as u32),
        resize: Some(resize as u32),
        mean: Some(mean),
        std: Some(std),
        channel_order: Some(order.into()),
        output: Some(FEATURES_OUTPUT.into()),
        method: Some(method),
        dataset: Some(dataset),
        producer: Some(format!("pretext {}", env!("CARGO_PKG_VERSION"))),
        ..Default::default()
    }
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

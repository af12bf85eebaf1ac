//! The shared inputs of a benchmark run: random-init weights under their
//! torchvision/timm names, input batches, and the k-NN gallery, written once
//! as safetensors so pretext and the Python peers load the very same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pretext_models::{Backbone, BackboneConfig};
use pretext_models::tensorfile::{self, HostTensor, TensorFile};
use pretext_trainer::backend::host_tensor;
use pretext_trainer::Params;
use tch::{Device, Kind, Tensor};

/// One benchmarked model.
#[derive(Debug, Clone)]
pub struct ModelCase {
    /// CLI name (`resnet18-cifar`, `resnet50`, `vit-small`, `mobilenet_v2`).
    pub name: String,
    pub config: BackboneConfig,
    pub image_size: i64,
    pub weights: PathBuf,
    pub input: PathBuf,
}

/// Every model `pretext bench` knows, in table order.
pub const MODELS: &[&str] = &["resnet18-cifar", "resnet50", "vit-small", "mobilenet_v2"];

fn write(path: &Path, blobs: BTreeMap<String, HostTensor>) -> Result<()> {
    Ok(tensorfile::write(path, &blobs, None)?)
}

/// Writes `<dir>/<name>.safetensors` (seed 0 random init, torchvision/timm
/// init rules) and `<dir>/<name>.input.safetensors` (`x`: N(0,1), `max_batch` images).
pub fn model_case(dir: &Path, name: &str, max_batch: i64) -> Result<ModelCase> {
    let config = BackboneConfig::from_name(name)?;
    let image_size = config.default_image_size();
    let backbone = Backbone::new(&config);
    let weights = dir.join(format!("{name}.safetensors"));
    let input = dir.join(format!("{name}.input.safetensors"));
    tch::manual_seed(0);
    let params = Params::new(backbone.params(), Device::Cpu);
    params.save_safetensors(&weights, None).with_context(|| format!("writing {}", weights.display()))?;
    tch::manual_seed(1);
    let x = Tensor::randn([max_batch, 3, image_size, image_size], (Kind::Float, Device::Cpu));
    write(&input, BTreeMap::from([("x".to_string(), host_tensor(&x))]))?;
    Ok(ModelCase { name: name.to_string(), config, image_size, weights, input })
}

/// Reads tensor `key` of a safetensors file as f32 values and shape.
pub fn read_f32(path: &Path, key: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let (shape, data) = TensorFile::read(path)?.f32(key)?;
    Ok((data, shape))
}

/// The SimCLR training-step case: ResNet-18 CIFAR + the trainer's projection head.
pub struct TrainCase {
    pub weights: PathBuf,
    pub views: PathBuf,
    pub batch: i64,
    pub hidden: i64,
    pub out: i64,
}

/// Writes `<dir>/simclr.safetensors` (the trainer's SimCLR student: backbone
/// under plain names, `projection_head.*`) and `<dir>/simclr.views.safetensors`
/// (`x`: both views of `batch` images, view 0 first).
pub fn train_case(dir: &Path, batch: i64) -> Result<TrainCase> {
    use pretext_trainer::methods;
    let backbone = Backbone::new(&BackboneConfig::from_name("resnet18-cifar")?);
    let mc = methods::simclr::Config::defaults(backbone.embed_dim());
    tch::manual_seed(0);
    let method = methods::build(&mc.clone().into(), backbone, Device::Cpu)?;
    let mut blobs = BTreeMap::new();
    for (prefix, params) in method.students() {
        blobs.extend(params.to_named_blobs(prefix));
    }
    let weights = dir.join("simclr.safetensors");
    write(&weights, blobs)?;
    tch::manual_seed(2);
    let views = dir.join("simclr.views.safetensors");
    write(&views, BTreeMap::from([("x".to_string(), host_tensor(&Tensor::randn([2 * batch, 3, 32, 32], (Kind::Float, Device::Cpu))))]))?;
    Ok(TrainCase { weights, views, batch, hidden: mc.proj_hidden, out: mc.proj_out })
}

/// Writes `<dir>/knn.safetensors`: `gallery` (n, dim) and `queries` (q, dim),
/// rows L2-normalised (cosine similarity = inner product, as `IndexFlatIP` expects).
pub fn knn_case(dir: &Path, n: i64, q: i64, dim: i64) -> Result<PathBuf> {
    tch::manual_seed(3);
    let norm = |t: Tensor| {
        let n = t.norm_scalaropt_dim(2, [1], true);
        t / n
    };
    let g = norm(Tensor::randn([n, dim], (Kind::Float, Device::Cpu)));
    let qs = norm(Tensor::randn([q, dim], (Kind::Float, Device::Cpu)));
    let path = dir.join("knn.safetensors");
    write(&path, BTreeMap::from([("gallery".to_string(), host_tensor(&g)), ("queries".to_string(), host_tensor(&qs))]))?;
    Ok(path)
}

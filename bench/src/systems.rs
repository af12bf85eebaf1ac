//! The Rust-side systems: the pretext runtime (ONNX Runtime and tract) on
//! the graph our exporter wrote, libtorch eager through tch on the same
//! backbone code, the SimCLR training step, and exact k-NN search.

use std::path::Path;

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn};
use pretext_models::Backbone;
use pretext_trainer::{Params, TchOps};
use tch::{Device, Tensor};

use crate::prep::{read_f32, ModelCase, TrainCase};
use crate::stats::Timing;

/// One measured inference series and the output it produced.
pub struct Measured {
    pub times_s: Vec<f64>,
    /// Output of the last run, flattened (for the cross-system numeric check).
    pub output: Vec<f32>,
}

/// The first `batch` images of the case's input.
pub fn input_batch(case: &ModelCase, batch: usize) -> Result<ArrayD<f32>> {
    let (data, shape) = read_f32(&case.input, "x")?;
    anyhow::ensure!(shape[0] >= batch, "{}: {} images, batch {batch} asked", case.input.display(), shape[0]);
    let per: usize = shape[1..].iter().product();
    let mut s = shape.clone();
    s[0] = batch;
    Ok(ArrayD::from_shape_vec(IxDyn(&s), data[..batch * per].to_vec())?)
}

/// Times a pretext runtime backend (`open_ort`/`open_tract` result) on one batch.
pub fn time_runtime(backend: &dyn pretext_runtime::Backend, x: &ArrayD<f32>, timing: &Timing) -> Result<Measured> {
    let mut last = Vec::new();
    let times = timing.run(|| -> Result<()> {
        let out = backend.run(x.clone()).with_context(|| format!("{} run", backend.name()))?;
        last = out.into_iter().next().context("graph has no output")?.into_raw_vec_and_offset().0;
        Ok(())
    })?;
    Ok(Measured { times_s: times, output: last })
}

/// libtorch eager: the same backbone code the trainer runs, in eval mode under no_grad.
pub struct TchModel {
    backbone: Backbone,
    params: Params,
}

impl TchModel {
    pub fn load(case: &ModelCase) -> Result<Self> {
        let backbone = Backbone::new(&case.config);
        let params = Params::new(backbone.params(), Device::Cpu);
        params.load_safetensors(&case.weights, "", true)?;
        Ok(Self { backbone, params })
    }

    pub fn time(&self, x: &ArrayD<f32>, timing: &Timing) -> Result<Measured> {
        let shape: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        let xt = Tensor::from_slice(x.as_slice().context("input not contiguous")?).reshape(&shape);
        let mut last = None;
        let times = timing.run(|| -> Result<()> {
            let y = tch::no_grad(|| self.backbone.forward_features(&mut TchOps::new(&self.params, false), &xt));
            last = Some(y);
            Ok(())
        })?;
        let y = last.context("no run")?.contiguous();
        Ok(Measured { times_s: times, output: Vec::try_from(y.flatten(0, -1))? })
    }
}

/// Hyper-parameters of the timed training step (the same numbers go to the Python peer).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StepConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub temperature: f64,
}

/// SimCLR steps of the trainer itself (`methods::simclr`: each view through
/// backbone and projection head (BatchNorm statistics per view), NT-Xent,
/// backward, the trainer's SGD with momentum, weight decay on weights only),
/// exactly the calls of `pretext train`'s loop minus data loading. A session
/// keeps its state between calls, so the bench can time some steps, run the
/// Python peers, and time the rest of the same trajectory.
pub struct TrainSession {
    trainer: pretext_trainer::train::Trainer,
    views: [Tensor; 2],
    step: u64,
    total_steps: u64,
}

impl TrainSession {
    /// Builds the method from the case's weights; `total_steps` only feeds the step context.
    pub fn new(case: &TrainCase, cfg: StepConfig, total_steps: u64) -> Result<Self> {
        use pretext_trainer::methods::{self, simclr};
        use pretext_trainer::optim::OptimizerKind;
        use pretext_trainer::train::{StepSchedule, Trainer};
        let backbone = Backbone::new(&pretext_models::BackboneConfig::from_name("resnet18-cifar")?);
        let mc = simclr::Config { proj_hidden: case.hidden, proj_out: case.out, temperature: cfg.temperature };
        let method = methods::build(&mc.into(), backbone, Device::Cpu)?;
        for (_, params) in method.students() {
            params.load_safetensors(&case.weights, "", true)?;
        }
        let trainer = Trainer::new(method, OptimizerKind::Sgd, cfg.momentum, StepSchedule::constant(cfg.lr, cfg.weight_decay));
        let (data, shape) = read_f32(&case.views, "x")?;
        let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let all = Tensor::from_slice(&data).reshape(&shape);
        let views = [all.narrow(0, 0, case.batch), all.narrow(0, case.batch, case.batch)];
        Ok(Self { trainer, views, step: 0, total_steps })
    }

    /// One step: (seconds, loss).
    pub fn step(&mut self) -> Result<(f64, f64)> {
        let t0 = std::time::Instant::now();
        let ctx = pretext_trainer::methods::StepCtx { step: self.step, total_steps: self.total_steps, epoch: 0 };
        let value = self.trainer.step(&self.views, &ctx)?;
        self.step += 1;
        Ok((t0.elapsed().as_secs_f64(), value))
    }

    /// `n` steps: their times (when `timed`) and losses go to the vectors.
    pub fn steps(&mut self, n: usize, timed: bool, times: &mut Vec<f64>, losses: &mut Vec<f64>) -> Result<()> {
        for _ in 0..n {
            let (dt, loss) = self.step()?;
            losses.push(loss);
            if timed {
                times.push(dt);
            }
        }
        Ok(())
    }
}

/// Exact top-k of every query with the runtime's k-NN search on a rayon
/// pool of `threads` threads, timed block by block.
pub struct KnnSearch {
    gallery: ndarray::Array2<f32>,
    queries: ndarray::Array2<f32>,
    k: usize,
    pool: rayon::ThreadPool,
}

impl KnnSearch {
    pub fn new(path: &Path, k: usize, threads: usize) -> Result<Self> {
        let (gallery, queries) = knn_data(path)?;
        Ok(Self { gallery, queries, k, pool: rayon::ThreadPoolBuilder::new().num_threads(threads).build()? })
    }

    pub fn queries(&self) -> usize {
        self.queries.nrows()
    }

    /// One timed block: per-search times and each query's top-1 index.
    pub fn time(&self, timing: &Timing) -> Result<(Vec<f64>, Vec<u32>)> {
        let mut top1 = Vec::new();
        let times = self.pool.install(|| {
            timing.run(|| -> Result<()> {
                let r = pretext_runtime::knn::exact_topk(self.gallery.view(), self.queries.view(), self.k);
                top1 = r.iter().map(|n| n.first().map(|x| x.index).unwrap_or(u32::MAX)).collect();
                Ok(())
            })
        })?;
        Ok((times, top1))
    }
}

/// The trainer's SimCLR augmentation (`Pipeline::simclr`) on random u8
/// images of `side` px: images/s on `threads` rayon threads (both views of
/// each image count as one image).
pub fn time_augment(res: pretext_data::augment::Resolution, size: usize, side: usize, images: usize, threads: usize, timing: &Timing) -> Result<Vec<f64>> {
    use rand::{Rng, SeedableRng};
    let pipe = pretext_data::augment::Pipeline::simclr(res, size);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let data: Vec<Vec<u8>> = (0..images).map(|_| (0..side * side * 3).map(|_| rng.random::<u8>()).collect()).collect();
    let refs: Vec<&[u8]> = data.iter().map(|v| v.as_slice()).collect();
    let idx: Vec<u64> = (0..images as u64).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let mut epoch = 0;
    pool.install(|| {
        timing.run(|| -> Result<()> {
            let out = pipe.batch(&refs, side, side, 0, epoch, &idx)?;
            epoch += 1;
            std::hint::black_box(out);
            Ok(())
        })
    })
}

/// Reads the k-NN case: (gallery, queries) as row-major matrices.
pub fn knn_data(path: &Path) -> Result<(ndarray::Array2<f32>, ndarray::Array2<f32>)> {
    let (g, gs) = read_f32(path, "gallery")?;
    let (q, qs) = read_f32(path, "queries")?;
    Ok((ndarray::Array2::from_shape_vec((gs[0], gs[1]), g)?, ndarray::Array2::from_shape_vec((qs[0], qs[1]), q)?))
}

//! tract backend: pure Rust, no native dependency; the embedded library's default.
//!
//! Plans: one optimized plan per concrete batch size, built on first use and cached.
//! A single plan with a symbolic batch `N` was the losing A/B option (removed in issue
//! #17): on the exporter's ResNet-18 (CIFAR stem, 32x32), CPU time per image at batch
//! 1 / 8 / 32 was per-batch 20.6-21.4 / 21.9 / 23.1-25.5 ms, symbolic 23.1-23.8 /
//! 25.0-28.0 / 25.9-27.2 ms (8-20% slower), for a one-time plan build of about 0.15 s
//! per batch size; on MobileNetV2 batch 1, 48 vs 198 ms (docs/benchmarks.md, "Choices
//! that measurement decided"): tract picks its direct depthwise and im2col-free kernels
//! only when every dimension is known.
//!
//! Threads: tract's matrix products run on a private rayon pool of
//! [`TractOptions::threads`] threads (tract-linalg's `multithread-mm` executor), installed
//! per call with `multithread_tract_scope`, never as the process-wide default, so two
//! backends never share one pool. A call made from a rayon worker thread (of any pool)
//! runs single-threaded instead: while a rayon worker waits on another pool it runs other
//! queued jobs of its own pool, and a second tract run started that way on the same
//! thread re-borrows tract's thread-local matmul scratch (a `RefCell` panic; with the
//! executor as the process default it hung `pretext knn eval`). The caller already
//! parallelizes across those jobs. Plans are built single-threaded for the same reason,
//! as the plan-cache lock is held meanwhile. `tests/threads.rs` covers both paths.
//!
//! Batches: with `threads > 1`, a batch of `N > 1` images is split: it runs as `N`
//! batch-1 runs spread over a second private pool of `threads` workers, each run
//! single-threaded, and the outputs are stacked. tract's im2col, packing, layout
//! transposes and depthwise kernels run on the calling thread only, so whole-batch runs
//! keep one core busy for ~45-65% of a CNN's time; and its per-image time grows with the
//! batch (ResNet-18 CIFAR, 1 thread: 21 ms/image at batch 1 and 8). With split batches
//! (and channel-last plans, same session) tract's batch-8 times on 2 threads went from
//! 128.5 to 88.5 ms (ResNet-18 CIFAR) and 1049 to 705 ms (ResNet-50): docs/benchmarks.md,
//! "Session 3 changes and the third quiet run". Valid because an inference graph computes each image
//! independently (no op of an exported encoder mixes images); a graph whose outputs do
//! not all carry the batch `N` as their first axis always runs whole (the choice is
//! automatic; the `whole` option for every graph was removed in issue #17). Batch 1, and
//! any batch with one thread, runs whole, on the matmul pool.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::{ArrayD, CowArray, IxDyn};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::backend::{check_input, fmt_shape, Backend};
use crate::RuntimeError;

/// Options of the tract backend. Plans are per batch size, channel-last
/// ([`crate::tract_layout`]), fp16 upcast but on aarch64 ([`crate::tract_f16`]); none of
/// these is an option (see the module docs for the measurements).
#[derive(Debug, Clone, Default)]
pub struct TractOptions {
    /// Input height/width to use when the graph declares them symbolic.
    pub input_hw: Option<(usize, usize)>,
    /// Threads for matrix products and split batches; `None` = all cores
    /// (`available_parallelism`), `1` = the calling thread only.
    pub threads: Option<usize>,
}

impl TractOptions {
    /// The thread count these options resolve to (at least 1).
    pub fn resolved_threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .max(1)
    }
}

type Plan = Arc<TypedRunnableModel>;

pub struct TractBackend {
    path: PathBuf,
    outputs: Vec<String>,
    input_shape: Vec<Option<usize>>,
    template: InferenceModel,
    per_batch: Mutex<HashMap<usize, Plan>>,
    executor: Executor,
    threads: usize,
    /// Workers of split batches; `None` with one thread or when an output does not have
    /// the batch as its first axis.
    batch_pool: Option<rayon::ThreadPool>,
}

/// Reads and parses an ONNX file into its protobuf (no graph building).
pub(crate) fn read_proto(path: &Path) -> Result<pb::ModelProto, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io { path: path.to_path_buf(), source })?;
    tract_onnx::onnx()
        .proto_model_for_read(&mut bytes.as_slice())
        .map_err(|e| RuntimeError::Load { path: path.to_path_buf(), backend: "tract", reason: format!("{e:#}") })
}

/// The graph's real inputs (initializers excluded) with their declared dims (`None` = symbolic).
pub(crate) fn proto_inputs(proto: &pb::ModelProto) -> Vec<(String, Option<Vec<Option<usize>>>)> {
    let Some(g) = proto.graph.as_ref() else { return vec![] };
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| (i.name.clone(), declared_dims(i)))
        .collect()
}

/// The graph's outputs with their declared dims (`None` = symbolic).
pub(crate) fn proto_outputs(proto: &pb::ModelProto) -> Vec<(String, Option<Vec<Option<usize>>>)> {
    let Some(g) = proto.graph.as_ref() else { return vec![] };
    g.output.iter().map(|o| (o.name.clone(), declared_dims(o))).collect()
}

/// A value's declared tensor dims; `None` when it declares no shape.
fn declared_dims(v: &pb::ValueInfoProto) -> Option<Vec<Option<usize>>> {
    v.r#type.as_ref().and_then(|t| t.value.as_ref()).and_then(|pb::type_proto::Value::TensorType(tt)| {
        tt.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => Some(*v as usize),
                    _ => None,
                })
                .collect()
        })
    })
}

/// Checks there is exactly one rank-4 input and returns its declared shape.
pub(crate) fn image_input(path: &Path, proto: &pb::ModelProto) -> Result<Vec<Option<usize>>, RuntimeError> {
    let inputs = proto_inputs(proto);
    if inputs.len() != 1 {
        return Err(RuntimeError::InputCount { path: path.to_path_buf(), count: inputs.len() });
    }
    let (name, dims) = &inputs[0];
    let dims = dims.clone().unwrap_or_else(|| vec![None; 4]);
    if dims.len() != 4 {
        return Err(RuntimeError::InputRank {
            path: path.to_path_buf(),
            input: name.clone(),
            rank: dims.len(),
            shape: fmt_shape(&dims),
        });
    }
    Ok(dims)
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Load { path: path.to_path_buf(), backend: "tract", reason: e.to_string() }
}

/// Opens an ONNX file with tract, default options (all cores).
pub fn open_tract(path: &Path) -> Result<Box<dyn Backend>, RuntimeError> {
    Ok(Box::new(TractBackend::open(path, &TractOptions::default())?))
}

/// Opens an ONNX file with tract and explicit options.
pub fn open_tract_with(path: &Path, opts: &TractOptions) -> Result<Box<dyn Backend>, RuntimeError> {
    Ok(Box::new(TractBackend::open(path, opts)?))
}

impl TractBackend {
    pub fn open(path: &Path, opts: &TractOptions) -> Result<Self, RuntimeError> {
        let proto = read_proto(path)?;
        let mut declared = image_input(path, &proto)?;
        if let Some((h, w)) = opts.input_hw {
            declared[2] = declared[2].or(Some(h));
            declared[3] = declared[3].or(Some(w));
        }
        declared[0] = None;
        let threads = opts.resolved_threads();
        // Parse with the model's directory so tensors stored as ONNX external data
        // (`location` relative to the model file) resolve; `model_for_proto_model`
        // has no path and fails on them.
        let dir = path.parent().map(|d| d.to_str().ok_or_else(|| load_err(path, format!("directory {} is not UTF-8", d.display())))).transpose()?;
        let parsed = tract_onnx::onnx().parse(&proto, dir).map_err(|e| load_err(path, format!("{e:#}")))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(load_err(path, format!("unresolved graph inputs {:?}", parsed.unresolved_inputs)));
        }
        let mut model = parsed.model;
        let outputs: Vec<String> = model
            .output_outlets()
            .map_err(|e| load_err(path, e))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        // ONNX output names are the names of the output values; tract names the
        // node after its first output, so prefer the proto's names when present.
        let outputs = match proto.graph.as_ref() {
            Some(g) if g.output.len() == outputs.len() => g.output.iter().map(|o| o.name.clone()).collect(),
            _ => outputs,
        };
        let n = model.symbols.sym("N");
        let dims: TVec<TDim> = declared
            .iter()
            .enumerate()
            .map(|(i, d)| match (i, d) {
                (0, _) => n.to_dim(),
                (_, Some(v)) => v.to_dim(),
                (1, None) => model.symbols.sym("C").to_dim(),
                (2, None) => model.symbols.sym("H").to_dim(),
                (_, None) => model.symbols.sym("W").to_dim(),
            })
            .collect();
        model
            .set_input_fact(0, f32::fact(dims).into())
            .map_err(|e| load_err(path, format!("{e:#}")))?;
        // Type-check once now so a broken model fails at open, not at first run, and
        // see whether every output keeps the batch `N` as its first axis.
        let typed = model.clone().into_typed().map_err(|e| load_err(path, format!("{e:#}")))?;
        let batch_first = (0..typed.outputs.len()).all(|i| {
            typed.output_fact(i).is_ok_and(|f| f.shape.rank() > 0 && f.shape[0] == n.to_dim())
        });
        Ok(TractBackend {
            path: path.to_path_buf(),
            outputs,
            input_shape: declared,
            template: model,
            per_batch: Mutex::new(HashMap::new()),
            executor: if threads > 1 { Executor::multithread_with_name(threads, "pretext-tract") } else { Executor::SingleThread },
            threads,
            batch_pool: if threads > 1 && batch_first {
                Some(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .thread_name(|i| format!("pretext-tract-batch-{i}"))
                        .build()
                        .map_err(|e| load_err(path, format!("cannot start {threads} tract batch threads: {e}")))?,
                )
            } else {
                None
            },
        })
    }

    fn plan_for(&self, shape: &[usize]) -> Result<Plan, RuntimeError> {
        let b = shape[0];
        // The lock is held while building so concurrent first uses build a plan once.
        let mut cache = self.per_batch.lock().map_err(|_| load_err(&self.path, "plan cache poisoned"))?;
        if let Some(p) = cache.get(&b) {
            return Ok(p.clone());
        }
        let mut m = self.template.clone();
        // Single-threaded under the lock (see the module doc).
        let plan = multithread_tract_scope(Executor::SingleThread, || {
            m.set_input_fact(0, f32::fact(shape).into())
                .and_then(|_| crate::tract_f16::into_optimized(m, crate::tract_f16::UPCAST_F16))
                .and_then(|m| m.into_runnable())
        })
        .map_err(|e| load_err(&self.path, format!("{e:#}")))?;
        cache.insert(b, plan.clone());
        Ok(plan)
    }

    /// Threads the matrix products run on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs a plan on one input with the given executor and converts the outputs to f32 arrays.
    /// `input` is borrowed or owned so that each path copies it at most once (a split
    /// batch's image is a view; the NHWC transpose is the copy).
    fn run_plan(&self, plan: &Plan, executor: Executor, input: CowArray<'_, f32, IxDyn>) -> Result<Vec<ArrayD<f32>>, RuntimeError> {
        let shape = input.shape().to_vec();
        let run_err = |e: TractError| RuntimeError::Run { backend: "tract".into(), shape: shape.clone(), reason: format!("{e:#}") };
        // A channel-last plan takes NHWC (see `tract_layout::channel_last_input`).
        let input = if plan.model().properties.contains_key(crate::tract_layout::NHWC_INPUT) {
            input.view().permuted_axes(vec![0, 2, 3, 1]).as_standard_layout().into_owned()
        } else {
            input.into_owned()
        };
        let out = multithread_tract_scope(executor, || plan.run(tvec!(Tensor::from(input).into_tvalue()))).map_err(run_err)?;
        out.into_iter()
            .zip(&self.outputs)
            .map(|(v, name)| {
                let t = v.into_tensor();
                let t = match t.datum_type() {
                    DatumType::F32 => t,
                    DatumType::F16 | DatumType::F64 => t.cast_to::<f32>().map_err(run_err)?.into_owned(),
                    dt => {
                        return Err(RuntimeError::OutputType {
                            backend: "tract".into(),
                            output: name.clone(),
                            dtype: format!("{dt:?}"),
                        })
                    }
                };
                t.into_plain_array::<f32>().map_err(run_err)
            })
            .collect()
    }

    /// A split batch: the images of `input` run one by one on the batch pool,
    /// single-threaded each, and each output is stacked along its first axis.
    fn run_split(&self, pool: &rayon::ThreadPool, input: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>, RuntimeError> {
        use rayon::prelude::*;
        let mut one = input.shape().to_vec();
        one[0] = 1;
        let plan = self.plan_for(&one)?;
        let n = input.shape()[0];
        let parts: Vec<Vec<ArrayD<f32>>> = pool.install(|| {
            (0..n)
                .into_par_iter()
                .map(|i| {
                    let x = input.slice_axis(ndarray::Axis(0), ndarray::Slice::from(i..i + 1));
                    self.run_plan(&plan, Executor::SingleThread, x.into())
                })
                .collect::<Result<_, _>>()
        })?;
        (0..parts[0].len())
            .map(|k| {
                let views: Vec<_> = parts.iter().map(|p| p[k].view()).collect();
                ndarray::concatenate(ndarray::Axis(0), &views).map_err(|e| RuntimeError::Run {
                    backend: "tract".into(),
                    shape: input.shape().to_vec(),
                    reason: format!("stacking output {}: {e}", self.outputs[k]),
                })
            })
            .collect()
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &str {
        "tract"
    }

    fn run(&self, input: ArrayD<f32>) -> Result<Vec<ArrayD<f32>>, RuntimeError> {
        let shape = input.shape().to_vec();
        check_input("tract", &self.input_shape, &shape)?;
        // Single-threaded on a rayon worker (see the module doc).
        let on_worker = rayon::current_thread_index().is_some();
        if let (Some(pool), false, true) = (&self.batch_pool, on_worker, shape[0] > 1) {
            return self.run_split(pool, &input);
        }
        let plan = self.plan_for(&shape)?;
        let executor = if on_worker { Executor::SingleThread } else { self.executor.clone() };
        self.run_plan(&plan, executor, input.into())
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn input_shape(&self) -> &[Option<usize>] {
        &self.input_shape
    }
}

//! Export speed and graph quality.
//!
//! 1. `pretext` export of a ResNet-50 at 224 px (random weights, BN
//!    statistics randomised) to ONNX, end to end (load, record, passes, write).
//! 2. ONNX Runtime latency (batch 1, 1 intra-op thread) of our graph vs the
//!    graph `torch.onnx.export` makes from the same weights (generated with
//!    the venv python, `PRETEXT_PYTHON`), reported as a ratio.
//!
//! Run: `cargo bench --bench export`.
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{ArrayD, IxDyn};
use pretext_exporter::{export_file, ExportOptions};
use pretext_models::{Backbone, BackboneConfig, ParamKind};

/// A random ResNet-50 checkpoint written with pretext's metadata (no libtorch).
fn write_checkpoint(path: &Path) {
    let cfg = BackboneConfig::from_name("resnet50").unwrap();
    let specs = Backbone::new(&cfg).params();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = Vec::new();
    for s in &specs {
        let shape: Vec<usize> = s.shape.iter().map(|&d| d as usize).collect();
        if s.kind == ParamKind::Counter {
            blobs.push((s.name.clone(), shape, 0i64.to_le_bytes().to_vec(), safetensors::Dtype::I64));
            continue;
        }
        let n = s.numel() as usize;
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let leaf = s.name.rsplit('.').next().unwrap();
        let v: Vec<f32> = (0..n)
            .map(|_| match leaf {
                "running_var" => 0.5 + rnd(),
                "running_mean" | "bias" => 0.2 * (rnd() - 0.5),
                "weight" if shape.len() == 1 => 0.5 + rnd(),
                _ => (rnd() - 0.5) * (6.0 / fan_in as f32).sqrt(),
            })
            .collect();
        blobs.push((s.name.clone(), shape, v.iter().flat_map(|x| x.to_le_bytes()).collect(), safetensors::Dtype::F32));
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
    let meta = HashMap::from([(pretext_models::tensorfile::keys::ARCH.to_string(), serde_json::to_string(&cfg).unwrap())]);
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// `torch.onnx.export` of torchvision's resnet50 (fc = Identity) loaded from the same safetensors.
fn torch_onnx_export(ckpt: &Path, out: &Path) {
    let py = std::env::var("PRETEXT_PYTHON").expect("PRETEXT_PYTHON (set by .cargo/config.toml) must point at the venv python");
    let script = r#"
import sys, torch, torchvision
from safetensors.torch import load_file
m = torchvision.models.resnet50()
m.fc = torch.nn.Identity()
missing, unexpected = m.load_state_dict(load_file(sys.argv[1]), strict=False)
assert not missing, missing
m.eval()
torch.onnx.export(m, torch.zeros(1, 3, 224, 224), sys.argv[2], input_names=["input"], output_names=["features"],
                  dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False)
"#;
    let st = std::process::Command::new(py).arg("-c").arg(script).arg(ckpt).arg(out).status().expect("run python");
    assert!(st.success(), "torch.onnx.export failed");
}

/// Median latencies of two backends, measured alternately (A, B, A, B, ...)
/// so that load from other processes hits both alike.
fn paired_median_latency(a: &dyn pretext_runtime::Backend, b: &dyn pretext_runtime::Backend, x: &ArrayD<f32>, n: usize) -> (Duration, Duration) {
    for _ in 0..3 {
        a.run(x.clone()).unwrap();
        b.run(x.clone()).unwrap();
    }
    let time = |m: &dyn pretext_runtime::Backend| {
        let s = Instant::now();
        m.run(x.clone()).unwrap();
        s.elapsed()
    };
    let (mut ta, mut tb): (Vec<Duration>, Vec<Duration>) = (0..n).map(|_| (time(a), time(b))).unzip();
    ta.sort();
    tb.sort();
    (ta[n / 2], tb[n / 2])
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("resnet50.safetensors");
    write_checkpoint(&ckpt);
    let ours = dir.path().join("ours.onnx");
    let opts = ExportOptions::default();
    let mut g = c.benchmark_group("export");
    g.sample_size(10);
    g.bench_function("resnet50_224", |b| b.iter(|| export_file(&ckpt, None, &ours, &opts).unwrap()));
    g.finish();

    let theirs = dir.path().join("torch.onnx");
    torch_onnx_export(&ckpt, &theirs);
    let ort_opts = pretext_runtime::OrtOptions { intra_threads: Some(1), ..Default::default() };
    let a = pretext_runtime::open_ort(&ours, &ort_opts).unwrap();
    let b = pretext_runtime::open_ort(&theirs, &ort_opts).unwrap();
    let x = ArrayD::from_shape_fn(IxDyn(&[1, 3, 224, 224]), |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 17) as f32 / 8.0 - 1.0);
    let ya = a.run(x.clone()).unwrap();
    let yb = b.run(x.clone()).unwrap();
    let err = pretext_runtime::compare::max_abs_diff(&ya[0], &yb[0]) as f32;
    let mut g = c.benchmark_group("ort_resnet50_224_b1");
    g.sample_size(20);
    g.bench_function("pretext", |bch| bch.iter(|| a.run(x.clone()).unwrap()));
    g.bench_function("torch_onnx_export", |bch| bch.iter(|| b.run(x.clone()).unwrap()));
    g.finish();
    let (ta, tb) = paired_median_latency(a.as_ref(), b.as_ref(), &x, 40);
    println!(
        "ORT resnet50@224 b1 1 thread, paired medians of 40: pretext {:.2} ms, torch.onnx.export {:.2} ms, ratio pretext/torch = {:.3}; max |diff| of outputs {err:.2e}",
        ta.as_secs_f64() * 1e3,
        tb.as_secs_f64() * 1e3,
        ta.as_secs_f64() / tb.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

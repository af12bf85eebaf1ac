//! Criterion: tract vs ONNX Runtime latency on ResNet-18 CIFAR at batch 1
//! and 8, on a graph our exporter lowers from seed-0 random-init weights.
//! Both backends get 2 intra-op threads, as in `pretext bench`.
//!
//! `cargo bench --bench runtime` (about a minute).
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::{ArrayD, IxDyn};
use pretext_models::{Backbone, BackboneConfig};
use pretext_runtime::{open_ort, open_tract, OrtOptions};
use pretext_trainer::Params;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = BackboneConfig::from_name("resnet18-cifar").expect("known backbone");
    let weights = dir.path().join("resnet18-cifar.safetensors");
    tch::manual_seed(0);
    Params::new(Backbone::new(&config).params(), tch::Device::Cpu).save_safetensors(&weights, None).expect("write weights");
    let onnx = dir.path().join("resnet18-cifar.onnx");
    pretext_exporter::export_file(&weights, Some(config), &onnx, &pretext_exporter::ExportOptions::default()).expect("export");
    let ort = open_ort(&onnx, &OrtOptions { intra_threads: Some(2), inter_threads: Some(1), ..Default::default() }).expect("ort session");
    let tract = open_tract(&onnx).expect("tract plan");

    let mut g = c.benchmark_group("resnet18-cifar");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for batch in [1usize, 8] {
        let x = ArrayD::from_shape_fn(IxDyn(&[batch, 3, 32, 32]), |i| ((i[1] * 1024 + i[2] * 32 + i[3]) % 255) as f32 / 255.0 - 0.5);
        for (name, backend) in [("ort", &ort), ("tract", &tract)] {
            g.bench_with_input(BenchmarkId::new(name, batch), &x, |b, x| b.iter(|| backend.run(x.clone()).expect("run")));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

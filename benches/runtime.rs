//! Criterion: tract vs ONNX Runtime latency on ResNet-18 CIFAR (batch 1 and 8).
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(_c: &mut Criterion) {}

criterion_group!(benches, bench);
criterion_main!(benches);

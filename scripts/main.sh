#!/usr/bin/env bash
# README command 1: set up everything (idempotent), then the main job on the
# embedded default: train a small encoder on CIFAR-10 (CPU budget), export it
# to ONNX with a parity check, build a k-NN gallery and evaluate it with tract,
# printing accuracy and latency.
#
# Knobs (environment): PRETEXT_DATA (dataset path), PRETEXT_MINUTES (training
# budget, default 5), PRETEXT_RUN (run folder, default runs/main),
# PRETEXT_METHOD (default simclr).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build --bin pretext
bin="$root/target/debug/pretext"
data="${PRETEXT_DATA:-$root/../shared/data/cifar10-jpg.tar.gz}"
run="${PRETEXT_RUN:-runs/main}"
minutes="${PRETEXT_MINUTES:-5}"
method="${PRETEXT_METHOD:-simclr}"

rm -rf "$run"
echo "== 1/4 train: $method, resnet18-cifar width 16, $minutes min on CPU"
"$bin" train --method "$method" --backbone resnet18-cifar --width 16 --data "$data" \
  --max-minutes "$minutes" --batch-size 256 --out "$run"
echo "== 2/4 export to ONNX, verified against libtorch with tract and ONNX Runtime"
"$bin" export "$run/backbone.safetensors" -o "$run/model.onnx" --verify --verify-data "$data"
echo "== 3/4 k-NN gallery from the train split (tract)"
"$bin" knn build "$run/model.onnx" --data "$data" --split train -o "$run/gallery.safetensors"
echo "== 4/4 k-NN eval on the test split (tract): accuracy and latency"
"$bin" knn eval "$run/model.onnx" "$run/gallery.safetensors" --data "$data" --split test

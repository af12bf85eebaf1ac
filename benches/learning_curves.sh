#!/usr/bin/env bash
# Short CPU learning curves on CIFAR-10 for DINO, MAE, MoCo v2, SimSiam,
# Barlow Twins and VICReg
# (docs/results.md, "Learning curves"): one run at a time, one libtorch thread,
# k-NN (k=20 T=0.07 and k=200 T=0.1) on the 10,000 test images against a
# 10,000-image strided train gallery at the start (random init), mid-run and
# the end; then one k-NN-vs-minutes PNG per k-NN setting.
#
#   bash benches/learning_curves.sh [PRETEXT_BIN] [RUN_ROOT]
#   ONLY="barlow_twins vicreg" bash benches/learning_curves.sh   (only these runs, no PNGs)
set -euo pipefail
BIN=${1:-target/debug/pretext}
ROOT=${2:-runs/curves}
DATA=${DATA:-/work/shared/data/cifar10-jpg.tar.gz}
export RAYON_NUM_THREADS=1
common=(--data "$DATA" --threads 1 --quiet --knn-train 10000 --seed 0)
resnet=(--backbone resnet18-cifar --width 16 --batch-size 64)
ONLY=${ONLY:-}
run() {
    local name=$1; shift
    if [[ -n $ONLY && " $ONLY " != *" $name "* ]]; then return; fi
    echo "== $name: $* (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    local t0=$SECONDS
    "$BIN" train "${common[@]}" --out "$ROOT/$name" "$@"
    echo "== $name: $((SECONDS - t0)) s wall (load: $(cut -d' ' -f1-3 /proc/loadavg))"
}
# About 5 training minutes each at the ~165 images/s measured for the ResNet
# methods (one thread, load 2-3): 50,000 images = one CIFAR-10 epoch, k-NN at
# 0, 0.5 and 1 epoch; --max-minutes 7 is only a safety stop.
run moco_v2 --method moco_v2 "${resnet[@]}" --epochs 1 --knn-every 0.5 --lr 0.06 --max-minutes 7
run simsiam --method simsiam "${resnet[@]}" --epochs 1 --knn-every 0.5 --lr 0.06 --max-minutes 7
# DINO: 2 global + 2 local crops (about twice the compute per image): 2 epochs
# of a 12,500-image strided subset, so that the per-epoch teacher-temperature
# warmup (0.04 -> 0.07 over 2 epochs) and the last-layer freeze (epoch 0) both act.
run dino --method dino "${resnet[@]}" --n-local 2 --limit 12500 --epochs 2 --knn-every 1 --warmup-teacher-epochs 2 --freeze-last-layer 1 --max-minutes 7
# MAE: ViT-Tiny at 32 px, patch 4, 4 blocks; AdamW with a short warmup.
run mae --method mae --backbone vit-tiny-cifar --depth 4 --batch-size 64 --limit 25000 --epochs 1 --knn-every 0.5 --lr 1e-3 --warmup-epochs 0.1 --weight-decay 0.05 --max-minutes 7
# MAE follow-up (docs/results.md): the full 50,000 images at two learning rates,
# k-NN at the start and the end only.
run mae_50k --method mae --backbone vit-tiny-cifar --depth 4 --batch-size 64 --epochs 1 --knn-every 1 --lr 1e-3 --warmup-epochs 0.1 --weight-decay 0.05 --max-minutes 7
run mae_50k_lr2.5e-4 --method mae --backbone vit-tiny-cifar --depth 4 --batch-size 64 --epochs 1 --knn-every 1 --lr 2.5e-4 --warmup-epochs 0.1 --weight-decay 0.05 --max-minutes 7
# Barlow Twins and VICReg (2 views, one 4x-wide projector each): the MoCo/SimSiam budget.
run barlow_twins --method barlow_twins "${resnet[@]}" --epochs 1 --knn-every 0.5 --lr 0.06 --max-minutes 7
run vicreg --method vicreg "${resnet[@]}" --epochs 1 --knn-every 0.5 --lr 0.06 --max-minutes 7
# The PNGs need every run dir, so they are drawn on full runs only.
[[ -n $ONLY ]] && exit 0
cargo run -q -p pretext-trainer --example knn_curves -- benches/results/learning_curves \
    dino="$ROOT/dino" mae="$ROOT/mae" mae_50k="$ROOT/mae_50k" moco_v2="$ROOT/moco_v2" simsiam="$ROOT/simsiam" \
    barlow_twins="$ROOT/barlow_twins" vicreg="$ROOT/vicreg"

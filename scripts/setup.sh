#!/usr/bin/env bash
# Idempotent setup: Python venv with torch/onnxruntime/onnx, a CPU view of
# libtorch for tch, and .cargo/config.toml so that cargo (and the binaries it
# builds) find libtorch and libonnxruntime with nothing sourced by hand.
# Takes seconds when already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
req="$root/scripts/requirements.txt"
# The bench peers and fixture oracles (faiss, timm, lightly) too, so that every
# command the README shows works after it with no extra install step.
req_bench="$root/scripts/requirements-bench.txt"
stamp="$venv/.pretext-requirements.sha256"
want="$(cat "$req" "$req_bench" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python requirements (torch is large: a few minutes the first time)"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$req" -r "$req_bench"
  echo "$want" > "$stamp"
fi

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
torch_dir="$site/torch"
ort_lib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* | head -n1)"
[ -f "$torch_dir/lib/libtorch_cpu.so" ] || { echo "[setup] no libtorch_cpu.so under $torch_dir" >&2; exit 1; }

# CPU view of libtorch: tch links torch_cuda whenever libtorch_cuda.so sits
# beside libtorch_cpu.so, so we hand it a folder without it. libtorch.so is an
# empty stub (the real one only pulls in libtorch_cuda.so); with --as-needed
# it never reaches the binary's NEEDED list.
lt="$venv/libtorch-cpu"
mkdir -p "$lt/lib"
ln -sfn "$torch_dir/include" "$lt/include"
for f in libtorch_cpu.so libc10.so libgomp.so.1; do ln -sfn "$torch_dir/lib/$f" "$lt/lib/$f"; done
ln -sfn "$torch_dir/lib/libgomp.so.1" "$lt/lib/libgomp.so"
if [ ! -f "$lt/lib/libtorch.so" ] || [ -L "$lt/lib/libtorch.so" ]; then
  rm -f "$lt/lib/libtorch.so"
  echo "" | cc -shared -x c -o "$lt/lib/libtorch.so" -
fi

mkdir -p .cargo
cfg=".cargo/config.toml"
new="$(cat <<TOML
# Written by scripts/setup.sh for this checkout; do not edit or commit.
[env]
LIBTORCH = "$lt"
LIBTORCH_BYPASS_VERSION_CHECK = "1"
ORT_DYLIB_PATH = "$ort_lib"
PRETEXT_PYTHON = "$venv/bin/python"

[build]
rustflags = ["-C", "link-arg=-Wl,-rpath,$torch_dir/lib"]
TOML
)"
if [ ! -f "$cfg" ] || [ "$(cat "$cfg")" != "$new" ]; then
  echo "$new" > "$cfg"
  echo "[setup] wrote $cfg"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "[setup] installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null
fi
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "${PRETEXT_SKIP_APT:-0}" != 1 ]; then
  echo "[setup] installing Fashion-MNIST (apt dataset-fashion-mnist)"
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "[setup] warning: could not install dataset-fashion-mnist; its tests will say so" >&2
fi
echo "[setup] ready: libtorch $torch_dir, onnxruntime $ort_lib"

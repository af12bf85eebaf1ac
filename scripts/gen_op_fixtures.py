#!/usr/bin/env python3
"""Generates tests/fixtures/ops/ops.safetensors: PyTorch references for the ops
of models/src/ops.rs that heads and decoders use (l2_normalize, the two
affine-free / batch-statistics BatchNorms, gather_tokens, masked_blend,
upsample, conv_transpose2d).

Per case `<case>.*`: the inputs, PyTorch's output `y`, and for trainable ops
the gradients `grad_<input>` of the scalar `(y * r).sum()` with the random
`r` stored as `<case>.r`. Train-mode BatchNorm also stores the running
buffers after the step (`mean_after`, `var_after`), eval-mode output `y_eval`.
Run: .venv/bin/python scripts/gen_op_fixtures.py
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "ops", "ops.safetensors")
g = torch.Generator().manual_seed(0)
T = {}


def randn(*s):
    return torch.randn(*s, generator=g)


def case(name, fn, inputs, grads, extra=None):
    """Stores inputs, y = fn(**inputs), r and d(y*r).sum()/d(input) for `grads`."""
    ins = {k: (v.clone().requires_grad_(k in grads)) for k, v in inputs.items()}
    y = fn(**ins)
    r = randn(*y.shape)
    if grads:
        (y * r).sum().backward()
    for k, v in inputs.items():
        T[f"{name}.{k}"] = v
    T[f"{name}.y"] = y.detach()
    T[f"{name}.r"] = r
    for k in grads:
        T[f"{name}.grad_{k}"] = ins[k].grad
    for k, v in (extra or {}).items():
        T[f"{name}.{k}"] = v


# l2_normalize: one row ~0 so eps clamps (norm 1e-14 < eps 1e-12), 2-D and 3-D.
x = randn(4, 7)
x[2] *= 1e-14
case("l2_2d", lambda x: F.normalize(x, dim=-1, eps=1e-12), {"x": x}, ["x"])
case("l2_3d", lambda x: F.normalize(x, dim=-1, eps=1e-6), {"x": randn(2, 3, 5)}, ["x"])
# DINO's weight-normalised last layer (weight_g = 1): linear(x, normalize(v, dim=1)).
case("wnorm", lambda x, w: F.linear(x, F.normalize(w, dim=-1, eps=1e-12)), {"x": randn(3, 6), "w": randn(5, 6) * 0.3}, ["x", "w"])


def bn_plain(name, shape):
    x = randn(*shape) * 2 + 0.5
    c = shape[1]
    mean, var = randn(c) * 0.3, torch.rand(c, generator=g) + 0.5
    m, v = mean.clone(), var.clone()
    case(name, lambda x: F.batch_norm(x, m, v, None, None, True, 0.1, 1e-5), {"x": x}, ["x"], {"mean_after": m, "var_after": v})
    T[f"{name}.running_mean"], T[f"{name}.running_var"] = mean, var
    T[f"{name}.y_eval"] = F.batch_norm(x, mean, var, None, None, False, 0.1, 1e-5)


# BatchNorm1d/2d(affine=False), train step from given buffers, momentum 0.1, eps 1e-5.
bn_plain("bn_plain_2d", (6, 4))
bn_plain("bn_plain_4d", (3, 4, 5, 5))


def bn_batch(x, w=None, b=None):
    return F.batch_norm(x, None, None, w, b, True, 0.0, 1e-5)


# BatchNorm(track_running_stats=False): batch statistics in train and eval alike.
case("bn_batch_2d", bn_batch, {"x": randn(6, 4) * 2 + 1, "w": torch.rand(4, generator=g) + 0.5, "b": randn(4)}, ["x", "w", "b"])
case("bn_batch_4d", lambda x: bn_batch(x), {"x": randn(3, 4, 5, 5) - 0.5}, ["x"])
mod = torch.nn.BatchNorm2d(4, affine=False, track_running_stats=False).eval()
assert torch.allclose(mod(T["bn_batch_4d.x"]), T["bn_batch_4d.y"]), "eval mode uses batch statistics"

# gather_tokens: MAE keeps ids_keep = ids_shuffle[:, :K] of a per-sample permutation.
ids = torch.stack([torch.randperm(6, generator=g)[:3] for _ in range(2)])
case("gather", lambda x, ids: torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1])), {"x": randn(2, 6, 5), "ids": ids}, ["x"])

# masked_blend: SimMIM / MAE mask tokens.
mask = (torch.rand(2, 6, generator=g) < 0.5).float()
case("blend", lambda mask, x, token: x * (1 - mask.unsqueeze(-1)) + token * mask.unsqueeze(-1),
     {"mask": mask, "x": randn(2, 6, 5), "token": randn(1, 1, 5)}, ["x", "token"])

# upsample.
for mode, s in [("nearest", 2), ("nearest", 3), ("bilinear", 2), ("bilinear", 3)]:
    case(f"up_{mode}_{s}", lambda x: F.interpolate(x, scale_factor=s, mode=mode, **({} if mode == "nearest" else {"align_corners": False})),
         {"x": randn(2, 3, 4, 5)}, ["x"])

# conv_transpose2d: (stride, padding, output_padding, dilation, groups), weight (in, out/groups, kh, kw).
for name, (cin, cout, k, s, p, op, d, gr, bias) in {
    "convt_s2": (4, 3, 3, 2, 1, 1, 1, 1, True),
    "convt_g2": (4, 6, 3, 1, 1, 0, 2, 2, False),
    "convt_k4": (2, 3, 4, 2, 1, 0, 1, 1, True),
}.items():
    ins = {"x": randn(2, cin, 5, 4), "w": randn(cin, cout // gr, k, k) * 0.3}
    if bias:
        ins["b"] = randn(cout)
    case(name, lambda x, w, b=None: F.conv_transpose2d(x, w, b, s, p, op, gr, d), ins, list(ins))
    T[f"{name}.args"] = torch.tensor([s, p, op, d, gr])

save_file({k: v.contiguous() for k, v in T.items()}, OUT)
print(OUT, len(T), "tensors", os.path.getsize(OUT), "bytes")

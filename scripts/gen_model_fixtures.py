#!/usr/bin/env python3
"""Generates the PyTorch parity fixtures in tests/fixtures/models/.

For torchvision resnet18 and mobilenet_v2 and timm vit_tiny (random
weights, eval mode) it writes `<name>.safetensors.gz`, the state dict as
saved by `safetensors.torch.save_file` (gzipped), and `<name>_io.safetensors`
with the input batch and PyTorch's own eval-mode outputs (`features`, and
`logits` where the model keeps its classifier).

To keep the committed files small (< 5 MB), weights are drawn with torch's
default init and then rounded to fp16-representable values and stored as
F16; resnet18's weights are random signs times the init's std per tensor
(still a full-size torchvision resnet18), which gzip compresses well.
BatchNorm statistics and affine parameters are randomised so that BN
folding is exercised. Run: .venv/bin/python scripts/gen_model_fixtures.py
"""
import gzip
import os

import numpy as np
import timm
import torch
import torchvision
from safetensors.torch import save, save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models")


def randomise_bn(m, g):
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
            mod.num_batches_tracked.fill_(7)


def to_half_grid(m, signs, g):
    """Round every float tensor to fp16 values (optionally random signs * std)."""
    for name, t in m.state_dict().items():
        if not t.is_floating_point():
            continue
        if signs and t.dim() >= 2:
            s = t.std().item()
            t.copy_(torch.where(torch.rand(t.shape, generator=g) < 0.5, -s, s))
        t.copy_(t.half().float())


def save_fixture(name, model, x, outputs):
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    blob = save(sd, metadata={"format": "pt"})
    with gzip.open(os.path.join(OUT, f"{name}.safetensors.gz"), "wb", compresslevel=9) as f:
        f.write(blob)
    io = {"input": x.contiguous()}
    io.update({k: v.contiguous() for k, v in outputs.items()})
    save_file(io, os.path.join(OUT, f"{name}_io.safetensors"))
    print(name, {k: tuple(v.shape) for k, v in io.items()}, os.path.getsize(os.path.join(OUT, f"{name}.safetensors.gz")))


@torch.no_grad()
def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    # torchvision resnet18, full size, with its fc classifier (1000 classes).
    m = torchvision.models.resnet18()
    randomise_bn(m, g)
    to_half_grid(m, signs=True, g=g)
    m.eval()
    x = torch.rand(2, 3, 64, 64, generator=g) * 4 - 2
    logits = m(x)
    fc = m.fc
    m.fc = torch.nn.Identity()
    feats = m(x)
    m.fc = fc
    save_fixture("resnet18", m, x, {"features": feats, "logits": logits})

    # torchvision mobilenet_v2 at width 0.25, headless (classifier removed from the dict).
    m = torchvision.models.mobilenet_v2(width_mult=0.25)
    randomise_bn(m, g)
    to_half_grid(m, signs=False, g=g)
    m.classifier = torch.nn.Identity()
    m.eval()
    x = torch.rand(2, 3, 64, 64, generator=g) * 4 - 2
    save_fixture("mobilenet_v2", m, x, {"features": m(x)})

    # timm vit_tiny: depth 2, 32 px, 8 px patches, headless (num_classes=0 -> class-token features).
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, patch_size=8, num_classes=0)
    # timm inits biases and tokens to ~0; give them values so they matter.
    for k, v in m.state_dict().items():
        if k.endswith("bias") or k in ("cls_token",):
            v.copy_(torch.randn(v.shape, generator=g) * 0.05)
    to_half_grid(m, signs=False, g=g)
    m.eval()
    x = torch.rand(2, 3, 32, 32, generator=g) * 4 - 2
    save_fixture("vit_tiny", m, x, {"features": m(x)})


if __name__ == "__main__":
    main()

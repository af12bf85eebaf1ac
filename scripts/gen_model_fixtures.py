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

`--out DIR --data DATA NAME...` writes the full-size references instead,
too big to commit (tests/parity_pytorch.rs runs it into a cache under
target/ keyed by this file's hash): torchvision resnet34, resnet50 and
mobilenet_v2 (width 1.0), timm vit_small_patch16_224 and
vit_base_patch16_224 (depth 2, 64 px, 16 px patches), each with its
classifier, random init. BatchNorm statistics are warmed on real images
(train-mode passes over CIFAR-10 train images and raccoon photos, momentum
None: a plain average); ViT weights are redrawn at std 1/sqrt(fan_in) so
attention is not uniform. `DIR/NAME.safetensors` is the state dict (F32,
unchanged keys); `DIR/NAME_io.safetensors` holds `input` (2 CIFAR-10 test
images and 2 raccoon photos at 64 px, ImageNet-normalised), the eval-mode
`features` (pooled, pre-classifier) and `logits` in F32, and
`features_f64`, `logits_f64`: the same network evaluated in float64 (the
function every fp32 implementation approximates: PyTorch's own fp32 error).
"""
import argparse
import gzip
import io
import os
import tarfile

import numpy as np
import timm
import torch
import torchvision
from PIL import Image
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


REFERENCES = ("resnet34", "resnet50", "mobilenet_v2", "vit_small", "vit_base")
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def images(archive, want, n, stride, size):
    """`n` images (every `stride`-th whose path `want` accepts, in archive order), (n, 3, size, size), ImageNet-normalised."""
    out, seen = [], 0
    with tarfile.open(archive, "r|gz") as tar:
        for m in tar:
            if not (m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png")) and want(m.name)):
                continue
            seen += 1
            if (seen - 1) % stride:
                continue
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB").resize((size, size), Image.BILINEAR)
            out.append(torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0)
            if len(out) == n:
                break
    assert len(out) == n, f"{archive}: {len(out)} of {n} images"
    return (torch.stack(out) - MEAN[:, None, None]) / STD[:, None, None]


def build(name, g):
    if name in ("resnet34", "resnet50", "mobilenet_v2"):
        return getattr(torchvision.models, name)()
    m = timm.create_model(f"{name}_patch16_224", pretrained=False, depth=2, img_size=64)
    for k, v in m.state_dict().items():
        if v.dim() == 2:  # Linear weights: unit-scale outputs, so attention is not uniform.
            v.copy_(torch.randn(v.shape, generator=g) / v.shape[1] ** 0.5)
        elif k.startswith("norm") or ".norm" in k:
            v.copy_(torch.randn(v.shape, generator=g) * 0.2 + (1.0 if k.endswith("weight") else 0.0))
        elif k.endswith("bias"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.05)
        elif k in ("cls_token", "pos_embed"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.5)
    return m


def features(m, x):
    if hasattr(m, "forward_head"):  # timm: class token after the final norm
        return m.forward_head(m.forward_features(x), pre_logits=True)
    head = "fc" if hasattr(m, "fc") else "classifier"
    keep = getattr(m, head)
    setattr(m, head, torch.nn.Identity())
    f = m(x)
    setattr(m, head, keep)
    return f


@torch.no_grad()
def reference(name, out, data):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = build(name, g)
    cifar, raccoon = os.path.join(data, "cifar10-jpg.tar.gz"), os.path.join(data, "raccoon-voc.tar.gz")
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    if bns:
        randomise_bn(m, g)  # affine parameters; the statistics come from real images
        warm = torch.cat([images(cifar, lambda p: p.startswith("train/"), 16, 3001, 64), images(raccoon, lambda p: True, 8, 5, 64)])
        for b in bns:
            b.reset_running_stats()
            b.momentum = None
        m.train()
        for i in range(3):
            m(warm[i::3])
    m.eval()
    x = torch.cat([images(cifar, lambda p: p.startswith("test/"), 2, 997, 64), images(raccoon, lambda p: True, 2, 11, 64)])
    io = {"input": x, "features": features(m, x), "logits": m(x)}
    m.double()
    io["features_f64"], io["logits_f64"] = features(m, x.double()), m(x.double())
    m.float()
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(sd, os.path.join(out, f"{name}.safetensors"), metadata={"format": "pt"})
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out, f"{name}_io.safetensors"))
    print(name, {k: tuple(v.shape) for k, v in io.items()}, "max|features|", io["features"].abs().max().item())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the full-size references NAME... here (default: the committed fixtures)")
    ap.add_argument("--data", help="folder with cifar10-jpg.tar.gz and raccoon-voc.tar.gz")
    ap.add_argument("names", nargs="*", metavar="NAME", help=", ".join(REFERENCES))
    a = ap.parse_args()
    if bad := [n for n in a.names if n not in REFERENCES]:
        ap.error(f"unknown NAME {bad}: one of {REFERENCES}")
    if a.out:
        torch.set_num_threads(1)
        for n in a.names:
            reference(n, a.out, a.data)
    else:
        main()

#!/usr/bin/env python3
"""Step-equivalence fixtures for the trainer's methods.

For each method at a tiny config, writes trainer/tests/fixtures/<method>.safetensors:
  init.<name>           student weights/buffers before the step
  init_teacher.<name>   teacher before the step (differs from the student, so the
                        EMA order is visible; absent: the teacher is a copy)
  view<i>               the augmented views fed to the step
  state_init.<k>        loss state before the step (MoCo queue, DINO center)
  noise                 MAE masking noise (lowest values are kept)
  after.student.<name>  student after one SGD step
  after.teacher.<name>  EMA teacher after the update
  after.state.<k>       loss state after the step
and metadata: loss, grad norms per parameter group and per tensor (before any
gradient is cancelled), step/epoch, tensors frozen this step, and the
hyper-parameters. The reference is lightly's losses and heads (NTXentLoss,
NegativeCosineSimilarity, DINOLoss, SimSiamProjectionHead) and the papers' /
reference repos' code (MoCo's builder.py: key encoder updated before the keys
are computed; DINO's main_dino.py: per-epoch teacher temperature, last layer
frozen in the first epoch; MAE), on a torchvision-named ResNet / timm ViT.

Barlow Twins and VICReg use lightly's BarlowTwinsProjectionHead / BarlowTwinsLoss
and VICRegProjectionHead / VICRegLoss at their default hyper-parameters.

Run: .venv/bin/python scripts/gen_method_fixtures.py [NAME ...]   (needs torch, timm, lightly, safetensors)
With no NAME, writes every fixture; otherwise only the named ones among
barlow_twins, vicreg, augment_ops (each seeds its own RNG, so the others'
bytes do not change), or `base` for the first six methods and DINO's epoch 2.
"""
import json
import math
import os
import sys
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from lightly.loss import BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss
from lightly.models.modules import BarlowTwinsProjectionHead, SimSiamPredictionHead, SimSiamProjectionHead
from lightly.models.modules.heads import VICRegProjectionHead
from timm.models.vision_transformer import Block, VisionTransformer

OUT = os.path.join(os.path.dirname(__file__), "..", "trainer", "tests", "fixtures")
B, S, WIDTH, LAYERS = 8, 16, 4, [1, 1, 1, 1]
LR, MOMENTUM, WD, TOTAL_STEPS = 0.1, 0.9, 1e-4, 10


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (self.downsample(x) if self.downsample is not None else x))


class ResNetCifar(nn.Module):
    """torchvision ResNet names, CIFAR stem (3x3 stride 1, no max-pool), configurable width."""

    def __init__(self, width, layers):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, n in enumerate(layers):
            cout = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.embed_dim = cin

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        for i in range(4):
            h = getattr(self, f"layer{i + 1}")(h)
        return h.mean((2, 3))


class Head(nn.Module):
    """lightly's ProjectionHead layout: blocks (in, out, batchnorm, act) in `layers`."""

    def __init__(self, blocks):
        super().__init__()
        mods = []
        for cin, cout, bn, act in blocks:
            mods.append(nn.Linear(cin, cout, bias=not bn))
            if bn:
                mods.append(nn.BatchNorm1d(cout))
            if act == "relu":
                mods.append(nn.ReLU())
            elif act == "gelu":
                mods.append(nn.GELU())
        self.layers = nn.Sequential(*mods)

    def forward(self, x):
        return self.layers(x)


def two_layer(i, h, o):
    return Head([(i, h, True, "relu"), (h, o, False, None)])


def decays(name, p):
    return p.ndim >= 2 and not any(k in name for k in ["cls_token", "pos_embed", "mask_token"])


def group(name):
    for g in ["projection_head", "prediction_head", "decoder"]:
        if name.startswith(g):
            return g
    return "backbone"


def cosine(step, total, start, end):
    return end if total <= 1 else end - (end - start) * (math.cos(math.pi * step / (total - 1)) + 1) / 2


def run(method, student, loss_fn, views, teacher=None, state_init=None, state_after=None, extra_meta=None, noise=None,
        step=0, epoch=0, ema_before=False, frozen=(), teacher_offset=0.0, lr=LR, tensors=None):
    """One step: loss, backward, grad norms, cancel the grads of `frozen` (DINO's
    cancel_gradients_last_layer), SGD (no wd on norms/biases), EMA after the step
    (unless `ema_before`: the loss function did it, as MoCo); then `state_after()`
    gives the loss state after the step (queue, center). `teacher_offset` > 0 starts
    the teacher away from the student (its float tensors + offset * randn). `lr`: the SGD lr.
    `tensors`: more inputs of the step, written as given (NPID's `indices`)."""
    init = {f"init.{k}": v.detach().clone() for k, v in student.state_dict().items()}
    if teacher is not None:
        teacher.load_state_dict({k: v for k, v in student.state_dict().items() if k in teacher.state_dict()})
        if teacher_offset > 0:
            with torch.no_grad():
                for p in teacher.parameters():
                    p.add_(torch.randn_like(p) * teacher_offset)
            init.update({f"init_teacher.{k}": v.detach().clone() for k, v in teacher.state_dict().items()})
    state_init = {f"state_init.{k}": v.clone() for k, v in (state_init or {}).items()}
    params = dict(student.named_parameters())
    opt = torch.optim.SGD(
        [
            {"params": [p for n, p in params.items() if decays(n, p)], "weight_decay": WD},
            {"params": [p for n, p in params.items() if not decays(n, p)], "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=MOMENTUM,
    )
    loss = loss_fn()
    loss.backward()
    groups = {}
    per = {}
    for n, p in params.items():
        if p.grad is None:
            continue
        g = group(n)
        groups[g] = groups.get(g, 0.0) + float(p.grad.double().pow(2).sum())
        per[n] = float(p.grad.double().norm())
    for n in frozen:
        params[n].grad = None
    opt.step()
    out = dict(init)
    out.update(state_init)
    for i, v in enumerate(views):
        out[f"view{i}"] = v
    if noise is not None:
        out["noise"] = noise
    out.update(tensors or {})
    out.update({f"after.student.{k}": v.detach().clone() for k, v in student.state_dict().items()})
    if teacher is not None and not ema_before:
        tau = cosine(step, TOTAL_STEPS, extra_meta["tau"], 1.0)
        with torch.no_grad():
            sp = dict(student.named_parameters())
            for n, p in teacher.named_parameters():
                p.mul_(tau).add_(sp[n], alpha=1 - tau)
    if teacher is not None:
        out.update({f"after.teacher.{k}": v.detach().clone() for k, v in teacher.state_dict().items()})
    for k, v in (state_after() if state_after else {}).items():
        out[f"after.state.{k}"] = v.clone()
    out = {k: v.contiguous().float() if v.dtype != torch.int64 else v.contiguous() for k, v in out.items()}
    meta = {
        "loss": repr(float(loss.detach())),
        "grad_norms": json.dumps({g: math.sqrt(v) for g, v in groups.items()}),
        "grad_norms_per_tensor": json.dumps(per),
        "lr": repr(lr), "momentum": repr(MOMENTUM), "weight_decay": repr(WD), "total_steps": str(TOTAL_STEPS),
        "step": str(step), "epoch": str(epoch), "frozen": json.dumps(list(frozen)),
        "config": json.dumps(extra_meta or {}),
    }
    save_file(out, os.path.join(OUT, f"{method}.safetensors"), metadata=meta)
    print(f"{method}: loss {float(loss):.6f} groups {sorted(groups)} tensors {len(out)}")


class Net(nn.Module):
    def __init__(self, heads):
        super().__init__()
        self.backbone = ResNetCifar(WIDTH, LAYERS)
        for k, v in heads.items():
            setattr(self, k, v)

    def state_dict(self, *a, **k):
        sd = super().state_dict(*a, **k)
        return {(n[len("backbone."):] if n.startswith("backbone.") else n): v for n, v in sd.items()}

    def named_parameters(self, *a, **k):
        for n, p in super().named_parameters(*a, **k):
            yield (n[len("backbone."):] if n.startswith("backbone.") else n), p

    def load_state_dict(self, sd, strict=True):
        sd = {(n if any(n.startswith(h) for h in ["projection_head", "prediction_head"]) else "backbone." + n): v for n, v in sd.items()}
        return super().load_state_dict(sd, strict=strict)


def views(n, size=S):
    return [torch.randn(B, 3, size, size) for _ in range(n)]


def main():
    os.makedirs(OUT, exist_ok=True)
    D = WIDTH * 8
    H, O = 32, 16

    torch.manual_seed(0)
    m = Net({"projection_head": Head([(D, H, True, "relu"), (H, O, True, None)])}).train()
    x = views(2)
    crit = NTXentLoss(temperature=0.5)
    run("simclr", m, lambda: crit(m.projection_head(m.backbone(x[0])), m.projection_head(m.backbone(x[1]))), x,
        extra_meta={"proj_hidden": H, "proj_out": O, "temperature": 0.5})

    torch.manual_seed(1)
    m = Net({"projection_head": two_layer(D, H, O), "prediction_head": two_layer(O, H, O)}).train()
    t = Net({"projection_head": two_layer(D, H, O)}).train()
    x = views(2)
    ncs = NegativeCosineSimilarity()

    def byol():
        p0 = m.prediction_head(m.projection_head(m.backbone(x[0])))
        p1 = m.prediction_head(m.projection_head(m.backbone(x[1])))
        with torch.no_grad():
            z0 = t.projection_head(t.backbone(x[0]))
            z1 = t.projection_head(t.backbone(x[1]))
        return 0.5 * (ncs(p0, z1) + ncs(p1, z0))

    # BYOL alg. 1: the target is updated after the online step (a target away from the online net shows the order).
    run("byol", m, byol, x, teacher=t, step=3, teacher_offset=0.05, extra_meta={"proj_hidden": H, "proj_out": O, "tau": 0.99})

    torch.manual_seed(2)
    # lightly's heads: the projector's output BatchNorm is affine=False, as in the paper.
    m = Net({"projection_head": SimSiamProjectionHead(D, H, O), "prediction_head": SimSiamPredictionHead(O, 8, O)}).train()
    assert not any("layers.7.weight" in n for n, _ in m.named_parameters())
    x = views(2)

    def simsiam():
        z0 = m.projection_head(m.backbone(x[0]))
        z1 = m.projection_head(m.backbone(x[1]))
        p0, p1 = m.prediction_head(z0), m.prediction_head(z1)
        return 0.5 * (ncs(p0, z1.detach()) + ncs(p1, z0.detach()))

    run("simsiam", m, simsiam, x, extra_meta={"proj_hidden": H, "proj_out": O, "pred_hidden": 8})

    # MoCo v2 (He et al. alg. 1 with the v2 MLP head): logits [q.k+, q.queue] / T, label 0.
    torch.manual_seed(3)
    m = Net({"projection_head": Head([(D, H, False, "relu"), (H, O, False, None)])}).train()
    t = Net({"projection_head": Head([(D, H, False, "relu"), (H, O, False, None)])}).train()
    x = views(2)
    K = 16
    queue = F.normalize(torch.randn(K, O), dim=1)
    state = {"queue": queue.clone(), "queue_ptr": torch.zeros(1, dtype=torch.int64)}

    MOCO_STEP = 3

    def moco():
        q = F.normalize(m.projection_head(m.backbone(x[0])), dim=1)
        with torch.no_grad():
            # MoCo's builder.py: _momentum_update_key_encoder() before the keys (lightly's example too).
            tau = cosine(MOCO_STEP, TOTAL_STEPS, 0.99, 1.0)
            sp = dict(m.named_parameters())
            for n, p in t.named_parameters():
                p.mul_(tau).add_(sp[n], alpha=1 - tau)
            k = F.normalize(t.projection_head(t.backbone(x[1])), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ F.normalize(state["queue"], dim=1).T], 1) / 0.2
        loss = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
        state["_k"] = k
        return loss

    def moco_after():
        k = state.pop("_k")
        q = state["queue"].clone()
        q[0:B] = k
        return {"queue": q, "queue_ptr": torch.tensor([B % K], dtype=torch.int64)}

    run("moco_v2", m, moco, x, teacher=t, step=MOCO_STEP, ema_before=True, teacher_offset=0.05, state_init={k: v.clone() for k, v in state.items()}, state_after=moco_after, extra_meta={"proj_hidden": H, "proj_out": O, "tau": 0.99, "temperature": 0.2, "queue_size": K})

    # DINO on the ResNet: 2 global + 2 local crops, lightly's DINOLoss.
    torch.manual_seed(4)
    OUTD, BOT = 64, 16

    class DinoHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Head([(D, H, False, "gelu"), (H, H, False, "gelu"), (H, BOT, False, None)]).layers
            self.last_layer = nn.Module()
            self.last_layer.weight = nn.Parameter(torch.randn(OUTD, BOT) * 0.1)

        def forward(self, x):
            return F.linear(F.normalize(self.layers(x), dim=-1), F.normalize(self.last_layer.weight, dim=1))

    def fwd(net, vs):
        out = []
        for size in sorted({v.shape[-1] for v in vs}, reverse=True):
            group_v = [v for v in vs if v.shape[-1] == size]
            out.extend(net.projection_head(net.backbone(torch.cat(group_v))).chunk(len(group_v)))
        return out

    # Two steps of DINO's main_dino.py schedule, with 2 steps per epoch and a 5-epoch teacher-temperature warmup:
    # "dino" at step 0 (epoch 0: temperature 0.04, last layer frozen), "dino_epoch2" at step 4 (epoch 2:
    # np.linspace(0.04, 0.07, 5)[2] = 0.055, last layer trained). lightly's DINOLoss(epoch=...) gives the temperature.
    for name, seed, step, epoch in [("dino", 4, 0, 0), ("dino_epoch2", 7, 4, 2)]:
        torch.manual_seed(seed)
        m = Net({"projection_head": DinoHead()}).train()
        t = Net({"projection_head": DinoHead()}).train()
        x = views(2) + views(2, S // 2)
        crit = DINOLoss(output_dim=OUTD, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=5, student_temp=0.1, center_momentum=0.9)
        center0 = torch.randn(1, OUTD) * 0.1 if epoch > 0 else torch.zeros(1, OUTD)
        crit.center.copy_(center0.reshape(1, 1, OUTD))
        dstate = {}

        def dino(m=m, t=t, x=x, crit=crit, dstate=dstate, epoch=epoch):
            with torch.no_grad():
                to = fwd(t, x[:2])
            so = fwd(m, x)
            loss = crit(to, so, epoch=epoch)
            dstate["center"] = crit.center.reshape(1, OUTD).clone()
            return loss

        frozen = ["projection_head.last_layer.weight"] if epoch < 1 else []
        run(name, m, dino, x, teacher=t, step=step, epoch=epoch, frozen=frozen, teacher_offset=0.05 if epoch > 0 else 0.0,
            state_init={"center": center0}, state_after=lambda dstate=dstate: dstate,
            extra_meta={"proj_hidden": H, "dino_out": OUTD, "dino_bottleneck": BOT, "tau": 0.99, "teacher_temp": 0.07, "warmup_teacher_temp": 0.04,
                        "warmup_teacher_epochs": 5, "freeze_last_layer": 1, "student_temp": 0.1, "center_momentum": 0.9, "n_local": 2})

    # MAE (He et al.): timm ViT encoder on visible tokens, 1-block decoder, normalized-pixel loss.
    torch.manual_seed(5)
    E, DD, P = 32, 16, 4
    N = (S // P) ** 2

    class Mae(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = VisionTransformer(img_size=S, patch_size=P, embed_dim=E, depth=1, num_heads=2, num_classes=0, qkv_bias=True)
            self.decoder = nn.Module()
            self.decoder.decoder_embed = nn.Linear(E, DD)
            self.decoder.mask_token = nn.Parameter(torch.randn(1, 1, DD) * 0.02)
            self.decoder.decoder_pos_embed = nn.Parameter(torch.randn(1, N + 1, DD) * 0.02)
            self.decoder.blocks = nn.ModuleList([Block(DD, 2, 4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))])
            self.decoder.norm = nn.LayerNorm(DD, eps=1e-6)
            self.decoder.decoder_pred = nn.Linear(DD, P * P * 3)

        def forward(self, imgs, noise):
            v = self.vit
            x = v.patch_embed(imgs) + v.pos_embed[:, 1:]
            keep = int(round(N * 0.25))
            ids_shuffle = torch.argsort(noise, dim=1)
            ids_restore = torch.argsort(ids_shuffle, dim=1)
            ids_keep = ids_shuffle[:, :keep]
            x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, E))
            mask = torch.ones(B, N)
            mask[:, :keep] = 0
            mask = torch.gather(mask, 1, ids_restore)
            cls = (v.cls_token + v.pos_embed[:, :1]).expand(B, -1, -1)
            x = torch.cat([cls, x], 1)
            for blk in v.blocks:
                x = blk(x)
            x = v.norm(x)
            d = self.decoder
            x = d.decoder_embed(x)
            masks = d.mask_token.repeat(B, N - keep, 1)
            x_ = torch.gather(torch.cat([x[:, 1:], masks], 1), 1, ids_restore.unsqueeze(-1).repeat(1, 1, DD))
            x = torch.cat([x[:, :1], x_], 1) + d.decoder_pos_embed
            for blk in d.blocks:
                x = blk(x)
            pred = d.decoder_pred(d.norm(x))[:, 1:]
            h = S // P
            target = imgs.reshape(B, 3, h, P, h, P).permute(0, 2, 4, 3, 5, 1).reshape(B, N, P * P * 3)
            mean = target.mean(-1, keepdim=True)
            var = target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
            loss = ((pred - target) ** 2).mean(-1)
            return (loss * mask).sum() / mask.sum()

    class MaeNet(Mae):
        def state_dict(self, *a, **k):
            sd = nn.Module.state_dict(self, *a, **k)
            return {(n[4:] if n.startswith("vit.") else n): v for n, v in sd.items()}

        def named_parameters(self, *a, **k):
            for n, p in nn.Module.named_parameters(self, *a, **k):
                yield (n[4:] if n.startswith("vit.") else n), p

    m = MaeNet().train()
    x = views(1)
    noise = torch.rand(B, N)
    run("mae", m, lambda: m(x[0], noise), x, noise=noise, extra_meta={"embed_dim": E, "decoder_dim": DD, "decoder_depth": 1, "decoder_heads": 2, "mask_ratio": 0.75, "patch": P})


def augment_ops():
    """torchvision's functional ops on float images, the semantics data/src/augment.rs follows."""
    import torchvision.transforms.v2.functional as TF

    torch.manual_seed(6)
    img = torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)
    x = img.float() / 255.0
    out = {"image_hwc_u8": img.permute(1, 2, 0).contiguous()}
    # crop (top 3, left 5, 12 x 15) resized down to 8 and up to 24, bilinear, antialias.
    out["crop_down"] = TF.resized_crop(x, 3, 5, 12, 15, [8, 8], antialias=True)
    out["crop_up"] = TF.resized_crop(x, 3, 5, 12, 15, [24, 24], antialias=True)
    out["brightness"] = TF.adjust_brightness(x, 1.3)
    out["contrast"] = TF.adjust_contrast(x, 0.6)
    out["saturation"] = TF.adjust_saturation(x, 1.7)
    out["hue"] = TF.adjust_hue(x, 0.23)
    out["hue_neg"] = TF.adjust_hue(x, -0.4)
    out["gray"] = TF.rgb_to_grayscale(x, num_output_channels=3)
    out["blur"] = TF.gaussian_blur(x, [5, 5], [1.3, 1.3])
    out["solarize"] = TF.solarize(x, 0.5)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "augment_ops.safetensors"))
    print("augment_ops: written")


def two_view_head(method, seed, head, loss, lr=LR):
    """A method with one projection head and a symmetric loss of the two views' projections,
    one forward per view (lightly's Barlow Twins and VICReg examples)."""
    torch.manual_seed(seed)
    D, H, O = WIDTH * 8, 32, 16
    m = Net({"projection_head": head(D, H, O)}).train()
    x = views(2)
    run(method, m, lambda: loss(m.projection_head(m.backbone(x[0])), m.projection_head(m.backbone(x[1]))), x,
        extra_meta={"proj_hidden": H, "proj_out": O}, lr=lr)


def barlow_twins():
    # lambda 5e-3 (the paper's); projector Linear-BN-ReLU, Linear-BN-ReLU, Linear (bias on the last only).
    # lr 0.01: the loss sums D^2 terms, its gradients here are ~25x SimCLR's (backbone norm 830), and at
    # lr 0.1 one step moves conv1 by far more than its init, leaving only float32 rounding to compare.
    two_view_head("barlow_twins", 8, BarlowTwinsProjectionHead, BarlowTwinsLoss(lambda_param=5e-3, gather_distributed=False), lr=0.01)


def vicreg():
    loss = VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0, eps=1e-4, gather_distributed=False)
    two_view_head("vicreg", 9, lambda d, h, o: VICRegProjectionHead(d, h, o, num_layers=3), loss)


def two_view(method, seed, head, loss, meta, lr=LR):
    """`two_view_head` with the method's own settings in the fixture's config."""
    torch.manual_seed(seed)
    D, H, O = WIDTH * 8, 32, 16
    m = Net({"projection_head": head(D, H, O)}).train()
    x = views(2)
    run(method, m, lambda: loss(m.projection_head(m.backbone(x[0])), m.projection_head(m.backbone(x[1]))), x,
        extra_meta={"proj_hidden": H, "proj_out": O, **meta}, lr=lr)


def dcl():
    # lightly's DCL example: SimCLRProjectionHead (Linear-BN-ReLU, Linear-BN), one forward per view.
    from lightly.loss import DCLLoss
    from lightly.models.modules import SimCLRProjectionHead
    two_view("dcl", 10, SimCLRProjectionHead, DCLLoss(temperature=0.2), {"temperature": 0.2})


def dclw():
    from lightly.loss import DCLWLoss
    from lightly.models.modules import SimCLRProjectionHead
    two_view("dclw", 11, SimCLRProjectionHead, DCLWLoss(temperature=0.2, sigma=0.7), {"temperature": 0.2, "sigma": 0.7})


class Layers(nn.Module):
    """An `nn.Sequential` under the name `layers`, as lightly's heads hold theirs."""

    def __init__(self, seq):
        super().__init__()
        self.layers = seq

    def forward(self, x):
        return self.layers(x)


def moco_v3():
    """facebookresearch/moco-v3 builder.py `MoCo_ResNet` (T = 1.0, the repo's ResNet default)."""
    torch.manual_seed(12)
    D, H, O, T, STEP = WIDTH * 8, 32, 16, 1.0, 3

    def build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):  # builder.py `_build_mlp`
        mlp = []
        for l in range(num_layers):
            dim1 = input_dim if l == 0 else mlp_dim
            dim2 = output_dim if l == num_layers - 1 else mlp_dim
            mlp.append(nn.Linear(dim1, dim2, bias=False))
            if l < num_layers - 1:
                mlp.append(nn.BatchNorm1d(dim2))
                mlp.append(nn.ReLU(inplace=True))
            elif last_bn:
                mlp.append(nn.BatchNorm1d(dim2, affine=False))
        return Layers(nn.Sequential(*mlp))

    m = Net({"projection_head": build_mlp(2, D, H, O), "prediction_head": build_mlp(2, O, H, O, False)}).train()
    t = Net({"projection_head": build_mlp(2, D, H, O)}).train()
    x = views(2)

    def ctr(q, k):  # builder.py `contrastive_loss`, one process
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.einsum("nc,mc->nm", [q, k]) / T
        return F.cross_entropy(logits, torch.arange(logits.shape[0])) * (2 * T)

    def step():
        q1 = m.prediction_head(m.projection_head(m.backbone(x[0])))
        q2 = m.prediction_head(m.projection_head(m.backbone(x[1])))
        with torch.no_grad():
            # `_update_momentum_encoder(m)` before the keys.
            tau = cosine(STEP, TOTAL_STEPS, 0.99, 1.0)
            sp = dict(m.named_parameters())
            for n, p in t.named_parameters():
                p.mul_(tau).add_(sp[n], alpha=1 - tau)
            k1 = t.projection_head(t.backbone(x[0]))
            k2 = t.projection_head(t.backbone(x[1]))
        return ctr(q1, k2) + ctr(q2, k1)

    run("moco_v3", m, step, x, teacher=t, step=STEP, ema_before=True, teacher_offset=0.05,
        extra_meta={"proj_hidden": H, "proj_out": O, "tau": 0.99, "temperature": T})


def nnclr():
    """lightly's NNCLR example: heads, NNMemoryBankModule (z0 looked up, z1 looked up and enqueued), NTXentLoss."""
    from lightly.models.modules import NNCLRPredictionHead, NNCLRProjectionHead, NNMemoryBankModule
    torch.manual_seed(13)
    D, H, O, PH, K = WIDTH * 8, 32, 16, 24, 12
    m = Net({"projection_head": NNCLRProjectionHead(D, H, O), "prediction_head": NNCLRPredictionHead(O, PH, O)}).train()
    bank = NNMemoryBankModule(size=(K, O))
    # The pointer 8 rows into a 12-row bank: the batch of 8 is cut at the end and the pointer returns to 0.
    bank.bank_ptr[0] = 8
    x = views(2)
    crit = NTXentLoss(temperature=0.2)
    state = lambda: {"support_set": bank.bank.clone(), "support_ptr": bank.bank_ptr.clone()}
    init = state()

    def step():
        z0 = m.projection_head(m.backbone(x[0]))
        z1 = m.projection_head(m.backbone(x[1]))
        p0, p1 = m.prediction_head(z0), m.prediction_head(z1)
        z0 = bank(z0.detach(), update=False)
        z1 = bank(z1.detach(), update=True)
        return 0.5 * (crit(z0, p1) + crit(z1, p0))

    run("nnclr", m, step, x, state_init=init, state_after=state,
        extra_meta={"proj_hidden": H, "proj_out": O, "pred_hidden": PH, "temperature": 0.2, "support_size": K})


def fastsiam():
    """lightly's FastSiam example (3 views here): each prediction against the mean of the other views' projections."""
    torch.manual_seed(14)
    D, H, O, N = WIDTH * 8, 32, 16, 3
    m = Net({"projection_head": SimSiamProjectionHead(D, H, O), "prediction_head": SimSiamPredictionHead(O, 8, O)}).train()
    x = views(N)
    ncs = NegativeCosineSimilarity()

    def step():
        features = []
        for v in x:
            z = m.projection_head(m.backbone(v))
            features.append((z.detach(), m.prediction_head(z)))
        zs = torch.stack([z for z, _ in features])
        ps = torch.stack([p for _, p in features])
        loss = 0.0
        for i in range(N):
            mask = torch.arange(N) != i
            loss += ncs(ps[i], torch.mean(zs[mask], dim=0)) / N
        return loss

    run("fastsiam", m, step, x, extra_meta={"proj_hidden": H, "proj_out": O, "pred_hidden": 8, "n_views": N})


def tico():
    """lightly's TiCo example: momentum encoder updated before the forward, TiCoLoss(online view 0, momentum view 1);
    the running covariance starts away from zero so that its update shows."""
    from lightly.loss import TiCoLoss
    from lightly.models.modules.heads import TiCoProjectionHead
    torch.manual_seed(15)
    D, H, O, STEP = WIDTH * 8, 32, 16, 2
    m = Net({"projection_head": TiCoProjectionHead(D, H, O)}).train()
    t = Net({"projection_head": TiCoProjectionHead(D, H, O)}).train()
    x = views(2)
    crit = TiCoLoss(beta=0.8, rho=4.0)
    c0 = torch.randn(O, O) * 0.1
    crit.C = c0 @ c0.T

    def step():
        with torch.no_grad():
            tau = cosine(STEP, TOTAL_STEPS, 0.99, 1.0)
            sp = dict(m.named_parameters())
            for n, p in t.named_parameters():
                p.mul_(tau).add_(sp[n], alpha=1 - tau)
        z0 = m.projection_head(m.backbone(x[0]))
        with torch.no_grad():
            z1 = t.projection_head(t.backbone(x[1]))
        return crit(z0, z1)

    run("tico", m, step, x, teacher=t, step=STEP, ema_before=True, teacher_offset=0.05, state_init={"covariance": crit.C.clone()},
        state_after=lambda: {"covariance": crit.C}, extra_meta={"proj_hidden": H, "proj_out": O, "beta": 0.8, "rho": 4.0, "tau": 0.99})


def swav():
    """lightly's SwaV example with queues (SwaVProjectionHead, SwaVPrototypes without bias as in the repo,
    one MemoryBankModule per global crop, SwaVLoss), 2 global + 2 local crops of one size through the backbone
    together (the repo's multi-crop forward). `swav`: step 0, epoch 0: prototypes frozen, queues filled but
    not used; `swav_epoch2`: step 4, epoch 2: prototypes trained and re-normalised, queues in the codes."""
    from lightly.loss import SwaVLoss
    from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
    from lightly.models.modules.memory_bank import MemoryBankModule
    D, H, O, P, QS = WIDTH * 8, 32, 16, 24, 12
    for name, seed, step_i, epoch in [("swav", 16, 0, 0), ("swav_epoch2", 17, 4, 2)]:
        torch.manual_seed(seed)
        protos = SwaVPrototypes(O, P)
        protos.heads[0].bias = None

        class SwavNet(Net):
            def state_dict(self, *a, **k):
                # lightly's `prototypes.normalize()` at the start of each step: the weights the next step sees.
                self.prototypes.normalize()
                return super().state_dict(*a, **k)

        m = SwavNet({"projection_head": SwaVProjectionHead(D, H, O), "prototypes": protos}).train()
        with torch.no_grad():
            m.prototypes.normalize()
        queues = [MemoryBankModule(size=(QS, O)) for _ in range(2)]
        queues[1].bank_ptr[0] = 8
        x = views(2) + views(2, S // 2)
        crit = SwaVLoss(temperature=0.2, sinkhorn_iterations=4, sinkhorn_epsilon=0.1)
        state = lambda queues=queues: {k: v for i, q in enumerate(queues) for k, v in [(f"queue{i}", q.bank.clone()), (f"queue{i}_ptr", q.bank_ptr.clone())]}
        init = state()

        def step(m=m, x=x, queues=queues, crit=crit, epoch=epoch):
            feats = []
            for size in sorted({v.shape[-1] for v in x}, reverse=True):
                group_v = [v for v in x if v.shape[-1] == size]
                f = F.normalize(m.projection_head(m.backbone(torch.cat(group_v))), dim=1, p=2)
                feats.extend(f.chunk(len(group_v)))
            scores = [m.prototypes(f) for f in feats]
            with torch.no_grad():
                banks = [q(feats[i], update=True)[1].permute(1, 0) for i, q in enumerate(queues)]
                queue_scores = [m.prototypes(b) for b in banks] if epoch >= 1 else None
            return crit(scores[:2], scores[2:], queue_scores)

        frozen = ["prototypes.heads.0.weight"] if step_i < 3 else []
        run(name, m, step, x, step=step_i, epoch=epoch, frozen=frozen, state_init=init, state_after=state,
            extra_meta={"proj_hidden": H, "proj_out": O, "n_prototypes": P, "temperature": 0.2, "sinkhorn_iterations": 4, "sinkhorn_epsilon": 0.1,
                        "n_local": 2, "queue_length": QS, "queue_start_epoch": 1, "freeze_prototypes_steps": 3})


def moco_v3_vit():
    """facebookresearch/moco-v3 builder.py `MoCo_ViT` on a 1-block timm ViT: 3-layer projector, predictor with its
    last BN, T = 0.2, the patch projection frozen (`--stop-grad-conv1`: no gradient reaches the optimizer)."""
    torch.manual_seed(18)
    E, H, O, T, STEP, P = 32, 32, 16, 0.2, 3, 4

    def build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):  # builder.py `_build_mlp`
        mlp = []
        for l in range(num_layers):
            dim1 = input_dim if l == 0 else mlp_dim
            dim2 = output_dim if l == num_layers - 1 else mlp_dim
            mlp.append(nn.Linear(dim1, dim2, bias=False))
            if l < num_layers - 1:
                mlp.append(nn.BatchNorm1d(dim2))
                mlp.append(nn.ReLU(inplace=True))
            elif last_bn:
                mlp.append(nn.BatchNorm1d(dim2, affine=False))
        return Layers(nn.Sequential(*mlp))

    class VitNet(nn.Module):
        """timm names without the `vit.` prefix, as MaeNet."""

        def __init__(self, heads):
            super().__init__()
            self.vit = VisionTransformer(img_size=S, patch_size=P, embed_dim=E, depth=1, num_heads=2, num_classes=0, qkv_bias=True)
            for k, v in heads.items():
                setattr(self, k, v)

        def backbone(self, x):
            return self.vit(x)

        def state_dict(self, *a, **k):
            return {(n[4:] if n.startswith("vit.") else n): v for n, v in nn.Module.state_dict(self, *a, **k).items()}

        def named_parameters(self, *a, **k):
            for n, p in nn.Module.named_parameters(self, *a, **k):
                yield (n[4:] if n.startswith("vit.") else n), p

        def load_state_dict(self, sd, strict=True):
            sd = {(n if n.startswith("projection_head") else "vit." + n): v for n, v in sd.items()}
            return nn.Module.load_state_dict(self, sd, strict=strict)

    m = VitNet({"projection_head": build_mlp(3, E, H, O), "prediction_head": build_mlp(2, O, H, O)}).train()
    t = VitNet({"projection_head": build_mlp(3, E, H, O)}).train()
    x = views(2)

    def ctr(q, k):
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.einsum("nc,mc->nm", [q, k]) / T
        return F.cross_entropy(logits, torch.arange(logits.shape[0])) * (2 * T)

    def step():
        q1 = m.prediction_head(m.projection_head(m.backbone(x[0])))
        q2 = m.prediction_head(m.projection_head(m.backbone(x[1])))
        with torch.no_grad():
            tau = cosine(STEP, TOTAL_STEPS, 0.99, 1.0)
            sp = dict(m.named_parameters())
            for n, p in t.named_parameters():
                p.mul_(tau).add_(sp[n], alpha=1 - tau)
            k1 = t.projection_head(t.backbone(x[0]))
            k2 = t.projection_head(t.backbone(x[1]))
        return ctr(q1, k2) + ctr(q2, k1)

    run("moco_v3_vit", m, step, x, teacher=t, step=STEP, ema_before=True, teacher_offset=0.05,
        frozen=["patch_embed.proj.weight", "patch_embed.proj.bias"],
        extra_meta={"embed_dim": E, "patch": P, "proj_hidden": H, "proj_out": O, "tau": 0.99, "temperature": T, "frozen_patch_embed": 1})


EXTRA = {"barlow_twins": barlow_twins, "vicreg": vicreg, "augment_ops": augment_ops}
EXTRA.update({"dcl": dcl, "dclw": dclw, "moco_v3": moco_v3, "nnclr": nnclr, "fastsiam": fastsiam, "tico": tico, "swav": swav, "moco_v3_vit": moco_v3_vit})


# The classic pretext tasks (issue #15), written from the papers' definitions. Each seeds its own RNG.

def rotation():
    """RotNet (Gidaris et al. 2018, sec. 2.2): the 4 rotations torch.rot90(x, k, (2, 3)), k = 0..3, of
    every image in one batch (the RotNet repo's FeatureLearningRotNet), label k, cross entropy."""
    torch.manual_seed(10)
    D, H = WIDTH * 8, 16
    m = Net({"projection_head": Head([(D, H, True, "relu"), (H, 4, False, None)])}).train()
    x = views(1)
    xr = torch.cat([torch.rot90(x[0], k, (2, 3)) for k in range(4)])
    labels = torch.arange(4).repeat_interleave(B)
    run("rotation", m, lambda: F.cross_entropy(m.projection_head(m.backbone(xr)), labels), x, extra_meta={"head_hidden": H})


EXTRA["rotation"] = rotation


def splitmix64(x):
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def jigsaw_permutations(n, seed=0):
    """Noroozi and Favaro's greedy "maximal" selection (select_permutations.py): all 9! permutations in
    itertools (lexicographic) order, start at splitmix64(seed) mod 9!, then add the unused one of largest
    average Hamming distance to the chosen set (argmax: the first on ties; integer sums, exact)."""
    import itertools
    import numpy as np
    P = np.array(list(itertools.permutations(range(9))), dtype=np.int8)
    dist = np.zeros(len(P), dtype=np.int64)
    used = np.zeros(len(P), dtype=bool)
    j = splitmix64(seed) % len(P)
    out = []
    for _ in range(n):
        out.append(P[j].copy())
        used[j] = True
        dist += (P != P[j]).sum(1)
        j = int(np.argmax(np.where(used, -1, dist)))
    return torch.tensor(np.array(out), dtype=torch.int64)


def jigsaw():
    """Jigsaw (Noroozi and Favaro 2016, sec. 3; bbrattoli/JigsawPuzzlePytorch): 3x3 cells of S//3 px, a
    tile of 64/75 of a cell at a random offset in each, each tile normalised by its own per-channel mean and
    (unbiased) std, position t of the puzzle holds tile perm[t]; shared backbone and fc6 per tile, fc7-fc8 over
    the 9 fc6 outputs in puzzle order, cross entropy on the permutation index. The random choices come from
    `noise` (B, 19): perm = floor(u0 N), cell t's offset (dy, dx) = floor(u (cell - tile + 1))."""
    torch.manual_seed(11)
    D, P6, H, N, SZ = WIDTH * 8, 8, 16, 100, 24
    perms = jigsaw_permutations(N)
    m = Net({"projection_head": Head([(D, P6, True, "relu")]), "prediction_head": Head([(9 * P6, H, True, "relu"), (H, N, False, None)])}).train()
    x = views(1, SZ)
    noise = torch.rand(B, 19)
    cell = SZ // 3
    tile = max(cell * 64 // 75, 1)
    labels = (noise[:, 0] * N).floor().long().clamp(0, N - 1)
    off = (noise[:, 1:] * (cell - tile + 1)).floor().long().clamp(0, cell - tile)
    rows = []
    for t in range(9):
        for i in range(B):
            src = int(perms[labels[i], t])
            dy, dx = int(off[i, 2 * src]), int(off[i, 2 * src + 1])
            top, left = (src // 3) * cell + dy, (src % 3) * cell + dx
            rows.append(x[0][i, :, top:top + tile, left:left + tile])
    tiles = torch.stack(rows)
    mean = tiles.mean((2, 3), keepdim=True)
    std = tiles.std((2, 3), keepdim=True)
    std = torch.where(std != 0, std, torch.ones_like(std))
    tiles = (tiles - mean) / std

    def loss():
        h = m.projection_head(m.backbone(tiles))
        h = h.reshape(9, B, -1).permute(1, 0, 2).reshape(B, -1)
        return F.cross_entropy(m.prediction_head(h), labels)

    run("jigsaw", m, loss, x, noise=noise, extra_meta={"num_permutations": N, "proj_out": P6, "head_hidden": H})
    # The permutation set on its own (the Rust set must equal it).
    save_file({"permutations": perms}, os.path.join(OUT, "jigsaw_permutations.safetensors"))


EXTRA["jigsaw"] = jigsaw


def npid():
    """NPID (Wu et al. 2018, eqs. 2-8; zhirongw/lemniscate.pytorch): 128-d (here 16) l2-normalised embedding,
    memory bank of n rows; `npid`: NCE with K noise rows drawn uniformly (fixed here: `noise`), P_n = 1/n, Z =
    mean(exp(s/T)) * n estimated on this first batch (NCEAverage), NCECriterion with eps 1e-7; `npid_softmax`: the
    full non-parametric softmax (LinearAverage + CrossEntropyLoss). The bank rows of the batch become
    normalize(0.5 v + 0.5 f) with the step's features f. `indices`: the images' training-set indices."""
    for name, seed, K in [("npid", 12, 16), ("npid_softmax", 13, 0)]:
        torch.manual_seed(seed)
        D, O, NB, T, MOM = WIDTH * 8, 16, 32, 0.07, 0.5
        m = Net({"projection_head": Head([(D, O, False, None)])}).train()
        x = views(1)
        memory = F.normalize(torch.randn(NB, O), dim=1)
        idx = torch.randperm(NB)[:B]
        noise = torch.randint(0, NB, (B, K)) if K else None
        st = {}

        def loss(m=m, x=x, memory=memory, idx=idx, noise=noise, K=K, st=st):
            f = F.normalize(m.projection_head(m.backbone(x[0])), dim=1)
            if K == 0:
                loss = F.cross_entropy(f @ memory.T / T, idx)
                z = torch.tensor([-1.0])
            else:
                w = memory[torch.cat([idx[:, None], noise], 1)]
                out = torch.exp(torch.bmm(w, f[:, :, None]).squeeze(2) / T)
                Z = float(out.mean()) * NB
                out = out / Z
                Pn = 1.0 / NB
                ln_pmt = torch.log(out[:, 0] / (out[:, 0] + K * Pn + 1e-7))
                ln_pon = torch.log(torch.full_like(out[:, 1:], K * Pn) / (out[:, 1:] + K * Pn + 1e-7))
                loss = -(ln_pmt.sum() + ln_pon.sum()) / B
                z = torch.tensor([Z])
            with torch.no_grad():
                pos = memory[idx] * MOM + f.detach() * (1 - MOM)
                mem = memory.clone()
                mem[idx] = pos / pos.norm(dim=1, keepdim=True)
            st.update(memory=mem, nce_z=z)
            return loss

        run(name, m, loss, x, noise=noise, tensors={"indices": idx}, state_init={"memory": memory, "nce_z": torch.tensor([-1.0])},
            state_after=lambda st=st: st, extra_meta={"proj_out": O, "temperature": T, "nce_k": K, "bank_momentum": MOM, "bank_size": NB})


EXTRA["npid"] = npid


def context_prediction():
    """Context prediction (Doersch et al. 2015, sec. 3 and 3.1): the jigsaw's grid (cells of S//3, patches of
    64/75 of a cell at a random offset), the centre patch and the neighbour in cell [0, 1, 2, 3, 5, 6, 7, 8][label],
    both with the green-magenta axis (-1, 2, -1)/sqrt(6) projected out of their RGB values (ImageNet-normalised
    views), centres then neighbours through the backbone and fc6 in one batch, fc7-fc8 over [centre, neighbour],
    cross entropy on the position. `noise` (B, 5): label = floor(8 u0), offsets floor(u (cell - tile + 1))."""
    torch.manual_seed(14)
    D, P6, H, SZ = WIDTH * 8, 8, 16, 24
    m = Net({"projection_head": Head([(D, P6, True, "relu")]), "prediction_head": Head([(2 * P6, H, True, "relu"), (H, 8, False, None)])}).train()
    x = views(1, SZ)
    noise = torch.rand(B, 5)
    cell = SZ // 3
    tile = max(cell * 64 // 75, 1)
    labels = (noise[:, 0] * 8).floor().long().clamp(0, 7)
    off = (noise[:, 1:] * (cell - tile + 1)).floor().long().clamp(0, cell - tile)
    nb = [0, 1, 2, 3, 5, 6, 7, 8]

    def patch(i, c, dy, dx):
        top, left = (c // 3) * cell + int(dy), (c % 3) * cell + int(dx)
        return x[0][i, :, top:top + tile, left:left + tile]

    p = torch.stack([patch(i, 4, off[i, 0], off[i, 1]) for i in range(B)] + [patch(i, nb[int(labels[i])], off[i, 2], off[i, 3]) for i in range(B)])
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    a = (torch.tensor([-1.0, 2.0, -1.0]) / math.sqrt(6)).reshape(1, 3, 1, 1)
    rgb = p * std + mean
    p = (rgb - (rgb * a).sum(1, keepdim=True) * a - mean) / std

    def loss():
        h = m.projection_head(m.backbone(p)).reshape(2, B, -1).permute(1, 0, 2).reshape(B, -1)
        return F.cross_entropy(m.prediction_head(h), labels)

    run("context_prediction", m, loss, x, noise=noise, extra_meta={"proj_out": P6, "head_hidden": H})


EXTRA["context_prediction"] = context_prediction


def counting():
    """Counting (Noroozi et al. 2017, eq. 5): phi = backbone, Linear, ReLU; D = 2x2 box downsampling, T_j the four
    quadrants; l = |phi(Dx) - sum phi(T_j x)|^2 + max(0, M - |phi(Dy) - sum phi(T_j x)|^2), y = the next image of
    the batch (roll 1), averaged over the batch; the 5B half-size images in one batch (downsampled first)."""
    torch.manual_seed(15)
    # M = 30 (the paper's is 10): the hinge is active for 6 of the 8 images here (squared distances 11 to 46).
    D, O, M = WIDTH * 8, 16, 30.0
    m = Net({"projection_head": Head([(D, O, False, "relu")])}).train()
    x = views(1)
    h = S // 2
    inp = torch.cat([F.avg_pool2d(x[0], 2)] + [x[0][:, :, (j // 2) * h:(j // 2 + 1) * h, (j % 2) * h:(j % 2 + 1) * h] for j in range(4)])

    def loss():
        phi = m.projection_head(m.backbone(inp)).chunk(5)
        t = phi[1] + phi[2] + phi[3] + phi[4]
        y = phi[0].roll(1, 0)
        return ((phi[0] - t).pow(2).sum(1) + (M - (y - t).pow(2).sum(1)).clamp(min=0)).mean()

    run("counting", m, loss, x, extra_meta={"proj_out": O, "margin": M})


EXTRA["counting"] = counting


def pirl():
    """PIRL (Misra and van der Maaten 2020, eqs. 3-5): s = cosine, h(u, v) = P / (P + K/n), P = exp(s/T) / Z (written
    as NCECriterion with P_n = 1/n, eps 1e-7; Z = mean(exp(s/T)) * n of the image term on this first batch, NPID's and
    VISSL's norm_constant -1, used by both terms), L_NCE(m_I, v) = -log h(m_I, v) - sum_negatives log(1 - h(v, m_I')),
    L = 0.5 L_NCE(m_I, g(v_I^t)) + 0.5 L_NCE(m_I, f(v_I)); f = Linear + l2-normalise over view0's features; g = Linear per
    tile over the 9 jigsaw tiles of view1 (as `jigsaw`, permutation = argsort of 9 uniforms), concatenated, Linear,
    l2-normalise; both terms share the K noise rows floor(u n). Bank rows of the batch -> normalize(0.5 m + 0.5 f)."""
    torch.manual_seed(16)
    D, O, NB, T, MOM, K, LAM = WIDTH * 8, 16, 32, 0.07, 0.5, 16, 0.5
    m = Net({"projection_head": Head([(D, O, False, None)]), "prediction_head": nn.ModuleDict({"tile": Head([(D, O, False, None)]), "fuse": Head([(9 * O, O, False, None)])})}).train()
    x = views(1) + views(1, 24)
    memory = F.normalize(torch.randn(NB, O), dim=1)
    idx = torch.randperm(NB)[:B]
    noise = torch.rand(B, 27 + K)
    order = noise[:, :9].argsort(1)
    cell, tile = 8, 6
    off = (noise[:, 9:27] * (cell - tile + 1)).floor().long().clamp(0, cell - tile)
    rows = []
    for t in range(9):
        for i in range(B):
            src = int(order[i, t])
            top, left = (src // 3) * cell + int(off[i, 2 * src]), (src % 3) * cell + int(off[i, 2 * src + 1])
            rows.append(x[1][i, :, top:top + tile, left:left + tile])
    tiles = torch.stack(rows)
    tiles = (tiles - tiles.mean((2, 3), keepdim=True)) / tiles.std((2, 3), keepdim=True)
    neg = (noise[:, 27:] * NB).floor().long().clamp(0, NB - 1)
    st = {}

    def nce(v, z=None):
        w = memory[torch.cat([idx[:, None], neg], 1)]
        e = torch.exp(torch.bmm(w, v[:, :, None]).squeeze(2) / T)
        if z is None:
            st["nce_z"] = torch.tensor([float(e.mean()) * NB])
        e = e / float(st["nce_z"][0])
        kpn = K / NB
        return -(torch.log(e[:, 0] / (e[:, 0] + kpn + 1e-7)).sum() + torch.log(kpn / (e[:, 1:] + kpn + 1e-7)).sum()) / B

    def loss():
        f = F.normalize(m.projection_head(m.backbone(x[0])), dim=1)
        h = m.prediction_head["tile"](m.backbone(tiles)).reshape(9, B, -1).permute(1, 0, 2).reshape(B, -1)
        g = F.normalize(m.prediction_head["fuse"](h), dim=1)
        with torch.no_grad():
            pos = memory[idx] * MOM + f.detach() * (1 - MOM)
            mem = memory.clone()
            mem[idx] = pos / pos.norm(dim=1, keepdim=True)
        st["memory"] = mem
        lf = nce(f)
        return LAM * nce(g, st["nce_z"]) + (1 - LAM) * lf

    run("pirl", m, loss, x, noise=noise, tensors={"indices": idx}, state_init={"memory": memory, "nce_z": torch.tensor([-1.0])}, state_after=lambda: st,
        extra_meta={"proj_out": O, "temperature": T, "nce_k": K, "bank_momentum": MOM, "bank_size": NB, "lambda": LAM})


EXTRA["pirl"] = pirl


def context_encoder():
    """Context encoders (Pathak et al. 2016, sec. 3 and 3.2): the centred half-side hole set to 0, the ResNet's
    last map (B, C, s, s), channel-wise FC (C independent s^2 x s^2 matrices, no bias), a 1x1 convolution with
    bias and ReLU, 4x4 stride-2 up-convolutions (BN, ReLU; the last to 3 channels with a bias) to the hole,
    mean squared error against the hole's pixels."""
    torch.manual_seed(17)
    C, W, SZ = WIDTH * 8, 8, 32
    side, ups = SZ // 8, 2

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            n = side * side
            self.channel_fc = nn.Module()
            self.channel_fc.weight = nn.Parameter((torch.rand(C, n, n) * 2 - 1) / math.sqrt(n))
            self.conv1x1 = nn.Conv2d(C, C, 1)
            self.up = nn.ModuleList()
            for i in range(ups):
                u = nn.Module()
                cin, cout = (C if i == 0 else W), (3 if i == ups - 1 else W)
                u.conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=i == ups - 1)
                if i < ups - 1:
                    u.bn = nn.BatchNorm2d(cout)
                self.up.append(u)

        def forward(self, x):
            b = x.shape[0]
            h = (x.reshape(b, C, side * side).permute(1, 0, 2) @ self.channel_fc.weight).permute(1, 0, 2).reshape(b, C, side, side)
            h = F.relu(self.conv1x1(h))
            for i, u in enumerate(self.up):
                h = u.conv(h)
                if i < ups - 1:
                    h = F.relu(u.bn(h))
            return h

    m = Net({"decoder": Decoder()}).train()
    x = views(1, SZ)
    mask = torch.ones(1, 1, SZ, SZ)
    mask[:, :, SZ // 4:SZ // 4 + SZ // 2, SZ // 4:SZ // 4 + SZ // 2] = 0

    def loss():
        bb = m.backbone
        h = F.relu(bb.bn1(bb.conv1(x[0] * mask)))
        for i in range(4):
            h = getattr(bb, f"layer{i + 1}")(h)
        target = x[0][:, :, SZ // 4:SZ // 4 + SZ // 2, SZ // 4:SZ // 4 + SZ // 2]
        return F.mse_loss(m.decoder(h), target)

    run("context_encoder", m, loss, x, extra_meta={"decoder_channels": W})


EXTRA["context_encoder"] = context_encoder


def cpc_v2():
    """CPC v2 (Henaff et al. 2019, sec. 3), written from the paper's definition, not from cpc.rs: the image's
    P-px patches x_{i,j} at stride P/2, cut one by one; z_{i,j} = f(x_{i,j}) (the ResNet's pooled features; all
    patches of the batch in one forward, so BatchNorm sees them together, as cpc.rs does); the context
    c_{i,j} = g(z_{u,v} : u <= i), PixelCNN-masked 3x3 convolutions with ReLU (the kernel rows below the centre are
    zero; checked below: changing rows > i leaves row i of c unchanged); z^_{i+k,j} = W_k c_{i,j} (no bias); and per
    (image, i, j, k) the InfoNCE term -log exp(z^ . z_{i+k,j}) / (exp(z^ . z_{i+k,j}) + sum_l exp(z^ . z_l)), the
    z_l every other patch of this and the other images. The loss is the mean of the terms for each k, averaged
    over k (the paper sums)."""
    torch.manual_seed(18)
    D, P, STEPS, L = WIDTH * 8, 8, 2, 2

    class MaskedConv(nn.Conv2d):
        def __init__(self, c):
            super().__init__(c, c, 3, padding=1)
            mask = torch.ones(1, 1, 3, 3)
            mask[:, :, 2:] = 0  # rows below the centre
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, h):
            return F.conv2d(h, self.weight * self.mask, self.bias, padding=1)

    class Pred(nn.Module):
        def __init__(self):
            super().__init__()
            self.context = nn.ModuleList([MaskedConv(D) for _ in range(L)])
            self.steps = nn.ModuleList([nn.Conv2d(D, D, 1, bias=False) for _ in range(STEPS)])

        def g(self, z):  # z: (B, D, G, G) -> c, same shape
            for conv in self.context:
                z = F.relu(conv(z))
            return z

    m = Net({"prediction_head": Pred()}).train()
    x = views(1)
    st = P // 2
    G = (S - P) // st + 1
    assert G > STEPS
    # (B, G, G, 3, P, P): patch (i, j) of each image, then every patch of the batch in (image, i, j) order.
    grid = torch.stack([torch.stack([x[0][:, :, i * st:i * st + P, j * st:j * st + P] for j in range(G)], 1) for i in range(G)], 1)
    patches = grid.reshape(B * G * G, 3, P, P)

    # The context of row i sees rows <= i only.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z0 = torch.randn(2, D, G + 2, G + 2, generator=gen)
        c0 = m.prediction_head.g(z0)
        for i in range(G + 1):
            z1 = z0.clone()
            z1[:, :, i + 1:] += torch.randn(z1[:, :, i + 1:].shape, generator=gen)
            c1 = m.prediction_head.g(z1)
            assert torch.equal(c0[:, :, :i + 1], c1[:, :, :i + 1]), f"context row {i} sees rows below it"
            assert not torch.equal(c0[:, :, i + 1:], c1[:, :, i + 1:])

    def loss():
        z = m.backbone(patches).reshape(B, G, G, D)
        c = m.prediction_head.g(z.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        zl = z.reshape(B * G * G, D)
        per_k = []
        for k in range(1, STEPS + 1):
            wk = m.prediction_head.steps[k - 1].weight[:, :, 0, 0]
            terms = []
            for b in range(B):
                for i in range(G - k):
                    for j in range(G):
                        zhat = wk @ c[b, i, j]
                        n = (b * G + i + k) * G + j
                        assert torch.equal(zl[n], z[b, i + k, j])
                        pos = zhat @ z[b, i + k, j]
                        neg = torch.cat([zl[:n], zl[n + 1:]]) @ zhat
                        terms.append(torch.logsumexp(torch.cat([pos[None], neg]), 0) - pos)
            per_k.append(torch.stack(terms).mean())
        return torch.stack(per_k).mean()

    run("cpc_v2", m, loss, x, extra_meta={"patch_size": P, "steps": STEPS, "context_layers": L})


EXTRA["cpc_v2"] = cpc_v2


def colorization():
    """Colorization (Zhang, Isola, Efros 2016), written from the paper's definitions, not from colorization.rs.
    sRGB -> Lab with skimage.color.rgb2lab's constants (sRGB gamma, the sRGB->XYZ matrix, D65 white, the cube root
    with its linear toe), in float64. The bins: the centres (10i, 10j) that are the nearest grid centre of some
    colour of a 64-level grid of the RGB cube (our in-gamut rule; 261 bins, the paper's list has 313). The net: the
    ResNet over (L - 50) / 50 (1 input channel), its last map upsampled x2 (bilinear) to 1/4 of the 16-px side, a
    3x3 conv, BN, ReLU and a 1x1 conv with bias to Q logits. Targets: ab averaged over 4x4 blocks; each pixel's 5
    nearest bins weighted by exp(-d^2 / (2 sigma^2)), normalised (sec. 2.1). Rebalancing (sec. 2.2): counts of each
    pixel's nearest bin (this batch: the prior starts empty), p~ = p smoothed by a Gaussian (sigma) over the bin
    centres, w = 1 / ((1 - lambda) p~ + lambda / Q) scaled so sum p~ w = 1, v = w[q*], q* = argmax Z.
    Loss eq. 2 averaged over pixels and images, one term per pixel computed in a loop."""
    torch.manual_seed(19)
    D, HID, SIGMA, LAM, K = WIDTH * 8, 8, 5.0, 0.5, 5
    M = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)

    def rgb2lab(rgb):  # (..., 3) in [0, 1] -> (..., 3)
        rgb = rgb.double()
        lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
        xyz = lin @ M.T / white
        f = torch.where(xyz > 0.008856, xyz.clamp_min(0.008856) ** (1 / 3), 7.787 * xyz + 16 / 116)
        return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)

    # Closed form: sRGB red is Lab (53.2408, 80.0925, 67.2032) (Lindbloom).
    assert torch.allclose(rgb2lab(torch.tensor([1.0, 0.0, 0.0])), torch.tensor([53.2408, 80.0925, 67.2032], dtype=torch.float64), atol=1e-2)
    g = torch.linspace(0, 1, 64, dtype=torch.float64)
    cube = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    cells = sorted(set(map(tuple, torch.round(rgb2lab(cube)[:, 1:] / 10).long().tolist())))
    bins = torch.tensor(cells, dtype=torch.float64) * 10
    Q = len(bins)
    assert Q == 261, Q

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(D, HID, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(HID)
            self.logits = nn.Conv2d(HID, Q, 1)

        def forward(self, h):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            return self.logits(F.relu(self.bn(self.conv(h))))

    m = Net({"decoder": Decoder()}).train()
    m.backbone.conv1 = nn.Conv2d(1, WIDTH, 3, 1, 1, bias=False)
    x = [torch.rand(B, 3, S, S)]
    lab = rgb2lab(x[0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, 3, S, S) float64
    ab = F.avg_pool2d(lab[:, 1:], 4)  # (B, 2, S/4, S/4)
    counts = torch.zeros(Q, dtype=torch.int64)
    hw = ab.shape[2]
    targets = torch.zeros(B, hw, hw, Q, dtype=torch.float64)
    nearest = torch.zeros(B, hw, hw, dtype=torch.int64)
    for b in range(B):
        for i in range(hw):
            for j in range(hw):
                d = (bins - ab[b, :, i, j]).norm(dim=1)
                order = torch.argsort(d)[:K]
                w = torch.exp(-d[order] ** 2 / (2 * SIGMA**2))
                targets[b, i, j, order] = w / w.sum()
                nearest[b, i, j] = order[0]
                counts[order[0]] += 1
    p = counts.double() / counts.sum()
    kernel = torch.exp(-torch.cdist(bins, bins) ** 2 / (2 * SIGMA**2))
    p_smooth = kernel @ p
    p_smooth = p_smooth / p_smooth.sum()
    wq = 1 / ((1 - LAM) * p_smooth + LAM / Q)
    wq = wq / (p_smooth * wq).sum()
    assert torch.isclose((p_smooth * wq).sum(), torch.tensor(1.0, dtype=torch.float64))

    def loss():
        bb = m.backbone
        h = F.relu(bb.bn1(bb.conv1(((lab[:, :1] - 50) / 50).float())))
        for i in range(4):
            h = getattr(bb, f"layer{i + 1}")(h)
        logp = F.log_softmax(m.decoder(h), 1)  # (B, Q, hw, hw)
        terms = []
        for b in range(B):
            for i in range(hw):
                for j in range(hw):
                    z = targets[b, i, j].float()
                    terms.append(-wq[nearest[b, i, j]].float() * (z * logp[b, :, i, j]).sum())
        return torch.stack(terms).mean()

    run("colorization", m, loss, x, state_init={"prior_counts": torch.zeros(Q, dtype=torch.int64)},
        state_after=lambda: {"prior_counts": counts}, tensors={"lab": lab.float()},
        extra_meta={"head_hidden": HID, "rebalance_lambda": LAM, "sigma": SIGMA, "decode_temperature": 0.38})


EXTRA["colorization"] = colorization


if __name__ == "__main__":
    names = sys.argv[1:]
    unknown = [n for n in names if n != "base" and n not in EXTRA]
    if unknown:
        sys.exit(f"unknown fixture(s) {unknown}: expected base, {', '.join(EXTRA)}")
    if not names or "base" in names:
        main()
    for n, gen in EXTRA.items():
        if not names or n in names:
            gen()

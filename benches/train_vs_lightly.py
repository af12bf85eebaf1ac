#!/usr/bin/env python3
"""Same budget, side by side: `pretext train` against PyTorch + lightly on CIFAR-10.

Both sides get the same backbone (CIFAR-stem ResNet-18 at --width, torchvision
names), heads (read from the pretext run's config.toml), augmentations
(lightly's SimCLR/BYOL transforms at 32 px without blur = pretext's CIFAR
presets), batch size, SGD + momentum with the same cosine schedule over the
same number of steps, seed and images (the same class-balanced strided subset
of the train split). They run *concurrently*, one libtorch thread each, so a
machine shared with other work slows both alike. k-NN (k=200, T=0.1 and k=20,
T=0.07; gallery = strided --knn-train train images, queries = the 10,000 test
images) is taken at step 0 (random init) and every --knn-every steps; the
x axis is training minutes, evaluation time excluded.

  .venv/bin/python benches/train_vs_lightly.py --method simclr --steps 60 --batch-size 128
Needs: `pip install lightly` in the venv, `cargo build` (target/debug/pretext).
Writes benches/results/train_vs_lightly_<method>.{json,png}.

--same-init: the PyTorch model (backbone + heads, seeded) is built first and
written to <run dir>/init.safetensors under pretext's parameter names
(torchvision backbone names, projection_head.* / prediction_head.*); pretext
starts from it with `--init-weights`, so both sides share the random init and
its k-NN. Outputs then end in _sameinit (with --tag appended).
"""
import argparse
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import time
import tomllib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from gen_method_fixtures import Head, ResNetCifar  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_cifar(path):
    """train/test arrays from the JPEG tarball, in sorted path order (as the data crate)."""
    out = {"train": [], "test": []}
    with tarfile.open(path) as tf:
        members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith((".jpg", ".png"))), key=lambda m: m.name)
        classes = sorted({m.name.split("/")[-2] for m in members})
        for m in members:
            parts = m.name.split("/")
            split = parts[-3]
            if split not in out:
                continue
            img = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
            out[split].append((np.asarray(img), classes.index(parts[-2])))
    res = {}
    for k, v in out.items():
        res[k] = (np.stack([a for a, _ in v]), np.array([l for _, l in v]))
    return res


def strided(n, k):
    return [i * n // k for i in range(k)] if 0 < k < n else list(range(n))


@torch.no_grad()
def knn(backbone, gallery, glabels, test, tlabels):
    backbone.eval()

    def feats(x):
        fs = []
        for i in range(0, len(x), 512):
            t = torch.from_numpy(x[i:i + 512]).permute(0, 3, 1, 2).float() / 255.0
            fs.append(F.normalize(backbone((t - MEAN) / STD), dim=1))
        return torch.cat(fs)

    g, q = feats(gallery), feats(test)
    gl = torch.from_numpy(glabels).long()
    res = []
    for k, T in [(20, 0.07), (200, 0.1)]:
        correct = 0
        for i in range(0, len(q), 1000):
            sim = q[i:i + 1000] @ g.T
            top, idx = sim.topk(k, dim=1)
            votes = torch.zeros(len(top), 10).scatter_add_(1, gl[idx], (top / T).exp())
            correct += (votes.argmax(1) == torch.from_numpy(tlabels[i:i + 1000])).sum().item()
        res.append(100.0 * correct / len(q))
    backbone.train()
    return res


def warmup_cosine(step, total, base):
    span = total - 1
    return 0.0 if span <= 0 else 0.5 * base * (1 + math.cos(math.pi * min(step / span, 1.0)))


def head_dims(method, D):
    """pretext's MethodConfig::preset head sizes for a backbone of embed dim D."""
    h = min(max(4 * D, 64), 2048)
    return {"proj_hidden": h, "proj_out": min(256, h)} if method == "byol" else {"proj_hidden": max(D, 32), "proj_out": 128}


def build_model(args, m):
    """Seeded backbone + heads (dict with 'proj' and, for BYOL, 'pred')."""
    torch.manual_seed(args.seed)
    bb = ResNetCifar(args.width, [2, 2, 2, 2])
    for mod in bb.modules():  # torchvision's ResNet init, as pretext's
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    D = bb.embed_dim
    if args.method == "simclr":
        heads = {"proj": Head([(D, m["proj_hidden"], True, "relu"), (m["proj_hidden"], m["proj_out"], True, None)])}
    else:
        two = lambda i, h, o: Head([(i, h, True, "relu"), (h, o, False, None)])
        heads = {"proj": two(D, m["proj_hidden"], m["proj_out"]), "pred": two(m["proj_out"], m["proj_hidden"], m["proj_out"])}
    return bb, heads


def save_init(path, bb, heads):
    """The student under pretext's names, for `pretext train --init-weights`."""
    sd = dict(bb.state_dict())
    for key, name in [("proj", "projection_head"), ("pred", "prediction_head")]:
        if key in heads:
            sd.update({f"{name}.{k}": v for k, v in heads[key].state_dict().items()})
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, path)


def run_lightly(args, cfg, data, model=None):
    from lightly.loss import NegativeCosineSimilarity, NTXentLoss
    from lightly.transforms import SimCLRTransform
    from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform

    torch.set_num_threads(1)
    m = cfg["method"]
    bb, heads = model or build_model(args, m)
    torch.manual_seed(args.seed)
    if args.method == "simclr":
        transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
    else:
        transform = BYOLTransform(view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                                  view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0))
        import copy
        t_bb, t_proj = copy.deepcopy(bb), copy.deepcopy(heads["proj"])
    modules = [bb] + list(heads.values())
    decay = [p for mod in modules for p in mod.parameters() if p.ndim >= 2]
    nodecay = [p for mod in modules for p in mod.parameters() if p.ndim < 2]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.wd}, {"params": nodecay, "weight_decay": 0.0}], lr=args.lr, momentum=0.9)
    x, y = data["train"]
    idx = strided(len(x), args.steps * args.batch_size)
    gidx = strided(len(x), args.knn_train)
    gallery, glabels = x[gidx], y[gidx]
    test, tlabels = data["test"]
    log = []
    train_secs = 0.0
    k = knn(bb, gallery, glabels, test, tlabels)
    log.append({"step": 0, "minutes": 0.0, "knn20": k[0], "knn200": k[1]})
    g = torch.Generator().manual_seed(args.seed)
    order = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
    pil = [Image.fromarray(x[i]) for i in order]
    ncs, ntx = NegativeCosineSimilarity(), NTXentLoss(temperature=m["temperature"])
    for step in range(args.steps):
        t0 = time.time()
        batch = [transform(p) for p in pil[step * args.batch_size:(step + 1) * args.batch_size]]
        v0 = torch.stack([b[0] for b in batch])
        v1 = torch.stack([b[1] for b in batch])
        lr = warmup_cosine(step, args.steps, args.lr)
        for gr in opt.param_groups:
            gr["lr"] = lr
        if args.method == "simclr":
            loss = ntx(heads["proj"](bb(v0)), heads["proj"](bb(v1)))
        else:
            p0 = heads["pred"](heads["proj"](bb(v0)))
            p1 = heads["pred"](heads["proj"](bb(v1)))
            with torch.no_grad():
                z0, z1 = t_proj(t_bb(v0)), t_proj(t_bb(v1))
            loss = 0.5 * (ncs(p0, z1) + ncs(p1, z0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.method == "byol":
            tau = 1.0 - (1.0 - m["tau"]) * (math.cos(math.pi * step / max(args.steps - 1, 1)) + 1) / 2
            with torch.no_grad():
                for src, dst in [(bb, t_bb), (heads["proj"], t_proj)]:
                    for ps, pt in zip(src.parameters(), dst.parameters()):
                        pt.mul_(tau).add_(ps, alpha=1 - tau)
        train_secs += time.time() - t0
        entry = {"step": step + 1, "minutes": train_secs / 60, "loss": float(loss), "images_per_s": (step + 1) * args.batch_size / train_secs}
        if (step + 1) % args.knn_every == 0 or step + 1 == args.steps:
            k = knn(bb, gallery, glabels, test, tlabels)
            entry.update({"knn20": k[0], "knn200": k[1]})
            print(f"lightly step {step + 1}: loss {float(loss):.4f} knn200 {k[1]:.2f}% {entry['images_per_s']:.1f} img/s", flush=True)
        log.append(entry)
    return log


def plot(path, series, title):
    W, H, L, R, T, B = 760, 440, 60, 20, 30, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    pts = [p for _, _, s in series for p in s]
    x1 = max([p[0] for p in pts] + [1e-3])
    y0, y1 = min(p[1] for p in pts) - 1, max(p[1] for p in pts) + 1
    mx = lambda x: L + x / x1 * (W - L - R)
    my = lambda y: H - B - (y - y0) / (y1 - y0) * (H - T - B)
    d.line([(L, T), (L, H - B), (W - R, H - B)], fill="black")
    for i in range(6):
        yv = y0 + (y1 - y0) * i / 5
        d.text((5, my(yv) - 5), f"{yv:.1f}", fill="black")
        xv = x1 * i / 5
        d.text((mx(xv) - 10, H - B + 5), f"{xv:.1f}", fill="black")
    d.text((W // 2 - 60, H - 20), "training minutes", fill="black")
    d.text((L, 8), title, fill="black")
    for i, (name, color, s) in enumerate(series):
        if len(s) > 1:
            d.line([(mx(a), my(b)) for a, b in s], fill=color, width=2)
        for a, b in s:
            d.ellipse([mx(a) - 3, my(b) - 3, mx(a) + 3, my(b) + 3], fill=color)
        d.text((W - 260, T + 5 + 14 * i), name, fill=color)
    img.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["simclr", "byol"], default="simclr")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="default 0.06 * batch / 128 (lightly's CIFAR benchmark)")
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--knn-every", type=int, default=20)
    ap.add_argument("--knn-train", type=int, default=10000)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "results"))
    ap.add_argument("--same-init", action="store_true", help="both sides start from the PyTorch side's initial weights")
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    args = ap.parse_args()
    args.lr = args.lr or 0.06 * args.batch_size / 128
    os.makedirs(args.out, exist_ok=True)
    suffix = ("_sameinit" if args.same_init else "") + (f"_{args.tag}" if args.tag else "")
    run_dir = os.path.join(args.out, f"pretext-{args.method}{suffix}")
    cmd = [os.path.join(ROOT, "target", "debug", "pretext"), "train", "--method", args.method, "--backbone", "resnet18-cifar",
           "--width", str(args.width), "--data", args.data, "--epochs", "1", "--limit", str(args.steps * args.batch_size),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--weight-decay", str(args.wd), "--optimizer", "sgd",
           "--seed", str(args.seed), f"--knn-every={args.knn_every / args.steps}", "--knn-train", str(args.knn_train),
           "--threads", "1", "--out", run_dir, "--quiet"]
    model = None
    if args.same_init:
        torch.set_num_threads(1)
        model = build_model(args, head_dims(args.method, 8 * args.width))
        os.makedirs(run_dir, exist_ok=True)
        init_path = os.path.join(run_dir, "init.safetensors")
        save_init(init_path, *model)
        cmd += ["--init-weights", init_path]
    print(" ".join(cmd), flush=True)
    t = time.time()
    data = load_cifar(args.data)
    print(f"decoded CIFAR-10 in {time.time() - t:.0f}s", flush=True)
    proc = subprocess.Popen(cmd, env=dict(os.environ, RAYON_NUM_THREADS="1"))
    # The pretext run writes its config first; read the heads from it.
    while not os.path.exists(os.path.join(run_dir, "config.toml")):
        time.sleep(0.2)
    time.sleep(0.5)
    with open(os.path.join(run_dir, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    if model is not None:
        want = {k: cfg["method"][k] for k in ["proj_hidden", "proj_out"]}
        if head_dims(args.method, 8 * args.width) != want:  # ResNet-18 embed dim = 8 x width
            proc.kill()
            sys.exit(f"head sizes differ from pretext's config {want}")
    light = run_lightly(args, cfg, data, model)
    if proc.wait() != 0:
        sys.exit("pretext train failed")
    ours = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    knn_ours = [(m["minutes"], m["knn200"]) for m in ours if "knn200" in m]
    knn_light = [(m["minutes"], m["knn200"]) for m in light if "knn200" in m]
    ips_ours = [m["images_per_s"] for m in ours if "images_per_s" in m][-1]
    ips_light = [m["images_per_s"] for m in light if "images_per_s" in m][-1]
    summary = {
        "method": args.method, "same_init": args.same_init, "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "width": args.width, "lr": args.lr,
        "threads_each": 1, "random_init_knn200": {"pretext": knn_ours[0][1], "lightly": knn_light[0][1]},
        "random_init_knn20": {"pretext": [m["knn20"] for m in ours if "knn20" in m][0], "lightly": [m["knn20"] for m in light if "knn20" in m][0]},
        "final_knn200": {"pretext": knn_ours[-1][1], "lightly": knn_light[-1][1]},
        "final_knn20": {"pretext": [m["knn20"] for m in ours if "knn20" in m][-1], "lightly": [m["knn20"] for m in light if "knn20" in m][-1]},
        "train_minutes": {"pretext": knn_ours[-1][0], "lightly": knn_light[-1][0]},
        "images_per_s": {"pretext": ips_ours, "lightly": ips_light},
        "pretext_metrics": ours, "lightly_metrics": light,
    }
    with open(os.path.join(args.out, f"train_vs_lightly_{args.method}{suffix}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    base = [(0.0, knn_ours[0][1]), (max(knn_ours[-1][0], knn_light[-1][0]), knn_ours[0][1])]
    plot(os.path.join(args.out, f"train_vs_lightly_{args.method}{suffix}.png"),
         [("pretext k-NN (k=200)", (31, 119, 180), knn_ours), ("lightly k-NN (k=200)", (255, 127, 14), knn_light), ("random init", (127, 127, 127), base)],
         f"{args.method}, ResNet-18 CIFAR w{args.width}, batch {args.batch_size}, {args.steps} steps, seed {args.seed}{', same init' if args.same_init else ''}, k-NN top-1 %")
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("metrics")}, indent=1))


if __name__ == "__main__":
    main()

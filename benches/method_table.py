#!/usr/bin/env python3
"""Every method of `pretext train` at one CPU budget, on one backbone, scored
with k-NN and a linear probe on CIFAR-10 against the random init.

For each method listed by `pretext train --help` (so a new method joins the
table by being registered), this runs

    pretext train --method M --backbone resnet18-cifar --width 16
                  --limit IMAGES --epochs EPOCHS --batch-size B --threads 1
    pretext eval probes RUN --limit EVAL --json RUN/probes.json

(MAE, ViT only, on vit-tiny-cifar, with its own random-init row), JOBS of
them at a time, each on one libtorch thread. A method whose run dir already
has probes.json is not run again: the script resumes where it stopped. A
method that fails is listed with its error and does not stop the others.

Outputs: OUT/method_table.json, a Markdown table on stdout, and with --doc
the table between the markers in docs/results.md and the chart
docs/results-methods.png (matplotlib, pinned in scripts/requirements-bench.txt).

The budget is a data budget (every method sees IMAGES images EPOCHS times),
not a time budget: methods with more views per image (DINO, SwAV: 8 crops;
jigsaw, PIRL: 9 tiles) spend more minutes, which the table reports.
"""
import argparse
import concurrent.futures as cf
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

FAMILIES = [
    ("pretext tasks", ["rotation", "jigsaw", "context_prediction", "context_encoder", "colorization", "counting", "npid", "pirl", "cpc_v2"]),
    ("contrastive", ["simclr", "moco_v2", "moco_v3", "dcl", "dclw", "nnclr"]),
    ("negative-free", ["byol", "simsiam", "fastsiam", "barlow_twins", "vicreg", "tico", "swav"]),
    ("self-distillation", ["dino"]),
    ("masked image modeling", ["mae"]),
]
VIT_ONLY = {"mae"}
RESNET = ["--backbone", "resnet18-cifar", "--width", "16"]
VIT = ["--backbone", "vit-tiny-cifar"]


def family(m):
    return next((f for f, ms in FAMILIES if m in ms), "other")


def methods(pretext):
    """Method names from `pretext train --help` (the registry)."""
    out = subprocess.run([pretext, "train", "--help"], capture_output=True, text=True, check=True).stdout
    sec = out.split("Methods (--method NAME):", 1)[1]
    return re.findall(r"^  ([a-z0-9_]+)(?: \(or [^)]*\))?\s*$", sec, re.M)


def log(msg):
    print(f"[method-table {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_one(a, m, baseline):
    run = os.path.join(a.out, "runs", m)
    done = os.path.join(run, "probes.json")
    if os.path.exists(done):
        return m, "cached"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RAYON_NUM_THREADS="1")
    logf = os.path.join(a.out, "runs", f"{m}.log")
    os.makedirs(os.path.dirname(logf), exist_ok=True)
    bb = VIT if m in VIT_ONLY else RESNET
    train = [a.pretext, "train", "--method", m, "--data", a.data, *bb, "--limit", str(a.images), "--epochs", str(a.epochs),
             "--batch-size", str(a.batch_size), "--threads", "1", "--seed", "0", "--knn-every=-1", "--quiet", "--out", run]
    if os.path.exists(os.path.join(run, "checkpoint.json")):
        train.append("--resume")
    ev = [a.pretext, "eval", "probes", run, "--data", a.data, "--limit", str(a.eval_images), "--json", done + ".tmp"]
    if not baseline:
        ev.append("--no-baseline")
    t0 = time.time()
    with open(logf, "a") as f:
        for cmd in (train, ev):
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            if r.returncode != 0:
                return m, f"failed (rc {r.returncode}, see {logf})"
    os.replace(done + ".tmp", done)
    return m, f"done in {(time.time() - t0) / 60:.1f} min"


def collect(a, names):
    rows, baselines = [], {}
    for m in names:
        run = os.path.join(a.out, "runs", m)
        row = {"method": m, "family": family(m), "backbone": "vit-tiny-cifar" if m in VIT_ONLY else "resnet18-cifar w16"}
        try:
            p = json.load(open(os.path.join(run, "probes.json")))
        except FileNotFoundError:
            logf = os.path.join(a.out, "runs", f"{m}.log")
            tail = open(logf).read().strip().splitlines()[-1:] if os.path.exists(logf) else ["not run"]
            row["error"] = tail[0][:200] if tail else "failed"
            rows.append(row)
            continue
        c = p["checkpoint"]
        row["knn200"] = next(k["top1"] for k in c["knn"] if k["k"] == 200)
        row["knn20"] = next(k["top1"] for k in c["knn"] if k["k"] == 20)
        row["linear"] = c["linear"]["top1"]
        if "random init" in p:
            r = p["random init"]
            baselines[row["backbone"]] = {"knn200": next(k["top1"] for k in r["knn"] if k["k"] == 200), "knn20": next(k["top1"] for k in r["knn"] if k["k"] == 20), "linear": r["linear"]["top1"]}
        metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
        steps = [x for x in metrics if "loss" in x]
        if steps:
            row["train_minutes"] = steps[-1]["minutes"]
            row["images_per_s"] = steps[-1].get("images_per_s")
            row["final_loss"] = steps[-1]["loss"]
            row["steps"] = steps[-1]["step"]
        rows.append(row)
    return rows, baselines


def markdown(a, rows, baselines):
    out = [f"| family | method | backbone | k-NN k=200 (Δ vs random init) | k-NN k=20 | linear probe (Δ vs random init) | train min | images/s |",
           "|---|---|---|---|---|---|---|---|"]
    for bb, b in baselines.items():
        out.append(f"| baseline | random init | {bb} | {b['knn200']:.2f} | {b['knn20']:.2f} | {b['linear']:.2f} | 0 | - |")
    order = {f: i for i, (f, _) in enumerate(FAMILIES)}
    for r in sorted(rows, key=lambda r: (order.get(r["family"], 99), r["method"])):
        if "error" in r:
            out.append(f"| {r['family']} | {r['method']} | {r['backbone']} | {r['error']} | | | | |")
            continue
        b = baselines.get(r["backbone"], {})
        d = lambda k: f" ({r[k] - b[k]:+.2f})" if k in b else ""
        out.append(f"| {r['family']} | {r['method']} | {r['backbone']} | {r['knn200']:.2f}{d('knn200')} | {r['knn20']:.2f} | {r['linear']:.2f}{d('linear')} | "
                   f"{r.get('train_minutes', float('nan')):.1f} | {r.get('images_per_s') or float('nan'):.0f} |")
    return "\n".join(out)


def chart(rows, baselines, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    order = {f: i for i, (f, _) in enumerate(FAMILIES)}
    ok = sorted([r for r in rows if "error" not in r], key=lambda r: (order.get(r["family"], 99), r["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.34 * len(ok) + 1.8), sharey=True)
    ys = range(len(ok))
    colors = plt.get_cmap("tab10")
    for ax, key, title in [(axes[0], "knn200", "k-NN top-1 (k=200)"), (axes[1], "linear", "linear probe top-1")]:
        ax.barh(list(ys), [r[key] for r in ok], color=[colors(order.get(r["family"], 9)) for r in ok])
        for i, r in enumerate(ok):
            ax.text(r[key] + 0.3, i, f"{r[key]:.1f}", va="center", fontsize=8)
        for j, (bb, b) in enumerate(baselines.items()):
            ax.axvline(b[key], color="k", ls="--" if j == 0 else ":", lw=1, label=f"random init, {bb}: {b[key]:.1f}%")
        ax.set_xlabel(f"{title}, CIFAR-10 test (%)")
        ax.set_title(title)
        lo = min([r[key] for r in ok] + [b[key] for b in baselines.values()])
        ax.set_xlim(max(0, lo - 8), max(r[key] for r in ok) + 6)
        ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(ys))
    axes[0].set_yticklabels([f"{r['method']} ({r['family']})" for r in ok], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Every method at one CPU budget (see docs/results.md for the budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretext", default=os.path.join(ROOT, "target", "debug", "pretext"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "method-table"))
    ap.add_argument("--images", type=int, default=5000, help="training images (evenly strided subset)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eval-images", type=int, default=10000, help="train images for the k-NN gallery and probe, and test images")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--methods", nargs="*", help="a subset (default: every registered method)")
    ap.add_argument("--doc", action="store_true", help="write the table into docs/results.md and the chart to docs/results-methods.png")
    a = ap.parse_args()
    for k in ("images", "epochs", "batch_size", "eval_images", "jobs"):
        if getattr(a, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be at least 1, got {getattr(a, k)}")
    if not os.path.exists(a.data):
        ap.error(f"--data {a.data}: no such file")
    names = methods(a.pretext)
    if a.methods:
        if bad := [m for m in a.methods if m not in names]:
            ap.error(f"unknown methods {bad}: registered are {names}")
        names = a.methods
    os.makedirs(a.out, exist_ok=True)
    # The first method of each backbone also evaluates the random init.
    first = {}
    for m in names:
        first.setdefault(m in VIT_ONLY, m)
    log(f"{len(names)} methods, {a.images} images x {a.epochs} epochs, batch {a.batch_size}, {a.jobs} at a time -> {a.out}")
    t0 = time.time()
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        futs = [ex.submit(run_one, a, m, first[m in VIT_ONLY] == m) for m in names]
        for i, f in enumerate(cf.as_completed(futs)):
            m, what = f.result()
            log(f"{i + 1}/{len(names)} {m}: {what} ({(time.time() - t0) / 60:.1f} min elapsed)")
    rows, baselines = collect(a, names)
    budget = {"images": a.images, "epochs": a.epochs, "batch_size": a.batch_size, "eval_images": a.eval_images, "threads_per_run": 1, "jobs": a.jobs}
    json.dump({"budget": budget, "baselines": baselines, "rows": rows}, open(os.path.join(a.out, "method_table.json"), "w"), indent=1)
    table = markdown(a, rows, baselines)
    print(table)
    if a.doc:
        chart(rows, baselines, os.path.join(ROOT, "docs", "results-methods.png"))
        doc = os.path.join(ROOT, "docs", "results.md")
        text = open(doc).read()
        start, end = "<!-- method-table:start -->", "<!-- method-table:end -->"
        if start not in text:
            raise SystemExit(f"{doc}: no {start} marker")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        open(doc, "w").write(head + start + "\n" + table + "\n" + end + tail)
        log(f"wrote {doc} and docs/results-methods.png")


if __name__ == "__main__":
    main()

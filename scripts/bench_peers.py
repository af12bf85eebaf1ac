#!/usr/bin/env python3
"""Python peers for `pretext bench`: what a user would run instead.

Reads a JSON spec written by `pretext bench` (weights, inputs, thread count),
sets the peers up on the SAME safetensors weights and inputs, then serves
timing requests so that `pretext bench` can interleave them with its own
systems round by round (A B C A B C ...): a machine whose speed drifts slows
every system of a round alike, and per-round ratios cancel the drift.

Protocol (one JSON object per line): after setup the script writes
{"ready": true} on stdout, then answers each request read on stdin:
  {"cmd": "time", "system": S, "case": MODEL, "batch": B, "timing": {...}}  -> {"times_s": [...]}
  {"cmd": "time", "system": "faiss_flat_ip", "case": "knn", "timing": {...}} -> {"times_s": [...]}
      one timed block (warm-up, then iterations until min_iters and budget_s)
  {"cmd": "train", "system": S, "case": "training", "steps": N, "timed": bool}
      -> {"times_s": [...], "losses": [...]}: the next N steps of S's trajectory
  {"cmd": "finish"}  -> writes OUT.json (outputs, versions, flop counts) and {"done": true}
Anything else on stdout (a library's print) goes to stderr instead.
The Rust side computes every statistic, so both sides are summarised alike.

Peers:
  inference  pytorch_eager     torchvision / timm model, eval mode, torch.inference_mode
             torch_onnx_ort    torch.onnx.export(dynamo=False, opset 17) + onnxruntime CPU
  training   pytorch           one SimCLR step on ResNet-18 CIFAR written like
                               pretext's trainer: each view through backbone +
                               projection head (Linear-BN-ReLU-Linear-BN),
                               NT-Xent, SGD momentum, weight decay on weights only
             pytorch_channels_last  the same with the backbone and inputs in
                               torch.channels_last
  knn        faiss_flat_ip     faiss.IndexFlatIP exact search, top-k

Usage: bench_peers.py SPEC.json OUT.json  (requests on stdin, replies on stdout)
"""
import json
import os
import sys
import time


def log(msg):
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def load_st(path):
    from safetensors.numpy import load_file
    return load_file(path)


# --------------------------------------------------------------------- models

def build_model(name):
    """The torchvision/timm module whose state-dict keys equal pretext's names, headless."""
    import torch.nn as nn
    import torchvision
    if name == "resnet18-cifar":
        m = torchvision.models.resnet18()
        m.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
        m.fc = nn.Identity()
    elif name == "resnet50":
        m = torchvision.models.resnet50()
        m.fc = nn.Identity()
    elif name == "vit-small":
        import timm
        m = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    elif name == "mobilenet_v2":
        m = torchvision.models.mobilenet_v2()
        m.classifier = nn.Identity()
    else:
        raise SystemExit(f"bench_peers: unknown model '{name}'")
    return m


def load_weights(module, path, prefix="", exclude=None):
    import torch
    st = load_st(path)
    sd = {k[len(prefix):]: torch.from_numpy(v) for k, v in st.items()
          if k.startswith(prefix) and not (exclude and k.startswith(exclude))}
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise SystemExit(f"bench_peers: {path}: missing {missing[:5]} unexpected {unexpected[:5]}")


class Timer:
    """Warm-up, then iterate until both min_iters and budget_s are reached (or max_iters)."""

    def __init__(self, t):
        self.warmup = int(t["warmup"])
        self.min_iters = int(t["min_iters"])
        self.max_iters = int(t["max_iters"])
        self.budget_s = float(t["budget_s"])

    def run(self, f):
        for _ in range(self.warmup):
            f()
        times = []
        start = time.perf_counter()
        while len(times) < self.max_iters:
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
            if len(times) >= self.min_iters and time.perf_counter() - start >= self.budget_s:
                break
        return times


# ------------------------------------------------------------------ inference

def setup_inference(spec, handlers, finishers, flops):
    """Builds the model, exports it with torch.onnx and opens ORT; registers
    one timed block per (system, batch) request."""
    import numpy as np
    import onnxruntime as ort
    import torch
    threads = spec["threads"]
    inf = spec["inference"]
    systems = inf["systems"]
    outputs = {}
    for m in inf["models"]:
        name = m["name"]
        model = build_model(name).eval()
        load_weights(model, m["weights"])
        x_all = load_st(m["input"])["x"]
        from torch.utils.flop_counter import FlopCounterMode
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            model(torch.from_numpy(x_all[:1]))
        flops[name] = int(fc.get_total_flops())
        sess = None
        if "torch_onnx_ort" in systems:
            onnx_path = os.path.join(inf["onnx_dir"], f"{name}.torch.onnx")
            t0 = time.perf_counter()
            with torch.no_grad():
                torch.onnx.export(model, torch.from_numpy(x_all[:1]), onnx_path, input_names=["input"],
                                  output_names=["features"], dynamic_axes={"input": {0: "N"}, "features": {0: "N"}},
                                  opset_version=17, dynamo=False)
            log(f"{name}: torch.onnx.export {time.perf_counter() - t0:.1f}s")
        # `pretext bench` times the exported graph in its own process (same ORT
        # library and session options as pretext+ORT); standalone, it is timed here.
        if "torch_onnx_ort" in systems and inf.get("torch_onnx_timed_by") != "pretext":
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Same intra-op spinning as pretext+ORT (`pretext bench --ort-spinning`).
            if spec.get("ort_spinning", "default") in ("on", "off"):
                so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spec["ort_spinning"] == "on" else "0")
            sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

        def eager(b, model=model, x_all=x_all):
            xt = torch.from_numpy(np.ascontiguousarray(x_all[:b]))

            def run():
                with torch.inference_mode():
                    return model(xt).numpy()
            return run

        def onnx_ort(b, sess=sess, x_all=x_all):
            x = np.ascontiguousarray(x_all[:b])
            return lambda: sess.run(None, {"input": x})[0]

        runs = {}
        if "pytorch_eager" in systems:
            runs["pytorch_eager"] = eager
        if sess is not None:
            runs["torch_onnx_ort"] = onnx_ort
        for system, make in runs.items():
            cache = {}

            def block(req, make=make, cache=cache):
                b = int(req["batch"])
                if b not in cache:
                    cache[b] = make(b)
                return {"times_s": Timer(req["timing"]).run(cache[b])}
            handlers[(system, name)] = block
            for b in m["batches"]:
                outputs[f"{name}/{system}/{b}"] = (make, b)

    def finish():
        if inf.get("outputs"):
            from safetensors.numpy import save_file
            save_file({k: np.ascontiguousarray(make(b)(), dtype=np.float32) for k, (make, b) in outputs.items()}, inf["outputs"])
    finishers.append(finish)


# ------------------------------------------------------------------- training

def nt_xent(z, temperature):
    """SimCLR's NT-Xent over 2B embeddings: views i and i+B are positives."""
    import torch
    import torch.nn.functional as F
    n = z.shape[0]
    b = n // 2
    z = F.normalize(z, dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    labels = torch.cat([torch.arange(b, n), torch.arange(0, b)])
    return F.cross_entropy(sim, labels)


def setup_training(spec, handlers):
    """Two peers: `pytorch`, the model as torchvision builds it (NCHW), and
    `pytorch_channels_last`, the same after `.to(memory_format=torch.channels_last)`
    (PyTorch's documented CPU/GPU recipe; pretext's trainer stores conv
    weights that way). Each request runs `steps` steps of one of them; the
    Rust side alternates them with its own step."""
    import torch
    import torch.nn as nn
    tr = spec["training"]
    views = torch.from_numpy(load_st(tr["input"])["x"])
    b = views.shape[0] // 2

    def setup(channels_last):
        backbone = build_model("resnet18-cifar")
        load_weights(backbone, tr["weights"], exclude="projection_head.")
        head = nn.Module()
        head.layers = nn.Sequential(
            nn.Linear(512, tr["hidden"], bias=False), nn.BatchNorm1d(tr["hidden"]), nn.ReLU(),
            nn.Linear(tr["hidden"], tr["out"], bias=False), nn.BatchNorm1d(tr["out"]))
        load_weights(head, tr["weights"], "projection_head.")
        x0, x1 = views[:b], views[b:]
        if channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
            x0 = x0.contiguous(memory_format=torch.channels_last)
            x1 = x1.contiguous(memory_format=torch.channels_last)
        backbone.train()
        head.train()
        # Weight decay on conv/linear weights only, as pretext's trainer does.
        params = list(backbone.parameters()) + list(head.parameters())
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": tr["weight_decay"]},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=tr["lr"], momentum=tr["momentum"])

        def step():
            t0 = time.perf_counter()
            # One forward per view (BatchNorm statistics per view), as pretext's trainer and lightly do.
            z = torch.cat([head.layers(backbone(x0)), head.layers(backbone(x1))])
            loss = nt_xent(z, tr["temperature"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return time.perf_counter() - t0, float(loss.detach())

        def steps(req):
            times, losses = [], []
            for _ in range(int(req["steps"])):
                dt, loss = step()
                if req.get("timed", True):
                    times.append(dt)
                losses.append(loss)
            return {"times_s": times, "losses": losses}
        return steps

    handlers[("pytorch", "training")] = setup(False)
    handlers[("pytorch_channels_last", "training")] = setup(True)


# ------------------------------------------------------------------------ knn

def setup_knn(spec, handlers, result):
    import faiss
    import numpy as np
    k = spec["knn"]
    faiss.omp_set_num_threads(spec["threads"])
    st = load_st(k["data"])
    gallery = np.ascontiguousarray(st["gallery"])
    queries = np.ascontiguousarray(st["queries"])
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    _, top = index.search(queries, k["k"])
    result["knn"] = {"system": "faiss_flat_ip", "queries": int(queries.shape[0]),
                     "top1": top[:, 0].astype(int).tolist(), "faiss": faiss.__version__}
    handlers[("faiss_flat_ip", "knn")] = lambda req: {"times_s": Timer(req["timing"]).run(lambda: index.search(queries, k["k"]))}


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    # The protocol owns the real stdout; stray prints go to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()
    spec = json.load(open(sys.argv[1]))
    import torch
    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    import onnxruntime
    result = {"versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                           "python": sys.version.split()[0]},
              "threads": torch.get_num_threads(), "knn": {}, "torch_flop_counter": {}}
    handlers, finishers = {}, []
    if spec.get("inference"):
        setup_inference(spec, handlers, finishers, result["torch_flop_counter"])
    if spec.get("training"):
        setup_training(spec, handlers)
    if spec.get("knn"):
        setup_knn(spec, handlers, result)
    reply({"ready": True, "systems": sorted({s for s, _ in handlers})})
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "finish":
            for f in finishers:
                f()
            with open(sys.argv[2], "w") as f:
                json.dump(result, f)
            reply({"done": True})
            return
        handler = handlers.get((req["system"], req.get("case")))
        if handler is None:
            raise SystemExit(f"bench_peers: no peer {req['system']} for case {req.get('case')}")
        reply(handler(req))


if __name__ == "__main__":
    main()

"""Times two ONNX files of the same model alternately in one onnxruntime process
(2 intra-op threads) and prints their op counts: tells a graph difference from
session-to-session noise. Usage:
  .venv/bin/python benches/ort_compare.py target/bench-quiet2/mobilenet_v2.onnx target/bench-quiet2/mobilenet_v2.torch.onnx
"""
import collections
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def median_ms(path, batch, size):
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    name = s.get_inputs()[0].name
    for _ in range(5):
        s.run(None, {name: x})
    ts = []
    for _ in range(60 if batch == 1 else 15):
        t = time.perf_counter()
        s.run(None, {name: x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def main(a, b, size=224):
    for batch in (1, 8):
        ra = [median_ms(a, batch, size), median_ms(b, batch, size)]
        rb = [median_ms(a, batch, size), median_ms(b, batch, size)]
        print(f"batch {batch}: {a} {ra[0]:.2f} / {rb[0]:.2f} ms, {b} {ra[1]:.2f} / {rb[1]:.2f} ms")
    for f in (a, b):
        print(f, dict(collections.Counter(n.op_type for n in onnx.load(f).graph.node)))


if __name__ == "__main__":
    main(*sys.argv[1:3], *(int(v) for v in sys.argv[3:4]))

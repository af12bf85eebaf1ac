"""faiss IndexFlatIP on the data written by `knn_bench` (run that example first):

    .venv/bin/python runtime/examples/knn_vs_faiss.py /tmp/knn_bench [k]

Prints faiss's search time (best of 3, all threads) and the top-k agreement.
"""
import sys, time
import numpy as np
import faiss

d = sys.argv[1] if len(sys.argv) > 1 else "/tmp/knn_bench"
k = int(sys.argv[2]) if len(sys.argv) > 2 else 20
g = np.load(f"{d}/gallery.npy"); q = np.load(f"{d}/queries.npy"); ours = np.load(f"{d}/topk.npy").astype(np.int64)
index = faiss.IndexFlatIP(g.shape[1]); index.add(g)
index.search(q[:64], k)
best, best_cpu = float("inf"), float("inf")
for _ in range(3):
    t, c = time.perf_counter(), time.process_time()
    index.search(q, k)
    best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
_, I = index.search(q, k)
agree = np.mean([len(set(a) & set(b)) / k for a, b in zip(I, ours)])
print(f"faiss IndexFlatIP: {q.shape[0]} queries x {g.shape[0]} x {g.shape[1]}, k={k}: {best:.3f}s wall, {best_cpu:.2f}s CPU ({faiss.omp_get_max_threads()} threads); top-{k} set agreement with pretext {agree:.4f}")

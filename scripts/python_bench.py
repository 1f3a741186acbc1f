"""Python-side measurements for BENCHMARKS.md (one run, one machine):
1. kldiv.kl on W1-shaped f32 arrays against the Rust engine's own time for the same job;
2. a W1-shaped job as 4 shards on a local Ray cluster against one process;
3. quantile error of the merged sketch (kldiv.Summary) against KLL and REQ (Apache
   DataSketches), on W1-like KLD values and W4-like Δp values, 8 shards each.

    pip install ./python "ray[data]" datasketches
    python3 scripts/python_bench.py
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import kldiv

rng = np.random.default_rng(1)


def w1(rows=4096, cols=32000):
    p = rng.exponential(size=(rows, cols)) + 1e-6
    p /= p.sum(1, keepdims=True)
    q = p * np.exp(0.1 * rng.standard_normal(p.shape))
    q /= q.sum(1, keepdims=True)
    return p.astype(np.float32), q.astype(np.float32)


def best(f, n=5):
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


def overhead(p, q, kldiv_bin):
    py = best(lambda: kldiv.kl(p, q, device="cpu", normalize=True))
    print("## kldiv.kl vs the Rust engine (W1, f32, cpu)")
    print(f"kldiv.kl best of 5: {py*1e3:.1f} ms  ({p.size/py/1e9:.2f} Gelem/s)")
    out = subprocess.run([kldiv_bin, "bench", "--device", "cpu", "--shapes", "W1"],
                         capture_output=True, text=True, check=True).stdout
    print("kldiv bench --device cpu --shapes W1 (same session):")
    print(out.strip())


def ray_shards(p, q):
    import ray

    with tempfile.TemporaryDirectory() as d:
        pairs = []
        for i, a in enumerate(np.array_split(np.arange(len(p)), 4)):
            pp, qq = os.path.join(d, f"p{i}.npy"), os.path.join(d, f"q{i}.npy")
            np.save(pp, p[a[0]:a[-1] + 1])
            np.save(qq, q[a[0]:a[-1] + 1])
            pairs.append((pp, qq))
        np.save(os.path.join(d, "p.npy"), p)
        np.save(os.path.join(d, "q.npy"), q)
        one = best(lambda: kldiv.compare_files(os.path.join(d, "p.npy"), os.path.join(d, "q.npy"),
                                               device="cpu", normalize=True), 3)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        import kldiv.ray as kr

        kr.compare_shards(pairs[:1], device="cpu", normalize=True)  # workers started
        sh = best(lambda: kr.compare_shards(pairs, device="cpu", normalize=True), 3)
        ray.shutdown()
    print("## 4 shards on a local Ray cluster (2 CPUs) vs one process (W1, f32, cpu)")
    print(f"one process compare_files: {one*1e3:.0f} ms; 4 shards on Ray: {sh*1e3:.0f} ms; "
          f"overhead {sh/one:.2f}x")


def sketch_errors():
    from datasketches import kll_doubles_sketch, req_floats_sketch

    p, q = w1(200_000, 64)
    kld = kldiv.kl(p, q, device="cpu", normalize=True)
    a = rng.standard_normal((200_000, 64)) * 2
    b = a + 0.1 * rng.standard_normal(a.shape)
    t = rng.integers(0, 64, size=200_000)
    s = kldiv.kl(a.astype(np.float32), b.astype(np.float32), input="logits", targets=t, device="cpu")
    pa = np.exp(a - a.max(1, keepdims=True)); pa /= pa.sum(1, keepdims=True)
    pb = np.exp(b - b.max(1, keepdims=True)); pb /= pb.sum(1, keepdims=True)
    dp = pb[np.arange(200_000), t] - pa[np.arange(200_000), t]
    pcts = [0.1, 1, 5, 10, 50, 90, 95, 99, 99.9]
    print("## Quantile sketches: max relative error over the report's percentiles, 8 shards merged")
    print("| data | kldiv sketch (α=0.1%) | KLL k=200 | REQ k=12 | sizes (bytes) kldiv / KLL / REQ |")
    print("|---|---:|---:|---:|---|")
    for name, v in [("W1-like KLD (200k rows)", kld), ("W4-like Δp (200k rows)", dp),
                    ("heavy tail: KLD³ (200k rows)", kld ** 3)]:
        exact = np.percentile(v, pcts)
        merged, kll, req = None, kll_doubles_sketch(200), req_floats_sketch(12, True)
        first = 0
        for part in np.array_split(v, 8):
            sm = kldiv.Summary(device="cpu", keep_values=False, first_row=first)
            sm.add_values(part.astype(np.float64))
            first += len(part)
            sm = kldiv.Summary.from_json(sm.to_json())
            if merged is None:
                merged = sm
            else:
                merged.merge(sm)
            k, r = kll_doubles_sketch(200), req_floats_sketch(12, True)
            for x in part:
                k.update(float(x))
                r.update(float(x))
            kll.merge(k)
            req.merge(r)
        d = merged.to_dict()
        ours = [d["percentiles"].get(f"p{p:g}", d["median"]) if p != 50 else d["median"] for p in pcts]
        rel = lambda got: max(abs(g - e) / abs(e) for g, e in zip(got, exact) if e != 0)
        # KLL/REQ answer a rank, not an interpolated percentile: query the same ranks.
        kq = [kll.get_quantile(p / 100) for p in pcts]
        rq = [req.get_quantile(p / 100) for p in pcts]
        size = len(merged.to_json().encode())
        print(f"| {name} | {rel(ours):.2e} | {rel(kq):.2e} | {rel(rq):.2e} | "
              f"{size} / {len(kll.serialize())} / {len(req.serialize())} |")


if __name__ == "__main__":
    kbin = sys.argv[1] if len(sys.argv) > 1 else "target/release/kldiv"
    p, q = w1()
    if "--skip-overhead" not in sys.argv:
        overhead(p, q, kbin)
    if "--skip-ray" not in sys.argv:
        ray_shards(p, q)
    sketch_errors()

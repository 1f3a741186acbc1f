#!/usr/bin/env python3
"""Time numpy and scipy on WORKLOADS.md's W1-W4 (same shapes and distributions as
`kldiv bench`), so BENCHMARKS.md can put the peers beside kldiv from one session.

Usage: python3 scripts/peers.py [--quick]     (needs numpy and scipy)
"""
import sys
import time

import numpy as np
import scipy.special as sp

QUICK = "--quick" in sys.argv
SHAPES = [("W1", 4096, 32000, "probs"), ("W2", 1_000_000, 16, "probs"),
          ("W3", 64, 2_000_000, "probs"), ("W4", 1024, 128256, "logits")]


def data(rows, cols, kind, rng):
    if kind == "probs":
        p = rng.exponential(size=(rows, cols)).astype(np.float32) + np.float32(1e-6)
        p /= p.sum(1, keepdims=True)
        q = p * np.exp(np.float32(0.1) * rng.standard_normal((rows, cols), dtype=np.float32))
        q /= q.sum(1, keepdims=True)
        return p, q
    a = 2 * rng.standard_normal((rows, cols), dtype=np.float32)
    return a, a + np.float32(0.1) * rng.standard_normal((rows, cols), dtype=np.float32)


def timed(f, reps=3):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def main():
    rng = np.random.default_rng(42)
    print(f"numpy {np.__version__}, scipy {__import__('scipy').__version__}")
    for name, rows, cols, kind in SHAPES:
        if QUICK:
            rows = max(1, rows // 16)
        p, q = data(rows, cols, kind, rng)
        n = rows * cols
        if kind == "probs":
            peers = {
                "numpy (p*log(p/q)).sum(1)": lambda: (p * np.log(p / q)).sum(1),
                "scipy rel_entr(p,q).sum(1)": lambda: sp.rel_entr(p, q).sum(1),
            }
        else:
            def ls():
                la, lb = sp.log_softmax(p, axis=1), sp.log_softmax(q, axis=1)
                return (np.exp(la) * (la - lb)).sum(1)
            peers = {"scipy log_softmax + numpy": ls}
        for label, f in peers.items():
            s = timed(f)
            print(f"{name} {rows}x{cols} {label:<30} {s * 1e3:9.1f} ms {n / s / 1e9:7.3f} Gelem/s")
        del p, q


if __name__ == "__main__":
    main()

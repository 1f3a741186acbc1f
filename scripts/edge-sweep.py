# Logit spikes of 83.5–86.5 on P or Q at random columns of rows 600–4000 wide: where the rest's
# e^(m − max) is at the edge of f32 while their ψ terms are not (the GPU's workgroup merges lost
# them until session 45). KL and reverse KL on one engine against numpy in f64; prints the rows
# off by more than 1e-5. Usage: python3 scripts/edge-sweep.py target/release/kldiv gpu|cpu
import os, subprocess, sys, tempfile
import numpy as np

K, device = sys.argv[1], sys.argv[2]
d = tempfile.mkdtemp(prefix="kldiv-edge-")
rng = np.random.default_rng(11)


def lsm(x):
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))


bad = total = 0
worst = 0.0
for cols in (600, 1000, 1500, 2000, 3000, 4000):
    A, B, info = [], [], []
    for h in (83.5, 84, 84.5, 85, 85.5, 86, 86.5):
        for on_p in (True, False):
            for _ in range(3):
                b = -8 * rng.random(cols)
                a = b + 0.3
                k = int(rng.integers(0, cols))
                b[k], a[k] = 0.0, 0.3
                if on_p:
                    a[k] += h
                else:
                    b[k] += h
                A.append(a), B.append(b), info.append((h, "P" if on_p else "Q", k))
    A, B = np.array(A, np.float32), np.array(B, np.float32)
    np.save(f"{d}/a.npy", A), np.save(f"{d}/b.npy", B)
    la, lb = lsm(A.astype(np.float64)), lsm(B.astype(np.float64))
    refs = {"kl": (np.exp(la) * (la - lb)).sum(1), "reverse-kl": (np.exp(lb) * (lb - la)).sum(1)}
    for div, ref in refs.items():
        cmd = [K, "compare", f"{d}/a.npy", f"{d}/b.npy", "--input", "logits", "--device",
               device, "--divergence", div, "--out", f"{d}/o.npy"]
        subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ))
        rel = abs(np.load(f"{d}/o.npy") - ref) / ref
        total += len(rel)
        bad += int((rel > 1e-5).sum())
        worst = max(worst, float(rel.max()))
        for i in np.nonzero(rel > 1e-5)[0]:
            print(f"{cols} columns {div} spike {info[i]}: relative error {rel[i]:.2e}")
print(f"{device}: {bad} of {total} rows off by more than 1e-5, worst {worst:.2e}")

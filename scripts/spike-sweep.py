# One logit far above the rest of its row (heights 40–100, on P or on Q, in the first
# block or later), every divergence on the GPU and the CPU against numpy in f64; prints the
# rows off by more than 1e-5. Usage: python3 scripts/spike-sweep.py target/release/kldiv
import subprocess, sys, numpy as np
K, d = sys.argv[1], "/tmp/dg"
import os; os.makedirs(d, exist_ok=True)
r = np.random.default_rng(23)
cols = 1500
rows = []
labels = []
for col in (700, 100, 3):
    for on_p in (True, False):
        for h in (40, 60, 70, 75, 80, 82, 84, 85, 86, 87, 88, 90, 95, 100):
            b = -8.0 * r.random(cols)
            a = b + 0.3
            b[col] = 0.0; a[col] = 0.3
            if on_p: a[col] += h
            else: b[col] += h
            rows.append((a, b)); labels.append(f"col {col:4} {'P' if on_p else 'Q'} h {h}")
A = np.array([x for x, _ in rows], dtype=np.float32); B = np.array([y for _, y in rows], dtype=np.float32)
np.save(f"{d}/a.npy", A); np.save(f"{d}/b.npy", B)
a64, b64 = A.astype(np.float64), B.astype(np.float64)
def lsm(x):
    m = x.max(1, keepdims=True); return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))
la, lb = lsm(a64), lsm(b64); p, q = np.exp(la), np.exp(lb); mm = 0.5 * (p + q)
with np.errstate(all="ignore"):
    lm = np.log(mm)
    ref = {"kl": (p * (la - lb)).sum(1), "reverse-kl": (q * (lb - la)).sum(1),
           "cross-entropy": -(p * lb).sum(1), "js": 0.5 * (np.where(p > 0, p * (la - lm), 0).sum(1) + np.where(q > 0, q * (lb - lm), 0).sum(1))}
divs = list(ref)
for dev in ("gpu", "cpu"):
    out = f"{d}/o_{dev}.npy"
    pr = subprocess.run([K, "compare", f"{d}/a.npy", f"{d}/b.npy", "--input", "logits", "--device", dev,
                         "--divergence", ",".join(divs), "--out", out, "--explain"], capture_output=True, text=True)
    print(dev, "rc", pr.returncode, pr.stderr[-1500:])
    o = np.load(out)
    bad = 0
    for i, lab in enumerate(labels):
        errs = [abs(o[i, j] - ref[k][i]) / max(abs(ref[k][i]), 1e-300) for j, k in enumerate(divs)]
        if max(errs) > 1e-5:
            bad += 1
            print(dev, lab, " ".join(f"{k} {o[i,j]:.9g}/{ref[k][i]:.9g} ({e:.1e})" for j, (k, e) in enumerate(zip(divs, errs))))
    print(dev, "rows over 1e-5:", bad, "of", len(labels))

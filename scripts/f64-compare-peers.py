# `kldiv compare` on f64 files (end to end, files in the page cache) against numpy/scipy in
# memory on the same arrays (BENCHMARKS.md, session 41): logits rows, temperatures that are
# not powers of two, and cross-entropy / entropy of probability rows.
# Usage: K=target/release/kldiv python3 scripts/f64-compare-peers.py
import numpy as np, os, subprocess, tempfile, time
from scipy.special import log_softmax
from scipy.stats import entropy

K = os.environ.get("K", "target/release/kldiv")
ROWS, COLS = int(os.environ.get("ROWS", 256)), int(os.environ.get("COLS", 128000))
rng = np.random.default_rng(1)
a = 3.0 * rng.standard_normal((ROWS, COLS))
b = a + 0.1 * rng.standard_normal(a.shape)
d = tempfile.mkdtemp()
for name, v in [("a64", a), ("b64", b), ("a32", a.astype(np.float32)), ("b32", b.astype(np.float32))]:
    np.save(f"{d}/{name}.npy", v)


def best(f, n=5):
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)


def cli(args):
    return lambda: subprocess.run([K, "compare", *args, "--input", "logits", "--device", "cpu"],
                                  check=True, stdout=subprocess.DEVNULL)


def numpy_kl(x, y, t=1.0):
    la, lb = log_softmax(x / t, axis=1), log_softmax(y / t, axis=1)
    return (np.exp(la) * (la - lb)).sum(1)


a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
rows = [
    ("kldiv compare f64 files", cli([f"{d}/a64.npy", f"{d}/b64.npy"])),
    ("kldiv compare f32 files", cli([f"{d}/a32.npy", f"{d}/b32.npy"])),
    ("kldiv compare f32 files, T = 2", cli([f"{d}/a32.npy", f"{d}/b32.npy", "--temperature-p", "2", "--temperature-q", "2"])),
    ("kldiv compare f32 files, T = 1.3", cli([f"{d}/a32.npy", f"{d}/b32.npy", "--temperature-p", "1.3", "--temperature-q", "1.3"])),
    ("numpy/scipy log_softmax f64, in memory", lambda: numpy_kl(a, b)),
    ("numpy/scipy log_softmax f64, T = 1.3, in memory", lambda: numpy_kl(a32, b32, 1.3)),
]
for label, f in rows:
    t = best(f)
    print(f"{ROWS}x{COLS} | {label} | {t*1e3:.0f} ms | {a.size/t/1e9:.3f} Gelem/s")
for files, ref, extra in [("64", numpy_kl(a, b), []), ("32", numpy_kl(a32, b32, 1.3), ["--temperature-p", "1.3", "--temperature-q", "1.3"])]:
    subprocess.run([K, "compare", f"{d}/a{files}.npy", f"{d}/b{files}.npy", "--input", "logits", "--device", "cpu",
                    "--out", f"{d}/kl.npy", *extra], check=True, stdout=subprocess.DEVNULL)
    got = np.load(f"{d}/kl.npy")
    print(f"f{files} {extra}: max relative difference kldiv vs numpy {np.max(np.abs(got - ref) / ref):.1e}")

# Probability rows (W1/4-shaped): cross-entropy and entropy take a logarithm per element.
p = rng.dirichlet(np.ones(32000), size=1024)
q = p * np.exp(0.1 * rng.standard_normal(p.shape))
q /= q.sum(1, keepdims=True)
np.save(f"{d}/p64.npy", p)
np.save(f"{d}/q64.npy", q)
probs = lambda div: lambda: subprocess.run(
    [K, "compare", f"{d}/p64.npy", f"{d}/q64.npy", "--divergence", div, "--device", "cpu"],
    check=True, stdout=subprocess.DEVNULL)
for label, f in [
    ("kldiv compare f64 probabilities, cross-entropy", probs("cross-entropy")),
    ("kldiv compare f64 probabilities, entropy", probs("entropy")),
    ("kldiv compare f64 probabilities, kl (for scale)", probs("kl")),
    ("numpy -(p*log(q)).sum(1), in memory", lambda: -(p * np.log(q)).sum(1)),
    ("scipy.stats.entropy(p, axis=1), in memory", lambda: entropy(p, axis=1)),
]:
    t = best(f)
    print(f"1024x32000 | {label} | {t*1e3:.0f} ms | {p.size/t/1e9:.3f} Gelem/s")
for div, ref in [("cross-entropy", -(p * np.log(q)).sum(1)), ("entropy", entropy(p, axis=1))]:
    subprocess.run([K, "compare", f"{d}/p64.npy", f"{d}/q64.npy", "--divergence", div, "--device", "cpu",
                    "--out", f"{d}/v.npy"], check=True, stdout=subprocess.DEVNULL)
    got = np.load(f"{d}/v.npy")
    print(f"{div}: max relative difference kldiv vs numpy/scipy {np.max(np.abs(got - ref) / ref):.1e}")

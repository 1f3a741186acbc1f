# `kldiv compare` on random files against a 40-digit reference (mpmath), case by case: every
# divergence, input form and element type (f32, f64, f16, bf16 via safetensors, mixed),
# --normalize, temperatures, and the edges (zeros, q = 0 < p, subnormal and tiny values,
# identical and near-identical rows, peaked rows, large offsets, logits up to 3e30, −inf
# masks, values outside a type's range, which must be an error). Each value is checked
# against the README's bound for its path: f64 2e-12 relative (plus 4.4e-16·Σ|p − q| and
# 1e-30, the cancellation the README states for near-identical f64 rows), f32 and narrower
# 1e-5 (cross-entropy and entropy + 1e-6·max(1, |v|); + 1e-20 for rows rescaled under
# --normalize, whose bound the README states down to KL ≈ 1e-15); on the GPU
# 1e-4 + 2e-6·Σ|p − q|.
# References are clamped as kldiv documents (KL family ≥ 0); log-probabilities are rows of
# a softmax (README: "treated as logits of a normalised row"). Exit status 1 on any miss.
# Usage: K=target/release/kldiv DEV=cpu|gpu|split N=300 SEED=1 python3 scripts/differential-check.py
import json, math, os, random, subprocess, sys, tempfile
import numpy as np, ml_dtypes, mpmath as mp

mp.mp.dps = 40
K = os.environ.get("K", "target/release/kldiv")
DEV = os.environ.get("DEV", "cpu")
SEED = int(os.environ.get("SEED", "1"))
N = int(os.environ.get("N", "200"))
rng = np.random.default_rng(SEED)
R = random.Random(SEED)
tmp = tempfile.mkdtemp()
DT = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "bf16": ml_dtypes.bfloat16}
DIVS = ["kl", "reverse-kl", "symmetric-kl", "js", "cross-entropy", "entropy"]


def gen_probs(rows, cols, dt):
    p = rng.exponential(size=(rows, cols))
    kind = R.choice(["plain", "zeros", "tiny", "near", "ident", "peaked", "far"])
    if kind == "zeros":
        p[rng.random(p.shape) < 0.3] = 0
    if kind == "tiny":
        p[rng.random(p.shape) < 0.3] *= {"f64": 1e-290, "f32": 1e-36}.get(dt, 1e-4)
    if kind == "peaked":
        p[:, 0] += 1e4 * cols
    p[p.sum(1) == 0, 0] = 1
    p /= p.sum(1, keepdims=True)
    if kind == "near":
        q = p * np.exp(10.0 ** R.uniform(-9, -2) * rng.standard_normal(p.shape))
    elif kind == "ident":
        q = p.copy()
    elif kind == "far":
        q = rng.exponential(size=p.shape) ** 3
    else:
        q = p * np.exp(0.5 * rng.standard_normal(p.shape))
        if kind == "zeros":
            q[rng.random(q.shape) < 0.1] = 0
    q[q.sum(1) == 0, 0] = 1
    q /= q.sum(1, keepdims=True)
    return p, q, kind


def gen_logits(rows, cols, dt):
    a = R.choice([0.5, 2, 10]) * rng.standard_normal((rows, cols))
    kind = R.choice(["plain", "offset", "huge", "masked", "near", "ident", "tinyvals", "far"])
    if kind == "near":
        b = a + 10.0 ** R.uniform(-7, -1) * rng.standard_normal(a.shape)
    elif kind == "ident":
        b = a.copy()
    elif kind == "far":
        b = 5 * rng.standard_normal(a.shape)
    else:
        b = a + 0.3 * rng.standard_normal(a.shape)
    if kind == "offset":
        a += R.choice([1e4, -1e4, 3e5])
        b += R.choice([1e4, -7e3, 0.0])
    if kind == "huge":
        a[:, R.randrange(cols)] = R.choice([1e8, 1e20, -1e20, 3e30])
    if kind == "masked" and cols > 1:
        m = rng.random(a.shape) < 0.3
        m[:, 0] = False
        a[m] = -np.inf
        b[m & (rng.random(a.shape) < 0.5)] = -np.inf
    if kind == "tinyvals":
        a *= 1e-12
        b *= 1e-12
    return a, b, kind


class Invalid(Exception):
    pass


def save(x, name):
    if x.dtype == ml_dtypes.bfloat16:
        f = os.path.join(tmp, name + ".safetensors")
        raw = np.ascontiguousarray(x).view(np.uint16).tobytes()
        h = json.dumps({"t": {"dtype": "BF16", "shape": list(x.shape), "data_offsets": [0, len(raw)]}}).encode()
        h += b" " * (-len(h) % 8)
        with open(f, "wb") as fh:
            fh.write(len(h).to_bytes(8, "little") + h + raw)
        return f
    f = os.path.join(tmp, name + ".npy")
    np.save(f, x)
    return f


def softmax_mp(row):
    vals = [mp.mpf(float(v)) for v in row]
    fin = [v for v in vals if mp.isfinite(v)]
    if not fin or any(v == mp.inf for v in vals):
        raise Invalid()
    m = max(fin)
    s = mp.fsum(mp.exp(v - m) for v in fin)
    return [mp.exp(v - m) / s if mp.isfinite(v) else mp.mpf(0) for v in vals]


def ref_row(div, p, q):
    """The divergence of distributions p, q (lists of mpf, as kldiv reads them)."""
    def sum_terms(x, y, term):
        # Σ term(a, b) over a > 0: +inf where b = 0 < a.
        t = mp.mpf(0)
        for a, b in zip(x, y):
            if a == 0:
                continue
            if b == 0:
                return mp.inf
            t += term(a, b)
        return t

    def kl(x, y):
        return sum_terms(x, y, lambda a, b: a * mp.log(a / b))
    if div == "kl":
        return kl(p, q)
    if div == "reverse-kl":
        return kl(q, p)
    if div == "symmetric-kl":
        return kl(p, q) + kl(q, p)
    if div == "js":
        m = [(a + b) / 2 for a, b in zip(p, q)]
        return (kl(p, m) + kl(q, m)) / 2
    if div == "cross-entropy":
        return sum_terms(p, q, lambda a, b: -a * mp.log(b))
    if div == "entropy":
        return sum_terms(p, p, lambda a, _: -a * mp.log(a))


def one(case):
    rows = R.choice([1, 2, 3, 7])
    cols = R.choice([1, 2, 3, 5, 16, 17, 31, 64, 65, 100, 513, 1000, 1025, 4097])
    form = R.choice(["probs", "logprobs", "logits"])
    dtp = R.choice(["f32", "f64", "f64", "bf16", "f16"])
    dtq = dtp if R.random() < 0.8 else R.choice(["f32", "f64"])
    divs = R.sample(DIVS, R.choice([1, 1, 2]))
    if len(divs) > 1 and "entropy" in divs:
        divs = ["entropy"]
    args = []
    tp = tq = None
    if form == "logits":
        a, b, kind = gen_logits(rows, cols, dtp)
        if R.random() < 0.2:
            tp, tq = R.choice([0.7, 2.0, 1.3]), R.choice([1.0, 0.5, 0.9])
            args += ["--temperature-p", str(tp), "--temperature-q", str(tq)]
    else:
        p, q, kind = gen_probs(rows, cols, dtp)
        if form == "logprobs":
            with np.errstate(divide="ignore"):
                a, b = np.log(p), np.log(q)
        else:
            a, b = p, q
    # Half-width rows cannot hold a sum of 1 to the check's tolerance: divided by their sums.
    if dtp in ("f16", "bf16") and form != "logits":
        args.append("--normalize")
    if form == "probs" and "--normalize" not in args and R.random() < 0.2:
        a = a * 3.0
        b = b * 0.7
        args.append("--normalize")
    if form == "logprobs" and dtp in ("f16", "bf16"):
        return None  # half log-probs cannot sum to 1 within the check
    with np.errstate(over="ignore"):  # values beyond a type's range: kldiv must refuse them
        A = a.astype(DT[dtp])
        B = b.astype(DT[dtq])
    of = os.path.join(tmp, "o.npy")
    pf, qf = save(A, "p"), save(B, "q")
    cmd = [K, "compare", pf, qf, "--input", form, "--divergence", ",".join(divs),
           "--device", DEV, "--out", of, "--quiet", "--json"] + args
    r = subprocess.run(cmd, capture_output=True, text=True)
    desc = dict(case=case, rows=rows, cols=cols, form=form, dtp=dtp, dtq=dtq, divs=divs,
                kind=kind, args=args)
    refs = []
    try:
        fill(refs, rows, A, B, form, tp, tq, args, divs)
    except Invalid:
        if r.returncode == 2:
            return desc, None, []
        return desc, "expected an error, got %d" % r.returncode, None
    if r.returncode != 0:
        return desc, "exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]), None
    out = np.load(of).reshape(rows, len(divs))
    return desc, None, check(refs, out, rows, divs, dtp, dtq, "--normalize" in args)


def fill(refs, rows, A, B, form, tp, tq, args, divs):
    for i in range(rows):
        ra = [mp.mpf(float(v)) for v in A[i].astype(np.float64)]
        rb = [mp.mpf(float(v)) for v in B[i].astype(np.float64)]
        if form == "logits":
            if tp:
                ra = [v / mp.mpf(tp) for v in ra]
                rb = [v / mp.mpf(tq) for v in rb]
            P, Q = softmax_mp(ra), softmax_mp(rb)
        elif form == "logprobs":
            P, Q = softmax_mp(ra), softmax_mp(rb)
        else:
            P, Q = ra, rb
            if "--normalize" in args:
                sp, sq = mp.fsum(P), mp.fsum(Q)
                P = [v / sp for v in P]
                Q = [v / sq for v in Q]
        l1 = float(mp.fsum(abs(x - y) for x, y in zip(P, Q)))
        refs.append([(ref_row(d, P, Q), l1) for d in divs])


def check(refs, out, rows, divs, dtp, dtq, rescaled):
    half = dtp in ("f16", "bf16") or dtq in ("f16", "bf16") or dtp == "f32" or dtq == "f32"
    f64 = not half
    bad = []
    for i in range(rows):
        for j, d in enumerate(divs):
            (ref, l1), got = refs[i][j], out[i, j]
            if d not in ("cross-entropy", "entropy"):
                ref = max(ref, 0)
            if mp.isinf(ref):
                if not math.isinf(got):
                    bad.append((i, d, float(ref), got))
                continue
            ref = float(ref)
            err = abs(got - ref)
            scale = abs(ref)
            tol = (2e-12 if f64 else 1e-5) * scale
            if d in ("cross-entropy", "entropy"):
                tol += (1e-14 if f64 else 1e-6) * max(1.0, scale)
            if not f64 and DEV != "cpu":
                tol = tol * 10 + 2e-6 * l1
            tol = max(tol, 1e-300, 1e-30 if f64 else 0) + (4.4e-16 * l1 if f64 else 0)
            if rescaled and not f64:
                # Rows divided by f32 sums: the README's bound holds down to KL ≈ 1e-15 (the
                # scales' rounding, ~1e-12 relative after its correction, squared below it).
                tol += 1e-20
            if not (err <= tol):
                bad.append((i, d, ref, float(got), err / max(scale, 1e-300)))
    return bad


fails = 0
for c in range(N):
    res = one(c)
    if res is None:
        continue
    desc, err, bad = res
    if err:
        print("ERR", desc, err)
        fails += 1
    elif bad:
        print("BAD", desc, bad[:3])
        fails += 1
print(f"{DEV}, seed {SEED}: {fails} of {N} cases outside their bound")
sys.exit(1 if fails else 0)

"""kldiv: KL divergence and its family over large batches of distributions.

Rows are the leading axes of an array, the distribution its last axis. Every function takes
numpy arrays (float32, float64, float16, and bfloat16 from ``ml_dtypes``) or anything numpy
can view without a copy (``__array__``, DLPack: e.g. torch CPU tensors). Row-contiguous
arrays are read in place; others are copied once. The computation runs in Rust with the GIL
released, and Ctrl-C stops it between blocks of rows.

>>> import numpy as np, kldiv
>>> p = np.array([[0.5, 0.5], [0.9, 0.1]])
>>> q = np.array([[0.5, 0.5], [0.5, 0.5]])
>>> kldiv.kl(p, q).round(6).tolist()
[0.0, 0.368064]
"""

from __future__ import annotations

import math as _math

import numpy as _np

from ._kldiv import Error, Summary, __version__
from ._kldiv import _common_type, _compare_files, _compute, _gpu_info

__all__ = [
    "Error", "Summary", "kl", "compare_files", "gpu_info", "DIVERGENCES", "INPUTS", "__version__",
]

DIVERGENCES = ("kl", "reverse-kl", "symmetric-kl", "js", "cross-entropy", "entropy")
INPUTS = ("probs", "logprobs", "logits")


def _bf16():
    try:
        import ml_dtypes

        return _np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        return None


def _array(x, name):
    """x as a numpy array without copying where numpy can view it."""
    if isinstance(x, _np.ndarray):
        return x
    if not hasattr(x, "__array__") and hasattr(x, "__dlpack__"):
        return _np.from_dlpack(x)
    try:
        return _np.asarray(x)
    except (TypeError, RuntimeError) as e:
        raise TypeError(f"{name}: cannot read as an array ({e})") from e


def _kind(dt):
    """'f16', 'bf16', 'f32', 'f64', or None for types read as float64 (integers, counts)."""
    bf16 = _bf16()
    if bf16 is not None and dt == bf16:
        return "bf16"
    return {"float16": "f16", "float32": "f32", "float64": "f64"}.get(dt.name)


def _check_real(a, name):
    """Real numbers only: a complex, string or object array would be cast with loss or fail
    deep inside numpy."""
    if _kind(a.dtype) is None and a.dtype.kind not in "iub":
        raise TypeError(
            f"{name} must hold real numbers (float16/32/64, bfloat16 or integers), "
            f"not {a.dtype}"
        )


def _pair(p, q):
    """p and q as arrays of one element type, and the types they were stored in where one
    was cast (rows are then checked with the stored types' tolerance), else None."""
    p = _array(p, "p")
    q = None if q is None else _array(q, "q")
    _check_real(p, "p")
    if q is not None:
        _check_real(q, "q")
    kp = _kind(p.dtype)
    kq = kp if q is None else _kind(q.dtype)
    # The type both sides are read in: the one that holds each exactly (integers: float64).
    kind = _common_type(kp or "f64", kq or "f64")
    dt = {"f16": _np.float16, "f32": _np.float32, "f64": _np.float64, "bf16": _bf16()}[kind]
    stored = None if kp == kq == kind else (kp or "f64", kq or "f64")
    p = p if kp == kind else p.astype(dt)
    if q is not None and kq != kind:
        q = q.astype(dt)
    return p, q, stored


def _error(message):
    """A ``kldiv.Error`` raised from Python (no side, row or column)."""
    e = Error(message)
    e.side = e.row = e.col = None
    return e


def _as_exact_f32(p, q):
    """``p`` and ``q`` as float32 where each of their values is exactly one, else as given."""
    pf = p.astype(_np.float32)
    qf = None if q is None else q.astype(_np.float32)
    if _np.array_equal(pf, p, equal_nan=True) and (
        q is None or _np.array_equal(qf, q, equal_nan=True)
    ):
        return pf, qf
    return p, q


def _tempered(x, t):
    """Logits ``x`` in float64 divided by the temperature ``t`` (None: 1), as the command
    line forms them."""
    t = 1.0 if t is None else float(t)
    if not (t > 0 and _math.isfinite(t)):
        raise _error(f"a temperature must be positive and finite, not {t}")
    x = x.astype(_np.float64)
    return x if t == 1.0 else x / t


def kl(
    p,
    q=None,
    *,
    input: str = "probs",
    divergence: str = "kl",
    reduction: str = "none",
    unit: str = "nats",
    normalize: bool = False,
    pseudocount: float | None = None,
    propagate_nan: bool = False,
    targets=None,
    agreement: bool = False,
    temperature_p: float | None = None,
    temperature_q: float | None = None,
    device: str = "auto",
):
    """The divergence of every row of ``p`` from the same row of ``q``.

    input: "probs" (each row sums to 1, checked), "logprobs", or "logits" (a softmax per
    row, fused; -inf is probability 0).
    divergence: "kl" (KL(P‖Q) = Σ p·ln(p/q), +inf where q = 0 < p), "reverse-kl",
    "symmetric-kl", "js" (Jensen–Shannon; scipy's jensenshannon is its square root),
    "cross-entropy", "entropy" (q not read).
    reduction: "none" (an array shaped as p's leading axes; a float for 1-D p), "sum",
    "mean" (the mean over rows) or "batchmean" (torch's: the sum divided by p.shape[0], the
    batch of a [B, T, V] p, so B·T rows give the mean per sequence, not per row; for 1-D p,
    as torch, its length). torch's own "mean" divides by every element, not by rows.
    normalize: divide each probability row by its sum instead of rejecting it.
    pseudocount: add this to every probability of p and q, then normalise (smoothed KL).
    targets: the actual next token of each row (int array, -100 ignores a row): returns a
    ``Summary`` (per-row values in ``.values``; perplexities, Δp and llama.cpp's report in
    ``.to_dict()`` and ``str()``).
    agreement: also return a ``Summary``, with top-K agreement (K = 1, 5, 10), Σ min(p, q)
    (1 − total variation) and mean KLD by P's confidence (``to_dict()["agreement"]``).
    temperature_p, temperature_q: divide that side's logits by T (formed in float64) before
    the softmax, as distillation does (``input="logits"``); where every quotient is a
    float32 (T a power of two) and the inputs were not float64, float32's kernels run.
    device: "auto" (the scheduler picks), "cpu", "gpu" or "split".

    An empty batch (no rows, e.g. shape (0, V)) has no values, as in numpy and scipy: an
    empty array, a sum of 0.0, a mean (and batchmean) of nan.

    Bad input raises ``kldiv.Error`` (a ValueError) naming the side, row and column.
    """
    p, q, stored = _pair(p, q)
    if temperature_p is not None or temperature_q is not None:
        if input != "logits":
            raise _error('temperature_p/temperature_q divide logits: give input="logits"')
        # Both sides in float64, where the division is formed (as the command line does);
        # back to float32 where every quotient is one (T a power of two) and the inputs were
        # not float64: the f32 kernels, not the exact path.
        narrow = p.dtype != _np.float64
        p = _tempered(p, temperature_p)
        q = None if q is None else _tempered(q, temperature_q)
        if narrow:
            p, q = _as_exact_f32(p, q)
    if targets is not None or agreement:
        s = Summary(
            divergence=divergence,
            input=input,
            unit=unit,
            normalize=normalize,
            pseudocount=pseudocount,
            propagate_nan=propagate_nan,
            device=device,
            targets=targets is not None,
            agreement=agreement,
            stored_as=stored,
        )
        s.update(p, q, None if targets is None else _array(targets, "targets").reshape(-1))
        return s
    return _compute(
        p, q, divergence, input, unit, normalize, pseudocount, propagate_nan, device, reduction,
        stored
    )


def compare_files(
    p: str,
    q: str,
    *,
    input: str | None = None,
    divergence: str = "kl",
    unit: str = "nats",
    normalize: bool = False,
    pseudocount: float | None = None,
    propagate_nan: bool = False,
    targets=None,
    device: str = "auto",
    first_row: int = 0,
    agreement: bool = False,
    temperature_p: float | None = None,
    temperature_q: float | None = None,
    vocab_min: bool = False,
) -> Summary:
    """``kldiv compare P Q``: two files (.npy, .safetensors, FILE.safetensors:NAME, or a
    llama.cpp ``.kld`` base), memory mapped and streamed a block at a time; returns the run's
    ``Summary`` (``str()`` is the command line's report, ``.to_dict()`` its ``--json``).
    ``input`` defaults to "probs", or "logits" with a .kld side (whose tokens are then the
    targets). ``targets``: an int array, or a path to an .npy of them. ``first_row``: this
    file's first global row (for shards). ``temperature_p``/``temperature_q``: divide that
    side's logits by T (formed in f64) before the softmax (``input="logits"``).
    ``vocab_min``: vocabularies of different sizes compared over their common prefix (each
    row's first min(V_P, V_Q) columns, renormalised), as ExLlamaV3 does; else an error.
    ``divergence`` may list several, comma-separated ("kl,reverse-kl,js"), computed over the
    same read of both files: the first drives the report, the others are in
    ``to_dict()["also"]`` and their per-row values in ``Summary.also``."""
    if isinstance(targets, str):
        targets = _np.load(targets, mmap_mode="r")
    if targets is not None:
        targets = _np.ascontiguousarray(_array(targets, "targets").reshape(-1))
    return _compare_files(
        p, q, divergence, input, unit, normalize, pseudocount, propagate_nan, device, targets,
        first_row, agreement, temperature_p, temperature_q, vocab_min,
    )


def gpu_info() -> dict | None:
    """The GPU that ``device="gpu"`` runs on: ``name``, ``backend``, ``device_type``,
    ``driver``, ``software`` (a CPU rasteriser such as lavapipe), ``timestamps``, and
    ``computes_f64`` (f64 inputs computed in f64; else narrowed to f32), ``subgroups``
    (workgroups reduce through subgroup operations). None without one."""
    return _gpu_info()

"""The Python package against scipy (and torch's documented F.kl_div formula), on random rows
and on the edges; errors, dtypes, strides, threads, summaries."""

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr, softmax
from scipy.stats import entropy

import kldiv

DEVICES = ["cpu", "gpu"]
rng = np.random.default_rng(7)
# f64 keeps f64 accuracy on the CPU and on a GPU with SHADER_F64 (lavapipe has it); a GPU
# without it computes f64 in f32 (README: 1e-5).
GPU_F64 = (kldiv.gpu_info() or {}).get("computes_f64", False)


def f64_tol(device):
    return 1e-12 if device == "cpu" or GPU_F64 else 1e-5


def probs(rows, cols, dtype=np.float64):
    a = rng.gamma(0.5, size=(rows, cols))
    return (a / a.sum(-1, keepdims=True)).astype(dtype)


def close(got, want, rtol, atol=0.0):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cols", [1, 7, 1000])
def test_kl_matches_scipy_rel_entr(device, cols):
    p, q = probs(33, cols), probs(33, cols)
    want = rel_entr(p, q).sum(-1)
    close(kldiv.kl(p, q, device=device), want, f64_tol(device), 1e-12)
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    want32 = rel_entr(p32.astype(np.float64), q32.astype(np.float64)).sum(-1)
    # The f32 rows are not normalised to f64 precision: normalise as the reference does.
    got = kldiv.kl(p32, q32, device=device, normalize=True)
    want_n = entropy(p32.astype(np.float64), q32.astype(np.float64), axis=-1)
    close(got, want_n, 1e-5, 1e-7)
    assert want32.shape == got.shape


@pytest.mark.parametrize("device", DEVICES)
def test_every_divergence_matches_scipy(device):
    p, q = probs(20, 50), probs(20, 50)
    tol = f64_tol(device)
    kw = dict(device=device)
    close(kldiv.kl(p, q, divergence="reverse-kl", **kw), rel_entr(q, p).sum(-1), tol)
    close(
        kldiv.kl(p, q, divergence="symmetric-kl", **kw),
        rel_entr(p, q).sum(-1) + rel_entr(q, p).sum(-1),
        tol,
    )
    # scipy's jensenshannon is the distance: the square root of the divergence.
    close(kldiv.kl(p, q, divergence="js", **kw), jensenshannon(p, q, axis=-1) ** 2, tol)
    close(kldiv.kl(p, divergence="entropy", **kw), entropy(p, axis=-1), tol)
    close(
        kldiv.kl(p, q, divergence="cross-entropy", **kw),
        entropy(p, axis=-1) + entropy(p, q, axis=-1),
        tol,
    )
    close(kldiv.kl(p, q, unit="bits", **kw), entropy(p, q, axis=-1, base=2), tol)


@pytest.mark.parametrize("device", DEVICES)
def test_logits_and_logprobs(device):
    a = rng.normal(scale=3, size=(16, 300))
    b = a + rng.normal(scale=0.5, size=a.shape) + 1e4  # a softmax is shift-invariant
    want = rel_entr(softmax(a, -1), softmax(b, -1)).sum(-1)
    tol = 1e-10 if device == "cpu" or GPU_F64 else 1e-5
    close(kldiv.kl(a, b, input="logits", device=device), want, tol)
    close(
        kldiv.kl(log_softmax(a, -1), log_softmax(b, -1), input="logprobs", device=device),
        want,
        tol,
    )
    a[0, 3] = -np.inf  # probability 0 in P: its term is 0
    want0 = rel_entr(softmax(a, -1), softmax(b, -1)).sum(-1)[0]
    assert abs(kldiv.kl(a[0], b[0], input="logits", device=device) - want0) <= tol * want0


def test_torch_kl_div_batchmean_formula():
    # torch.nn.functional.kl_div(input=log q, target=p, reduction="batchmean") is documented
    # as sum(p·(log p − input)) / batch size.
    p, q = probs(12, 40), probs(12, 40)
    want = (p * (np.log(p) - np.log(q))).sum() / p.shape[0]
    close(kldiv.kl(p, q, reduction="batchmean", device="cpu"), want, 1e-12)
    close(kldiv.kl(p, q, reduction="sum", device="cpu"), want * 12, 1e-12)
    lq = log_softmax(rng.normal(size=(12, 40)), -1)
    want = (p * (np.log(p) - lq)).sum() / 12
    # P is read as log-probabilities too: pass log p.
    got = kldiv.kl(np.log(p), lq, input="logprobs", reduction="batchmean", device="cpu")
    close(got, want, 1e-12)
    # torch divides by input.size(0), the batch: of a [B, T, V] input, B (it was B·T here).
    p3, q3 = p.reshape(3, 4, 40), q.reshape(3, 4, 40)
    want = (p3 * (np.log(p3) - np.log(q3))).sum() / 3
    close(kldiv.kl(p3, q3, reduction="batchmean", device="cpu"), want, 1e-12)
    close(kldiv.kl(p3, q3, reduction="mean", device="cpu"), want * 3 / 12, 1e-12)
    # A 1-D input's size(0) is its length.
    want = (p[0] * (np.log(p[0]) - np.log(q[0]))).sum() / 40
    close(kldiv.kl(p[0], q[0], reduction="batchmean", device="cpu"), want, 1e-12)


def test_edges_follow_the_mathematics():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
    q = np.array([[0.0, 1.0], [0.5, 0.5], [0.25, 0.75]])
    got = kldiv.kl(p, q, device="cpu")
    assert got[0] == np.inf and got[1] == 0.0 and got[2] == 0.0
    # SciPy gh-20710: a q below the f32 range keeps its f64 value.
    got = kldiv.kl(np.array([1.0, 0.0]), np.array([1e-50, 1.0]), device="cpu", normalize=True)
    close(got, rel_entr(1.0, 1e-50 / (1 + 1e-50)), 1e-12)
    # One element per row; odd shapes; leading axes are rows.
    one = np.ones((3, 4, 1))
    assert kldiv.kl(one, one, device="cpu").shape == (3, 4)
    # Smoothing is opt-in.
    s = kldiv.kl(p[:1], q[:1], pseudocount=1e-3, device="cpu")
    ps, qs = (p[:1] + 1e-3), (q[:1] + 1e-3)
    close(s, entropy(ps, qs, axis=-1), 1e-12)


def test_errors_name_side_row_and_column():
    p, q = probs(5, 6), probs(5, 6)
    q[3, 2] = np.nan
    with pytest.raises(kldiv.Error) as e:
        kldiv.kl(p, q, device="cpu")
    assert isinstance(e.value, ValueError)
    assert (e.value.side, e.value.row, e.value.col) == ("Q", 3, 2)
    assert "row 3" in str(e.value) and "column 2" in str(e.value)
    q[3, 2] = 0.5  # row 3 no longer sums to 1
    with pytest.raises(kldiv.Error) as e:
        kldiv.kl(p, q, device="cpu")
    assert (e.value.side, e.value.row, e.value.col) == ("Q", 3, None)
    with pytest.raises(kldiv.Error, match="shape mismatch"):
        kldiv.kl(p, q[:4], device="cpu")
    with pytest.raises(kldiv.Error, match="divergence must be one of"):
        kldiv.kl(p, p, divergence="kll")
    with pytest.raises(kldiv.Error, match="device"):
        kldiv.kl(p, p, device="tpu")
    assert np.isnan(kldiv.kl(p, np.where(q == 0.5, np.nan, q), device="cpu", propagate_nan=True, normalize=True)[3])


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
def test_half_width_inputs(dtype):
    p, q = probs(10, 64, dtype), probs(10, 64, dtype)
    p64, q64 = p.astype(np.float64), q.astype(np.float64)
    want = entropy(p64, q64, axis=-1)
    for device in DEVICES:
        close(kldiv.kl(p, q, normalize=True, device=device), want, 1e-5, 1e-7)
    # Mixed types are read in the type that holds both exactly.
    close(kldiv.kl(p, q.astype(np.float32), normalize=True, device="cpu"), want, 1e-5, 1e-7)


def test_strided_and_foreign_arrays():
    big = probs(8, 40)
    p = big[:, ::2]  # not row-contiguous: copied once
    q = probs(8, 20)
    want = entropy(p, q, axis=-1)
    close(kldiv.kl(p, q, normalize=True, device="cpu"), want, 1e-12)
    close(kldiv.kl(np.asfortranarray(p), q, normalize=True, device="cpu"), want, 1e-12)
    close(kldiv.kl(p.tolist(), q.tolist(), normalize=True, device="cpu"), want, 1e-12)

    class Wrapped:  # anything with __array__ (as torch CPU tensors have)
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    close(kldiv.kl(Wrapped(p), Wrapped(q), normalize=True, device="cpu"), want, 1e-12)
    counts = rng.integers(1, 9, size=(4, 6))
    close(kldiv.kl(counts, counts[::-1], normalize=True, device="cpu"),
          entropy(counts, counts[::-1], axis=-1), 1e-12)


def test_threads_from_python_agree():
    p, q = probs(2000, 128), probs(2000, 128)
    want = kldiv.kl(p, q, device="cpu")
    with ThreadPoolExecutor(4) as ex:
        parts = list(ex.map(lambda i: kldiv.kl(p[i::4], q[i::4], device="cpu"), range(4)))
    for i in range(4):
        np.testing.assert_array_equal(parts[i], want[i::4])


def test_gil_is_released_while_computing():
    p, q = probs(3000, 4000, np.float32), probs(3000, 4000, np.float32)
    ticks, done = [], threading.Event()

    def count():
        while not done.is_set():
            ticks.append(1)

    t = threading.Thread(target=count)
    t.start()
    before = len(ticks)
    kldiv.kl(p, q, device="cpu", normalize=True)
    during = len(ticks) - before
    done.set()
    t.join()
    # With the GIL held for the whole call the counter could not advance meanwhile.
    assert during > 100, during


def test_summary_merges_like_one_run_and_round_trips():
    p, q = probs(500, 30), probs(500, 30)
    t = rng.integers(0, 30, size=500)
    t[::50] = -100
    whole = kldiv.kl(p, q, targets=t, device="cpu")
    a = kldiv.Summary(targets=True, device="cpu")
    a.update(p[:200], q[:200], t[:200])
    b = kldiv.Summary(targets=True, device="cpu", first_row=200)
    b.update(p[200:], q[200:], t[200:])
    # Through JSON (as shards do), then merged.
    a2, b2 = kldiv.Summary.from_json(a.to_json()), kldiv.Summary.from_json(b.to_json())
    b2.merge(a2)
    w, m = whole.to_dict(), b2.to_dict()
    for k in ["rows", "count", "min_row", "max_row", "min", "max", "target_rows", "same_top"]:
        assert w[k] == m[k], k
    assert abs(w["mean"] - m["mean"]) <= 1e-12 * w["mean"]
    for k, v in w["percentiles"].items():
        assert abs(v - m["percentiles"][k]) <= 1.0001e-3 * abs(v), k
    for k in ["ppl_q", "ppl_p", "kld", "delta_p", "rms_delta_p"]:
        assert abs(w[k]["mean"] - m[k]["mean"]) <= 1e-10 * abs(w[k]["mean"]), k
    # llama.cpp's quantities from their definitions.
    sp, sq = p[t != -100], q[t != -100]
    tt = t[t != -100]
    nll_q = -np.log(sq[np.arange(len(tt)), tt])
    nll_p = -np.log(sp[np.arange(len(tt)), tt])
    close(w["ppl_q"]["mean"], np.exp(nll_q.mean()), 1e-12)
    close(w["ppl_p"]["mean"], np.exp(nll_p.mean()), 1e-12)
    dp = np.exp(-nll_q) - np.exp(-nll_p)
    close(w["delta_p"]["mean"], dp.mean(), 1e-12)
    close(w["kld"]["mean"], rel_entr(p, q).sum(-1).mean(), 1e-12)
    close(whole.values, rel_entr(p, q).sum(-1), 1e-12)
    assert "====== KL divergence statistics ======" in str(whole)
    with pytest.raises(kldiv.Error, match="overlap"):
        a.merge(a)
    with pytest.raises(kldiv.Error, match="version"):
        bad = json.loads(a.to_json())
        bad["version"] = 99
        kldiv.Summary.from_json(json.dumps(bad))


def test_compare_files_mirrors_the_command_line(tmp_path):
    p, q = probs(40, 12, np.float32), probs(40, 12, np.float32)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    s = kldiv.compare_files(str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), device="cpu")
    close(s.values, kldiv.kl(p, q, device="cpu"), 0)
    d = s.to_dict()
    assert d["rows"] == 40 and d["p"].endswith("p.npy") and d["dtype"] == "f32"
    q[5, 3] = -1.0
    np.save(tmp_path / "q.npy", q)
    with pytest.raises(kldiv.Error) as e:
        kldiv.compare_files(str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), device="cpu")
    assert "q.npy" in str(e.value) and (e.value.row, e.value.col) == (5, 3)


def test_gpu_info_describes_the_gpu():
    info = kldiv.gpu_info()
    if os.environ.get("CI") in ("true", "1"):
        # CI runs on lavapipe, which computes f64 in f64.
        assert info is not None and info["backend"] == "Vulkan" and info["computes_f64"]
    if info is not None:
        assert {"name", "software", "timestamps", "computes_f64", "subgroups"} <= set(info)


def test_compare_files_divides_each_side_by_its_temperature(tmp_path):
    a = rng.normal(scale=2, size=(30, 17)).astype(np.float32)
    b = (a + rng.normal(scale=0.4, size=a.shape)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    tp, tq = 0.7, 1.3
    s = kldiv.compare_files(
        str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), input="logits", device="cpu",
        temperature_p=tp, temperature_q=tq,
    )
    # The definition: softmax(a / T_p) against softmax(b / T_q), in f64 (scipy).
    p = softmax(a.astype(np.float64) / tp, axis=1)
    q = softmax(b.astype(np.float64) / tq, axis=1)
    close(s.values, rel_entr(p, q).sum(axis=1), 1e-12)
    assert s.to_dict()["settings"] == "temperature-p 0.7, temperature-q 1.3"
    # A shard at another temperature is not merged into this one.
    other = kldiv.compare_files(
        str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), input="logits", device="cpu",
        first_row=30,
    )
    with pytest.raises(kldiv.Error, match="temperature-p 0.7"):
        s.merge(other)
    with pytest.raises(kldiv.Error, match="logits"):
        kldiv.compare_files(str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), temperature_p=2.0)
    with pytest.raises(kldiv.Error, match="positive"):
        kldiv.compare_files(
            str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), input="logits", temperature_q=0.0
        )


def test_kl_divides_each_side_by_its_temperature():
    # Distillation's KL(softmax(t / T) ‖ softmax(s / T)), and a temperature on one side only.
    # float32 logits divided by a power of two are float32 values: float32's bound (1e-5);
    # other temperatures leave float64 values, computed in float64 (1e-12).
    a = rng.normal(scale=2, size=(2, 5, 33)).astype(np.float32)
    b = (a + rng.normal(scale=0.4, size=a.shape)).astype(np.float32)
    for tp, tq in [(2.0, 2.0), (0.7, None), (None, 1.5)]:
        want = rel_entr(
            softmax(a.astype(np.float64) / (tp or 1.0), axis=-1),
            softmax(b.astype(np.float64) / (tq or 1.0), axis=-1),
        ).sum(axis=-1)
        for device in DEVICES:
            got = kldiv.kl(
                a, b, input="logits", temperature_p=tp, temperature_q=tq, device=device
            )
            assert got.shape == (2, 5)
            f64 = (tp, tq) != (2.0, 2.0) and (device == "cpu" or GPU_F64)
            close(got, want, 1e-12 if f64 else 1e-5)
    s = kldiv.kl(a, b, input="logits", temperature_p=2.0, temperature_q=2.0, agreement=True)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = rel_entr(softmax(a64 / 2.0, axis=-1), softmax(b64 / 2.0, axis=-1)).sum(axis=-1)
    close(s.values, want.ravel(), 1e-5)
    with pytest.raises(kldiv.Error, match="logits") as e:
        kldiv.kl(a, b, temperature_p=2.0)
    assert e.value.row is None
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(kldiv.Error, match="positive"):
            kldiv.kl(a, b, input="logits", temperature_q=bad)


def test_a_target_outside_the_row_names_its_row(tmp_path):
    # The row in the caller's array, in the message and as `.row`, before any row is
    # computed: it was None, and compare_files named the row within a 16M-element block.
    a = rng.normal(size=(300, 2)).astype(np.float32)
    t = np.zeros(300, np.int64)
    t[7], t[299] = -100, 2
    for call in (
        lambda: kldiv.kl(a, a, input="logits", targets=t),
        lambda: kldiv.Summary(input="logits", targets=True).update(a, a, targets=t),
    ):
        with pytest.raises(kldiv.Error, match="row 299 is 2, outside") as e:
            call()
        assert (e.value.side, e.value.row, e.value.col) == (None, 299, None)
    rows = (16 << 20) // 16 + 300  # more than one of compare_files' blocks
    big = np.zeros((rows, 16), np.float32)
    np.save(tmp_path / "p.npy", big)
    tb = np.zeros(rows, np.int64)
    tb[rows - 5] = 16
    with pytest.raises(kldiv.Error, match=f"row {rows - 5} is 16") as e:
        kldiv.compare_files(
            str(tmp_path / "p.npy"), str(tmp_path / "p.npy"), input="logits", targets=tb
        )
    assert e.value.row == rows - 5


def test_mixed_types_check_rows_as_they_were_stored(tmp_path):
    # kl() casts f16 p and f64 q to f64, and compare_files reads them as f64: the f16 row's
    # rounding (its sum is 1 + 2.4e-4) is within f16's tolerance, not f64's, which refused it.
    p = np.array([[0.25, 0.25, 0.25, 0.25 + 2.0**-12]], np.float16)
    q = np.array([[0.1, 0.2, 0.3, 0.4]])
    want = rel_entr(p.astype(np.float64), q).sum()
    close(kldiv.kl(p, q, device="cpu")[0], want, 1e-12)
    close(kldiv.kl(p, q, targets=np.array([1]), device="cpu").values[0], want, 1e-12)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "q.npy", q)
    s = kldiv.compare_files(str(tmp_path / "p.npy"), str(tmp_path / "q.npy"), device="cpu")
    close(s.values[0], want, 1e-12)
    # Beyond f16's tolerance (4e-3) it is still an error, and one type alone keeps its own.
    with pytest.raises(kldiv.Error, match="tolerance 4e-3"):
        kldiv.kl(np.array([[0.25, 0.25, 0.25, 0.2578125]], np.float16), q)
    with pytest.raises(kldiv.Error, match="tolerance 1e-6"):
        kldiv.kl(p.astype(np.float64), q)


def test_entropy_has_no_targets_or_agreement():
    # Perplexities, Δp and agreement compare P with Q; entropy reads P alone.
    a = rng.normal(size=(4, 9))
    with pytest.raises(kldiv.Error, match="entropy"):
        kldiv.kl(a, a, input="logits", divergence="entropy", targets=np.arange(4))
    with pytest.raises(kldiv.Error, match="entropy"):
        kldiv.kl(a, a, input="logits", divergence="entropy", agreement=True)


def test_compare_files_vocab_min_compares_the_common_prefix(tmp_path):
    a = rng.normal(scale=2, size=(2, 3, 40)).astype(np.float32)  # [B, T, V_P]
    b = rng.normal(scale=2, size=(6, 37)).astype(np.float32)  # [B·T, V_Q]
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    pa, pb = str(tmp_path / "a.npy"), str(tmp_path / "b.npy")
    with pytest.raises(kldiv.Error, match="vocabularies differ.*vocab_min"):
        kldiv.compare_files(pa, pb, input="logits")
    s = kldiv.compare_files(pa, pb, input="logits", vocab_min=True, device="cpu")
    p = softmax(a.reshape(6, 40)[:, :37].astype(np.float64), axis=1)
    q = softmax(b.astype(np.float64), axis=1)
    close(s.values, rel_entr(p, q).sum(axis=1), 1e-5)


def test_compare_files_computes_several_divergences_from_one_read(tmp_path):
    a = rng.normal(scale=2, size=(25, 30)).astype(np.float32)
    b = (a + rng.normal(scale=0.5, size=a.shape)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    s = kldiv.compare_files(
        str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), input="logits",
        divergence="kl,reverse-kl,js", device="cpu",
    )
    p = softmax(a.astype(np.float64), axis=1)
    q = softmax(b.astype(np.float64), axis=1)
    close(s.values, rel_entr(p, q).sum(axis=1), 1e-5)
    close(s.also["reverse-kl"], rel_entr(q, p).sum(axis=1), 1e-5)
    close(s.also["js"], jensenshannon(p, q, axis=1) ** 2, 1e-5)
    d = s.to_dict()
    close(d["also"]["js"]["mean"], (jensenshannon(p, q, axis=1) ** 2).mean(), 1e-5)
    with pytest.raises(kldiv.Error, match="twice"):
        kldiv.compare_files(str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), divergence="kl,kl")


def test_bad_input_raises_clear_exceptions():
    p = probs(4, 5)
    for bad in (p.astype(np.complex128), np.array([["a", "b"]]), np.array([[object()]])):
        with pytest.raises(TypeError, match="real numbers"):
            kldiv.kl(bad, bad)
    with pytest.raises(kldiv.Error, match="at least one axis"):
        kldiv.kl(np.float64(0.5), np.float64(0.5))
    with pytest.raises(kldiv.Error, match="shape mismatch"):
        kldiv.kl(p[None], p)  # 3-D against 2-D
    with pytest.raises(kldiv.Error, match="empty"):
        kldiv.kl(np.zeros((3, 0)), np.zeros((3, 0)), device="cpu")
    with pytest.raises(kldiv.Error, match="reduction"):
        kldiv.kl(p, p, reduction="avg", device="cpu")
    with pytest.raises(kldiv.Error, match="targets"):
        kldiv.kl(p, p, targets=np.array([0, 1]), device="cpu")
    with pytest.raises(kldiv.Error, match="outside"):
        kldiv.kl(p, p, targets=np.array([0, 1, 2, 9]), device="cpu")
    with pytest.raises(kldiv.Error, match="not JSON"):
        kldiv.Summary.from_json("{")
    with pytest.raises(kldiv.Error):
        kldiv.Summary.from_json('{"format": "kldiv-summary", "version": 1}')
    with pytest.raises(kldiv.Error, match="only merges"):
        kldiv.Summary.from_json(kldiv.kl(p, p, targets=np.arange(4), device="cpu").to_json()).update(p, p)
    # 3-D input is rows × … × distribution: values shaped as the leading axes.
    assert kldiv.kl(p.reshape(2, 2, 5), p.reshape(2, 2, 5), device="cpu").shape == (2, 2)


def _rss_growth_mib(call):
    """Largest resident-memory growth while `call` runs, sampled by a thread (the call
    releases the GIL)."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page / 2**20

    base, peak, done = rss(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())

    t = threading.Thread(target=sample)
    t.start()
    try:
        call()
    finally:
        done.set()
        t.join()
    return max(peak[0], rss()) - base


def test_row_contiguous_arrays_are_not_copied():
    # 256 MiB per side: a copy of either would show as that much more resident memory.
    rows, cols = 2048, 16384
    p = np.full((rows, cols), 1.0 / cols, dtype=np.float64)
    q = p.copy()
    kldiv.kl(p[:2], q[:2], device="cpu")  # engine and pools set up before measuring
    grew = _rss_growth_mib(lambda: kldiv.kl(p, q, device="cpu"))
    assert grew < 64, f"resident memory grew {grew:.0f} MiB"
    # The same rows in Fortran order must be copied once: the measurement sees copies.
    pf = np.asfortranarray(p)
    assert _rss_growth_mib(lambda: kldiv.kl(pf, q, device="cpu")) > 200


def write_kld(path, logits, tokens, n_ctx):
    """A llama.cpp --kl-divergence-base file, written from its format's rules."""
    n_chunk, n_vocab = len(tokens) // n_ctx, logits.shape[1]
    first = n_ctx // 2
    out = [b"_logits_", np.array([n_ctx, n_vocab, n_chunk], "<i4").tobytes(),
           np.asarray(tokens, "<i4").tobytes()]
    for c in range(n_chunk):
        for pos in range(first, n_ctx - 1):
            l = logits[c * n_ctx + pos].astype(np.float32)
            mx = l.max()
            mn = max(l.min(), mx - np.float32(16))
            lse = np.float32(np.log(np.exp(l - mx).sum(dtype=np.float32)))
            scale = np.float32((mx - mn) / np.float32(65535))
            q = np.where(l > mn, np.rint((l - mn) / scale), 0).astype("<u2")
            rec = np.array([scale, mn - mx - lse], "<f4").tobytes() + q.tobytes()
            rec += b"\0\0" * (n_vocab % 2)
            out.append(rec)
    with open(path, "wb") as f:
        f.write(b"".join(out))


def test_compare_files_reads_llama_cpp_kld_bases(tmp_path):
    n_ctx, n_chunk, n_vocab = 8, 2, 5
    base = rng.normal(scale=2, size=(n_ctx * n_chunk, n_vocab)).astype(np.float32)
    quant = (base + rng.normal(scale=0.3, size=base.shape)).astype(np.float32)
    tokens = rng.integers(0, n_vocab, size=n_ctx * n_chunk)
    write_kld(tmp_path / "base.kld", base, tokens, n_ctx)
    np.save(tmp_path / "quant.npy", quant)
    s = kldiv.compare_files(str(tmp_path / "base.kld"), str(tmp_path / "quant.npy"), device="cpu")
    # The scored positions n_ctx/2 … n_ctx − 2 of each chunk; record j predicts token j + 1.
    pos = [c * n_ctx + j for c in range(n_chunk) for j in range(n_ctx // 2, n_ctx - 1)]
    raw = np.fromfile(tmp_path / "base.kld", dtype=np.uint8)[20 + 4 * len(tokens):]
    recs = raw.reshape(len(pos), -1)
    scale = recs[:, 0:4].copy().view("<f4")[:, 0].astype(np.float64)
    mlp = recs[:, 4:8].copy().view("<f4")[:, 0].astype(np.float64)
    qv = recs[:, 8:8 + 2 * n_vocab].copy().view("<u2").astype(np.float64)
    logp = scale[:, None] * qv + mlp[:, None]
    want = rel_entr(softmax(logp, -1), softmax(quant[pos].astype(np.float64), -1)).sum(-1)
    close(s.values, want, 1e-5, 1e-9)
    d = s.to_dict()
    assert d["target_rows"] == len(pos) and d["input"] == "logits"
    t = tokens[np.array(pos) + 1]
    nll_q = -log_softmax(quant[pos].astype(np.float64), -1)[np.arange(len(pos)), t]
    close(d["ppl_q"]["mean"], np.exp(nll_q.mean()), 1e-6)
    with pytest.raises(kldiv.Error, match="log-probabilities"):
        kldiv.compare_files(str(tmp_path / "base.kld"), str(tmp_path / "quant.npy"), input="probs")


def test_ctrl_c_stops_a_long_call_between_blocks():
    import signal

    # Jensen–Shannon over logits: two passes over 2 × 128 MiB, several blocks of rows.
    a = rng.standard_normal((4096, 8192)).astype(np.float32)
    b = a + np.float32(0.1)
    # Python leaves SIGINT ignored when it starts ignored (a job run in the background by a
    # non-interactive shell, as CI scripts often are): Ctrl-C's handler is set here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    # Calls until the signal lands, however late the timer's thread runs; the deadline only
    # keeps a lost signal from hanging the suite.
    deadline = time.monotonic() + 60
    try:
        with pytest.raises(KeyboardInterrupt):
            while time.monotonic() < deadline:
                kldiv.kl(a, b, input="logits", divergence="js", device="cpu")
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


def test_agreement_metrics_from_their_definitions():
    a = rng.normal(scale=2, size=(300, 40))
    b = a + rng.normal(scale=1.0, size=a.shape)
    s = kldiv.kl(a, b, input="logits", agreement=True, device="cpu")
    g = s.to_dict()["agreement"]
    pa, pb = softmax(a, -1), softmax(b, -1)
    order_a = np.argsort(-pa, axis=-1, kind="stable")
    order_b = np.argsort(-pb, axis=-1, kind="stable")
    assert g["rows"] == 300
    for k in (1, 5, 10):
        ta, tb = order_a[:, :k], order_b[:, :k]
        top1 = np.mean([order_a[r, 0] in tb[r] for r in range(300)])
        overlap = np.mean([len(set(ta[r]) & set(tb[r])) / k for r in range(300)])
        assert g["top_k"][f"top{k}"]["p_top1_in_q_topk"] == pytest.approx(top1, abs=1e-12)
        assert g["top_k"][f"top{k}"]["overlap"] == pytest.approx(overlap, abs=1e-12)
    close(g["sum_min"]["mean"], np.minimum(pa, pb).sum(-1).mean(), 1e-12)
    kld = rel_entr(pa, pb).sum(-1)
    edges = [0, 0.25, 0.5, 0.75, 0.95, 1.0001]
    conf = pa.max(-1)
    for i, bk in enumerate(g["kld_by_p_confidence"]):
        sel = (conf >= edges[i]) & (conf < edges[i + 1])
        assert bk["rows"] == sel.sum()
        if sel.any():
            close(bk["mean_kld"], kld[sel].mean(), 1e-10)
    # Merged shards keep the counts exactly.
    x = kldiv.Summary(input="logits", agreement=True, device="cpu")
    x.update(a[:100], b[:100])
    y = kldiv.Summary(input="logits", agreement=True, device="cpu", first_row=100)
    y.update(a[100:], b[100:])
    x.merge(kldiv.Summary.from_json(y.to_json()))
    gm = x.to_dict()["agreement"]
    assert gm["top_k"] == g["top_k"] or all(
        abs(gm["top_k"][k][m] - g["top_k"][k][m]) < 1e-12 for k in g["top_k"] for m in g["top_k"][k]
    )
    assert [b_["rows"] for b_ in gm["kld_by_p_confidence"]] == [b_["rows"] for b_ in g["kld_by_p_confidence"]]
    assert "Σ min(p, q)" in str(s)


def test_an_empty_batch_has_no_values():
    # As scipy and numpy: rel_entr(...).sum(-1) of no rows is an empty array, a sum over
    # nothing is 0, and a mean over nothing is nan (torch's batchmean divides 0 by 0 too).
    p = np.zeros((0, 7, 5), dtype=np.float32)
    want = rel_entr(p, p).sum(-1)
    got = kldiv.kl(p, p, device="cpu")
    assert got.shape == want.shape == (0, 7)
    assert kldiv.kl(p, p, reduction="sum", device="cpu") == 0.0
    assert np.isnan(kldiv.kl(p, p, reduction="mean", device="cpu"))
    assert np.isnan(kldiv.kl(p, p, reduction="batchmean", device="cpu"))
    s = kldiv.Summary(input="logits", device="cpu")
    assert s.update(p, p).shape == (0, 7)
    assert s.rows == 0

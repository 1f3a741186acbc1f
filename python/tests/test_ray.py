"""Shards on Ray give the report of one run: file pairs as tasks, a Dataset through
stateful map_batches actors."""

import numpy as np
import pytest
import ray
from scipy.special import rel_entr

import kldiv
import kldiv.ray


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"KLDIV_DEVICE": "cpu"}})
    yield
    ray.shutdown()


def probs(rng, rows, cols):
    a = rng.gamma(0.5, size=(rows, cols)).astype(np.float32)
    return a / a.sum(-1, keepdims=True)


def test_file_shards_merge_to_the_whole_run(cluster, tmp_path):
    rng = np.random.default_rng(3)
    p, q = probs(rng, 300, 16), probs(rng, 300, 16)
    cuts = [0, 90, 91, 200, 300]
    pairs = []
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        np.save(tmp_path / f"p{i}.npy", p[a:b])
        np.save(tmp_path / f"q{i}.npy", q[a:b])
        pairs.append((str(tmp_path / f"p{i}.npy"), str(tmp_path / f"q{i}.npy")))
    merged = kldiv.ray.compare_shards(pairs, device="cpu", normalize=True).to_dict()
    whole = kldiv.kl(p, q, device="cpu", normalize=True)
    assert merged["rows"] == 300
    assert merged["max_row"] == int(np.argmax(whole))
    assert merged["min_row"] == int(np.argmin(whole))
    want = rel_entr(p.astype(np.float64) / p.sum(-1, keepdims=True),
                    q.astype(np.float64) / q.sum(-1, keepdims=True)).sum(-1)
    assert abs(merged["mean"] - want.mean()) <= 1e-5 * want.mean()
    assert abs(merged["median"] - np.median(whole)) <= 1.0001e-3 * np.median(whole)


def test_dataset_batches_merge_to_the_whole_run(cluster):
    rng = np.random.default_rng(4)
    p, q = probs(rng, 256, 8), probs(rng, 256, 8)
    ds = ray.data.from_items([{"p": p[i], "q": q[i]} for i in range(256)]).repartition(4)
    s = kldiv.ray.summarize_dataset(ds, device="cpu", normalize=True, concurrency=1, num_cpus=1)
    d = s.to_dict()
    whole = kldiv.kl(p, q, device="cpu", normalize=True)
    assert d["rows"] == 256
    assert abs(d["mean"] - whole.mean()) <= 1e-12 * whole.mean()
    assert d["max"] == whole.max() and d["min"] == whole.min()
    assert abs(d["percentiles"]["p99"] - np.percentile(whole, 99)) <= 1.0001e-3 * whole.max()

"""Shards on Ray: per-row divergences run where the data is; only summaries travel and are
merged (counts exactly, moments to rounding, percentiles within the sketch's 0.1 %).

    import kldiv.ray
    s = kldiv.ray.compare_shards([("p0.npy", "q0.npy"), ("p1.npy", "q1.npy")], input="logits")
    print(s)                          # the report of the whole run
    s = kldiv.ray.summarize_dataset(ds, p="p", q="q", input="logits")
"""

from __future__ import annotations

import numpy as _np

import kldiv as _kldiv


def _merge(parts):
    """Summaries (JSON, rows) in row order, placed one after another and merged."""
    merged, offset = None, 0
    for text, rows in parts:
        s = _kldiv.Summary.from_json(text)
        s.shift_rows(offset)
        offset += rows
        if merged is None:
            merged = s
        else:
            merged.merge(s)
    return merged


def compare_shards(pairs, *, resources=None, **options):
    """One ``kldiv.compare_files`` task per (P, Q[, targets]) file pair, in parallel on the
    Ray cluster (``ray.init`` first, or it starts a local one); rows are numbered in the
    order of ``pairs``. ``options`` are ``compare_files``'s keywords. Returns the merged
    ``Summary``."""
    import ray

    def one(p, q, targets, options):
        s = _kldiv.compare_files(p, q, targets=targets, **options)
        return s.to_json(), s.rows

    one = ray.remote(one).options(**(resources or {}))
    refs = []
    for pair in pairs:
        p, q, *rest = pair
        refs.append(one.remote(p, q, rest[0] if rest else None, options))
    return _merge(ray.get(refs))


class SummarizeBatch:
    """A stateful ``map_batches`` callable (one per actor): each batch of rows becomes one
    serialised summary."""

    def __init__(self, p="p", q="q", targets=None, **options):
        self.columns = (p, q, targets)
        self.options = options

    def __call__(self, batch):
        p_col, q_col, t_col = self.columns
        p = _np.stack(batch[p_col])
        q = _np.stack(batch[q_col]) if q_col else None
        s = _kldiv.Summary(keep_values=False, targets=t_col is not None, **self.options)
        s.update(p, q, None if t_col is None else _np.asarray(batch[t_col]).reshape(-1))
        return {"summary": _np.array([s.to_json()], dtype=object), "rows": _np.array([s.rows])}


def summarize_dataset(ds, *, p="p", q="q", targets=None, concurrency=2, num_cpus=1, **options):
    """The merged ``Summary`` of a Ray Dataset whose rows hold P and Q rows (columns ``p``
    and ``q``; ``targets`` an optional int column), computed by ``concurrency`` actors of
    ``num_cpus`` each (leave CPUs for the dataset's own read tasks, or the pipeline stalls).
    Row numbers (min_row, max_row) follow the dataset's order when
    ``DataContext.execution_options.preserve_order`` is set, else the order batches finish."""
    out = ds.map_batches(
        SummarizeBatch,
        fn_constructor_kwargs=dict(p=p, q=q, targets=targets, **options),
        batch_format="numpy",
        concurrency=concurrency,
        num_cpus=num_cpus,
    )
    rows = out.take_all()
    return _merge((r["summary"], int(r["rows"])) for r in rows)

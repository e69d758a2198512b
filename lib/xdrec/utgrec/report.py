"""Tables and figures of UTGRec's studies from stored results: Table 2-3 mirrors, significance, Figures 2-4.

Every generative run (UTGRec, its variants, TIGER and LETTER on the target) stores the 0-based rank
of each test row's target among its beams (``-1``: not found), on the same seeded test rows, so
any two can be compared row by row (:func:`paired`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..metrics import paired_ttest

METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def per_row(ranks: Sequence[int], metric: str) -> np.ndarray:
    """Recall@k or NDCG@k of every row from its 0-based rank (-1 or >= k: a miss)."""
    name, k = metric.split("@")
    r = np.asarray(ranks, dtype=np.int64)
    hit = (r >= 0) & (r < int(k))
    if name == "recall":
        return hit.astype(np.float64)
    if name == "ndcg":
        return np.where(hit, 1.0 / np.log2(np.maximum(r, 0) + 2.0), 0.0)
    raise ValueError(f"unknown metric {metric!r}: recall@k or ndcg@k")


def paired(a: Mapping, b: Mapping, metric: str = "ndcg@10") -> tuple[float, float]:
    """(mean difference a - b, two-sided paired t-test p) of two stored runs on the same test rows."""
    return paired_over_seeds([(a, b)], metric)


def paired_over_seeds(pairs: Sequence[tuple[Mapping, Mapping]], metric: str = "ndcg@10") -> tuple[float, float]:
    """:func:`paired` with several seeds: ``pairs`` holds one ``(a, b)`` per seed, every run on the
    same test rows; each row's metric is averaged over the seeds before the paired test."""
    rows = pairs[0][0]["extra"]["rows"]
    for run in (r for pair in pairs for r in pair):
        if run["extra"]["rows"]["user"] != rows["user"] or run["extra"]["rows"]["target"] != rows["target"]:
            raise ValueError(f"{pairs[0][0]['name']} and {run['name']} were not tested on the same rows")
    x, y = (np.mean([per_row(pair[i]["extra"]["rows"]["rank"], metric) for pair in pairs], axis=0) for i in (0, 1))
    return float(x.mean() - y.mean()), float(paired_ttest(x, y).p)


def metrics_frame(records: Mapping[str, Mapping], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Rows: the runs (by label); columns: their stored mean metrics."""
    return pd.DataFrame({label: {m: rec["metrics"][m] for m in metrics} for label, rec in records.items()}).T


def versus(records: Mapping, reference: Mapping, metrics: Sequence[str] = ("recall@10", "ndcg@10")) -> pd.DataFrame:
    """Figures 2-3 as a table: each run's mean metrics, and its paired difference from ``reference``.

    Rows: the runs (by label); for each metric its mean, ``"<metric> - ref"`` (run minus reference, on
    the same rows) and ``"p <metric>"`` (:func:`paired`); both NaN on the reference's own row.
    """
    rows = {}
    for label, rec in records.items():
        row = {m: rec["metrics"][m] for m in metrics}
        same = rec["name"] == reference["name"]
        for m in metrics:
            row[f"{m} - ref"], row[f"p {m}"] = (np.nan, np.nan) if same else paired(rec, reference, m)
        rows[label] = row
    return pd.DataFrame(rows).T[[*metrics, *(f"{m} - ref" for m in metrics), *(f"p {m}" for m in metrics)]]


def popularity_groups(counts: np.ndarray, targets: Sequence[int], edges: Sequence[float]) -> list[str]:
    """Figure 4's groups: each row's target item by its number of training interactions, ``[lo, hi)``."""
    c = np.asarray(counts)[np.asarray(targets, dtype=np.int64)]
    edges = list(edges)
    if sorted(edges) != edges or len(edges) < 2:
        raise ValueError(f"edges must be increasing with at least two values, got {edges}")
    out = []
    for v in c:
        k = np.searchsorted(edges, v, side="right") - 1
        if not 0 <= k < len(edges) - 1:
            raise ValueError(f"a target with {v} interactions lies outside the groups {edges}")
        hi = edges[k + 1]
        out.append(f"[{edges[k]:g}, {'inf' if np.isinf(hi) else f'{hi:g}'})")
    return out


def group_gain(records: Mapping[str, Mapping], reference: str, groups: Sequence[str],
               metric: str = "ndcg@10") -> pd.DataFrame:
    """Per popularity group: rows, each run's mean ``metric`` and its gain over ``reference`` in %."""
    frame = pd.DataFrame({"group": list(groups)})
    for label, rec in records.items():
        if len(rec["extra"]["rows"]["rank"]) != len(frame):
            raise ValueError(f"{label}: {len(rec['extra']['rows']['rank'])} rows, the groups have {len(frame)}")
        frame[label] = per_row(rec["extra"]["rows"]["rank"], metric)
    order = list(dict.fromkeys(groups))
    out = frame.groupby("group", sort=False).mean().loc[order]
    out.insert(0, "rows", frame.groupby("group", sort=False).size().loc[order])
    for label in records:
        if label != reference:
            out[f"{label} gain %"] = 100 * (out[label] - out[reference]) / out[reference].replace(0, np.nan)
    return out

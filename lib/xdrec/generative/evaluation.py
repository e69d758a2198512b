"""Evaluating a generative recommender: decode top-k IDs per row, map them to items, rank the target.

A recommender exposes ``recommend(histories, domains, k) -> [n, k]`` item ids (``-1`` padding).
Each row's target domain picks its trie, so only that domain's items can be returned; a target
outside the list counts 0 on every metric (:func:`xdrec.metrics.rank_metrics`).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from ..progress import progress

Recommend = Callable[[list[list[int]], list[int], int], np.ndarray]


def evaluate_generative(recommend: Recommend, rows: pd.DataFrame, *, k: int = 10, ks: Sequence[int] = DEFAULT_KS,
                        batch_size: int = 32, per_row: bool = False, show_progress: bool = False, desc: str = "decode") -> dict:
    """Recall/NDCG@ks of ``recommend`` on ``rows`` (``history``, ``domain``, ``target``); per domain too.

    Returns ``{"all": metrics, "<domain id>": metrics, ...}``; with ``per_row`` every entry also has
    the per-row arrays (``rank`` etc.), in the order of ``rows``.
    """
    histories = [list(map(int, h)) for h in rows["history"]]
    domains = rows["domain"].astype(int).tolist()
    ranks = np.empty(len(rows), dtype=np.int64)
    starts = range(0, len(rows), batch_size)
    for s in progress(starts, desc=desc, disable=not show_progress, total=len(starts)):
        e = min(s + batch_size, len(rows))
        ranked = recommend(histories[s:e], domains[s:e], k)
        ranks[s:e] = target_ranks(ranked, rows["target"].to_numpy()[s:e])
    out = {"all": metrics_from_ranks(ranks, ks, per_row=per_row)}
    dom = np.asarray(domains)
    for d in sorted(set(domains)):
        out[str(d)] = metrics_from_ranks(ranks[dom == d], ks, per_row=per_row)
    return out

"""Full-ranking evaluation of a :class:`~xdrec.baselines.base.SequentialRecommender`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..metrics import DEFAULT_KS, full_ranking, items_mask, metrics_from_ranks, sampled_ranking


def evaluate(
    model,
    rows,
    ks: Sequence[int] = DEFAULT_KS,
    candidate_items: np.ndarray | Sequence[int] | Mapping[str, Any] | None = None,
    exclude_history: bool = False,
    batch_size: int = 512,
    per_row: bool = False,
) -> dict[str, Any]:
    """Rank every row's ``target`` given its ``history`` with ``model.score_all``.

    Args:
        model: anything with ``score_all(histories) -> [n, n_items]`` and ``n_items``.
        rows: a DataFrame with ``history`` (item-id lists) and ``target`` columns, and ``domain``
            when ``candidate_items`` is a mapping (the ``valid``/``test`` frames of a split).
        candidate_items: which items compete with the target.  ``None``: all items; an array of
            item ids: those items for every row; a mapping ``domain -> item ids``: each row ranks
            its own domain's items (cross-domain evaluation of the target domain).
        exclude_history: remove the row's history items from its ranking (off by default: Amazon
            users do buy items again, and the papers reproduced here rank all items).
        per_row: per-row metric arrays instead of means (for :func:`xdrec.metrics.paired_ttest`).

    Ties are broken pessimistically (see :func:`xdrec.metrics.full_ranking`).
    """
    n_items = int(model.n_items)
    histories = [list(map(int, h)) for h in rows["history"]]
    targets = np.asarray(rows["target"], dtype=np.int64)
    if isinstance(candidate_items, Mapping):
        domain_masks = {d: items_mask(items, n_items) for d, items in candidate_items.items()}
        domains = list(rows["domain"])
        missing = sorted(set(domains) - set(domain_masks), key=str)
        if missing:
            raise KeyError(f"candidate_items has no items for domains {missing}")
        shared_mask = None
    else:
        shared_mask = None if candidate_items is None else items_mask(candidate_items, n_items)

    ranks = np.empty(len(targets), dtype=np.int64)
    for start in range(0, len(targets), batch_size):
        stop = min(start + batch_size, len(targets))
        scores = model.score_all(histories[start:stop])
        if isinstance(candidate_items, Mapping):
            mask = np.stack([domain_masks[d] for d in domains[start:stop]])
        else:
            mask = shared_mask
        res = full_ranking(
            scores,
            targets[start:stop],
            ks=ks,
            candidate_mask=mask,
            exclude=histories[start:stop] if exclude_history else None,
            per_row=True,
        )
        ranks[start:stop] = res["rank"]
    return metrics_from_ranks(ranks, ks, per_row=per_row)


def evaluate_sampled(
    model,
    rows,
    candidates: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 512,
    per_row: bool = False,
) -> dict[str, Any]:
    """Rank each row's target among its sampled candidates (the X-Cross protocol).

    ``candidates`` is ``[n, 1 + n_neg]`` from :func:`xdrec.metrics.sample_negatives` (column 0 is
    the target, which must equal ``rows["target"]``); scores come from ``model.score_all``.
    """
    import torch

    candidates = np.asarray(candidates, dtype=np.int64)
    targets = np.asarray(rows["target"], dtype=np.int64)
    if candidates.shape[0] != len(targets) or not (candidates[:, 0] == targets).all():
        raise ValueError("candidates must have one row per evaluation row with the target in column 0")
    histories = [list(map(int, h)) for h in rows["history"]]
    scores = np.empty(candidates.shape, dtype=np.float64)
    for start in range(0, len(targets), batch_size):
        stop = min(start + batch_size, len(targets))
        full = model.score_all(histories[start:stop]).cpu()
        scores[start:stop] = torch.gather(full, 1, torch.from_numpy(candidates[start:stop])).double().numpy()
    return sampled_ranking(scores, ks=ks, per_row=per_row)

"""Ranking metrics for next-item recommendation with one held-out target per row.

Every evaluation in xdrec reduces to the same question: *at which position does the held-out
item land?*  Once that 0-based ``rank`` is known, all metrics follow (Järvelin & Kekäläinen 2002
for NDCG; the leave-one-out protocol of SASRec, Kang & McAuley 2018, Sec. 4.2):

=============  =========================================  ===========================
metric         per-row value                               absent from the top k
=============  =========================================  ===========================
``recall@k``   ``1`` if ``rank < k``                       0
``hit@k``      same as ``recall@k`` (one target per row)   0
``ndcg@k``     ``1 / log2(rank + 2)`` if ``rank < k``      0
``mrr@k``      ``1 / (rank + 1)`` if ``rank < k``          0
``mrr``        ``1 / (rank + 1)`` over the whole ranking   0 if absent from the ranking
=============  =========================================  ===========================

With a single relevant item the ideal DCG is ``1/log2(2) = 1``, so NDCG needs no normaliser.
Recall and Hit coincide for one target; both are reported because papers use either name.

Three ways of obtaining the rank are offered:

- :func:`rank_metrics` — a model already produced a ranked list of item ids (generative
  recommenders decode a top-L list with beam search).
- :func:`full_ranking` — a model scores every item; the target is ranked against all items
  (optionally only the target domain's items, and optionally without the user's history).
- :func:`sampled_ranking` — the X-Cross protocol (Hadad et al., SIGIR 2025, Sec. 4.1.2 and
  4.1.4): the target is ranked against 29 popularity-sampled negatives drawn by
  :func:`sample_negatives`, reporting Hit@{1,3,10} and MRR@10.

:func:`paired_ttest` compares two systems on the same rows (``per_row=True`` outputs).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10)
MISSING_RANK = -1
"""Rank sentinel for a target that is not in the ranking at all (every metric is 0)."""


# ----------------------------------------------------------------------------------------------
# From ranks to metrics
# ----------------------------------------------------------------------------------------------
def metrics_from_ranks(
    ranks: np.ndarray | Sequence[int], ks: Sequence[int] = DEFAULT_KS, per_row: bool = False
) -> dict[str, Any]:
    """Turn 0-based target ranks into ``recall@k``, ``hit@k``, ``ndcg@k``, ``mrr@k`` and ``mrr``.

    ``ranks[i]`` is the number of items placed before row ``i``'s target; ``MISSING_RANK`` (-1)
    means the target does not appear (all metrics 0).  With ``per_row=False`` (default) the
    row means are returned as floats, plus ``n`` (the number of rows).  With ``per_row=True``
    each metric is a float array of length ``n`` and ``rank`` holds the ranks themselves, which
    is what :func:`paired_ttest` needs.
    """
    ranks = np.asarray(ranks, dtype=np.int64).reshape(-1)
    found = ranks >= 0
    safe = np.where(found, ranks, 0).astype(np.float64)
    out: dict[str, Any] = {}
    for k in _check_ks(ks):
        hit = (found & (ranks < k)).astype(np.float64)
        out[f"recall@{k}"] = hit
        out[f"hit@{k}"] = hit.copy()
        out[f"ndcg@{k}"] = np.where(found & (ranks < k), 1.0 / np.log2(safe + 2.0), 0.0)
        out[f"mrr@{k}"] = np.where(found & (ranks < k), 1.0 / (safe + 1.0), 0.0)
    out["mrr"] = np.where(found, 1.0 / (safe + 1.0), 0.0)
    if per_row:
        out["rank"] = ranks
        return out
    summary: dict[str, Any] = {name: (float(v.mean()) if len(v) else 0.0) for name, v in out.items()}
    summary["n"] = int(len(ranks))
    return summary


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    return ks


# ----------------------------------------------------------------------------------------------
# Ranked lists (generative models)
# ----------------------------------------------------------------------------------------------
def target_ranks(ranked_ids: Any, target_ids: Any) -> np.ndarray:
    """0-based position of each row's target in its ranked list, ``MISSING_RANK`` if absent.

    ``ranked_ids`` is ``[n, L]`` (best first).  Ragged lists are accepted as a sequence of
    sequences and padded with ``-1``; duplicates in a list are tolerated (the first occurrence
    counts), as beam search can emit the same item twice when two codes map to one item.
    """
    ranked = _as_2d_int(ranked_ids)
    targets = np.asarray(target_ids, dtype=np.int64).reshape(-1)
    if ranked.shape[0] != targets.shape[0]:
        raise ValueError(f"{ranked.shape[0]} ranked lists but {targets.shape[0]} targets")
    if ranked.shape[1] == 0:
        return np.full(len(targets), MISSING_RANK, dtype=np.int64)
    match = ranked == targets[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), MISSING_RANK).astype(np.int64)


def rank_metrics(
    ranked_ids: Any, target_ids: Any, ks: Sequence[int] = DEFAULT_KS, per_row: bool = False
) -> dict[str, Any]:
    """Recall/Hit/NDCG@k and MRR of ranked lists ``[n, L]`` (best first) against one target each.

    A target missing from its list scores 0 on every metric; MRR is computed over the whole given
    list (so a list of length L gives MRR@L).  See :func:`metrics_from_ranks` for ``per_row``.
    """
    return metrics_from_ranks(target_ranks(ranked_ids, target_ids), ks, per_row=per_row)


def _as_2d_int(ranked_ids: Any) -> np.ndarray:
    if _is_torch(ranked_ids):
        ranked_ids = ranked_ids.detach().cpu().numpy()
    if isinstance(ranked_ids, np.ndarray):
        if ranked_ids.ndim != 2:
            raise ValueError(f"ranked_ids must be 2-D [n, L], got shape {ranked_ids.shape}")
        return ranked_ids.astype(np.int64, copy=False)
    rows = [np.asarray(r, dtype=np.int64).reshape(-1) for r in ranked_ids]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


# ----------------------------------------------------------------------------------------------
# Full ranking over scores
# ----------------------------------------------------------------------------------------------
TIE_RULES = ("pessimistic", "optimistic")


def full_ranking(
    scores: Any,
    target_ids: Any,
    ks: Sequence[int] = DEFAULT_KS,
    candidate_mask: Any = None,
    exclude: Any = None,
    ties: str = "pessimistic",
    chunk_size: int = 1024,
    per_row: bool = False,
) -> dict[str, Any]:
    """Rank each row's target among all (candidate) items by score and report the metrics.

    Args:
        scores: ``[n, n_items]`` torch tensor or numpy array, higher is better.
        target_ids: ``[n]`` item ids (column indices into ``scores``).
        candidate_mask: optional boolean ``[n_items]`` (shared by all rows, e.g. the target
            domain's items) or ``[n, n_items]`` (per row).  Only candidates are ranked; a target
            that is not a candidate is an error, because it means the evaluation data is wrong.
        exclude: optional items to remove from each row's ranking, typically the user's history:
            a boolean ``[n, n_items]`` mask or a length-``n`` sequence of item-id lists.  The
            target itself is never excluded, even if it appears in the list (repeat purchases).
        ties: how items whose score *equals* the target's are ordered.  ``"pessimistic"``
            (default) places the target *after* every tied item, i.e.
            ``rank = #{candidates scoring higher} + #{other candidates scoring the same}``, so a
            model that outputs a constant earns nothing.  ``"optimistic"`` places it before them
            (``rank = #{higher}``).  The rank is exact, no top-k truncation is involved.
        chunk_size: rows processed at a time (memory is ``chunk_size * n_items`` booleans).
        per_row: return per-row arrays instead of means (see :func:`metrics_from_ranks`).

    Returns:
        The metrics of :func:`metrics_from_ranks`; MRR is over the full candidate ranking.
    """
    import torch

    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    scores_t = torch.as_tensor(scores).detach()
    if scores_t.ndim != 2:
        raise ValueError(f"scores must be 2-D [n, n_items], got shape {tuple(scores_t.shape)}")
    n, n_items = scores_t.shape
    targets = torch.from_numpy(np.array(_to_numpy(target_ids), dtype=np.int64).reshape(-1))
    if len(targets) != n:
        raise ValueError(f"{n} score rows but {len(targets)} targets")
    if n and (int(targets.min()) < 0 or int(targets.max()) >= n_items):
        raise ValueError(f"target ids must lie in [0, {n_items}), got range [{int(targets.min())}, {int(targets.max())}]")
    cand = _candidate_mask_tensor(candidate_mask, n, n_items)
    exclude = _normalize_exclude(exclude, n, n_items)

    ranks = torch.empty(n, dtype=torch.int64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        s = scores_t[start:stop].cpu()
        if not s.is_floating_point():
            s = s.double()
        t = targets[start:stop]
        rows = torch.arange(stop - start)
        valid = torch.ones_like(s, dtype=torch.bool)
        if cand is not None:
            cand_chunk = cand.expand(stop - start, n_items) if cand.ndim == 1 else cand[start:stop]
            target_is_candidate = cand_chunk[rows, t]
            if not bool(target_is_candidate.all()):
                i = int((~target_is_candidate).nonzero()[0, 0]) + start
                raise ValueError(f"row {i}: target {int(targets[i])} is not among the candidate items")
            valid &= cand_chunk
        if exclude is not None:
            valid &= ~_exclude_chunk(exclude, start, stop, n_items)
        valid[rows, t] = True  # the target is always ranked (never excluded)
        target_score = s[rows, t].unsqueeze(1)
        if bool(torch.isnan(target_score).any()):
            raise ValueError("NaN score for a target item; the model produced NaNs")
        higher = ((s > target_score) & valid).sum(dim=1)
        if ties == "pessimistic":
            higher += ((s == target_score) & valid).sum(dim=1) - 1  # minus the target itself
        ranks[start:stop] = higher
    return metrics_from_ranks(ranks.numpy(), ks, per_row=per_row)


def _candidate_mask_tensor(candidate_mask: Any, n: int, n_items: int):
    import torch

    if candidate_mask is None:
        return None
    m = torch.as_tensor(np.array(_to_numpy(candidate_mask), dtype=bool))
    if m.shape not in {(n_items,), (n, n_items)}:
        raise ValueError(f"candidate_mask must have shape ({n_items},) or ({n}, {n_items}), got {tuple(m.shape)}")
    return m


def _normalize_exclude(exclude: Any, n: int, n_items: int) -> Any:
    """Validate ``exclude``; return it as a boolean mask or a plain list of item-id lists."""
    if exclude is None:
        return None
    if _is_bool_mask(exclude):
        if tuple(exclude.shape) != (n, n_items):
            raise ValueError(f"exclude mask must have shape ({n}, {n_items}), got {tuple(exclude.shape)}")
        return exclude
    exclude = list(exclude)
    if len(exclude) != n:
        raise ValueError(f"exclude must give one item list per row ({n}), got {len(exclude)}")
    return exclude


def _exclude_chunk(exclude: Any, start: int, stop: int, n_items: int):
    """Boolean ``[stop - start, n_items]`` mask of the excluded items of rows ``start:stop``."""
    import torch

    if _is_bool_mask(exclude):
        return torch.as_tensor(np.array(_to_numpy(exclude[start:stop]), dtype=bool))
    m = torch.zeros(stop - start, n_items, dtype=torch.bool)
    for i, items in enumerate(exclude[start:stop]):
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if len(items):
            m[i, torch.as_tensor(items)] = True
    return m


def _is_bool_mask(x: Any) -> bool:
    if _is_torch(x):
        import torch

        return x.dtype == torch.bool
    return isinstance(x, np.ndarray) and x.dtype == bool


def items_mask(item_ids: Any, n_items: int) -> np.ndarray:
    """Boolean ``[n_items]`` mask that is True at ``item_ids`` (e.g. one domain's items)."""
    mask = np.zeros(n_items, dtype=bool)
    mask[np.asarray(item_ids, dtype=np.int64)] = True
    return mask


# ----------------------------------------------------------------------------------------------
# Sampled ranking: 1 target + popularity-sampled negatives (X-Cross protocol)
# ----------------------------------------------------------------------------------------------
def sample_negatives(
    target_ids: Any,
    item_popularity: Any,
    n_neg: int = 29,
    exclude: Any = None,
    rng: np.random.Generator | int | None = None,
    chunk_size: int = 512,
) -> np.ndarray:
    """Candidate lists ``[n, 1 + n_neg]``: column 0 is the target, then ``n_neg`` negatives.

    Negatives are drawn *without replacement* with probability proportional to
    ``item_popularity`` (e.g. training interaction counts), never equal to the target and never
    in the row's ``exclude`` list (e.g. the user's history).  This is the protocol of X-Cross
    (Hadad et al., SIGIR 2025, Sec. 4.1.2): each true item is ranked against 29 negatives drawn
    by popularity, giving 30 candidates.

    Items with popularity 0 are never drawn, so passing counts that are zero outside the target
    domain samples negatives from that domain only.

    Sampling uses the Efraimidis–Spirakis (2006) keys ``log(u) / w``: taking the ``n_neg`` largest
    keys is exactly sequential popularity-proportional sampling without replacement.

    Args:
        target_ids: ``[n]`` item ids.
        item_popularity: ``[n_items]`` non-negative weights.
        exclude: optional length-``n`` sequence of item-id lists (or a boolean ``[n, n_items]``).
        rng: a ``numpy.random.Generator`` or a seed.
    """
    rng = np.random.default_rng(rng)
    targets = np.asarray(_to_numpy(target_ids), dtype=np.int64).reshape(-1)
    weights = np.asarray(_to_numpy(item_popularity), dtype=np.float64).reshape(-1)
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError("item_popularity must be finite and non-negative")
    n_items = len(weights)
    if n_neg < 0:
        raise ValueError("n_neg must be >= 0")
    with np.errstate(divide="ignore"):
        inv_w = np.where(weights > 0, 1.0 / np.where(weights > 0, weights, 1.0), np.inf)
    out = np.empty((len(targets), 1 + n_neg), dtype=np.int64)
    out[:, 0] = targets
    if n_neg == 0:
        return out
    exclude = _normalize_exclude(exclude, len(targets), n_items)
    for start in range(0, len(targets), chunk_size):
        stop = min(start + chunk_size, len(targets))
        m = stop - start
        # log(u) < 0, so keys are <= 0; weight 0 gives -inf (never chosen).
        keys = np.log(rng.random((m, n_items))) * inv_w
        keys[np.arange(m), targets[start:stop]] = -np.inf
        if exclude is not None:
            keys[_exclude_chunk(exclude, start, stop, n_items).numpy()] = -np.inf
        eligible = np.isfinite(keys).sum(axis=1)
        if (eligible < n_neg).any():
            i = int(np.flatnonzero(eligible < n_neg)[0]) + start
            raise ValueError(f"row {i}: only {int(eligible[i - start])} eligible negatives, need {n_neg}")
        top = np.argpartition(-keys, n_neg - 1, axis=1)[:, :n_neg]
        # Order negatives by key so the output is a genuine sequential draw (order is irrelevant
        # for ranking, but deterministic output makes files diff cleanly).
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        out[start:stop, 1:] = np.take_along_axis(top, order, axis=1)
    return out


def sampled_ranking(
    scores_over_candidates: Any,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "pessimistic",
    per_row: bool = False,
) -> dict[str, Any]:
    """Metrics when each row's target (column 0) is ranked among its sampled candidates.

    ``scores_over_candidates`` is ``[n, 1 + n_neg]``, aligned with the output of
    :func:`sample_negatives` (column 0 = target).  Ties follow ``ties`` as in
    :func:`full_ranking`.
    """
    s = np.asarray(_to_numpy(scores_over_candidates), dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"scores_over_candidates must be [n, 1 + n_neg], got shape {s.shape}")
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    if np.isnan(s[:, 0]).any():
        raise ValueError("NaN score for a target item")
    target = s[:, :1]
    ranks = (s[:, 1:] > target).sum(axis=1)
    if ties == "pessimistic":
        ranks = ranks + (s[:, 1:] == target).sum(axis=1)
    return metrics_from_ranks(ranks, ks, per_row=per_row)


# ----------------------------------------------------------------------------------------------
# Significance
# ----------------------------------------------------------------------------------------------
class TTestResult(NamedTuple):
    t: float
    p: float


def paired_ttest(a_per_row: Any, b_per_row: Any) -> TTestResult:
    """Two-sided paired t-test of per-row metric values of two systems on the same rows.

    Uses :func:`scipy.stats.ttest_rel`.  A positive ``t`` means ``a`` is better on average.  When
    every paired difference is zero, the test is undefined; we return ``t=0, p=1``.
    """
    from scipy import stats

    a = np.asarray(_to_numpy(a_per_row), dtype=np.float64).reshape(-1)
    b = np.asarray(_to_numpy(b_per_row), dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.shape[0]} and {b.shape[0]}")
    if len(a) < 2:
        raise ValueError("a paired t-test needs at least two rows")
    diff = a - b
    if np.all(diff == diff[0]):
        if diff[0] == 0:
            return TTestResult(0.0, 1.0)
        return TTestResult(float(np.sign(diff[0]) * np.inf), 0.0)
    res = stats.ttest_rel(a, b)
    return TTestResult(float(res.statistic), float(res.pvalue))


# ----------------------------------------------------------------------------------------------
def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _to_numpy(x: Any) -> Any:
    if _is_torch(x):
        return x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        raise TypeError("expected an array, got a mapping")
    return x

"""Semantic IDs from residual codes: collision handling and the statistics that describe an ID space.

Two items can receive the same code tuple ``(c_0, ..., c_{M-1})``.  A generative recommender
must map every generated ID back to one item, so collisions are resolved by one of two rules:

``"extra_level"`` (TIGER, Rajput et al. 2023)
    append a level ``M`` holding the item's rank among the items that share its code tuple
    (0 for the first; every ID gets the level, so all IDs have length ``M + 1``).  Within a
    group the ranks follow the distance of the items' last residual to their last code, closest
    first, so the most typical item keeps the ``0``.

``"reassign"`` (UTGRec, Zheng et al. 2025, "conflict handling")
    keep the length ``M``; within every group of colliding items the one closest to the shared
    last code keeps it, the others move to the nearest *free* code of the last codebook under
    the same prefix ``(c_0, ..., c_{M-2})``: the second-nearest, or a farther one if that is
    taken.  When every code under the prefix is taken (a prefix can hold at most ``K`` items),
    the item moves one level up: to the nearest other code at level ``M-2`` whose subtree still
    has room (re-quantising the levels below it), then ``M-3``, and so on.  That cascade needs the
    item's residuals and the codebooks; with only last-level distances an overflowing prefix
    raises an error naming it.

:func:`id_statistics` reports what the issue asks of an ID space: the collision rate before
resolution, per-level code usage (share of codes used, perplexity), and items per prefix.
:func:`semantic_ids_of` turns a tokenizer's codes into IDs with their statistics, and
:func:`write_semantic_ids` / :func:`read_semantic_ids` keep them in a tokenizer's folder (TIGER's
and LETTER's IDs).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

COLLISION_RULES = ("extra_level", "reassign")


def collision_groups(codes: np.ndarray) -> list[np.ndarray]:
    """Row indices of every code tuple that more than one row holds (each group sorted)."""
    codes = np.asarray(codes)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(counts)[:-1]
    return [g for g in np.split(order, bounds) if len(g) > 1]


def resolve_collisions(codes: np.ndarray, rule: str = "reassign", last_distances: np.ndarray | None = None, *,
                       residuals: np.ndarray | None = None, codebooks: np.ndarray | None = None) -> np.ndarray:
    """Unique IDs from ``codes`` [N, M] by ``rule`` (see the module doc).

    ``last_distances`` [N, K] is each item's squared distance from its last-level residual
    ``r_{M-1}`` to every code of the last codebook; ``"reassign"`` needs it, ``"extra_level"``
    uses it (when given) to order items within a group.  Alternatively pass ``residuals``
    [N, M, D] (``r_d`` entering each level) and ``codebooks`` [M, K, D]: the distances are computed
    from them and ``"reassign"`` can cascade past a full prefix.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if residuals is not None and codebooks is not None:
        residuals, codebooks = np.asarray(residuals, dtype=np.float64), np.asarray(codebooks, dtype=np.float64)
        last_distances = ((residuals[:, -1, None, :] - codebooks[-1][None]) ** 2).sum(-1)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"codes must be a non-empty [N, M] array, got shape {codes.shape}")
    if rule not in COLLISION_RULES:
        raise ValueError(f"unknown collision rule {rule!r}: choose one of {COLLISION_RULES}")
    n, m = codes.shape
    if last_distances is not None:
        last_distances = np.asarray(last_distances, dtype=np.float64)
        if last_distances.shape[0] != n:
            raise ValueError(f"last_distances has {last_distances.shape[0]} rows for {n} items")
        own = last_distances[np.arange(n), codes[:, -1]]
    else:
        own = np.zeros(n)
    groups = collision_groups(codes)

    if rule == "extra_level":
        extra = np.zeros(n, dtype=np.int64)
        for g in groups:
            ranked = g[np.argsort(own[g], kind="stable")]
            extra[ranked] = np.arange(len(ranked))
        return np.concatenate([codes, extra[:, None]], axis=1)

    if last_distances is None:
        raise ValueError('rule "reassign" needs last_distances (item x last-codebook squared distances)')
    k = last_distances.shape[1]
    out = codes.copy()
    taken: dict[tuple, set[int]] = defaultdict(set)
    for row in codes:
        taken[tuple(int(c) for c in row[:-1])].add(int(row[-1]))
    movers = []
    for g in groups:
        ranked = g[np.argsort(own[g], kind="stable")]
        movers.extend(ranked[1:].tolist())  # the closest keeps the shared code
    # the items nearest to their original code choose first
    movers.sort(key=lambda i: (own[i], i))
    for i in movers:
        prefix = tuple(int(c) for c in codes[i, :-1])
        used = taken[prefix]
        if len(used) < k:
            c = _nearest_free(last_distances[i], used)
        elif residuals is None or codebooks is None:
            raise ValueError(f"prefix {prefix} holds more than {k} items: no free last-level code is left "
                             f"(pass residuals and codebooks to move up a level, or use rule 'extra_level')")
        else:
            prefix, c = _cascade(codes[i], residuals[i], codebooks, taken)
            out[i, :-1] = prefix
        out[i, -1] = c
        taken[tuple(int(c) for c in out[i, :-1])].add(int(c))
    return out


def _nearest_free(distances: np.ndarray, used: set[int]) -> int:
    for c in np.argsort(distances, kind="stable"):
        if int(c) not in used:
            return int(c)
    raise ValueError("no free code")  # callers check the room first


def _cascade(code: np.ndarray, residual: np.ndarray, codebooks: np.ndarray, taken: dict) -> tuple[tuple, int]:
    """The nearest ID with room: change level ``l`` (deepest first) to its next-nearest codes, re-quantise below."""
    m, k = len(code), codebooks.shape[1]
    for level in range(m - 2, -1, -1):
        r_l = residual[level]
        order = np.argsort(((r_l[None] - codebooks[level]) ** 2).sum(-1), kind="stable")
        for alt in order:
            if alt == code[level]:
                continue
            path, r = [int(c) for c in code[:level]] + [int(alt)], r_l - codebooks[level][alt]
            for d in range(level + 1, m - 1):
                c = int(((r[None] - codebooks[d]) ** 2).sum(-1).argmin())
                path.append(c)
                r = r - codebooks[d][c]
            used = taken[tuple(path)]
            if len(used) < k:
                return tuple(path), _nearest_free(((r[None] - codebooks[-1]) ** 2).sum(-1), used)
    raise ValueError(f"no free ID is left for code {code.tolist()}: the codebooks hold fewer IDs than items")


def id_statistics(codes: np.ndarray, codebook_size: int | list[int], ids: np.ndarray | None = None) -> dict[str, Any]:
    """Statistics of a code assignment ``codes`` [N, M] (before collision handling) and its final ``ids``.

    - ``collision_rate``: share of items whose code tuple another item also holds;
    - ``unique_tuples``: distinct code tuples / items;
    - ``max_items_per_id``: the largest collision group;
    - ``level_usage[d]``: share of codebook ``d``'s codes used by at least one item;
    - ``level_perplexity[d]``: ``exp(entropy)`` of the code distribution at level ``d``
      (equals the codebook size when all codes are used equally often);
    - ``items_per_prefix[l]``: mean and max number of items under a prefix of length ``l``;
    - ``final_unique``: whether the final ``ids`` are unique (when given).
    """
    codes = np.asarray(codes)
    n, m = codes.shape
    sizes = [codebook_size] * m if isinstance(codebook_size, int) else list(codebook_size)
    _, counts = np.unique(codes, axis=0, return_counts=True)
    usage, perplexity = [], []
    for d in range(m):
        p = np.bincount(codes[:, d], minlength=sizes[d]) / n
        usage.append(float((p > 0).mean()))
        nz = p[p > 0]
        perplexity.append(float(np.exp(-(nz * np.log(nz)).sum())))
    per_prefix = {}
    for length in range(1, m + 1):
        _, c = np.unique(codes[:, :length], axis=0, return_counts=True)
        per_prefix[length] = {"prefixes": int(len(c)), "mean_items": float(c.mean()), "max_items": int(c.max())}
    stats = {
        "items": int(n),
        "levels": int(m),
        "collision_rate": float(counts[counts > 1].sum() / n),
        "unique_tuples": float(len(counts) / n),
        "max_items_per_id": int(counts.max()),
        "level_usage": usage,
        "level_perplexity": perplexity,
        "items_per_prefix": per_prefix,
    }
    if ids is not None:
        ids = np.asarray(ids)
        stats["final_unique"] = bool(len(np.unique(ids, axis=0)) == n)
        stats["id_length"] = int(ids.shape[1])
        stats["changed_items"] = int((ids[:, :m] != codes).any(1).sum())
    return stats


# ----------------------------------------------------------------------------------------------
# A tokenizer's IDs on disk
# ----------------------------------------------------------------------------------------------
def semantic_ids_of(codes: np.ndarray, residuals: np.ndarray, codebooks: np.ndarray, rule: str, codebook_size: int,
                    domain: np.ndarray, domains: Sequence[str]) -> tuple[np.ndarray, list[int], dict[str, Any]]:
    """IDs of the items with RQ-VAE ``codes`` under collision ``rule``, the codes per level of the ID
    space (at least ``codebook_size`` on the quantised levels), and :func:`id_statistics` overall
    and per domain."""
    ids = resolve_collisions(codes, rule, residuals=residuals, codebooks=codebooks)
    n_levels = codes.shape[1]
    sizes = [max(int(ids[:, l].max()) + 1, codebook_size) if l < n_levels else int(ids[:, l].max()) + 1
             for l in range(ids.shape[1])]
    stats = {"all": id_statistics(codes, codebook_size, ids),
             "per_domain": {name: id_statistics(codes[domain == d], codebook_size, ids[domain == d])
                            for d, name in enumerate(domains)}}
    return ids, sizes, stats


def write_semantic_ids(folder: Path, items: pd.DataFrame, codes: np.ndarray, ids: np.ndarray, sizes: list[int],
                       rule: str, stats: dict[str, Any], settings: dict[str, Any]) -> None:
    """``semantic_ids.parquet`` (item, item_key, domain_name, codes, IDs) and ``ids.json`` (sizes,
    rule, statistics, settings) in ``folder``, each written atomically."""
    from ..io import write_json, write_parquet

    table = items[["item", "item_key", "domain_name"]].assign(
        **{f"code{d}": codes[:, d] for d in range(codes.shape[1])}, **{f"id{d}": ids[:, d] for d in range(ids.shape[1])})
    write_parquet(folder / "semantic_ids.parquet", table)
    write_json(folder / "ids.json", {"codebook_sizes": sizes, "id_length": int(ids.shape[1]), "rule": rule,
                                     "stats": stats, "settings": settings})


def read_semantic_ids(folder: Path, items: pd.DataFrame, n_levels: int) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """``(ids, codes, meta)`` written by :func:`write_semantic_ids` in ``folder``, or None if there are
    none; raises a ``ValueError`` naming the file when they are not of ``items`` (in order)."""
    from ..io import read_json

    table_path, meta_path = folder / "semantic_ids.parquet", folder / "ids.json"
    if not (meta_path.exists() and table_path.exists()):
        return None
    table = pd.read_parquet(table_path)
    if len(table) != len(items) or not (table["item_key"].astype(str).to_numpy()
                                        == items["item_key"].astype(str).to_numpy()).all():
        raise ValueError(f"{table_path}: its items are not the dataset's items; delete the folder")
    meta = read_json(meta_path)
    codes = table[[f"code{d}" for d in range(n_levels)]].to_numpy().astype(np.int64)
    ids = table[[f"id{d}" for d in range(meta["id_length"])]].to_numpy().astype(np.int64)
    return ids, codes, meta

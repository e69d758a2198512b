"""Every domain's prefix tree as tensors, so constrained decoding needs no Python loop per beam.

A :class:`~xdrec.decoding.PrefixTree` answers one prefix at a time. :class:`TrieTensors` holds
the same trees as one child table: ``child[node, code]`` is the node reached from ``node`` by
``code`` (``-1`` if that code is not allowed there). At the last level the entry is the item id
itself, so walking an item's ID from its domain's root ends on the item. For a batch of prefixes
(of equal length ``t``) the allowed next codes are one gather, ``child[nodes] >= 0``: this is the
valid set ``V_valid(s_{k-1})`` of GenCDR Eq. 12 for every row and beam at once.

Sizes: one row of ``max(K)`` int32 per internal node (the root of each domain and every proper
prefix of an ID), e.g. about 10k rows x 256 for 28k items with 3 levels of 256 codes (10 MB).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class TrieTensors:
    """Per-domain tries of item IDs in one ``[n_nodes, K]`` table.

    Args:
        ids: ``[n_items, L]`` codes of every item (one row per item id, a fixed length ``L``).
        domain: ``[n_items]`` domain id of every item; each domain gets its own trie, so a
            domain's trie never leads to another domain's item.
        n_domains: number of domains (domains without items get a root with no children).
        codebook_sizes: ``K_l`` of every level (default: ``max code + 1`` per level).
        items: the item ids of the rows of ``ids`` (default ``0..n-1``).

    Raises ``ValueError`` if two items of one domain share an ID (the trie could not tell them apart).
    """

    def __init__(self, ids: np.ndarray, domain: np.ndarray, n_domains: int,
                 codebook_sizes: Sequence[int] | None = None, items: np.ndarray | None = None):
        ids = np.asarray(ids, dtype=np.int64)
        domain = np.asarray(domain, dtype=np.int64)
        if ids.ndim != 2 or len(ids) != len(domain):
            raise ValueError(f"ids must be [n_items, L] with one domain per row, got {ids.shape} and {domain.shape}")
        items = np.arange(len(ids)) if items is None else np.asarray(items, dtype=np.int64)
        n, L = ids.shape
        sizes = [int(ids[:, l].max()) + 1 if n else 1 for l in range(L)] if codebook_sizes is None else list(codebook_sizes)
        if len(sizes) != L or (n and (ids.min() < 0 or any(ids[:, l].max() >= sizes[l] for l in range(L)))):
            raise ValueError(f"codes must lie in [0, K_l) with K = {sizes}")
        if n and (domain.min() < 0 or domain.max() >= n_domains):
            raise ValueError(f"domain ids must lie in [0, {n_domains})")
        keyed = np.concatenate([domain[:, None], ids], axis=1)
        uniq, counts = np.unique(keyed, axis=0, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1][0]
            who = items[(keyed == dup).all(1)]
            raise ValueError(f"items {who.tolist()} of domain {int(dup[0])} share the ID {dup[1:].tolist()}")

        self.n_levels, self.codebook_sizes, self.n_domains = L, sizes, int(n_domains)
        width = max(sizes)
        # node ids: level 0 = the roots (one per domain), then every distinct (domain, prefix) by length
        node_of: list[dict[tuple, int]] = [{(d,): d for d in range(n_domains)}]
        count = n_domains
        for length in range(1, L):
            keys = {tuple(r) for r in keyed[:, : length + 1].tolist()}
            table = {}
            for k in sorted(keys):
                table[k] = count
                count += 1
            node_of.append(table)
        child = np.full((count, width), -1, dtype=np.int64)
        depth = np.zeros(count, dtype=np.int64)
        for length in range(L):
            parents = np.asarray([node_of[length][tuple(r)] for r in keyed[:, : length + 1].tolist()], dtype=np.int64)
            depth[parents] = length
            if length + 1 < L:
                nxt = np.asarray([node_of[length + 1][tuple(r)] for r in keyed[:, : length + 2].tolist()], dtype=np.int64)
            else:
                nxt = items
            child[parents, ids[:, length]] = nxt
        self.child = torch.from_numpy(child)
        self.depth = torch.from_numpy(depth)
        self.roots = torch.arange(n_domains)
        self.n_items = int(items.max()) + 1 if n else 0

    # ------------------------------------------------------------------ queries
    def to(self, device) -> "TrieTensors":
        self.child, self.depth, self.roots = self.child.to(device), self.depth.to(device), self.roots.to(device)
        return self

    @property
    def n_nodes(self) -> int:
        return self.child.shape[0]

    def root(self, domains: torch.Tensor) -> torch.Tensor:
        """The root node of each row's domain trie (a ``ValueError`` names a domain index out of range)."""
        if domains.numel() and (int(domains.min()) < 0 or int(domains.max()) >= len(self.roots)):
            bad = domains[(domains < 0) | (domains >= len(self.roots))]
            raise ValueError(f"domain index {int(bad[0])} out of range: the prefix tree has domains "
                             f"0..{len(self.roots) - 1}")
        return self.roots[domains]

    def allowed(self, nodes: torch.Tensor, level: int) -> torch.Tensor:
        """``[..., K_level]`` mask of the codes allowed after ``nodes`` (all False where a node is ``-1``)."""
        rows = self.child[nodes.clamp(min=0), : self.codebook_sizes[level]]
        return (rows >= 0) & (nodes >= 0).unsqueeze(-1)

    def step(self, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The nodes reached by ``codes`` (at the last level: the item ids); ``-1`` where not allowed.

        A code outside ``[0, K)`` (e.g. a token of a wider level) is not allowed, never an index error.
        """
        width = self.child.shape[1]
        ok = (nodes >= 0) & (codes >= 0) & (codes < width)
        out = self.child[nodes.clamp(min=0), codes.clamp(0, width - 1)]
        return torch.where(ok, out, torch.full_like(out, -1))

    def walk(self, domains: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Follow ``codes [..., t]`` from each domain's root: the node after ``t`` codes (item id if ``t == L``)."""
        nodes = self.root(domains)
        for t in range(codes.shape[-1]):
            nodes = self.step(nodes, codes[..., t])
        return nodes

    def items_of(self, domains: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Item id of each full ID ``codes [..., L]`` in its domain's trie; ``-1`` for an ID that is not an item."""
        if codes.shape[-1] != self.n_levels:
            raise ValueError(f"an ID has {self.n_levels} codes, got {codes.shape[-1]}")
        return self.walk(domains, codes)

    def __repr__(self) -> str:
        return (f"TrieTensors(domains={self.n_domains}, levels={self.n_levels}, K={self.codebook_sizes}, "
                f"nodes={self.n_nodes})")


INVALID = -2
"""Item id of a generated ID that is no item of the row's target domain (unconstrained decoding only)."""


class UnconstrainedTrie:
    """A :class:`~xdrec.decoding.TrieTensors` stand-in that allows every code at every level.

    Beam search then follows the model alone. A beam's state is the real trie's node while its
    prefix is still some item's prefix, else :data:`INVALID`; after the last level it is the item
    id, or :data:`INVALID` for an ID that is no item of the row's domain (a "hallucinated" item).
    """

    def __init__(self, trie: TrieTensors):
        self.trie, self.child = trie, trie.child
        self.n_levels, self.codebook_sizes = trie.n_levels, trie.codebook_sizes

    def root(self, domains: torch.Tensor) -> torch.Tensor:
        return self.trie.root(domains)

    def allowed(self, nodes: torch.Tensor, level: int) -> torch.Tensor:
        alive = nodes != -1  # -1: a dead beam (the search's padding); INVALID beams go on
        return alive.unsqueeze(-1).expand(*nodes.shape, self.codebook_sizes[level])

    def step(self, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        nxt = self.trie.step(nodes, codes)
        return torch.where((nodes == -1), nodes, torch.where(nxt >= 0, nxt, torch.full_like(nxt, INVALID)))


def keep_valid(ranked: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` valid items (ids >= 0) in order, padded with ``-1``."""
    out = np.full((len(ranked), k), -1, dtype=np.int64)
    for i, row in enumerate(ranked):
        valid = row[row >= 0][:k]
        out[i, : len(valid)] = valid
    return out

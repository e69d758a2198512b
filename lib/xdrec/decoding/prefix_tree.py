"""Prefix trees (tries) of valid semantic IDs, one per domain (GenCDR's "Domain-aware Prefix-tree").

Built offline from the IDs of a domain's items, a tree answers, for every prefix ``s_{k-1}`` of
codes generated so far, the set of next codes ``V_valid(s_{k-1})`` that still lead to an item of
that domain; constrained decoding masks every other code before the softmax (GenCDR Eq. 12).

Stored as JSON (``{"depth": M, "ids": [[c_0, ..., c_{M-1}], ...]}``): the tree is rebuilt from
its IDs when loaded, which is fast and leaves nothing to trust but integers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..io import read_json, write_json


class PrefixTree:
    """A trie over equal-length integer sequences."""

    def __init__(self, sequences: Iterable[Sequence[int]]):
        self.root: dict[int, dict] = {}
        self.depth: int | None = None
        self._n = 0
        for seq in sequences:
            self.add(seq)

    def add(self, seq: Sequence[int]) -> None:
        seq = [int(c) for c in seq]
        if self.depth is None:
            if not seq:
                raise ValueError("an ID must hold at least one code")
            self.depth = len(seq)
        elif len(seq) != self.depth:
            raise ValueError(f"ID {seq} has {len(seq)} codes; the tree's IDs have {self.depth}")
        node = self.root
        for c in seq[:-1]:
            node = node.setdefault(c, {})
        if seq[-1] in node:
            raise ValueError(f"ID {seq} was added twice: IDs in a tree must be unique")
        node[seq[-1]] = {}
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def _node(self, prefix: Sequence[int]) -> dict | None:
        node = self.root
        for c in prefix:
            node = node.get(int(c))
            if node is None:
                return None
        return node

    def next_codes(self, prefix: Sequence[int] = ()) -> list[int]:
        """``V_valid(prefix)``: the sorted codes that may follow ``prefix`` (empty for a full or invalid prefix)."""
        if self.depth is not None and len(prefix) >= self.depth:
            return []
        node = self._node(prefix)
        return sorted(node) if node else []

    def __contains__(self, seq: Sequence[int]) -> bool:
        return self.depth is not None and len(seq) == self.depth and self._node(seq) is not None

    def is_prefix(self, prefix: Sequence[int]) -> bool:
        return len(prefix) <= (self.depth or 0) and self._node(prefix) is not None

    def sequences(self) -> Iterator[tuple[int, ...]]:
        """Every ID in the tree, in lexicographic order."""
        def walk(node: dict, path: tuple[int, ...]):
            if len(path) == self.depth:
                yield path
                return
            for c in sorted(node):
                yield from walk(node[c], path + (c,))

        if self.depth:
            yield from walk(self.root, ())

    def branching(self) -> list[float]:
        """Mean number of children per node at each depth (how much the tree narrows the choice)."""
        levels: list[list[int]] = [[] for _ in range(self.depth or 0)]

        def walk(node: dict, d: int):
            if d == self.depth:
                return
            levels[d].append(len(node))
            for child in node.values():
                walk(child, d + 1)

        walk(self.root, 0)
        return [sum(x) / len(x) if x else 0.0 for x in levels]

    def save(self, path: str | os.PathLike) -> Path:
        return write_json(path, {"depth": self.depth, "ids": [list(s) for s in self.sequences()]})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PrefixTree":
        obj = read_json(path)
        if not isinstance(obj, dict) or "ids" not in obj:
            raise ValueError(f"{path}: not a prefix tree file (expected an object with 'ids')")
        tree = cls(obj["ids"])
        if obj.get("depth") is not None and tree.depth not in (None, obj["depth"]):
            raise ValueError(f"{path}: depth {obj['depth']} disagrees with its IDs ({tree.depth})")
        return tree

    def __repr__(self) -> str:
        return f"PrefixTree({self._n} IDs of depth {self.depth})"

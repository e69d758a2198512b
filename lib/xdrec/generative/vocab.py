"""Semantic-ID tokens: one token per (level, code), one marker per domain.

An item whose ID is ``(12, 7, 3)`` is written ``<a_12><b_7><c_3>`` (levels a, b, c, ...), and
a user's history is the items' tokens in time order, each preceded by its domain's marker::

    <d_Food><a_12><b_7><c_3> <d_Kitchen><a_200><b_15><c_9> ... <d_Food>   -> next: <a_?><b_?><c_?>

The marker before each item says which domain it belongs to; the last marker asks for the next
item *in that domain*, which is how one causal model is queried for any target domain. The same
layout serves GenCDR's LLM (tokens appended to its text vocabulary) and TIGER's T5 (a vocabulary of
these tokens only).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SemanticIdVocab:
    """Token ids of the semantic-ID vocabulary, starting at ``offset`` (the size of the text vocabulary, or 0).

    Layout: codes of level 0 (``K_0`` tokens), level 1, ..., then one marker per domain.
    """

    codebook_sizes: tuple[int, ...]
    domains: tuple[str, ...]
    offset: int = 0

    def __post_init__(self):
        if len(self.codebook_sizes) > len(string.ascii_lowercase):
            raise ValueError("at most 26 levels")
        object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
        object.__setattr__(self, "domains", tuple(str(d) for d in self.domains))

    @property
    def n_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def level_offsets(self) -> list[int]:
        """Token id of code 0 of every level."""
        return (self.offset + np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]])).astype(int).tolist()

    @property
    def n_code_tokens(self) -> int:
        return int(sum(self.codebook_sizes))

    def __len__(self) -> int:
        return self.n_code_tokens + len(self.domains)

    def domain_token(self, domain: int) -> int:
        return self.offset + self.n_code_tokens + int(domain)

    def tokens(self) -> list[str]:
        """The token strings, in id order (what is added to a text tokenizer)."""
        names = [f"<{string.ascii_lowercase[l]}_{c}>" for l, k in enumerate(self.codebook_sizes) for c in range(k)]
        return names + [f"<d_{d}>" for d in self.domains]

    def item_tokens(self, ids: np.ndarray) -> np.ndarray:
        """``[n, L]`` codes -> ``[n, L]`` token ids."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape[-1] != self.n_levels or (ids < 0).any() or (ids >= np.asarray(self.codebook_sizes)).any():
            raise ValueError(f"IDs must have {self.n_levels} codes below {list(self.codebook_sizes)}")
        return ids + np.asarray(self.level_offsets)

    def history_tokens(self, items: Sequence[int], item_tokens: np.ndarray, item_domain: np.ndarray,
                       target_domain: int | None = None) -> np.ndarray:
        """``[marker, codes...]`` per item, then the marker of ``target_domain`` (if given)."""
        items = np.asarray(items, dtype=np.int64)
        block = np.concatenate([(self.offset + self.n_code_tokens + item_domain[items])[:, None], item_tokens[items]], 1)
        out = block.reshape(-1)
        if target_domain is not None:
            out = np.concatenate([out, [self.domain_token(target_domain)]])
        return out

    def describe(self, token_ids: Sequence[int]) -> str:
        """Token ids (of this vocabulary) as their strings."""
        names = self.tokens()
        return "".join(names[t - self.offset] if 0 <= t - self.offset < len(names) else f"[{t}]" for t in token_ids)

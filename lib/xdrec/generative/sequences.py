"""Batches of semantic-ID token sequences for generative recommenders.

Two shapes are built from a :class:`~xdrec.data.LeaveLastOutSplit` and the items' semantic IDs:

- :func:`next_id_batch` (a causal LM, GenCDR Eqs. 9-10): a user's training timeline as one token
  sequence ``[prefix] <d><a><b><c> <d><a><b><c> ...``; every code of every item after the first
  is a target, predicted from the tokens before it, so one forward pass trains all of a user's
  next-ID predictions at once. Per position the batch says which level is predicted next
  (``label_level``, -1 for none), its code (``labels``), and the domain of that item
  (``label_domain``), so a domain-specific loss (Eq. 10) keeps only its domain's targets.
- :func:`prompt_batch` (evaluation): history then the target domain's marker, left-padded, so
  the next tokens to generate are the target item's codes for every row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .vocab import SemanticIdVocab

IGNORE = -100


@dataclass
class ItemTokens:
    """Each item's ID tokens and domain: what turns item ids into token sequences."""

    vocab: SemanticIdVocab
    tokens: np.ndarray  # [n_items, L] token ids
    domain: np.ndarray  # [n_items] domain ids

    @classmethod
    def from_ids(cls, vocab: SemanticIdVocab, ids: np.ndarray, domain: np.ndarray) -> "ItemTokens":
        return cls(vocab, vocab.item_tokens(ids), np.asarray(domain, dtype=np.int64))

    def history(self, items: Sequence[int], target_domain: int | None = None, max_items: int | None = None) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        if max_items is not None:
            items = items[len(items) - max_items:] if len(items) > max_items else items
        bad = (items < 0) | (items >= len(self.tokens))
        if bad.any():
            raise ValueError(f"item id {int(items[bad][0])} has no semantic ID (items 0..{len(self.tokens) - 1})")
        return self.vocab.history_tokens(items, self.tokens, self.domain, target_domain)


def next_id_batch(sequences: Sequence[Sequence[int]], items: ItemTokens, *, max_items: int,
                  prefix: Sequence[int] = (), pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded causal-LM batch of whole timelines (last ``max_items`` items each)."""
    vocab = items.vocab
    L = vocab.n_levels
    offsets = np.asarray(vocab.level_offsets)
    rows = []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)[-max_items:]
        toks = np.concatenate([np.asarray(prefix, dtype=np.int64), items.history(seq)])
        n = len(toks)
        level = np.full(n, -1, dtype=np.int64)
        label = np.full(n, IGNORE, dtype=np.int64)
        dom = np.full(n, -1, dtype=np.int64)
        start = len(prefix)
        for j in range(1, len(seq)):  # item j's block starts at start + j*(L+1); its codes follow the marker
            block = start + j * (L + 1)
            for l in range(L):
                pos = block + l  # the token at pos predicts the token at pos + 1
                level[pos] = l
                label[pos] = toks[pos + 1] - offsets[l]
                dom[pos] = items.domain[seq[j]]
        rows.append((toks, level, label, dom))
    T = max(len(r[0]) for r in rows)

    def pad(i, value):
        out = np.full((len(rows), T), value, dtype=np.int64)
        for k, r in enumerate(rows):
            out[k, : len(r[i])] = r[i]
        return torch.from_numpy(out)

    ids = pad(0, pad_id)
    mask = torch.zeros_like(ids)
    for k, r in enumerate(rows):
        mask[k, : len(r[0])] = 1
    return {"input_ids": ids, "attention_mask": mask, "label_level": pad(1, -1), "labels": pad(2, IGNORE),
            "label_domain": pad(3, -1)}


def prompt_batch(histories: Sequence[Sequence[int]], target_domains: Sequence[int], items: ItemTokens, *,
                 max_items: int, prefix: Sequence[int] = (), pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded prompts ``[prefix] history <d_target>``; ``position_ids`` count real tokens only."""
    seqs = [np.concatenate([np.asarray(prefix, dtype=np.int64), items.history(h, d, max_items)])
            for h, d in zip(histories, target_domains)]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, T - len(s):] = torch.from_numpy(s)
        mask[k, T - len(s):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
            "domains": torch.as_tensor(list(target_domains), dtype=torch.long)}


def evaluation_rows(rows: pd.DataFrame, per_domain: int | None, seed: int) -> pd.DataFrame:
    """The rows an evaluation scores: :func:`sample_rows`, capped at a few rows per domain in a
    smoke run (:mod:`xdrec.smoke`). Every runner and :mod:`xdrec.comparison` call this, so
    generative models and ID baselines keep scoring identical rows."""
    from .. import smoke

    return sample_rows(rows, smoke.rows(per_domain), seed)


def sample_rows(rows: pd.DataFrame, per_domain: int | None, seed: int) -> pd.DataFrame:
    """At most ``per_domain`` rows of each target domain (a seeded sample; all rows if ``None``), sorted."""
    if per_domain is None:
        return rows.reset_index(drop=True)
    parts = [g if len(g) <= per_domain else g.sample(per_domain, random_state=seed) for _, g in rows.groupby("domain")]
    return pd.concat(parts).sort_values(["domain", "user"], kind="stable").reset_index(drop=True)


def user_timelines(train: Mapping[int, np.ndarray], min_items: int = 2) -> list[np.ndarray]:
    """Training timelines with at least ``min_items`` items (one target needs one item before it)."""
    return [np.asarray(s, dtype=np.int64) for _, s in sorted(train.items()) if len(s) >= min_items]

"""Training data of the UTGRec tokenizer: item texts and co-occurring items (Sec. 2.3.2).

"For each item within the user interaction sequence, we select its one-hop neighbors as positive
examples": the items right before and right after it in some training sequence. Each training
example pairs an item with one positive drawn uniformly from its neighbours (fresh every epoch).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from .encoder import tokenize_prompts


def cooccurring_items(sequences: Iterable[Sequence[int]], n_items: int) -> list[np.ndarray]:
    """Sorted one-hop neighbours of every item ``0 .. n_items - 1`` over ``sequences`` (never the item itself)."""
    neighbours: list[set[int]] = [set() for _ in range(n_items)]
    for seq in sequences:
        seq = [int(i) for i in seq]
        for a, b in zip(seq[:-1], seq[1:]):
            if not (0 <= a < n_items and 0 <= b < n_items):
                raise ValueError(f"item id {a if not 0 <= a < n_items else b} outside 0..{n_items - 1}")
            if a != b:
                neighbours[a].add(b)
                neighbours[b].add(a)
    return [np.array(sorted(s), dtype=np.int64) for s in neighbours]


def sample_positives(neighbours: Sequence[np.ndarray], items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One co-occurring item per item (an item that co-occurs with nothing is its own positive)."""
    out = np.empty(len(items), dtype=np.int64)
    for k, i in enumerate(items):
        nb = neighbours[int(i)]
        out[k] = nb[rng.integers(len(nb))] if len(nb) else i
    return out


class TokenizerCollator:
    """Item ids -> the batch of :meth:`UniversalItemTokenizer.forward` (items and sampled positives).

    ``texts``: every item's text; ``tokenizer``: the LM's; the text targets are the first
    ``max_text_tokens`` tokens of each text (right-padded), the prompts carry the same cut text.
    """

    def __init__(self, tokenizer, texts: Sequence[str], neighbours: Sequence[np.ndarray] | None, *, n_codes: int,
                 max_text_tokens: int, seed: int = 0):
        self.tokenizer, self.texts, self.neighbours = tokenizer, list(texts), neighbours
        self.n_codes, self.max_text_tokens = n_codes, max_text_tokens
        self.rng = np.random.default_rng(seed)

    def _items(self, items: np.ndarray, prefix: str) -> dict[str, torch.Tensor]:
        texts = [self.texts[int(i)] for i in items]
        p = tokenize_prompts(self.tokenizer, texts, self.n_codes, self.max_text_tokens)
        empty = [self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.tokenizer.sep_token_id]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"][: self.max_text_tokens] or empty for t in texts]
        width = max(len(x) for x in ids)
        text_ids = torch.zeros(len(ids), width, dtype=torch.long)
        text_mask = torch.zeros(len(ids), width, dtype=torch.long)
        for k, x in enumerate(ids):
            text_ids[k, : len(x)] = torch.tensor(x)
            text_mask[k, : len(x)] = 1
        return {f"{prefix}prompt_ids": p["input_ids"], f"{prefix}prompt_mask": p["attention_mask"],
                f"{prefix}text_ids": text_ids, f"{prefix}text_mask": text_mask}

    def __call__(self, items: Sequence[int]) -> dict[str, torch.Tensor]:
        items = np.asarray(items, dtype=np.int64)
        batch = {"items": torch.from_numpy(items), **self._items(items, "")}
        if self.neighbours is not None:
            pos = sample_positives(self.neighbours, items, self.rng)
            batch.update({"positives": torch.from_numpy(pos), **self._items(pos, "pos_")})
        return batch

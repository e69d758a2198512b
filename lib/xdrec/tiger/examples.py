"""TIGER's training examples: every next item of every training timeline (Rajput et al. 2023, Sec. 4).

A timeline ``i_1, i_2, ..., i_n`` yields ``n - 1`` examples: for ``j = 2..n`` the history is up to
``max_items`` items before ``i_j`` (the most recent ones) and the target is ``i_j``, asked for with
its own domain's marker. Each timeline is tokenised once; an example is a slice of its tokens plus
the target marker, so batches are cheap to rebuild every epoch.

Batches are shuffled every epoch (seeded by ``(seed, epoch)``) and length-bucketed: examples are
sorted by history length within chunks of ``bucket`` batches, then the batches are shuffled, so a
batch pads to a similar length (most histories are short; a few reach ``max_items`` items).

``tokens_per_epoch`` caps the encoder tokens of an epoch (a fresh seeded sample of examples each
epoch, taken in shuffled order until the budget is spent, so successive epochs cover different
examples). Training cost grows with the encoder tokens, so the cap spends about the same compute per
epoch on a set of short histories (Sports+Tools: 14 tokens per example) as on one of long histories
(Food-Kitchen: 59); on a CPU budget it also validates, and can stop early, more often than once per
pass over all examples. ``None`` uses every example every epoch, as TIGER does.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from .model import TIGER, pad_right


class NextItemExamples:
    """Every (timeline, position) pair of the training timelines, as batches for :func:`xdrec.training.fit`.

    Calling the object with an epoch number returns that epoch's batches (a sized iterable of
    ``{"input_ids", "attention_mask", "codes"}`` dicts), built as they are consumed.
    """

    def __init__(self, timelines: Sequence[Sequence[int]], model: TIGER, *, batch_size: int, seed: int = 0,
                 bucket: int = 32, tokens_per_epoch: int | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if tokens_per_epoch is not None and tokens_per_epoch < 1:
            raise ValueError("tokens_per_epoch must be >= 1 (or None for all examples)")
        self.model, self.batch_size, self.seed, self.bucket = model, int(batch_size), int(seed), int(bucket)
        self.max_tokens = tokens_per_epoch
        self.timelines = [np.asarray(s, dtype=np.int64) for s in timelines]
        self.width = model.n_levels + 1  # tokens per item: marker + codes
        self.tokens = [model.items.history(s) for s in self.timelines]  # names an item without an ID
        tl, pos = [], []
        for i, s in enumerate(self.timelines):
            tl.append(np.full(max(len(s) - 1, 0), i, dtype=np.int64))
            pos.append(np.arange(1, len(s), dtype=np.int64))
        self.timeline = np.concatenate(tl) if tl else np.zeros(0, dtype=np.int64)
        self.position = np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64)
        self.history_len = np.minimum(self.position, model.config.max_items)
        self.cost = self.history_len * self.width + 1  # encoder tokens of every example
        if not len(self.timeline):
            raise ValueError("no training examples: every timeline has fewer than 2 items")

    def __len__(self) -> int:
        """Number of examples (one per target)."""
        return len(self.timeline)

    @property
    def examples_per_epoch(self) -> int:
        """Examples of one epoch (about that many when ``tokens_per_epoch`` caps it: each sample differs)."""
        if self.max_tokens is None or self.max_tokens >= self.cost.sum():
            return len(self)
        return max(1, int(round(self.max_tokens / self.cost.mean())))

    @property
    def tokens_per_epoch(self) -> int:
        """Encoder tokens of one epoch (histories and target markers, without padding)."""
        total = int(self.cost.sum())
        return total if self.max_tokens is None else min(total, int(self.max_tokens))

    def example(self, e: int) -> tuple[np.ndarray, int]:
        """Encoder tokens and target item of example ``e``."""
        i, j = int(self.timeline[e]), int(self.position[e])
        target = int(self.timelines[i][j])
        start = j - int(self.history_len[e])
        toks = self.tokens[i][start * self.width: j * self.width]
        return np.append(toks, self.model.vocab.domain_token(int(self.model.item_domain[target]))), target

    def make_batch(self, examples: Sequence[int]) -> dict[str, torch.Tensor]:
        seqs, targets = zip(*(self.example(int(e)) for e in examples))
        input_ids, mask = pad_right(seqs)
        return {"input_ids": input_ids, "attention_mask": mask, "codes": self.model.targets(targets)}

    def order(self, epoch: int) -> list[np.ndarray]:
        """Example indices of every batch of ``epoch`` (shuffled, length-bucketed, seeded)."""
        rng = np.random.default_rng(self.seed * 100_003 + epoch)
        perm = rng.permutation(len(self))
        if self.max_tokens is not None:  # the examples that fit the token budget, in shuffled order
            perm = perm[: max(1, int(np.searchsorted(np.cumsum(self.cost[perm]), self.max_tokens, side="right")))]
        chunk = self.batch_size * self.bucket
        batches = []
        for s in range(0, len(perm), chunk):
            part = perm[s:s + chunk]
            part = part[np.argsort(self.history_len[part], kind="stable")]
            batches += [part[j:j + self.batch_size] for j in range(0, len(part), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def __call__(self, epoch: int) -> "_EpochBatches":
        return _EpochBatches(self, self.order(epoch))


class _EpochBatches:
    """One epoch's batches, built lazily (sized, so progress bars know the total)."""

    def __init__(self, source: NextItemExamples, order: list[np.ndarray]):
        self.source, self.order = source, order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for b in self.order:
            yield self.source.make_batch(b)

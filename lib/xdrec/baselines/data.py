"""Data plumbing shared by the ID-based sequential baselines (SASRec, BERT4Rec).

Item-id convention
------------------
Item ids are the library's global, 0-based ids ``0 .. n_items - 1`` (as in
``LeaveLastOutSplit.train`` and the ``history``/``target`` columns of its ``valid``/``test``
frames), so a model's score column ``j`` is item ``j``.  Two extra embedding rows follow:

- ``PAD = n_items``      — left padding of short sequences (its embedding is zero and unused);
- ``MASK = n_items + 1`` — BERT4Rec's cloze token.

Sequences are **left-padded**: the most recent item always sits in the last slot, which is
where SASRec and BERT4Rec read their prediction from.  Batches are padded only to the longest
sequence in the batch (at most ``max_len``), and the models index positional embeddings by slot
counted from the right, so a short batch gives exactly what padding to ``max_len`` would.

Training examples are built on the fly by collators from each user's chronological training
sequence; their randomness (negatives, masks) comes from torch's global generator, so
:func:`xdrec.training.fit` can checkpoint and resume it.

A single-domain baseline can either keep the global ids (sequences simply contain one domain's
items, and evaluation ranks only that domain's items via ``candidate_items``) or renumber the
domain's items ``0 .. m-1`` with :func:`restrict_to_items`, which shrinks the softmax.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100
"""Label of positions that carry no training target (padding, unmasked BERT4Rec tokens)."""


def pad_id(n_items: int) -> int:
    return n_items


def mask_id(n_items: int) -> int:
    return n_items + 1


def left_pad(sequences: Sequence[Sequence[int]], max_len: int, pad_value: int, width: int | None = None) -> torch.Tensor:
    """Stack sequences into a ``[n, width]`` LongTensor, keeping each one's last ``max_len`` items.

    ``width`` defaults to the longest (truncated) sequence, so a batch is no wider than needed.
    """
    seqs = [np.asarray(s, dtype=np.int64).reshape(-1)[-max_len:] if max_len > 0 else np.zeros(0, np.int64)
            for s in sequences]
    if width is None:
        width = max((len(s) for s in seqs), default=0)
    out = np.full((len(seqs), width), pad_value, dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, width - len(s):] = s[-width:]
    return torch.from_numpy(out)


class SequenceDataset(torch.utils.data.Dataset):
    """One example per user: the user's chronological training sequence of item ids.

    Accepts ``LeaveLastOutSplit.train`` (``{user: item ids}``) or any iterable of sequences.
    Sequences shorter than ``min_len`` (default 2: one input and one target) are dropped.
    """

    def __init__(self, sequences: Mapping[int, Sequence[int]] | Iterable[Sequence[int]], min_len: int = 2):
        if isinstance(sequences, Mapping):
            users, seqs = list(sequences.keys()), list(sequences.values())
        else:
            seqs = list(sequences)
            users = list(range(len(seqs)))
        keep = [i for i, s in enumerate(seqs) if len(s) >= min_len]
        self.users = [users[i] for i in keep]
        self.sequences = [np.asarray(seqs[i], dtype=np.int64).reshape(-1) for i in keep]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.sequences[i]


class SASRecCollator:
    """Next-item examples for SASRec (Kang & McAuley 2018, Sec. 3.5 "Network Training").

    From the last ``max_len + 1`` items ``s_1..s_T`` of a sequence, the input is ``s_1..s_{T-1}``
    and the label at every position is the following item ``s_2..s_T`` (``IGNORE_INDEX`` at
    padding).  With ``negatives=True`` (the BCE loss) each position also gets one item drawn
    uniformly from the items the user never interacted with, as in the authors' code.
    """

    def __init__(self, n_items: int, max_len: int = 50, negatives: bool = False):
        self.n_items, self.max_len, self.negatives = n_items, max_len, negatives

    def __call__(self, batch: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        windows = [s[-(self.max_len + 1):] for s in batch]
        input_ids = left_pad([w[:-1] for w in windows], self.max_len, pad_id(self.n_items))
        labels = left_pad([w[1:] for w in windows], self.max_len, IGNORE_INDEX)
        out = {"input_ids": input_ids, "labels": labels}
        if self.negatives:
            out["negatives"] = self._sample_negatives(batch, labels)
        return out

    def _sample_negatives(self, batch: Sequence[np.ndarray], labels: torch.Tensor) -> torch.Tensor:
        negs = torch.randint(0, self.n_items, labels.shape)
        for i, seq in enumerate(batch):
            seen = torch.from_numpy(np.unique(seq))
            if len(seen) >= self.n_items:
                raise ValueError("a user interacted with every item; no negative exists")
            bad = torch.isin(negs[i], seen)
            while bool(bad.any()):  # rejection sampling: resample the collisions only
                negs[i, bad] = torch.randint(0, self.n_items, (int(bad.sum()),))
                bad = torch.isin(negs[i], seen)
        negs[labels == IGNORE_INDEX] = pad_id(self.n_items)
        return negs


class BERT4RecCollator:
    """Cloze examples for BERT4Rec (Sun et al. 2019, Sec. 3.6 "Model Learning").

    From the last ``max_len`` items of a sequence, ``max(1, round(len * mask_prob))`` randomly
    chosen positions are replaced by ``MASK`` (always the mask token, as in the authors' code,
    rather than BERT's 80/10/10 rule) and labelled with the original item; every other position
    is labelled ``IGNORE_INDEX``.  Masks are redrawn every epoch (dynamic masking) instead of the
    authors' ten static copies (``dupe_factor``), and only the most recent window is used.
    """

    def __init__(self, n_items: int, max_len: int = 50, mask_prob: float = 0.2):
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError("mask_prob must lie in (0, 1]")
        self.n_items, self.max_len, self.mask_prob = n_items, max_len, mask_prob

    def __call__(self, batch: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        input_ids = left_pad(batch, self.max_len, pad_id(self.n_items))
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        width = input_ids.shape[1]
        for i, seq in enumerate(batch):
            length = min(len(seq), self.max_len)
            n_mask = max(1, int(round(length * self.mask_prob)))
            slots = width - length + torch.randperm(length)[:n_mask]
            labels[i, slots] = input_ids[i, slots]
            input_ids[i, slots] = mask_id(self.n_items)
        return {"input_ids": input_ids, "labels": labels}


# ----------------------------------------------------------------------------------------------
# Optional renumbering of one domain's items
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ItemIndex:
    """Renumbering of a subset of global item ids as local ids ``0 .. len - 1`` (sorted order)."""

    global_ids: np.ndarray

    @classmethod
    def of(cls, item_ids: Iterable[int]) -> "ItemIndex":
        return cls(np.unique(np.asarray(list(item_ids), dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.global_ids)

    def to_local(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Local ids; ``-1`` for items outside the subset."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.global_ids) == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.global_ids, ids).clip(max=len(self.global_ids) - 1)
        return np.where(self.global_ids[pos] == ids, pos, -1)

    def to_global(self, local_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.global_ids[np.asarray(local_ids, dtype=np.int64)]


def restrict_to_items(train: Mapping[int, Sequence[int]], rows=None, item_ids: Iterable[int] = ()):
    """Keep only ``item_ids`` (e.g. one domain's items) and renumber them ``0 .. m-1``.

    Returns ``(train_local, rows_local, index)``: sequences with the other items removed, the
    evaluation rows (``history``/``target`` frame, or ``None``) with histories filtered and rows
    whose target lies outside the subset dropped, and the :class:`ItemIndex` for mapping back.
    """
    index = ItemIndex.of(item_ids)

    def local(seq) -> np.ndarray:
        ids = index.to_local(np.asarray(seq, dtype=np.int64))
        return ids[ids >= 0]

    train_local = {u: local(s) for u, s in train.items()}
    rows_local = None
    if rows is not None:
        targets = index.to_local(rows["target"].to_numpy())
        rows_local = rows.loc[targets >= 0].copy()
        rows_local["target"] = targets[targets >= 0]
        rows_local["history"] = [local(h).tolist() for h in rows_local["history"]]
        rows_local = rows_local.reset_index(drop=True)
    return train_local, rows_local, index

"""X-Cross's task: sequential recommendation as a multiple-choice problem (Sec. 3.1.2-3.1.3, 4.1.2).

One *choice row* is a user's history, the true next item and ``n_neg`` negatives drawn by
popularity (29 in the paper: 30 choices). Each choice becomes one prompt (Figure 1)::

    History: 1: <title 1>. 2: <title 2>. ... Candidate: <candidate title>

with every title cut to its first 8 words (Sec. 4.1.2) and at most ``max_history`` (15) items,
the most recent ones. The encoder scores each prompt independently, so the target's position
among the choices (column 0 here) carries no information.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..metrics import sample_negatives

TITLE_WORDS = 8  # Sec. 4.1.2: "we truncate each item's title to a maximum of 8 words"
MAX_HISTORY = 15  # Sec. 4.1.1: histories of 5 to 15 items


def cut_title(title: str, words: int = TITLE_WORDS) -> str:
    """The first ``words`` whitespace-separated words of ``title``."""
    return " ".join(str(title).split()[:words])


def history_text(titles: Sequence[str]) -> str:
    """``"History: 1: a. 2: b."``; titles already cut, oldest first."""
    return "History: " + " ".join(f"{i}: {t.rstrip('.')}." for i, t in enumerate(titles, 1))


def prompt_text(history_titles: Sequence[str], candidate_title: str) -> str:
    """The prompt of Figure 1 for one (history, candidate) pair."""
    return f"{history_text(history_titles)} Candidate: {candidate_title}"


@dataclass
class ChoiceRows:
    """Rows of the multiple-choice task of one domain.

    Attributes:
        users: ``[n]`` user ids; ``histories``: list of ``n`` item-id arrays (oldest first).
        candidates: ``[n, 1 + n_neg]`` item ids, column 0 the true next item.
    """

    users: np.ndarray
    histories: list[np.ndarray]
    candidates: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_choices(self) -> int:
        return int(self.candidates.shape[1])

    def subset(self, index: Sequence[int] | np.ndarray) -> "ChoiceRows":
        index = np.asarray(index, dtype=np.int64)
        return ChoiceRows(self.users[index], [self.histories[i] for i in index], self.candidates[index])


def choice_rows(rows: pd.DataFrame, popularity: np.ndarray, n_neg: int, seed: int,
                max_rows: int | None = None) -> ChoiceRows:
    """Choice rows from a ``user/history/target`` frame (:class:`xdrec.data.UserSplit` parts).

    ``popularity[i]`` is item ``i``'s interaction count among the training users of the domain:
    negatives are drawn in proportion to it, never the target nor an item of the history
    (:func:`xdrec.metrics.sample_negatives`). ``max_rows`` keeps a seeded sample of the rows
    (in their original order). The same ``seed`` gives the same rows and candidates, so every
    model is evaluated on identical choices (paired tests).
    """
    rng = np.random.default_rng(seed)
    frame = rows.reset_index(drop=True)
    if max_rows is not None and len(frame) > max_rows:
        frame = frame.iloc[np.sort(rng.choice(len(frame), size=max_rows, replace=False))].reset_index(drop=True)
    histories = [np.asarray(h, dtype=np.int64) for h in frame["history"]]
    targets = frame["target"].to_numpy(dtype=np.int64)
    if (popularity[targets] < 0).any():
        raise ValueError("negative popularity")
    candidates = sample_negatives(targets, popularity, n_neg=n_neg, exclude=[h.tolist() for h in histories], rng=rng)
    return ChoiceRows(frame["user"].to_numpy(dtype=np.int64), histories, candidates)


class ChoiceDataset(torch.utils.data.Dataset):
    """Index -> row number (the collator builds the prompts)."""

    def __init__(self, rows: ChoiceRows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return i


class PromptCollator:
    """Row numbers -> a tokenised batch ``input_ids/attention_mask/token_type_ids`` of shape ``[B, C, T]``.

    Args:
        tokenizer: a Hugging Face tokenizer (truncation keeps the end of a too-long prompt: the
            candidate and the most recent history items).
        titles: the (already cut) title of every item id of the domain.
        rows: the :class:`ChoiceRows` the indices refer to.
    """

    def __init__(self, tokenizer, titles: Sequence[str], rows: ChoiceRows, *, max_history: int = MAX_HISTORY,
                 max_length: int = 512):
        self.tokenizer, self.titles, self.rows = tokenizer, titles, rows
        self.max_history, self.max_length = max_history, max_length

    def prompts(self, index: Sequence[int]) -> list[str]:
        out = []
        for i in index:
            hist = [self.titles[j] for j in self.rows.histories[i][-self.max_history:]]
            out.extend(prompt_text(hist, self.titles[c]) for c in self.rows.candidates[i])
        return out

    def __call__(self, index: Sequence[int]) -> dict[str, torch.Tensor]:
        index = [int(i) for i in index]
        side = self.tokenizer.truncation_side
        self.tokenizer.truncation_side = "left"
        try:
            enc = self.tokenizer(self.prompts(index), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        finally:
            self.tokenizer.truncation_side = side
        shape = (len(index), self.rows.n_choices, -1)
        batch = {k: enc[k].view(shape) for k in ("input_ids", "attention_mask")}
        if "token_type_ids" in enc:
            batch["token_type_ids"] = enc["token_type_ids"].view(shape)
        return batch


def choice_loader(tokenizer, titles, rows: ChoiceRows, batch_size: int, *, shuffle: bool, seed: int = 0,
                  max_history: int = MAX_HISTORY, max_length: int = 512) -> torch.utils.data.DataLoader:
    """A DataLoader of tokenised choice rows (``[B, C, T]`` tensors)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        ChoiceDataset(rows), batch_size=batch_size, shuffle=shuffle, generator=generator,
        collate_fn=PromptCollator(tokenizer, titles, rows, max_history=max_history, max_length=max_length))

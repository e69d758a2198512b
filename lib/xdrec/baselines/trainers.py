"""One-call training of the baselines on a leave-last-out split with :func:`xdrec.training.fit`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..metrics import DEFAULT_KS
from ..training import TrainConfig, TrainResult, fit
from .bert4rec import BERT4Rec
from .data import SequenceDataset
from .evaluation import evaluate
from .sasrec import SASRec


def sequence_loader(model, sequences, batch_size: int, shuffle: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader of one example per user sequence, batched with ``model.collator()``."""
    return torch.utils.data.DataLoader(
        SequenceDataset(sequences), batch_size=batch_size, shuffle=shuffle, collate_fn=model.collator()
    )


def train_sequential(
    model,
    split,
    config: TrainConfig | None = None,
    *,
    candidate_items: Sequence[int] | Mapping[str, Any] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    metric: str = "recall@10",
    eval_batch_size: int = 512,
) -> TrainResult:
    """Train ``model`` on ``split.train`` with validation on ``split.valid`` (if not ``None``).

    ``split`` is a ``LeaveLastOutSplit`` or anything with ``train`` (``{user: item ids}``) and
    ``valid`` (``history``/``target`` frame) attributes.  ``candidate_items`` is passed to
    :func:`~xdrec.baselines.evaluation.evaluate` (a mapping ``domain -> items`` ranks each row
    among its own domain's items).  The model ends up holding its best-validation weights.
    """
    config = config or TrainConfig()
    loader = sequence_loader(model, split.train, config.batch_size)
    valid = getattr(split, "valid", None)
    evaluate_fn = None
    if valid is not None and len(valid):
        def evaluate_fn(m):
            return evaluate(m, valid, ks=ks, candidate_items=candidate_items, batch_size=eval_batch_size)

    return fit(model, loader, evaluate_fn, config, metric=metric)


def train_sasrec(
    split,
    n_items: int,
    config: TrainConfig | None = None,
    *,
    loss: str = "ce",
    candidate_items=None,
    ks: Sequence[int] = DEFAULT_KS,
    **model_kwargs,
) -> tuple[SASRec, TrainResult]:
    """Build a :class:`SASRec` (``model_kwargs``: hidden, n_blocks, n_heads, max_len, dropout), train it."""
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    model = SASRec(n_items, loss=loss, **model_kwargs)
    return model, train_sequential(model, split, config, candidate_items=candidate_items, ks=ks)


def train_bert4rec(
    split,
    n_items: int,
    config: TrainConfig | None = None,
    *,
    mask_prob: float = 0.2,
    candidate_items=None,
    ks: Sequence[int] = DEFAULT_KS,
    **model_kwargs,
) -> tuple[BERT4Rec, TrainResult]:
    """Build a :class:`BERT4Rec` (``model_kwargs``: hidden, n_layers, n_heads, max_len, dropout), train it."""
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    model = BERT4Rec(n_items, mask_prob=mask_prob, **model_kwargs)
    return model, train_sequential(model, split, config, candidate_items=candidate_items, ks=ks)

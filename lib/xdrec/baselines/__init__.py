"""ID-based sequential recommenders used as baselines: SASRec and BERT4Rec.

Item ids are the library's global 0-based ids; ``PAD = n_items`` and ``MASK = n_items + 1``
(see :mod:`xdrec.baselines.data`).  Typical use::

    from xdrec.baselines import train_sasrec, evaluate
    model, result = train_sasrec(split, dataset.n_items, TrainConfig(epochs=200, patience=10),
                                 loss="ce", candidate_items={d: dataset.domain_items(d) for d in domains})
    test_metrics = evaluate(model, split.test, candidate_items=...)
"""
from .base import MultiHeadSelfAttention, SequentialRecommender, attention_mask
from .bert4rec import BERT4Rec
from .data import (
    IGNORE_INDEX,
    BERT4RecCollator,
    ItemIndex,
    SASRecCollator,
    SequenceDataset,
    left_pad,
    mask_id,
    pad_id,
    restrict_to_items,
)
from .evaluation import evaluate, evaluate_sampled
from .sasrec import SASRec
from .trainers import sequence_loader, train_bert4rec, train_sasrec, train_sequential

__all__ = [
    "BERT4Rec",
    "BERT4RecCollator",
    "IGNORE_INDEX",
    "ItemIndex",
    "MultiHeadSelfAttention",
    "SASRec",
    "SASRecCollator",
    "SequenceDataset",
    "SequentialRecommender",
    "attention_mask",
    "evaluate",
    "evaluate_sampled",
    "left_pad",
    "mask_id",
    "pad_id",
    "restrict_to_items",
    "sequence_loader",
    "train_bert4rec",
    "train_sasrec",
    "train_sequential",
]

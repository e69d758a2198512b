"""A dataset's items with their text embeddings, checked: what every tokenizer (GenCDR, TIGER,
LETTER) quantises. An empty text or a non-finite embedding raises an error naming the item."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import data


def load_items(dataset: str, domains: Sequence[str] | None = None, *, data_root=None, text_encoder: dict | None = None,
               progress: bool = True) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """Items (item, item_key, domain, domain_name, text), domain names, and their MiniLM embeddings.

    Raises a ``ValueError`` naming the item for an empty text or a non-finite embedding.
    """
    from .text_encoder import embed_item_texts

    full = data.load(dataset, root=data_root)
    every = full.items.reset_index(drop=True).copy()
    every["domain_name"] = every.domain.map(dict(enumerate(full.domains)))
    check_texts(every, dataset)
    te = text_encoder or {}
    # embed every item of the set (the cache notebook 01 filled), then keep the chosen domains
    emb = embed_item_texts(every.text.tolist(), model_path=te.get("path"), batch_size=te.get("batch_size", 256),
                           progress=progress)
    ds = full
    if domains:
        unknown = [d for d in domains if d not in full.domains]
        if unknown:
            raise ValueError(f"{dataset}: unknown domain(s) {unknown}; it has {full.domains}")
        ds = full.subset(list(domains))
    items = ds.items.reset_index(drop=True).copy()
    items["domain_name"] = items.domain.map(dict(enumerate(ds.domains)))
    row_of = pd.Series(np.arange(len(every)), index=pd.MultiIndex.from_frame(every[["domain_name", "item_key"]]))
    emb = emb[row_of.loc[list(zip(items.domain_name, items.item_key))].to_numpy()]
    check_embeddings(emb, items, dataset)
    return items, list(ds.domains), emb


def check_texts(items: pd.DataFrame, dataset: str = "items") -> None:
    empty = items.text.isna() | (items.text.astype(str).str.strip() == "")
    if empty.any():
        row = items[empty].iloc[0]
        raise ValueError(f"{dataset}: item {row.item_key} ({row.domain_name}) has no text; "
                         f"{int(empty.sum())} items in all: load the set with a missing-text policy that fills or drops them")


def check_embeddings(emb: np.ndarray, items: pd.DataFrame, dataset: str = "items") -> None:
    bad = np.flatnonzero(~np.isfinite(emb).all(1))
    if len(bad):
        row = items.iloc[bad[0]]
        raise ValueError(f"{dataset}: the embedding of item {row.item_key} ({row.domain_name}, row {bad[0]}) holds NaN or "
                         f"inf ({len(bad)} such items): recompute the embeddings")

"""Training UTGRec's universal item tokenizer (Secs. 2.3-2.4) on ``amazon18-xcross``.

1. :func:`pretrain` trains the whole tokenizer (LoRA, code tokens, MLP, codebooks, decoders) on the
   items of the *source* domains together, with co-occurring items from their training sequences.
2. :func:`finetune` starts from it on the held-out *target* domain with the codebook vectors
   ``E^r``, ``E^f`` frozen (Sec. 2.4.2) and gives every target item its identifier.
3. :func:`source_ids` gives the source items identifiers from the pre-trained tokenizer (the
   recommender's multi-domain pre-training data, Sec. 2.4.1).

Identifiers have ``L`` codes; items that share all of them are separated by moving the last code to
the nearest free leaf code (:func:`xdrec.utgrec.codebooks.unique_ids`). Co-occurrence uses each
user's in-domain sequence without its last two items (the validation and test targets of the
leave-last-out split the recommender is evaluated on). The profile's ``max_items_per_domain`` caps
the items a tokenizer *trains* on (the most frequent ones); every item of the target domain is
encoded. ``max_source_items_per_domain`` (``None`` at paper scale) caps the source domains
themselves, for the tokenizer and the recommender's pre-training alike (:func:`load_domains`).

Cached and resumable like the other stages: each run trains through :func:`xdrec.training.fit` in
a checkpoint folder keyed by its settings and by the code (:data:`FINGERPRINT_MODULES`)::

    checkpoints/utgrec/<profile>/pretrain-<sources>-seed<s>-<key>/   fit/  tokenizer.safetensors  tokenizer.json
    checkpoints/utgrec/<profile>/finetune-<target>-seed<s>-<key>/    fit/  tokenizer.safetensors  ids.parquet  ids.json

Command line: ``python -m xdrec.utgrec.train_tokenizer --target Tools --profile book``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..io import (is_main_process, load_safetensors, read_json, save_safetensors, sha256_text, wait_for_main,
                  write_json, write_parquet)
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint
from ..training import TrainConfig, fit
from .codebooks import unique_ids
from .data import TokenizerCollator, cooccurring_items
from .tokenizer import UniversalItemTokenizer

FINGERPRINT_MODULES = ("xdrec.utgrec.codebooks", "xdrec.utgrec.reconstruction", "xdrec.utgrec.encoder",
                       "xdrec.utgrec.tokenizer", "xdrec.utgrec.data", "xdrec.utgrec.train_tokenizer", "xdrec.training",
                       "xdrec.data", "xdrec.encoders", "xdrec.quantization")


def settings(profile: str | dict, overrides: dict | None = None) -> dict[str, Any]:
    """The profile's ``utgrec_tokenizer`` section with ``overrides`` (an ablation's ``tree``, ``mu``, ``eta``)."""
    cfg = dict((get_profile(profile) if isinstance(profile, str) else profile)["utgrec_tokenizer"])
    unknown = set(overrides or {}) - set(cfg)
    if unknown:
        raise ValueError(f"unknown tokenizer setting(s) {sorted(unknown)}")
    return {**cfg, **(overrides or {})}


# ====================================================================== data
@dataclass
class DomainItems:
    """The items of some domains: global ids, texts, and co-occurring items (indices into ``items``)."""

    domains: list[str]
    items: pd.DataFrame  # item (global id), domain_name, text, count (training interactions)
    neighbours: list[np.ndarray]  # per row of ``items``: rows of co-occurring items

    def training_rows(self, per_domain: int | None) -> np.ndarray:
        """Rows to train on: every item, or the ``per_domain`` most frequent of each domain."""
        if per_domain is None:
            return np.arange(len(self.items))
        keep = (self.items.reset_index().sort_values(["count", "index"], ascending=[False, True])
                .groupby("domain_name").head(per_domain)["index"])
        return np.sort(keep.to_numpy())


def load_domains(dataset: str, domains: Sequence[str], data_root=None, max_items_per_domain: int | None = None):
    """``dataset`` restricted to ``domains`` and, with a cap, to each domain's most-interacted items.

    The cap is the ``book`` profile's way to keep the source domains affordable on a CPU (every
    source item is encoded through the LM): items are ranked by their interactions in the
    training sequences (each user's sequence without its last two items), ties by item id;
    interactions with the other items are dropped (:meth:`~xdrec.data.MultiDomainDataset.filter_items`).
    """
    from .. import data as xdata

    ds = xdata.load(dataset, data_root, domains=list(domains))
    if max_items_per_domain is None:
        return ds
    train = [s[:-2] for d in ds.domains for s in ds.sequences(d).values()]
    counts = np.bincount(np.concatenate(train) if train else np.zeros(0, int), minlength=ds.n_items)
    keep = np.zeros(ds.n_items, dtype=bool)
    for d in ds.domains:
        items = ds.domain_items(d)
        order = np.lexsort((items, -counts[items]))
        keep[items[order[:max_items_per_domain]]] = True
    return ds.filter_items(keep)


def domain_items(dataset: str, domains: Sequence[str], data_root=None, max_items_per_domain: int | None = None
                 ) -> DomainItems:
    """The items of ``domains`` (capped as :func:`load_domains`), their texts and co-occurring items."""
    ds = load_domains(dataset, domains, data_root, max_items_per_domain)
    texts = ds.item_texts()
    rows, seqs = [], []
    for d in domains:
        items = ds.domain_items(d)
        train = [s[:-2] for s in ds.sequences(d).values()]  # leave-last-out: no validation / test target
        seqs += train
        counts = np.bincount(np.concatenate(train) if train else np.zeros(0, int), minlength=ds.n_items)
        rows += [(int(i), d, texts[int(i)], int(counts[i])) for i in items]
    table = pd.DataFrame(rows, columns=["item", "domain_name", "text", "count"])
    local = np.full(ds.n_items, -1, dtype=np.int64)
    local[table["item"].to_numpy()] = np.arange(len(table))
    neighbours = cooccurring_items(([int(local[i]) for i in s] for s in seqs), len(table))
    return DomainItems(list(domains), table, neighbours)


def workload(cfg: dict, n_items: dict[str, int], target: str) -> dict[str, int]:
    """How many items one held-out ``target`` puts through the LM, by :func:`finetune` with its pre-training:

    ``encoded`` (forward only): the k-means sample of the pre-training items, every (capped) source
    item for its ID, every target item for its ID; ``trained`` (item-steps of Eq. 13, each with a
    co-occurring item): the pre-training items for ``pretrain.epochs``, the target's training items
    for ``finetune.epochs``. ``n_items``: every domain's item count.
    """
    src_cap, train_cap = cfg.get("max_source_items_per_domain"), cfg["max_items_per_domain"]
    sources = [d for d in n_items if d != target]
    src = {d: min(n_items[d], src_cap or n_items[d]) for d in sources}
    train_src = sum(min(n, train_cap or n) for n in src.values())
    train_tgt = min(n_items[target], train_cap or n_items[target])
    return {"encoded": train_src + sum(src.values()) + n_items[target],
            "trained": train_src * cfg["pretrain"]["epochs"] + train_tgt * cfg["finetune"]["epochs"]}


# ====================================================================== model
def load_lm(cfg: dict, seed: int = 0):
    """(causal LM, its tokenizer): ``"tiny"`` (random 2-layer Llama with MiniLM's tokenizer, for tests),
    ``"smollm2-135m"``, or a local folder (``$XDREC_LLM`` replaces the paper's Qwen2-VL-2B)."""
    from ..encoders.backbones import load_causal_lm, tiny_causal_lm

    name = cfg["backbone"]
    if name == "tiny":
        from transformers import AutoTokenizer

        from ..encoders import minilm_path

        tok = AutoTokenizer.from_pretrained(minilm_path())
        return tiny_causal_lm(vocab_size=len(tok), seed=seed), tok
    if name not in ("smollm2-135m", "smollm2") and os.environ.get("XDREC_LLM"):
        name = os.environ["XDREC_LLM"]
    return load_causal_lm(name, num_hidden_layers=cfg.get("num_layers"), role="content-lm")


def build(cfg: dict, seed: int = 0) -> tuple[UniversalItemTokenizer, Any]:
    lm, tok = load_lm(cfg, seed)
    torch.manual_seed(seed)
    return UniversalItemTokenizer(lm, len(tok), cfg), tok


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _collator(tok, items: DomainItems, cfg: dict, seed: int, with_positives: bool = True) -> TokenizerCollator:
    return TokenizerCollator(tok, items.items["text"].tolist(), items.neighbours if with_positives else None,
                             n_codes=cfg["n_codes"], max_text_tokens=cfg["max_text_tokens"], seed=seed)


@torch.no_grad()
def encode_items(model: UniversalItemTokenizer, tok, items: DomainItems, cfg: dict, batch_size: int = 64,
                 lm_states: bool = False):
    """``(H' [N, L, d_c], codes [N, L], squared distances [N, K] of the last two levels)`` of every item
    (``lm_states``: only the LM's code-token states ``H [N, L, d]``, before the MLP)."""
    from ..progress import progress

    was = model.training
    model.eval()
    col = _collator(tok, items, cfg, 0, with_positives=False)
    device = next(model.parameters()).device
    hp, codes, dist, prev = [], [], [], []
    try:
        for start in progress(range(0, len(items.items), batch_size), desc="encoding items", leave=False):
            b = col(np.arange(start, min(start + batch_size, len(items.items))))
            if lm_states:
                hp.append(model.encoder(b["prompt_ids"].to(device), b["prompt_mask"].to(device))[0].cpu())
                continue
            _, h, q = model.encode(b["prompt_ids"].to(device), b["prompt_mask"].to(device))
            hp.append(h.cpu())
            codes.append(q.codes.cpu())
            dist.append(q.last_distances.cpu())
            prev.append(q.prev_distances.cpu())
    finally:
        model.train(was)
    if lm_states:
        return torch.cat(hp)
    return torch.cat(hp), torch.cat(codes), (torch.cat(dist), torch.cat(prev))


def _train(model, tok, items: DomainItems, cfg: dict, stage: str, folder: Path, seed: int):
    t = cfg[stage]
    rows = items.training_rows(cfg["max_items_per_domain"])
    loader = torch.utils.data.DataLoader(rows.tolist(), batch_size=t["batch_size"], shuffle=True,
                                         generator=torch.Generator().manual_seed(seed),
                                         collate_fn=_collator(tok, items, cfg, seed))
    config = TrainConfig(epochs=t["epochs"], lr=t["lr"], batch_size=t["batch_size"], patience=None, seed=seed,
                         schedule="cosine", checkpoint_dir=folder / "fit", checkpoint_trainable_only=True,
                         grad_clip=1.0)
    return fit(model, loader, None, config, loss_fn=lambda m, b: m(b).total), rows


def _key(cfg: dict, **extra) -> str:
    return sha256_text(json.dumps({"settings": cfg, "fingerprint": code_fingerprint(*FINGERPRINT_MODULES), **extra},
                                  sort_keys=True, default=str))[:10]


# ====================================================================== stages
def pretrain(sources: Sequence[str], *, profile: str = "book", seed: int | None = None, data_root=None,
             force: bool = False, overrides: dict | None = None) -> Path:
    """Multi-domain pre-training on the items of ``sources``; returns the folder of the trained tokenizer."""
    cfg = settings(profile, overrides)
    seed = cfg["seed"] if seed is None else seed
    folder = checkpoint_dir("utgrec", profile, f"pretrain-{'+'.join(sources)}-seed{seed}-{_key(cfg, sources=list(sources))}")
    meta = folder / "tokenizer.json"
    if meta.exists() and not force:
        return folder
    t0 = time.perf_counter()
    items = domain_items(cfg["dataset"], sources, data_root, cfg.get("max_source_items_per_domain"))
    model, tok = build(cfg, seed)
    rows = items.training_rows(cfg["max_items_per_domain"])
    # the MLP starts on standardised code-token states, the codebooks at k-means of its outputs (as
    # TIGER's RQ-VAE), both from one encoding of the training items by the untrained encoder
    sample = DomainItems(items.domains, items.items.iloc[rows].reset_index(drop=True), [np.zeros(0, int)] * len(rows))
    lm_states = encode_items(model, tok, sample, cfg, lm_states=True)
    model.encoder.standardize_mlp_inputs(lm_states)
    with torch.no_grad():
        model.codebooks.init_kmeans(model.encoder.mlp(lm_states.float()), seed=seed)
    result, rows = _train(model, tok, items, cfg, "pretrain", folder, seed)
    if is_main_process():  # under several processes, one writes
        save_safetensors(folder / "tokenizer.safetensors", trainable_state(model))
        write_json(meta, {"sources": list(sources), "seed": seed, "settings": cfg, "training_items": int(len(rows)),
                          "items": int(len(items.items)), "loss": [r["train_loss"] for r in result.history],
                          "wall_time_s": round(time.perf_counter() - t0, 1)})
    wait_for_main()
    return folder


def load_pretrained(folder: Path, cfg: dict, seed: int) -> tuple[UniversalItemTokenizer, Any]:
    model, tok = build(cfg, seed)
    state = load_safetensors(folder / "tokenizer.safetensors")
    own = dict(model.named_parameters())
    missing = [n for n in state if n not in own]
    if missing:
        raise KeyError(f"{folder / 'tokenizer.safetensors'}: parameters {missing[:5]} do not exist in this tokenizer")
    with torch.no_grad():
        for n, v in state.items():
            own[n].copy_(v)
    return model, tok


def _ids_table(items: DomainItems, codes: torch.Tensor, dist) -> tuple[pd.DataFrame, np.ndarray]:
    ids = unique_ids(codes, *dist)
    table = items.items[["item", "domain_name"]].copy()
    for level in range(codes.shape[1]):
        table[f"code_{level}"] = codes[:, level].numpy()
        table[f"id_{level}"] = ids[:, level]
    return table, ids


def _id_stats(model, codes: torch.Tensor, ids: np.ndarray) -> dict:
    n = len(codes)
    return {"items": n, "collision_rate": float(1 - len({tuple(r) for r in codes.tolist()}) / n),
            "unique_after": int(len({tuple(r) for r in ids.tolist()})),
            "codebook_usage": [round(u, 4) for u in model.codebooks.usage(codes)]}


def finetune(target: str, sources: Sequence[str], *, profile: str = "book", seed: int | None = None, data_root=None,
             force: bool = False, tune: bool = True, freeze_codebook_vectors: bool = True,
             overrides: dict | None = None) -> Path:
    """Fine-tune the tokenizer pre-trained on ``sources`` on ``target`` and write its items' IDs.

    ``tune=False`` is Table 3's "w/o FT(T)" (the pre-trained tokenizer as it is);
    ``freeze_codebook_vectors=False`` is "Full FT" (``E`` trains too).
    """
    cfg = settings(profile, overrides)
    seed = cfg["seed"] if seed is None else seed
    pre = pretrain(sources, profile=profile, seed=seed, data_root=data_root, overrides=overrides)
    tag = "finetune" if tune else "pretrained"
    if tune and not freeze_codebook_vectors:
        tag = "finetune-full"
    folder = checkpoint_dir("utgrec", profile, f"{tag}-{target}-seed{seed}-{_key(cfg, sources=list(sources), pre=pre.name)}")
    meta = folder / "ids.json"
    if meta.exists() and not force:
        return folder
    t0 = time.perf_counter()
    items = domain_items(cfg["dataset"], [target], data_root)
    model, tok = load_pretrained(pre, cfg, seed)
    history = []
    if tune:
        if freeze_codebook_vectors:
            model.fine_tuning()
        result, _ = _train(model, tok, items, cfg, "finetune", folder, seed)
        history = [r["train_loss"] for r in result.history]
        if is_main_process():
            save_safetensors(folder / "tokenizer.safetensors", trainable_state(model))
    _, codes, dist = encode_items(model, tok, items, cfg)
    table, ids = _ids_table(items, codes, dist)
    if is_main_process():
        write_parquet(folder / "ids.parquet", table)
        write_json(meta, {"target": target, "sources": list(sources), "seed": seed, "tuned": tune,
                          "codebook_vectors_frozen": bool(tune and freeze_codebook_vectors), "settings": cfg,
                          "loss": history, "stats": _id_stats(model, codes, ids),
                          "wall_time_s": round(time.perf_counter() - t0, 1)})
    wait_for_main()
    return folder


def source_ids(sources: Sequence[str], *, profile: str = "book", seed: int | None = None, data_root=None,
               force: bool = False, overrides: dict | None = None) -> Path:
    """IDs of every source item from the pre-trained tokenizer (the recommender's pre-training data)."""
    cfg = settings(profile, overrides)
    seed = cfg["seed"] if seed is None else seed
    pre = pretrain(sources, profile=profile, seed=seed, data_root=data_root, overrides=overrides)
    meta = pre / "ids.json"
    if meta.exists() and not force:
        return pre
    items = domain_items(cfg["dataset"], sources, data_root, cfg.get("max_source_items_per_domain"))
    model, tok = load_pretrained(pre, cfg, seed)
    _, codes, dist = encode_items(model, tok, items, cfg)
    table, ids = _ids_table(items, codes, dist)
    if is_main_process():
        write_parquet(pre / "ids.parquet", table)
        write_json(meta, {"sources": list(sources), "stats": _id_stats(model, codes, ids)})
    wait_for_main()
    return pre


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--sources", nargs="*", default=None, help="default: every other domain of the dataset")
    ap.add_argument("--profile", default="book")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    domains = get_profile(args.profile)["xcross"]["domains"]
    sources = args.sources or [d for d in domains if d != args.target]
    folder = finetune(args.target, sources, profile=args.profile, data_root=args.data_root, force=args.force)
    print(folder, json.dumps(read_json(folder / "ids.json")["stats"]))


if __name__ == "__main__":
    main()

"""TIGER's semantic IDs (Rajput et al. 2023, Sec. 3.1): a plain RQ-VAE on the items' text embeddings.

The RQ-VAE is GenCDR's universal tokenizer without its masked-code loss
(:func:`xdrec.gencdr.train_tokenizer.pretrain_universal` with ``mtm=False``: ``L_REC + mu L_Q``), with
the shape and codebooks of the profile's ``gencdr_tokenizer`` section (TIGER's: encoder 512-256-128
-> 32, three codebooks of 256, k-means initialisation), trained on the items of all chosen domains.
Collisions get TIGER's extra level (``"extra_level"``: a fourth code numbering the items that share
a code tuple), so every item has a unique ID of length 4.

Cached and resumable: the RQ-VAE trains through :func:`xdrec.training.fit` in a checkpoint folder
keyed by the code that produces the IDs and every setting, and the IDs are written next to it::

    checkpoints/tiger/<dataset>/rqvae-seed<s>-<key>/
        rqvae/                  fit checkpoints of the RQ-VAE
        semantic_ids.parquet    item, item_key, domain_name, raw codes, IDs
        ids.json                codebook sizes, ID statistics, training summary (written last)
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..io import sha256_text
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint

FINGERPRINT_MODULES = ("xdrec.tiger.semantic_ids", "xdrec.gencdr.train_tokenizer", "xdrec.gencdr.tokenizer",
                       "xdrec.quantization", "xdrec.training", "xdrec.data", "xdrec.encoders")
RQVAE_KEYS = ("hidden", "latent_dim", "n_levels", "codebook_size", "beta", "quant_weight", "kmeans_init_items",
              "revive_dead_codes", "pretrain")


@dataclass
class TigerIds:
    """The items of a dataset and their TIGER semantic IDs; what :func:`tiger_semantic_ids` returns."""

    dataset: str
    domains: list[str]
    items: pd.DataFrame  # item, item_key, domain, domain_name, text (item = row)
    ids: np.ndarray  # [n_items, L] final IDs (L = n_levels + 1 with the extra level)
    codes: np.ndarray  # [n_items, n_levels] RQ-VAE codes before collision handling
    codebook_sizes: list[int]
    stats: dict[str, Any]  # id_statistics overall, per domain, and the RQ-VAE's training summary
    rule: str
    directory: Path
    seconds: float  # wall time of this call
    trained: bool  # False when the IDs were read from the cache

    @property
    def domain(self) -> np.ndarray:
        return self.items["domain"].to_numpy().astype(np.int64)


def rqvae_settings(profile: str | dict, dataset: str, domains: Sequence[str] | None = None) -> dict[str, Any]:
    """The RQ-VAE settings of ``profile`` (its ``gencdr_tokenizer`` section, no MTM) and the dataset's domains.

    ``domains`` (e.g. ``["Beauty"]`` of ``amazon14-5core-sequences``, TIGER's own benchmark) replaces
    the profile's choice of domains for ``dataset`` (``gencdr_tokenizer.datasets``; ``None``: all).
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    cfg = prof["gencdr_tokenizer"]
    sets = cfg["datasets"]
    if domains is None:
        domains = sets.get(dataset) if dataset in sets else None
    else:
        domains = list(domains)
    return {**{k: cfg[k] for k in RQVAE_KEYS}, "mtm_weight": 0.0, "mtm": None, "domains": domains,
            "collision_rule": prof["tiger"]["collision_rule"]}


def tiger_semantic_ids(dataset: str, profile: str = "book", seed: int = 0, *, domains: Sequence[str] | None = None,
                       data_root=None, force: bool = False, progress: bool = True) -> TigerIds:
    """Train (or read back) TIGER's RQ-VAE on ``dataset``'s items and return their semantic IDs.

    ``domains`` defaults to the profile's ``gencdr_tokenizer.datasets[dataset]`` (``None``: all).
    """
    from ..encoders.items import load_items
    from ..gencdr.train_tokenizer import pretrain_universal
    from ..quantization import codes_and_residuals, read_semantic_ids, semantic_ids_of, write_semantic_ids

    t0 = time.perf_counter()
    prof = get_profile(profile)
    cfg = rqvae_settings(prof, dataset, domains)
    rule = cfg["collision_rule"]
    items, names, emb = load_items(dataset, cfg["domains"], data_root=data_root, text_encoder=prof["text_encoder"], progress=progress)
    if not (items["item"].to_numpy() == np.arange(len(items))).all():
        raise ValueError(f"{dataset}: item ids are not 0..{len(items) - 1} in row order")
    texts = sha256_text(*items.item_key.astype(str), *items.text)[:16]
    settings = {**cfg, "dataset": dataset, "domains": names, "texts": texts, "seed": seed}
    key = sha256_text(code_fingerprint(*FINGERPRINT_MODULES), json.dumps(settings, sort_keys=True))[:16]
    folder = checkpoint_dir("tiger", dataset, f"rqvae-seed{seed}-{key}")
    if force:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    stored = read_semantic_ids(folder, items, cfg["n_levels"])
    if stored is not None:
        ids, codes, meta = stored
        return TigerIds(dataset, names, items, ids, codes, meta["codebook_sizes"], meta["stats"], rule, folder,
                        time.perf_counter() - t0, trained=False)

    x = torch.from_numpy(emb)
    tok_cfg = {k: cfg[k] for k in RQVAE_KEYS} | {"mtm_weight": 0.0, "mtm": None}
    universal, res, revived = pretrain_universal(x, tok_cfg, mtm=False, seed=seed, ckpt=folder / "rqvae",
                                                 cpu=prof["device"] == "cpu", progress=progress)
    with torch.no_grad():
        z = universal.rqvae.encoder(x)
    codes, residuals = codes_and_residuals(universal.quantizer, z)
    ids, sizes, stats = semantic_ids_of(codes, residuals, universal.quantizer.codebooks.detach().cpu().numpy(), rule,
                                        cfg["codebook_size"], items["domain"].to_numpy(), names)
    stats["rqvae"] = {"best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "wall_time_s": res.wall_time,
                      "rec_loss": -res.best_metric if res.best_metric is not None else None,
                      "trainable_params": res.trainable_params, "revived_codes": revived}
    write_semantic_ids(folder, items, codes, ids, sizes, rule, stats, settings)
    return TigerIds(dataset, names, items, ids.astype(np.int64), codes.astype(np.int64), sizes, stats, rule, folder,
                    time.perf_counter() - t0, trained=True)

"""LETTER's semantic IDs for some domains of a dataset: ``letter_semantic_ids(dataset, domains, profile=...)``.

1. **Collaborative embeddings**: a SASRec (full-softmax loss, the profile's ``id_baselines``
   settings, hidden size = the RQ-VAE's latent size so that ``<z_hat, h>`` is defined) trained on
   the leave-last-out training sequences of ``domains``, early-stopped on validation Recall@10; its
   item embeddings are ``h``.
2. **Tokenizer**: :class:`~xdrec.letter.tokenizer.LETTERTokenizer` on the items' MiniLM text
   embeddings (the same inputs as TIGER's RQ-VAE, with TIGER's shape, k-means initialisation,
   dead-code revival and training budget from :func:`xdrec.tiger.semantic_ids.rqvae_settings`),
   plus ``alpha L_CF + beta L_Div`` with the profile's ``letter`` section; the code clusters of
   ``L_Div`` are recomputed at the start of every epoch. The last epoch's weights are kept.
3. **IDs**: codes, made unique by TIGER's collision rule (the profile's ``tiger.collision_rule``).

Cached and resumable like TIGER's IDs::

    checkpoints/letter/<dataset>/<domains>-seed<s>-<key>/
        sasrec/  rqvae/         fit checkpoints
        cf_embeddings.safetensors
        semantic_ids.parquet    item, item_key, domain_name, raw codes, IDs
        ids.json                written last
"""
from __future__ import annotations

import json
import shutil
import time
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from .. import data
from ..io import load_safetensors, save_safetensors, sha256_text
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint
from ..training import TrainConfig, fit
from .tokenizer import LETTERTokenizer

FINGERPRINT_MODULES = ("xdrec.letter", "xdrec.quantization", "xdrec.baselines", "xdrec.training", "xdrec.data",
                       "xdrec.encoders")


def settings(profile: str | dict, dataset: str) -> dict[str, Any]:
    """TIGER's RQ-VAE settings, LETTER's regularisation, and the CF model's."""
    from ..tiger.semantic_ids import rqvae_settings

    prof = get_profile(profile) if isinstance(profile, str) else profile
    ib = prof["id_baselines"]
    cf = {k: ib[k] for k in ("max_len", "layers", "sasrec_heads", "dropout", "lr", "batch_size", "max_valid_rows")}
    cf |= {"epochs": ib["epochs_by_model"].get("sasrec-ce", ib["epochs"]),
           "patience": ib["patience_by_model"].get("sasrec-ce", ib["patience"])}
    return {"rqvae": {k: v for k, v in rqvae_settings(prof, dataset).items() if k != "domains"},
            "letter": dict(prof["letter"]), "cf": cf}


def cf_embeddings(ds, hidden: int, cfg: dict, *, seed: int, ckpt, cpu: bool = True) -> torch.Tensor:
    """SASRec item embeddings ``[n_items, hidden]`` from ``ds``'s leave-last-out training sequences."""
    from ..baselines.trainers import train_sasrec

    split = data.leave_last_out(ds)
    valid = split.valid
    if cfg["max_valid_rows"] and len(valid) > cfg["max_valid_rows"]:
        valid = valid.sample(cfg["max_valid_rows"], random_state=seed)
    tc = TrainConfig(epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], patience=cfg["patience"],
                     seed=seed, checkpoint_dir=ckpt, cpu=cpu)
    net, _ = train_sasrec(SimpleNamespace(train=split.train, valid=valid), ds.n_items, tc, loss="ce", hidden=hidden,
                          n_blocks=cfg["layers"], n_heads=cfg["sasrec_heads"], max_len=cfg["max_len"],
                          dropout=cfg["dropout"])
    return net.item_emb.weight.detach()[: ds.n_items].cpu().clone()


def train_letter(x: torch.Tensor, cf: torch.Tensor, cfg: dict, *, seed: int, ckpt, cpu: bool = True,
                 progress: bool = True) -> tuple[LETTERTokenizer, Any]:
    """Eq. 7 for ``rqvae.pretrain.epochs``, from k-means codebooks (as TIGER's RQ-VAE)."""
    rq, lt = cfg["rqvae"], cfg["letter"]
    torch.manual_seed(seed)
    model = LETTERTokenizer(x.shape[1], rq["hidden"], rq["latent_dim"], rq["n_levels"], rq["codebook_size"],
                            beta=rq["beta"], quant_weight=rq["quant_weight"], alpha=lt["alpha"],
                            div_weight=lt["beta"], n_clusters=lt["n_clusters"])
    n, bs = len(x), rq["pretrain"]["batch_size"]
    first = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: rq["kmeans_init_items"]]
    with torch.no_grad():
        model.quantizer.init_kmeans(model.rqvae.encoder(x[first]), seed=seed)

    def batches(epoch: int):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        dev = next(model.parameters()).device
        with torch.no_grad():
            if rq["revive_dead_codes"] and epoch > 1:
                model.quantizer.reset_dead_codes(model.rqvae.encoder(x[perm[: rq["kmeans_init_items"]]].to(dev)),
                                                 seed=seed + epoch)
            model.recluster(seed=seed * 1_000 + epoch)
        return [(x[perm[s:s + bs]], cf[perm[s:s + bs]]) for s in range(0, n, bs)]

    tc = TrainConfig(epochs=rq["pretrain"]["epochs"], lr=rq["pretrain"]["lr"], batch_size=bs, patience=None,
                     seed=seed, checkpoint_dir=ckpt, cpu=cpu, progress=progress)
    result = fit(model, batches, None, tc, loss_fn=lambda m, b: m(*b).total)
    return model, result


def letter_semantic_ids(dataset: str, domains: Sequence[str], profile: str = "book", seed: int = 0, *, data_root=None,
                        force: bool = False, progress: bool = True):
    """Train (or read back) LETTER on the items of ``domains``; returns a :class:`~xdrec.tiger.semantic_ids.TigerIds`."""
    from ..encoders.items import load_items
    from ..quantization import codes_and_residuals, read_semantic_ids, semantic_ids_of, write_semantic_ids
    from ..tiger.semantic_ids import TigerIds

    t0 = time.perf_counter()
    prof = get_profile(profile)
    cfg = settings(prof, dataset)
    cpu = prof["device"] == "cpu"
    items, names, emb = load_items(dataset, list(domains), data_root=data_root, text_encoder=prof["text_encoder"],
                                   progress=progress)
    ds = data.load(dataset, root=data_root, domains=list(domains))
    if len(ds.items) != len(items) or not (ds.items["item_key"].to_numpy() == items["item_key"].to_numpy()).all():
        raise ValueError(f"{dataset}: the items of the text embeddings are not the dataset's items of {list(domains)}")
    texts = sha256_text(*items.item_key.astype(str), *items.text)[:16]
    key = sha256_text(code_fingerprint(*FINGERPRINT_MODULES),
                      json.dumps({**cfg, "domains": names, "texts": texts, "seed": seed}, sort_keys=True))[:16]
    folder = checkpoint_dir("letter", dataset, f"{'+'.join(names)}-seed{seed}-{key}")
    if force:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    cf_path = folder / "cf_embeddings.safetensors"
    rule = cfg["rqvae"]["collision_rule"]
    stored = read_semantic_ids(folder, items, cfg["rqvae"]["n_levels"])
    if stored is not None:
        ids, codes, meta = stored
        return TigerIds(dataset, names, items, ids, codes, meta["codebook_sizes"], meta["stats"], rule, folder,
                        time.perf_counter() - t0, trained=False)

    if cf_path.exists():
        cf = load_safetensors(cf_path)["cf"]
    else:
        cf = cf_embeddings(ds, cfg["rqvae"]["latent_dim"], cfg["cf"], seed=seed, ckpt=folder / "sasrec", cpu=cpu)
        save_safetensors(cf_path, {"cf": cf})
    x = torch.from_numpy(emb)
    model, res = train_letter(x, cf, cfg, seed=seed, ckpt=folder / "rqvae", cpu=cpu, progress=progress)
    model.cpu().eval()
    with torch.no_grad():
        z = model.rqvae.encoder(x)
    codes, residuals = codes_and_residuals(model.quantizer, z)
    ids, sizes, stats = semantic_ids_of(codes, residuals, model.quantizer.codebooks.detach().numpy(), rule,
                                        cfg["rqvae"]["codebook_size"], items["domain"].to_numpy(), names)
    stats["letter"] = {"epochs_run": res.epochs_run, "wall_time_s": res.wall_time,
                       "last_loss": res.history[-1]["train_loss"] if res.history else None}
    write_semantic_ids(folder, items, codes, ids, sizes, rule, stats, cfg)
    return TigerIds(dataset, names, items, ids.astype(np.int64), codes.astype(np.int64), sizes, stats, rule, folder,
                    time.perf_counter() - t0, trained=True)

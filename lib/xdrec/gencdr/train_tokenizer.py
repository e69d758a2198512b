"""Train GenCDR's tokenizer on a dataset and write its semantic IDs: ``run_tokenizer(dataset, profile, variant)``.

One run = phase 1 (universal RQ-VAE + MTM on the items of all chosen domains), phase 2 (domain
LoRA adapters + VIB item router), then semantic IDs under both collision rules, per-domain prefix
trees, and a result record ``results/<profile>/gencdr_tokenizer__<dataset>__<variant>__seed<s>.json``.

Variants (the tokenization rows of GenCDR's ablation, Table 3):

- ``full``        MTM loss and domain adapters + router; IDs quantise ``z_fused``;
- ``no-mtm``      lambda = 0 ("w/o MTM");
- ``no-adapter``  universal codes only, IDs quantise ``z_uni`` ("w/o Item Adapter").

Everything is resumable and skipped when done: each phase trains through :func:`xdrec.training.fit`
with a checkpoint folder keyed by the code fingerprint and the settings, so a rerun loads the
finished weights instead of training (``full`` and ``no-adapter`` share their phase 1).  Files::

    checkpoints/gencdr_tokenizer/<dataset>/phase1-<key>/        fit checkpoints of phase 1
    checkpoints/gencdr_tokenizer/<dataset>/<variant>-<key>/     phase 2 checkpoints (if any) and
        semantic_ids.parquet                                    item, item_key, domain, raw codes, IDs per rule
        trees/<rule>/<domain>.json                              prefix tree of every domain

Command line: ``python -m xdrec.gencdr.train_tokenizer --dataset amazon14-food-kitchen --profile book``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..decoding import PrefixTree
from ..encoders.items import load_items
from ..io import sha256_text, write_parquet
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..quantization import COLLISION_RULES, codes_and_residuals, id_statistics, resolve_collisions, train_rqvae
from ..results import code_fingerprint, stored_or_computed
from ..training import TrainConfig, count_trainable_params, fit
from .tokenizer import DomainAdaptiveTokenizer, UniversalTokenizer

VARIANTS = {
    "full": {"mtm": True, "adapters": True},
    "no-mtm": {"mtm": False, "adapters": True},
    "no-adapter": {"mtm": True, "adapters": False},
}
FINGERPRINT_MODULES = ("xdrec.gencdr.tokenizer", "xdrec.gencdr.routing", "xdrec.gencdr.train_tokenizer",
                       "xdrec.quantization", "xdrec.training", "xdrec.data", "xdrec.encoders")


def result_name(dataset: str, variant: str, seed: int) -> str:
    return f"gencdr_tokenizer__{dataset}__{variant}__seed{seed}"


# ----------------------------------------------------------------------------------------------
# The two training phases
# ----------------------------------------------------------------------------------------------
def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def pretrain_universal(x: torch.Tensor, cfg: dict[str, Any], *, mtm: bool, seed: int, ckpt: Path | None,
                       cpu: bool = True, progress: bool = True) -> tuple[UniversalTokenizer, Any, list[int]]:
    """Phase 1: the universal RQ-VAE with the masked-code loss (``L_REC + mu L_Q + lambda L_MTM``,
    ``lambda = 0`` without ``mtm``), trained by :func:`xdrec.quantization.train_rqvae`."""
    torch.manual_seed(seed)
    model = UniversalTokenizer(x.shape[1], cfg["hidden"], cfg["latent_dim"], cfg["n_levels"], cfg["codebook_size"],
                               cfg["beta"], cfg["quant_weight"], cfg["mtm_weight"] if mtm else 0.0, cfg["mtm"])
    model, result, revived = train_rqvae(model, x, cfg, seed=seed, ckpt=ckpt, cpu=cpu, progress=progress)
    return model.freeze(), result, revived


def train_adapters(universal: UniversalTokenizer, x: torch.Tensor, domain: torch.Tensor, domains: list[str],
                   cfg: dict[str, Any], *, seed: int, ckpt: Path | None, cpu: bool = True,
                   progress: bool = True) -> tuple[DomainAdaptiveTokenizer, Any]:
    """Phase 2: one LoRA adapter per domain and the VIB router on Eqs. 5, 7 and 8; ``universal`` stays frozen."""
    torch.manual_seed(seed)
    model = DomainAdaptiveTokenizer(universal, domains, **cfg["lora"], router_hidden=cfg["router"]["hidden"],
                                    router_latent=cfg["router"]["latent_dim"], vib_weight=cfg["router"]["vib_weight"])
    n, bs = len(x), cfg["adapters"]["batch_size"]

    def batches(epoch: int):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        return [(x[perm[s:s + bs]], domain[perm[s:s + bs]]) for s in range(0, n, bs)]

    def evaluate(m: DomainAdaptiveTokenizer) -> dict[str, float]:
        dev = _device_of(m)
        ev = m.evaluate(x.to(dev), domain.to(dev))
        return {"neg_rec": -ev["rec_fused"], **ev}

    tc = TrainConfig(epochs=cfg["adapters"]["epochs"], lr=cfg["adapters"]["lr"], batch_size=bs, patience=None,
                     seed=seed, checkpoint_dir=ckpt, cpu=cpu, progress=progress, checkpoint_trainable_only=True)
    # kept: the epoch whose fused latents reconstruct the items best through the frozen Q and D
    result = fit(model, batches, evaluate, tc, loss_fn=lambda m, b: m(*b).loss, metric="neg_rec")
    model.eval()
    return model, result


# ----------------------------------------------------------------------------------------------
# Codes, IDs, trees
# ----------------------------------------------------------------------------------------------
def prefix_trees(ids: np.ndarray, domain: np.ndarray, domains: list[str]) -> dict[str, PrefixTree]:
    """One tree of valid IDs per domain (items of other domains are not in it)."""
    return {name: PrefixTree(ids[domain == d].tolist()) for d, name in enumerate(domains)}


@dataclass
class TokenizerRun:
    """A trained tokenizer and its IDs; what :func:`run_tokenizer` returns."""

    dataset: str
    variant: str
    seed: int
    profile: str
    items: pd.DataFrame
    domains: list[str]
    embeddings: np.ndarray
    universal: UniversalTokenizer
    adaptive: DomainAdaptiveTokenizer | None
    codes: np.ndarray
    ids: dict[str, np.ndarray]
    record: dict[str, Any]
    directory: Path
    rule: str = "reassign"
    extra: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def latents(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``x``, ``z_uni`` and (with adapters) ``z_spec``, ``z_fused``, ``alpha`` of the items ``rows`` (default all)."""
        rows = np.arange(len(self.items)) if rows is None else np.asarray(rows)
        x = torch.from_numpy(self.embeddings[rows])
        out = {"x": x.numpy()}
        if self.adaptive is None:
            out["z_uni"] = self.universal.rqvae.encoder(x).numpy()
            return out
        lat = self.adaptive.latents(x, torch.from_numpy(self.items.domain.to_numpy()[rows]))
        out.update({k: v.numpy() for k, v in lat.items() if k != "kl"})
        return out

    def semantic_ids(self, rule: str | None = None) -> pd.DataFrame:
        """One row per item: item, item_key, domain_name, text and its ID (one column per level)."""
        ids = self.ids[rule or self.rule]
        cols = {f"c{d}": ids[:, d] for d in range(ids.shape[1])}
        return self.items[["item", "item_key", "domain_name", "text"]].assign(**cols)

    def trees(self, rule: str | None = None) -> dict[str, PrefixTree]:
        return prefix_trees(self.ids[rule or self.rule], self.items.domain.to_numpy(), self.domains)


def run_tokenizer(dataset: str, *, profile: str = "book", variant: str = "full", seed: int = 0,
                  domains: Sequence[str] | None = None, data_root=None, force: bool = False,
                  progress: bool = True) -> TokenizerRun:
    """Train (or load) GenCDR's tokenizer ``variant`` on ``dataset`` and return it with its semantic IDs."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {sorted(VARIANTS)}")
    prof = get_profile(profile)
    cfg = prof["gencdr_tokenizer"]
    if domains is None:
        domains = cfg["datasets"].get(dataset) if dataset in cfg["datasets"] else None
    opts = VARIANTS[variant]
    cpu = prof["device"] == "cpu"
    t0 = time.perf_counter()

    items, names, emb = load_items(dataset, domains, data_root=data_root, text_encoder=prof["text_encoder"], progress=progress)
    x = torch.from_numpy(emb)
    dom = torch.from_numpy(items.domain.to_numpy().astype(np.int64))
    fingerprint = code_fingerprint(*FINGERPRINT_MODULES)
    texts_key = sha256_text(*items.item_key.astype(str), *items.text)[:16]
    phase1_cfg = {k: v for k, v in cfg.items() if k not in ("lora", "router", "adapters", "collision_rule", "seeds", "datasets")}
    phase1_cfg.update(mtm_weight=cfg["mtm_weight"] if opts["mtm"] else 0.0, dataset=dataset, domains=names,
                      texts=texts_key, seed=seed)
    key1 = sha256_text(fingerprint, json.dumps(phase1_cfg, sort_keys=True))[:16]
    phase2_cfg = {"phase1": key1, "lora": cfg["lora"], "router": cfg["router"], "adapters": cfg["adapters"],
                  "adapters_on": opts["adapters"]}
    key2 = sha256_text(json.dumps(phase2_cfg, sort_keys=True))[:16]
    base = checkpoint_dir("gencdr_tokenizer", dataset)
    run_dir = base / f"{variant}-{key2}"
    if force:
        import shutil

        for p in (base / f"phase1-{key1}", run_dir):
            shutil.rmtree(p, ignore_errors=True)

    universal, res1, revived = pretrain_universal(x, cfg, mtm=opts["mtm"], seed=seed, ckpt=base / f"phase1-{key1}",
                                                  cpu=cpu, progress=progress)
    adaptive, res2 = None, None
    if opts["adapters"]:
        adaptive, res2 = train_adapters(universal, x, dom, names, cfg, seed=seed, ckpt=run_dir / "phase2",
                                        cpu=cpu, progress=progress)

    # ---- semantic IDs under both rules ----------------------------------------------------------
    with torch.no_grad():
        if adaptive is not None:
            lat = adaptive.latents(x, dom)
            z, alpha = lat["z_fused"], lat["alpha"].numpy()
        else:
            z, alpha = universal.rqvae.encoder(x), None
    codes, residuals = codes_and_residuals(universal.quantizer, z)
    codebooks = universal.quantizer.codebooks.detach().cpu().numpy()
    ids, stats = {}, {}
    for rule in COLLISION_RULES:
        try:
            ids[rule] = resolve_collisions(codes, rule, residuals=residuals, codebooks=codebooks)
            stats[rule] = id_statistics(codes, cfg["codebook_size"], ids[rule])
        except ValueError as e:  # "reassign" when the codebooks hold fewer IDs than there are items
            stats[rule] = {"infeasible": str(e)}
    if cfg["collision_rule"] not in ids:
        raise ValueError(f"{dataset}/{variant}: collision rule {cfg['collision_rule']!r} failed: "
                         f"{stats[cfg['collision_rule']]['infeasible']}")
    dom_np = items.domain.to_numpy()
    per_domain = {}
    for d, name in enumerate(names):
        st = id_statistics(codes[dom_np == d], cfg["codebook_size"], ids[cfg["collision_rule"]][dom_np == d])
        st["alpha"] = None if alpha is None else _summary(alpha[dom_np == d])
        per_domain[name] = st
    for rule in ids:
        for name, tree in prefix_trees(ids[rule], dom_np, names).items():
            tree.save(run_dir / "trees" / rule / f"{name}.json")
    table = items[["item", "item_key", "domain_name"]].assign(
        **{f"code{d}": codes[:, d] for d in range(codes.shape[1])},
        **{f"{rule}{d}": ids[rule][:, d] for rule in ids for d in range(ids[rule].shape[1])})
    write_parquet(run_dir / "semantic_ids.parquet", table)

    config = {"variant": variant, **phase1_cfg, **{k: cfg[k] for k in ("lora", "router", "adapters", "collision_rule")}}
    name = result_name(dataset, variant, seed)

    def record():
        metrics = {"collision_rate": stats[cfg["collision_rule"]]["collision_rate"],
                   "level_usage": stats[cfg["collision_rule"]]["level_usage"],
                   "level_perplexity": stats[cfg["collision_rule"]]["level_perplexity"],
                   "final_unique": {r: s.get("final_unique", False) for r, s in stats.items()},
                   "alpha_mean": None if alpha is None else float(alpha.mean())}
        extra = {
            "stats": stats, "per_domain": per_domain, "revived_codes": revived,
            "phase1": res1.to_dict(), "phase2": None if res2 is None else res2.to_dict(),
            "items_per_domain": {n: int((dom_np == d).sum()) for d, n in enumerate(names)},
            "trainable_params": {"phase1": res1.trainable_params, "phase2": None if res2 is None else res2.trainable_params},
            "directory": str(run_dir.relative_to(checkpoint_dir())),
        }
        wall = res1.wall_time + (res2.wall_time if res2 is not None else 0.0)
        return dict(metrics=metrics, dataset=dataset, split="all items of " + "+".join(names), seed=seed,
                    wall_time_s=wall, trainable_params=count_trainable_params(adaptive) if adaptive is not None
                    else res1.trainable_params, extra=extra)

    # the models are always built (the caller needs them); a phase that trained rewrites the record
    retrained = res1.skipped is False or (res2 is not None and not res2.skipped)
    stored = stored_or_computed(name, profile, fingerprint, config, record, force=force or retrained)
    return TokenizerRun(dataset, variant, seed, profile, items, names, emb, universal, adaptive, codes, ids, stored,
                        run_dir, cfg["collision_rule"], {"seconds": time.perf_counter() - t0})


def _summary(a: np.ndarray) -> dict[str, float]:
    q = np.quantile(a, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(a.mean()), "std": float(a.std()), **{f"q{int(p * 100):02d}": float(v)
                                                             for p, v in zip([0.05, 0.25, 0.5, 0.75, 0.95], q)}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", choices=sorted(VARIANTS), default="full")
    p.add_argument("--profile", default="book")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    run = run_tokenizer(a.dataset, profile=a.profile, variant=a.variant, seed=a.seed, force=a.force)
    print(json.dumps(run.record["metrics"], indent=1))


if __name__ == "__main__":
    main()

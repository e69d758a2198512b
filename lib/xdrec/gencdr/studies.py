"""GenCDR's ablations (Table 3, RQ2) and hyper-parameter sensitivity (Figure 4, RQ4), one flag each.

Every run of a study is the profile's recommender (``gencdr_recommender``) on the study's budget
(section ``gencdr_studies``: users per phase, epochs, rows tested) with **exactly one change**:

============== ==================================================================================
ablation        the change
============== ==================================================================================
full            none: the reference every other row is compared with
no-mtm          semantic IDs from a tokenizer trained without the masked-code loss (lambda = 0)
no-adapter      semantic IDs from the universal RQ-VAE alone (no domain LoRA, no item router)
no-specific     decoding follows ``P_uni`` alone: the domain LoRA and user router are left out
no-universal    the N universal experts are switched off (phase 1 trains only the ID embeddings);
                decoding follows the domain LoRA alone (``P_spec``)
average-gate    the trainable MoE gate is replaced by a plain average of the experts (g_i = 1/N)
no-prefix-tree  unconstrained beam search: any code of a level may follow; IDs that are no item of
                the target domain are dropped afterwards (the share of such beams is reported)
============== ==================================================================================

A sensitivity run changes one of ``N`` (universal experts), ``r``, ``alpha`` or ``dropout`` and is
tested on one domain. The last three apply to every LoRA of the recommender, or, where the profile
says ``sweep_scope: "domain"`` (the CPU-sized ``book`` profile), to the domain adapters only, on top
of the reference's phase 1.

Runs that train the same thing share checkpoints: ``no-specific`` and ``no-prefix-tree`` only decode
the ``full`` run's weights again, and a sweep's default value is the ``full`` run. Each run's result
``results/<profile>/gencdr_ablation__<dataset>__<variant>__seed<s>.json`` (or ``gencdr_sensitivity__
<dataset>__<param>-<value>__seed<s>.json``) holds the metrics per domain and the per-row ranks in
the layout of :mod:`xdrec.comparison`, so any two runs can be compared row by row.

Command line: ``python -m xdrec.gencdr.studies ablations --profile book`` (or ``sensitivity``).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import data
from ..decoding import TrieTensors
from ..encoders.backbones import load_causal_lm
from ..generative import ItemTokens, evaluate_generative, evaluation_rows, user_timelines
from ..io import sha256_text
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint, stored_or_computed
from ..training import TrainConfig, count_trainable_params, fit
from .recommendation import FINGERPRINT_MODULES as RECOMMENDER_MODULES
from .recommendation import REPORTED, TimelineBatches, _has_target_in, backbone_location
from .recommender import GenCDRRecommender, add_semantic_id_tokens
from .tokenization import run_tokenizer

FINGERPRINT_MODULES = (*RECOMMENDER_MODULES, "xdrec.gencdr.studies")

ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-mtm": {"tokenizer": "no-mtm"},
    "no-adapter": {"tokenizer": "no-adapter"},
    "no-specific": {"decode": "universal"},
    "no-universal": {"universal_experts": False, "decode": "specific"},
    "average-gate": {"gate": "average"},
    "no-prefix-tree": {"prefix_tree": False},
}
"""Each ablation's one change to :data:`DEFAULTS`."""

DEFAULTS: dict[str, Any] = {"tokenizer": "full", "universal_experts": True, "gate": "learned", "decode": "fused",
                            "prefix_tree": True}
TRAINING_KEYS = ("tokenizer", "universal_experts", "gate")
"""The switches that change what trains (the others only change decoding)."""
PHASE2_SETTINGS = ("domain_lora", "domain", "router")
"""The recommender settings that phase 1 does not depend on."""

SWEEP_PARAMS = ("n_experts", "r", "alpha", "dropout")
INVALID = -2
"""Item id of a generated ID that is no item of the row's target domain (unconstrained decoding only)."""


# ----------------------------------------------------------------------------------------------
# The two mechanisms an ablation needs that the model does not have
# ----------------------------------------------------------------------------------------------
class AverageGate(nn.Module):
    """Drop-in for an expert layer's gate ``W_g``: constant logits, so ``softmax`` gives every expert ``1/N``.

    Its ``weight`` is an empty buffer (not a parameter): switching it trainable trains nothing.
    """

    def __init__(self, n_experts: int):
        super().__init__()
        self.n_experts = n_experts
        self.register_buffer("weight", torch.zeros(n_experts, 0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.n_experts)


class UnconstrainedTrie:
    """A :class:`~xdrec.decoding.TrieTensors` stand-in that allows every code at every level.

    Beam search then follows the model alone. A beam's state is the real trie's node while its
    prefix is still some item's prefix, else :data:`INVALID`; after the last level it is the item
    id, or :data:`INVALID` for an ID that is no item of the row's domain (a "hallucinated" item).
    """

    def __init__(self, trie: TrieTensors):
        self.trie, self.child = trie, trie.child
        self.n_levels, self.codebook_sizes = trie.n_levels, trie.codebook_sizes

    def root(self, domains: torch.Tensor) -> torch.Tensor:
        return self.trie.root(domains)

    def allowed(self, nodes: torch.Tensor, level: int) -> torch.Tensor:
        alive = nodes != -1  # -1: a dead beam (the search's padding); INVALID beams go on
        return alive.unsqueeze(-1).expand(*nodes.shape, self.codebook_sizes[level])

    def step(self, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        nxt = self.trie.step(nodes, codes)
        return torch.where((nodes == -1), nodes, torch.where(nxt >= 0, nxt, torch.full_like(nxt, INVALID)))


def keep_valid(ranked: np.ndarray, k: int) -> np.ndarray:
    """Each row's first ``k`` valid items (ids >= 0) in order, padded with ``-1``."""
    out = np.full((len(ranked), k), -1, dtype=np.int64)
    for i, row in enumerate(ranked):
        valid = row[row >= 0][:k]
        out[i, : len(valid)] = valid
    return out


# ----------------------------------------------------------------------------------------------
# Settings of a run
# ----------------------------------------------------------------------------------------------
def ablation_switches(variant: str) -> dict[str, Any]:
    if variant not in ABLATIONS:
        raise ValueError(f"unknown ablation {variant!r}: choose one of {list(ABLATIONS)}")
    return {**DEFAULTS, **ABLATIONS[variant]}


def sweep_recommender(cfg: dict[str, Any], param: str, value, scope: str = "all") -> dict[str, Any]:
    """The recommender settings ``cfg`` with one hyper-parameter of Figure 4 set to ``value``.

    ``n_experts`` is the universal experts' ``N``. ``r``, ``alpha`` and ``dropout`` apply to every LoRA
    of the recommender (``scope="all"``: the experts and the domain adapters) or to the domain
    adapters only (``scope="domain"``: phase 1 is then the reference's, and only phase 2 retrains).
    """
    if param not in SWEEP_PARAMS:
        raise ValueError(f"unknown sweep parameter {param!r}: choose one of {SWEEP_PARAMS}")
    if scope not in ("all", "domain"):
        raise ValueError(f"scope must be 'all' or 'domain', got {scope!r}")
    cfg = copy.deepcopy(cfg)
    if param == "n_experts":
        cfg["experts"]["n"] = int(value)
        return cfg
    for section in ("experts", "domain_lora") if scope == "all" else ("domain_lora",):
        cfg[section][param] = type(cfg[section][param])(value)
    return cfg


def sweep_default(cfg: dict[str, Any], param: str):
    return cfg["experts"]["n"] if param == "n_experts" else cfg["domain_lora"][param]


def sweep_name(param: str, value) -> str:
    return f"{param}-{value:g}" if isinstance(value, float) else f"{param}-{value}"


def study_settings(profile: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(recommender, eval, study)`` settings of ``profile``: the recommender on the study's budget."""
    prof = get_profile(profile)
    study = prof["gencdr_studies"]
    cfg = copy.deepcopy(prof["gencdr_recommender"])
    for phase in ("universal", "domain"):
        cfg[phase].update(study.get(phase, {}))
    ev = {**prof["generative_eval"], **study.get("eval", {})}
    return cfg, ev, study


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------
def run_study_variant(dataset: str, *, name: str, switches: dict[str, Any], cfg: dict[str, Any], ev: dict[str, Any],
                      profile: str = "book", domains: list[str] | None = None, seed: int = 0, root=None,
                      force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or read back) GenCDR with ``cfg`` and ``switches`` on ``dataset``; test it on ``domains`` (default all).

    ``name`` is the result's name. Phase 2 trains only the tested domains' adapters. ``force``
    recomputes the result from the checkpoints (delete ``checkpoints/gencdr_studies/<dataset>`` to retrain).
    """
    prof = get_profile(profile)
    fingerprint = code_fingerprint(*FINGERPRINT_MODULES)
    config = {"switches": switches, "recommender": cfg, "eval": ev, "tokenizer": prof["gencdr_tokenizer"],
              "backbone": backbone_location(cfg), "domains": domains, "seed": seed}

    def compute():

        tok = run_tokenizer(dataset, profile=profile, variant=switches["tokenizer"], seed=seed, root=root, progress=progress)
        ds = data.load(dataset, root=root, domains=tok.domains)
        if not (ds.items["item_key"].to_numpy() == tok.items["item_key"].to_numpy()).all():
            raise ValueError(f"{dataset}: the tokenizer's items are not the dataset's items (stale cache?)")
        unknown = sorted(set(domains or []) - set(ds.domains))
        if unknown:
            raise ValueError(f"{dataset} has no domain {unknown}; it has {ds.domains}")
        tested = [ds.domains.index(d) for d in (domains or ds.domains)]
        ids = tok.ids[tok.rule]
        sizes = [max(int(ids[:, l].max()) + 1, prof["gencdr_tokenizer"]["codebook_size"] if l < prof["gencdr_tokenizer"]["n_levels"] else 0)
                 for l in range(ids.shape[1])]
        item_domain = ds.items["domain"].to_numpy()

        torch.manual_seed(seed)
        lm, tokenizer = load_causal_lm(backbone_location(cfg), num_hidden_layers=cfg["num_layers"])
        vocab = add_semantic_id_tokens(tokenizer, lm, sizes, ds.domains)
        prefix = tokenizer(cfg["prompt_prefix"], add_special_tokens=False)["input_ids"] if cfg["prompt_prefix"] else []
        model = GenCDRRecommender(lm, vocab, target_modules=cfg["target_modules"], experts=cfg["experts"],
                                  domain_lora=cfg["domain_lora"], router=cfg["router"], prefix_tokens=prefix,
                                  pad_id=tokenizer.pad_token_id)
        if switches["gate"] == "average":
            for layer in model.layers:
                layer.gate = AverageGate(layer.n_experts)
        items = ItemTokens.from_ids(vocab, ids, item_domain)
        trie = TrieTensors(ids, item_domain, ds.n_domains, sizes)

        # Each phase's checkpoints are keyed by what that phase depends on: decoding-only ablations reuse
        # both phases, and a sweep of the domain adapters alone reuses phase 1.
        ids_key = sha256_text(np.asarray(ids, dtype=np.int64).tobytes().hex())
        phase1 = {k: switches[k] for k in TRAINING_KEYS} | {"seed": seed, "backbone": config["backbone"], "eval": ev,
                                                             "recommender": {k: v for k, v in cfg.items() if k not in PHASE2_SETTINGS}}
        key1 = sha256_text(fingerprint, json.dumps(phase1, sort_keys=True), ids_key)[:16]
        key2 = sha256_text(key1, json.dumps({k: cfg[k] for k in PHASE2_SETTINGS}, sort_keys=True))[:16]
        base = checkpoint_dir("gencdr_studies", dataset, f"seed{seed}-{key1}")
        cpu = prof["device"] == "cpu"
        split = data.leave_last_out(ds)
        valid = evaluation_rows(split.valid, ev["valid_rows_per_domain"], seed)
        test = evaluation_rows(split.test, ev["test_rows_per_domain"], seed)
        test = test[test["domain"].isin(tested)].reset_index(drop=True)
        timelines = user_timelines(split.train)

        def capped(seqs, phase, stream):  # a seeded sample per (phase, domain): the same whichever domains are tested
            cap = cfg[phase].get("max_users")
            if not cap or len(seqs) <= cap:
                return seqs
            return [seqs[i] for i in sorted(np.random.default_rng((seed, stream)).choice(len(seqs), cap, replace=False))]

        def train_config(phase, ckpt):
            c = cfg[phase]
            return TrainConfig(epochs=c["epochs"], lr=c["lr"], batch_size=c["batch_size"], patience=c["patience"], seed=seed,
                               checkpoint_dir=ckpt, cpu=cpu, progress=progress, checkpoint_trainable_only=True,
                               mixed_precision=cfg["mixed_precision"] if not cpu else "no")

        def recommender(mode, prefix_tree=True, invalid=None):
            def rec(histories, doms, k):
                out = model.recommend(histories, doms, k if prefix_tree else ev["beams"], items=items,
                                      trie=trie if prefix_tree else UnconstrainedTrie(trie), beams=ev["beams"],
                                      max_items=ev["max_items"], mode=mode)
                if prefix_tree:
                    return out
                invalid.extend((out == INVALID).sum(1).tolist())
                return keep_valid(out, k)
            return rec

        def validate(rows, mode):
            return lambda m: {k: v for k, v in evaluate_generative(recommender(mode), rows, k=ev["top_k"],
                                                                   batch_size=ev["batch_size"])["all"].items() if k in REPORTED}

        # ---- phase 1 (Eq. 9); without universal experts only the ID embeddings train ------------------
        uni = TimelineBatches(capped(timelines, "universal", 0), items, batch_size=cfg["universal"]["batch_size"],
                              max_items=ev["max_items"], prefix=model.prefix_tokens, pad_id=model.pad_id, seed=seed)
        model.train_phase(universal=True)
        if not switches["universal_experts"]:
            for layer in model.layers:
                for p in (layer.expert_A, layer.expert_B, layer.gate.weight):
                    p.requires_grad_(False)
        history = {"universal": fit(model, uni, validate(valid, "universal"), train_config("universal", base / "universal"),
                                    loss_fn=lambda m, b: m.universal_loss(b), metric="recall@10").to_dict()}
        params = {"universal": count_trainable_params(model)}

        # ---- phase 2 (Eqs. 10-11), for the tested domains only ------------------------------------------
        if switches["decode"] != "universal":
            for d in tested:
                seqs = capped([s for s in timelines if _has_target_in(s, item_domain, d, ev["max_items"])], "domain", d + 1)
                batches = TimelineBatches(seqs, items, batch_size=cfg["domain"]["batch_size"], max_items=ev["max_items"],
                                          prefix=model.prefix_tokens, pad_id=model.pad_id, seed=seed + d + 1)
                model.train_phase(domain=d)
                mode = "fused" if switches["universal_experts"] else "specific"
                res = fit(model, batches, validate(valid[valid["domain"] == d], mode),
                          train_config("domain", base / f"phase2-{key2}" / f"domain-{ds.domains[d]}"),
                          loss_fn=lambda m, b, d=d: m.domain_loss(b, d), metric="recall@10")
                history[f"domain/{ds.domains[d]}"], params[f"domain/{ds.domains[d]}"] = res.to_dict(), count_trainable_params(model)
        model.train_phase()
        model.eval()

        # ---- test -----------------------------------------------------------------------------------
        invalid: list[int] = []
        t0 = time.perf_counter()
        res = evaluate_generative(recommender(switches["decode"], switches["prefix_tree"], invalid), test, k=ev["top_k"],
                                  batch_size=ev["batch_size"], per_row=True, show_progress=progress, desc=f"test {name}")
        test_s = time.perf_counter() - t0
        metrics = {"all": {k: float(np.mean(v)) for k, v in res["all"].items() if k in REPORTED} | {"n": len(test)}}
        for key_, r in res.items():
            if key_ != "all":
                metrics[ds.domains[int(key_)]] = {k: float(np.mean(v)) for k, v in r.items() if k in REPORTED} | {"n": len(r["rank"])}
        users = ds.users.set_index("user")["user_key"]
        extra = {
            "rows": {"user": test["user"].tolist(), "user_key": users.loc[test["user"]].tolist(),
                     "domain": [ds.domains[d] for d in test["domain"]],
                     "target_key": ds.items["item_key"].to_numpy()[test["target"]].tolist(), "rank": res["all"]["rank"].tolist()},
            "training": history,
            "trainable_params": params,
            "test_s": test_s,
            "checkpoints": f"{base.name}/phase2-{key2}",
        }
        if not switches["prefix_tree"]:
            extra["rows"]["invalid_beams"] = invalid
            extra["invalid_share"] = float(np.sum(invalid) / (len(invalid) * ev["beams"]))
        wall = sum(h.get("wall_time") or 0.0 for h in history.values()) + test_s
        return dict(metrics=metrics, dataset=f"{dataset}/{'+'.join(ds.domains)}", seed=seed,
                    split=f"leave-last-out on the merged timeline; test: up to {ev['test_rows_per_domain']} rows of "
                          f"{'+'.join(ds.domains[d] for d in tested)}", wall_time_s=wall,
                    trainable_params=sum(params.values()), extra=extra)

    return stored_or_computed(name, profile, fingerprint, config, compute, force=force)


# ----------------------------------------------------------------------------------------------
# The studies
# ----------------------------------------------------------------------------------------------
def ablation_name(dataset: str, variant: str, seed: int) -> str:
    return f"gencdr_ablation__{dataset}__{variant}__seed{seed}"


def sensitivity_name(dataset: str, param: str, value, seed: int) -> str:
    return f"gencdr_sensitivity__{dataset}__{sweep_name(param, value)}__seed{seed}"


def run_ablation(dataset: str, variant: str, *, profile: str = "book", seed: int = 0, **kw) -> dict[str, Any]:
    """One row of Table 3: GenCDR on the study's budget with ablation ``variant`` (see :data:`ABLATIONS`)."""
    cfg, ev, _ = study_settings(profile)
    return run_study_variant(dataset, name=ablation_name(dataset, variant, seed), switches=ablation_switches(variant),
                             cfg=cfg, ev=ev, profile=profile, seed=seed, **kw)


def run_sensitivity(param: str, value, *, profile: str = "book", seed: int = 0, **kw) -> dict[str, Any]:
    """One point of Figure 4: the study's sensitivity domain with ``param = value``.

    The default value is not run again: it is the ``full`` ablation, whose tested domains include it.
    """
    cfg, ev, study = study_settings(profile)
    dataset, domain = study["sensitivity"]
    if value == sweep_default(cfg, param):
        return run_ablation(dataset, "full", profile=profile, seed=seed, **kw)
    return run_study_variant(dataset, name=sensitivity_name(dataset, param, value, seed), switches=dict(DEFAULTS),
                             cfg=sweep_recommender(cfg, param, value, study.get("sweep_scope", "all")), ev=ev, profile=profile, domains=[domain],
                             seed=seed, **kw)


def run_ablations(profile: str = "book", *, seed: int = 0, variants=None, **kw) -> list[dict[str, Any]]:
    """Every ablation (``full`` first: the decoding-only ones reuse its weights) on every study dataset."""
    _, _, study = study_settings(profile)
    return [run_ablation(ds, v, profile=profile, seed=seed, **kw) for ds in study["datasets"] for v in (variants or ABLATIONS)]


def run_sweeps(profile: str = "book", *, seed: int = 0, params=None, **kw) -> list[dict[str, Any]]:
    """Every point of every sweep of the profile (``gencdr_studies.sweeps``)."""
    _, _, study = study_settings(profile)
    return [run_sensitivity(p, v, profile=profile, seed=seed, **kw) for p, values in study["sweeps"].items()
            if params is None or p in params for v in values]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", choices=["ablations", "sensitivity"])
    p.add_argument("--profile", default="book")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="ablation variants, or sweep parameters, to run (default: all)")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    if a.study == "ablations":
        recs = run_ablations(a.profile, seed=a.seed, variants=a.only, force=a.force)
    else:
        recs = run_sweeps(a.profile, seed=a.seed, params=a.only, force=a.force)
    for rec in recs:
        print(rec["name"], json.dumps({d: round(m["ndcg@10"], 4) for d, m in rec["metrics"].items()}))


if __name__ == "__main__":
    main()

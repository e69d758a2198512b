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

Command line: ``python -m xdrec.gencdr.experiment ablations --profile book`` (or ``sensitivity``).
"""
from __future__ import annotations

import argparse
import copy
import json
from typing import Any

import numpy as np

from ..profiles import get_profile
from ..results import code_fingerprint, stored_or_computed
from .train_recommender import DEFAULTS, FINGERPRINT_MODULES as RECOMMENDER_MODULES
from .train_recommender import backbone_location, train_and_test

FINGERPRINT_MODULES = (*RECOMMENDER_MODULES, "xdrec.gencdr.experiment")

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

SWEEP_PARAMS = ("n_experts", "r", "alpha", "dropout")


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
                      profile: str = "book", domains: list[str] | None = None, seed: int = 0, data_root=None,
                      force: bool = False, progress: bool = True) -> dict[str, Any]:
    """One study run: the GenCDR pipeline (:func:`~xdrec.gencdr.train_recommender.train_and_test`)
    with ``switches`` and recommender settings ``cfg``, tested on ``domains`` (default all) under
    the one decoding ``switches["decode"]``; stored as result ``name`` (read back while current)."""
    prof = get_profile(profile)
    fingerprint = code_fingerprint(*FINGERPRINT_MODULES)
    config = {"switches": switches, "recommender": cfg, "eval": ev, "tokenizer": prof["gencdr_tokenizer"],
              "backbone": backbone_location(cfg), "domains": domains, "seed": seed}

    def compute():
        mode = switches["decode"]
        out = train_and_test(dataset, profile=profile, cfg=cfg, ev=ev, switches=switches, test_modes=(mode,),
                             fingerprint=code_fingerprint(*RECOMMENDER_MODULES), seed=seed, domains=domains,
                             user_streams=True, data_root=data_root, force=force, progress=progress)
        ds, fits = out["dataset"], out["fits"]
        extra = {"rows": {**out["rows"], "rank": out["ranks"][mode]},
                 "training": {k: f.to_dict() for k, f in fits.items()},
                 "trainable_params": out["params"], "test_s": out["timings"][f"test_{mode}_s"],
                 "checkpoints": out["checkpoints"]}
        if not switches["prefix_tree"]:
            extra["rows"]["invalid_beams"] = out["invalid"]
            extra["invalid_share"] = float(np.sum(out["invalid"]) / (len(out["invalid"]) * ev["beams"]))
        wall = sum(f.wall_time or 0.0 for f in fits.values()) + extra["test_s"]
        return dict(metrics=out["metrics"][mode], dataset=f"{dataset}/{'+'.join(ds.domains)}", seed=seed,
                    split=f"leave-last-out on the merged timeline; test: up to {ev['test_rows_per_domain']} rows of "
                          f"{'+'.join(out['tested'])}", wall_time_s=wall,
                    trainable_params=sum(out["params"].values()), extra=extra)

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

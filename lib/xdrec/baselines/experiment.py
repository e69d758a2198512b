"""One ID-baseline experiment: train SASRec / BERT4Rec (or count popularity) on one domain.

GenCDR compares against SASRec and BERT4Rec in "their standard single-domain setups": the model
for a domain sees only that domain's sequences, split leave-last-out, and ranks every item of the
domain (full ranking, Recall/NDCG@5/10). The checkpoint with the best validation Recall@10 is
tested. The result goes to ``results/<profile>/id_baseline__<dataset>__<domain>__<model>__seed<k>.json``;
a finished result is not recomputed unless ``force``.

Command line (what ``accelerate launch`` runs at the ``paper`` profile)::

    python -m xdrec.baselines.experiment --model sasrec-bce --dataset amazon14-5core-sequences --domain Sports --profile paper
"""
from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import data, smoke
from ..io import sha256_text
from ..metrics import DEFAULT_KS, rank_metrics
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint, load_result, stored_or_computed
from ..training import TrainConfig, count_trainable_params
from .evaluation import evaluate
from .trainers import train_bert4rec, train_sasrec

MODELS = ("pop", "sasrec-bce", "sasrec-ce", "bert4rec")
"""``sasrec-bce``: the original SASRec loss (one sampled negative per position, binary cross-entropy);
``sasrec-ce``: full softmax cross-entropy over all items, the common modern variant."""


def result_name(model: str, dataset: str, domain: str, seed: int) -> str:
    return f"id_baseline__{dataset}__{domain}__{model}__seed{seed}"


def most_popular(split, n_items: int, ks=DEFAULT_KS) -> dict[str, float]:
    """Reference point: rank every item by its number of training interactions."""
    counts = np.zeros(n_items, dtype=np.int64)
    for seq in split.train.values():
        np.add.at(counts, np.asarray(seq, dtype=np.int64), 1)
    order = np.argsort(-counts, kind="stable")
    ranked = np.broadcast_to(order, (len(split.test), n_items))
    return rank_metrics(ranked, split.test.target.to_numpy(), ks=ks)


def run_id_baseline(model: str, dataset: str, domain: str, *, profile: str = "book", seed: int = 0,
                    data_root=None, force: bool = False) -> dict[str, Any]:
    """Train and test one baseline on ``dataset``/``domain``; returns the stored result record."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    name = result_name(model, dataset, domain, seed)
    cfg = get_profile(profile)["id_baselines"]
    model_cfg = _model_config(model, cfg)
    fingerprint = code_fingerprint("xdrec.baselines", "xdrec.data", "xdrec.metrics", "xdrec.training")
    return stored_or_computed(name, profile, fingerprint, model_cfg, force=force,
                              compute=lambda: _train_and_test(model, dataset, domain, profile, seed, data_root, cfg,
                                                              model_cfg, name, fingerprint))


def _train_and_test(model, dataset, domain, profile, seed, data_root, cfg, model_cfg, name, fingerprint):
    """The fields of one baseline's result record: test metrics, and its training when it trains."""
    ds = data.load(dataset, root=data_root).subset([domain])
    split = data.leave_last_out(ds)
    if smoke.active():  # a smoke run (xdrec.smoke): a few validation and test users
        n = smoke.rows(None)
        split = SimpleNamespace(train=split.train, valid=split.valid.sample(min(n, len(split.valid)), random_state=seed),
                                test=split.test.sample(min(n, len(split.test)), random_state=seed))
    t0 = time.perf_counter()
    record = dict(dataset=f"{dataset}/{domain}", seed=seed,
                  split="leave-last-out within the domain; full ranking over the domain's items")
    if model == "pop":
        metrics = most_popular(split, ds.n_items)
        return {**record, "metrics": {k: float(v) for k, v in metrics.items()},
                "wall_time_s": time.perf_counter() - t0, "trainable_params": 0}

    if cfg["max_valid_rows"] and len(split.valid) > cfg["max_valid_rows"]:
        # early stopping on a seeded sample of validation users: a full pass costs as much as an epoch
        split = SimpleNamespace(train=split.train, valid=split.valid.sample(cfg["max_valid_rows"], random_state=seed),
                                test=split.test)
    train_cfg = TrainConfig(epochs=model_cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], patience=model_cfg["patience"],
                            seed=seed, checkpoint_dir=checkpoint_dir(profile, name, run_key(fingerprint, model_cfg)),
                            cpu=get_profile(profile)["device"] == "cpu")
    common = dict(hidden=cfg["hidden"], max_len=cfg["max_len"], dropout=cfg["dropout"])
    if model.startswith("sasrec"):
        net, res = train_sasrec(split, ds.n_items, train_cfg, loss=model.split("-")[1], n_blocks=cfg["layers"],
                                n_heads=cfg["sasrec_heads"], **common)
    else:
        net, res = train_bert4rec(split, ds.n_items, train_cfg, mask_prob=cfg["bert4rec_mask_prob"],
                                  n_layers=cfg["layers"], n_heads=cfg["bert4rec_heads"], **common)
    test = evaluate(net, split.test)
    training = {"best_epoch": res.best_epoch, "best_valid_recall@10": res.best_metric, "epochs_run": res.epochs_run,
                "stop_reason": res.stop_reason,
                "history": [{k: v for k, v in h.items() if k in ("epoch", "train_loss", "valid/recall@10", "valid/ndcg@10")}
                            for h in res.history]}
    return {**record, "metrics": {k: float(v) for k, v in test.items()}, "wall_time_s": res.wall_time,
            "trainable_params": count_trainable_params(net), "extra": {"training": training}}


def run_key(fingerprint: str, model_cfg: dict[str, Any]) -> str:
    """Checkpoints are resumed only by a run with the same code and the same settings."""
    return f"{fingerprint}-{sha256_text(json.dumps(model_cfg, sort_keys=True))[:12]}"


def _model_config(model: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings a stored result must share with the current profile to be reused."""
    if model == "pop":
        return {}
    keys = ["hidden", "layers", "max_len", "dropout", "lr", "batch_size", "patience", "max_valid_rows"]
    keys += ["sasrec_heads"] if model.startswith("sasrec") else ["bert4rec_heads", "bert4rec_mask_prob"]
    return {**{k: cfg[k] for k in keys}, "epochs": cfg["epochs_by_model"].get(model, cfg["epochs"]),
            "patience": cfg["patience_by_model"].get(model, cfg["patience"])}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--all", action="store_true", help="every run of the profile's id_baselines.runs x seeds")
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--dataset")
    p.add_argument("--domain")
    p.add_argument("--profile", default="book")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    if a.all:
        run_all(a.profile, force=a.force, launch=False)
        return
    if not (a.model and a.dataset and a.domain):
        p.error("--model, --dataset and --domain are required (or --all)")
    rec = run_id_baseline(a.model, a.dataset, a.domain, profile=a.profile, seed=a.seed, force=a.force)
    print({k: round(v, 4) for k, v in rec["metrics"].items()})



def run_all(profile: str, data_root=None, force: bool = False, launch: bool = True) -> list[dict[str, Any]]:
    """Every (dataset, domain, model, seed) of the profile's ``id_baselines.runs``; finished ones are read back.

    At the ``paper`` profile the runs go through one ``accelerate launch -m xdrec.baselines.experiment
    --all`` (see :mod:`xdrec.launch`), which trains them one after the other: one process start and
    one data load per domain instead of one per run (108 runs: each start alone took ~10 s).
    ``launch=False``: in this process (what the launched command does).
    """
    from ..launch import run_stage

    cfg = get_profile(profile)["id_baselines"]
    jobs = [(m, d, dom, s) for d, dom, models in cfg["runs"] for m in models for s in cfg["seeds"]]

    def train_all():
        for model, dataset, domain, seed in jobs:
            run_id_baseline(model, dataset, domain, profile=profile, seed=seed, data_root=data_root, force=force)

    if launch and data_root is None:
        run_stage(__name__, ["--all", "--profile", profile] + (["--force"] if force else []), profile, train_all)
    else:
        train_all()
    return [load_result(result_name(model, dataset, domain, seed), profile) for model, dataset, domain, seed in jobs]


def results_frame(records: list[dict[str, Any]]):
    """One row per result: dataset, domain, model, seed, the metrics, wall time, epochs, parameters."""
    import pandas as pd

    rows = []
    for r in records:
        _, dataset, domain, model, seed = r["name"].split("__")
        training = r.get("extra", {}).get("training", {})
        rows.append({"dataset": dataset, "domain": domain, "model": model, "seed": int(seed.removeprefix("seed")),
                     **r["metrics"], "best_epoch": training.get("best_epoch"),
                     "wall_time_s": r["provenance"]["wall_time_s"], "params": r["provenance"]["trainable_params"]})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()

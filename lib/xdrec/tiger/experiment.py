"""Train and test the TIGER baseline on a dataset: ``run_tiger(dataset, profile=...)``.

Stages (each resumable; a current stored result skips them all):

1. semantic IDs of the items from a plain RQ-VAE with TIGER's extra collision level
   (:func:`~xdrec.tiger.semantic_ids.tiger_semantic_ids`);
2. the T5 (:class:`~xdrec.tiger.TIGER`) trained on every next item of every training timeline
   (leave-last-out on the chosen domains' merged timelines), early-stopped on Recall@10 of a
   seeded sample of validation rows (``generative_eval.valid_rows_per_domain``);
3. test: constrained beam search on the seeded sample of test rows
   (``sample_rows(split.test, test_rows_per_domain, seed)``): the same rows as GenCDR and the ID
   baselines, so the per-row ranks support paired tests.

The result ``results/<profile>/tiger__<dataset>__seed<s>.json`` holds Recall/NDCG@5/10 per domain
and overall, per-row ranks (in test-row order, with each row's user and domain), the training
history, timings and throughput, ID statistics and the parameter count. Checkpoints::

    checkpoints/tiger/<dataset>/rqvae-seed<s>-<key>/   the RQ-VAE and the IDs
    checkpoints/tiger/<dataset>/t5-seed<s>-<key>/      fit checkpoints of the T5

``domains`` picks domains of a set other than the profile's (``gencdr_tokenizer.datasets``): TIGER's
own benchmark is ``run_tiger("amazon14-5core-sequences", domains=["Beauty"], ...)``, stored as
``tiger__amazon14-5core-sequences-Beauty__seed<s>``.

Command line: ``python -m xdrec.tiger.experiment --dataset amazon18-xcross --profile book``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .. import data
from ..generative import evaluate_generative, evaluation_rows, user_timelines
from ..io import is_main_process, sha256_text, wait_for_main
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint, stored_or_computed
from ..training import TrainConfig, count_trainable_params, fit
from .examples import NextItemExamples
from .model import TIGER, TIGERConfig
from .semantic_ids import TigerIds, rqvae_settings, tiger_semantic_ids

FINGERPRINT_MODULES = ("xdrec.tiger", "xdrec.generative", "xdrec.decoding", "xdrec.gencdr.train_tokenizer",
                       "xdrec.gencdr.tokenizer", "xdrec.quantization", "xdrec.training", "xdrec.data", "xdrec.encoders",
                       "xdrec.metrics")
REPORTED = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
OPTIONAL = {"tokens_per_epoch": None, "max_steps": None, "schedule": "constant", "warmup_steps": 0,
            "mixed_precision": "no"}
"""Settings of the ``tiger`` section a profile may leave out (defaults here): a cap on the encoder
tokens of an epoch (a fresh seeded sample of examples each epoch, see
:class:`~xdrec.tiger.NextItemExamples`), on the optimizer steps of the whole run, and the learning
rate schedule after a linear warm-up (:class:`~xdrec.training.TrainConfig`; a decaying schedule
runs over ``max_steps``), and ``mixed_precision`` (``"no"`` or ``"bf16"``: the training forward
under autocast, as Accelerate applies it; the weights, the optimiser and the beam search stay
fp32, since :meth:`~xdrec.tiger.TIGER.recommend` calls the T5's encoder and decoder directly)."""

__all__ = ["FINGERPRINT_MODULES", "REPORTED", "StoppedAtDeadline", "TigerIds", "benchmark_name", "build", "main",
           "result_name", "run_all", "run_tiger", "run_tiger_benchmark", "settings", "tiger_semantic_ids"]


class StoppedAtDeadline(RuntimeError):
    """Training stopped at :func:`run_tiger`'s deadline: checkpointed, not tested, nothing stored."""


def result_name(dataset: str, seed: int, domains: Sequence[str] | None = None) -> str:
    """``tiger__<dataset>__seed<s>``, with ``-<domain>+<domain>`` after the dataset when ``domains`` are chosen."""
    return f"tiger__{dataset}{'-' + '+'.join(domains) if domains else ''}__seed{seed}"


def settings(profile: str, dataset: str, seed: int, overrides: Mapping[str, Any] | None = None,
             domains: Sequence[str] | None = None, eval_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything a stored result must share with the current profile to be reused.

    ``overrides`` replace entries of the profile's ``tiger`` section (e.g. ``{"epochs": 3}``); they
    become part of the settings, so a result trained with them is current only for them.
    """
    prof = get_profile(profile)
    tiger = {**prof["tiger"], **(overrides or {})}
    unknown = set(overrides or {}) - set(prof["tiger"]) - set(OPTIONAL)
    if unknown:
        raise ValueError(f"unknown tiger setting(s) {sorted(unknown)}; the profile has {sorted(prof['tiger'])}")
    unknown = set(eval_overrides or {}) - set(prof["generative_eval"])
    if unknown:
        raise ValueError(f"unknown generative_eval setting(s) {sorted(unknown)}; "
                         f"the profile has {sorted(prof['generative_eval'])}")
    tiger.pop("seeds", None)
    return {"tiger": tiger, "eval": {**prof["generative_eval"], **(eval_overrides or {})}, "rqvae": rqvae_settings(prof, dataset, domains), "seed": seed,
            "device": prof["device"]}


def build(dataset: str, profile: str = "book", *, seed: int = 0, data_root=None, overrides: Mapping[str, Any] | None = None,
          domains: Sequence[str] | None = None, eval_overrides: Mapping[str, Any] | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Everything a run needs, without training: IDs, dataset, split, model, training examples, rows."""
    prof = get_profile(profile)
    cfg = settings(profile, dataset, seed, overrides, domains, eval_overrides)
    ev = cfg["eval"]
    sid = tiger_semantic_ids(dataset, profile, seed, domains=domains, data_root=data_root, progress=progress)
    ds = data.load(dataset, root=data_root, domains=sid.domains)
    if len(ds.items) != len(sid.items) or not (ds.items["item_key"].to_numpy() == sid.items["item_key"].to_numpy()).all():
        raise ValueError(f"{dataset}: the items of the semantic IDs are not the dataset's items (stale cache?)")
    split = data.leave_last_out(ds)
    torch.manual_seed(seed)
    model = TIGER(sid.ids, ds.items["domain"].to_numpy(), ds.domains, TIGERConfig.from_profile(cfg["tiger"], ev),
                  codebook_sizes=sid.codebook_sizes)
    if prof["device"] != "cpu" and torch.cuda.is_available():
        model.to("cuda")
    timelines = user_timelines(split.train)
    examples = NextItemExamples(timelines, model, batch_size=cfg["tiger"]["batch_size"], seed=seed,
                                tokens_per_epoch=cfg["tiger"].get("tokens_per_epoch"))
    return {"profile": prof, "settings": cfg, "ids": sid, "dataset": ds, "split": split, "model": model,
            "examples": examples, "valid": evaluation_rows(split.valid, ev["valid_rows_per_domain"], seed),
            "test": evaluation_rows(split.test, ev["test_rows_per_domain"], seed)}


def run_tiger(dataset: str, *, profile: str = "book", seed: int = 0, force: bool = False, progress: bool = True,
              data_root=None, overrides: Mapping[str, Any] | None = None, domains: Sequence[str] | None = None,
              eval_overrides: Mapping[str, Any] | None = None, deadline: float | None = None) -> dict[str, Any]:
    """Train (or read back) TIGER on ``dataset`` and test it; returns the stored result record.

    ``deadline`` (a ``time.time()``): training stops there, checkpointed, and raises
    :class:`StoppedAtDeadline`; called again, the run resumes where it stopped.
    """
    fingerprint = code_fingerprint(*FINGERPRINT_MODULES)
    config = settings(profile, dataset, seed, overrides, domains, eval_overrides)
    name = result_name(dataset, seed, domains)

    def compute():
        t0 = time.perf_counter()
        run = build(dataset, profile, seed=seed, data_root=data_root, overrides=overrides, domains=domains,
                    eval_overrides=eval_overrides, progress=progress)
        t_build = time.perf_counter() - t0
        model, ds, sid, examples = run["model"], run["dataset"], run["ids"], run["examples"]
        valid, test, tc, ev = run["valid"], run["test"], config["tiger"], config["eval"]

        key = sha256_text(fingerprint, json.dumps(config, sort_keys=True), sha256_text(sid.ids.tobytes().hex()))[:16]
        ckpt = checkpoint_dir("tiger", dataset, f"t5-seed{seed}-{key}")
        if force and is_main_process():
            shutil.rmtree(ckpt, ignore_errors=True)
        wait_for_main()

        def validate(m: TIGER) -> dict[str, float]:
            res = evaluate_generative(m.recommend, valid, k=ev["top_k"], batch_size=ev["batch_size"])
            return {k: res["all"][k] for k in REPORTED}

        train_cfg = TrainConfig(epochs=tc["epochs"], lr=tc["lr"], batch_size=tc["batch_size"], patience=tc["patience"],
                                seed=seed, max_steps=tc.get("max_steps"), checkpoint_dir=ckpt,
                                schedule=tc.get("schedule", "constant"), warmup_steps=tc.get("warmup_steps", 0),
                                mixed_precision=tc.get("mixed_precision", "no"), cpu=config["device"] == "cpu",
                                progress=progress)
        res = fit(model, examples, validate, train_cfg, metric="recall@10", deadline=deadline)
        if res.stop_reason == "deadline":
            raise StoppedAtDeadline(f"TIGER on {name}: stopped at the deadline after {res.global_step} steps; "
                              f"checkpoints in {ckpt.relative_to(checkpoint_dir())} resume it")
        model.eval()

        t1 = time.perf_counter()
        out = evaluate_generative(model.recommend, test, k=ev["top_k"], batch_size=ev["batch_size"], per_row=True,
                                  show_progress=progress, desc="test")
        test_s = time.perf_counter() - t1
        metrics = _flat(out, ds.domains)

        users = ds.users.set_index("user")["user_key"]
        keys = ds.items["item_key"].to_numpy()
        train_times = [h["train_time"] for h in res.history if h.get("train_time")]
        eval_times = [h["eval_time"] for h in res.history if h.get("eval_time") is not None]
        extra = {
            "rows": {"user": test["user"].tolist(), "user_key": users.loc[test["user"]].tolist(),
                     "domain": [ds.domains[d] for d in test["domain"]], "target_key": keys[test["target"]].tolist(),
                     "rank": out["all"]["rank"].tolist()},
            "training": {**res.to_dict(), "examples_per_epoch": examples.examples_per_epoch, "all_examples": len(examples),
                         "encoder_tokens_per_epoch": examples.tokens_per_epoch},
            "timings": {
                "build_s": t_build, "ids_s": sid.seconds, "ids_trained": sid.trained, "train_s": res.wall_time,
                "mean_epoch_train_s": float(np.mean(train_times)) if train_times else None,
                "mean_validation_s": float(np.mean(eval_times)) if eval_times else None,
                "examples_per_s": examples.examples_per_epoch / float(np.mean(train_times)) if train_times else None,
                "test_s": test_s, "test_rows_per_s": len(test) / test_s if test_s > 0 else None,
                "fit_skipped": res.skipped,
            },
            "ids": {"rule": sid.rule, "codebook_sizes": sid.codebook_sizes, "stats": sid.stats,
                    "directory": str(sid.directory.relative_to(checkpoint_dir()))},
            "params": count_trainable_params(model),
            "split": {"train_timelines": len(examples.timelines), "train_examples": len(examples),
                      "valid_rows": len(valid), "test_rows": len(test),
                      "test_rows_per_domain": {ds.domains[d]: int((test["domain"] == d).sum()) for d in sorted(set(test["domain"]))}},
            "checkpoint": str(ckpt.relative_to(checkpoint_dir())),
        }
        return dict(metrics=metrics, dataset=f"{dataset}/{'+'.join(ds.domains)}", seed=seed,
                    split=f"leave-last-out on the merged timeline; test: up to {ev['test_rows_per_domain']} rows per domain",
                    wall_time_s=res.wall_time + test_s, trainable_params=count_trainable_params(model), extra=extra)

    return stored_or_computed(name, profile, fingerprint, config, compute, force=force)


def benchmark_name(profile: str, seed: int) -> str:
    """The result name of TIGER's own benchmark run (the profile's ``tiger_benchmark``)."""
    bench = get_profile(profile)["tiger_benchmark"]
    return result_name(bench["dataset"], seed, bench["domains"])


def run_tiger_benchmark(profile: str = "book", *, seed: int = 0, force: bool = False, progress: bool = True,
                        data_root=None, deadline: float | None = None) -> dict[str, Any]:
    """TIGER on its own benchmark, Amazon Beauty (the profile's ``tiger_benchmark`` section): the T5 and
    schedule of ``tiger`` with that section's overrides, evaluated by ``generative_eval`` with its own."""
    bench = get_profile(profile)["tiger_benchmark"]
    return run_tiger(bench["dataset"], profile=profile, seed=seed, force=force, progress=progress,
                     data_root=data_root, overrides=bench["tiger"], domains=bench["domains"],
                     eval_overrides=bench["eval"], deadline=deadline)


def _flat(res: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``{"all": {...}, "<domain name>": {...}}`` with Recall/NDCG@5/10 and the number of rows."""
    def means(m):
        return {k: float(np.mean(m[k])) if len(m[k]) else 0.0 for k in REPORTED} | {"n": int(len(m["rank"]))}
    out = {"all": means(res["all"])}
    for key, m in res.items():
        if key != "all":
            out[names[int(key)]] = means(m)
    return out


def run_all(profile: str, *, force: bool = False, data_root=None) -> list[dict[str, Any]]:
    """Every dataset of the profile's ``gencdr_tokenizer.datasets`` x every seed of ``tiger.seeds``.

    Finished, current results are read back; at the ``paper`` profile each run goes through
    ``accelerate launch`` (see :mod:`xdrec.launch`).
    """
    from ..launch import run_stage
    from ..results import load_result

    prof = get_profile(profile)
    records = []
    for dataset in prof["gencdr_tokenizer"]["datasets"]:
        for seed in prof["tiger"]["seeds"]:
            args = ["--dataset", dataset, "--profile", profile, "--seed", str(seed)] + (["--force"] if force else [])
            run_stage(__name__, args, profile,
                      lambda dataset=dataset, seed=seed: run_tiger(dataset, profile=profile, seed=seed, force=force, data_root=data_root))
            records.append(load_result(result_name(dataset, seed), profile))
    return records


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset")
    p.add_argument("--profile", default="book")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--benchmark", action="store_true",
                   help="TIGER's own benchmark (the profile's tiger_benchmark: Amazon Beauty) instead of --dataset")
    p.add_argument("--hours", type=float, default=None,
                   help="stop training after this many hours, checkpointed; a rerun resumes it")
    a = p.parse_args(argv)
    if not a.benchmark and not a.dataset:
        p.error("--dataset is required unless --benchmark")
    deadline = None if a.hours is None else time.time() + 3600 * a.hours
    if a.benchmark:
        rec = run_tiger_benchmark(a.profile, seed=a.seed, force=a.force, deadline=deadline)
    else:
        rec = run_tiger(a.dataset, profile=a.profile, seed=a.seed, force=a.force, deadline=deadline)
    print(json.dumps(rec["metrics"], indent=1))


if __name__ == "__main__":
    main()

"""ID baselines on the generative recommenders' test rows, and paired tests between per-row results.

GenCDR and TIGER are tested on a seeded sample of the test rows of a leave-last-out split of the
chosen domains' merged timelines (``sample_rows(split.test, test_rows_per_domain, seed)``, the
``generative_eval`` section of a profile). The single-domain ID baselines of GenCDR's Table 2
(SASRec, Kang & McAuley, ICDM 2018; BERT4Rec, Sun et al., CIKM 2019; and popularity) were trained
and tested by :mod:`xdrec.baselines.experiment` on *all* the test rows of one domain, split within
that domain. A significance test needs both systems scored on the same rows, so
:func:`baseline_on_rows` scores a stored baseline on exactly the generative sample:

- both splits hold out the same event: the last item of a user in the domain, for users with at
  least 3 items there (the merged timeline keeps each domain's order). The row's history differs:
  the baseline sees only the domain's items, as in its "standard single-domain setup";
- item and user ids differ between the single-domain subset and the multi-domain dataset, so rows
  are matched by the raw user key (reviewerID) and the target's raw item key (ASIN) is checked;
- each row is ranked against every item of the domain (full ranking, ties pessimistic), exactly as
  the baselines are tested (:func:`xdrec.baselines.evaluation.evaluate`).

The same holds for the rows of TIGER's own benchmark (the profile's ``tiger_benchmark``: Amazon
Beauty, a seeded sample of its test users), where the two splits are one: the set has one domain.

The result ``results/<profile>/id_baseline_rows__<dataset>__<domain>__<model>__seed<s>.json`` holds
the mean metrics and, in ``extra["rows"]``, each row's ``user_key``, ``domain``, ``target_key`` and
0-based ``rank`` (the layout of the generative results), so :func:`paired_comparison` can align any
two of them by (user, domain) and run a paired t-test (:func:`xdrec.metrics.paired_ttest`).

Command line: ``python -m xdrec.comparison --profile book --seed 0`` (every baseline of the profile
on the generative rows of every dataset of ``gencdr_tokenizer.datasets``).
"""
from __future__ import annotations

import argparse
import inspect
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import data
from .io import sha256_text
from .metrics import DEFAULT_KS, metrics_from_ranks, paired_ttest
from .paths import checkpoint_dir
from .profiles import get_profile
from .results import code_fingerprint, stored_or_computed

MODELS = ("pop", "sasrec-bce", "sasrec-ce", "bert4rec")
BASELINE_MODULES = ("xdrec.baselines", "xdrec.data", "xdrec.metrics", "xdrec.training")
"""What :func:`xdrec.baselines.experiment.run_id_baseline` fingerprints: its checkpoints are found by it."""

__all__ = ["MODELS", "align_rows", "baseline_checkpoint", "baseline_on_rows", "generative_test_rows",
           "paired_comparison", "result_name", "rows_of", "run_all"]


def result_name(model: str, dataset: str, domain: str, seed: int) -> str:
    return f"id_baseline_rows__{dataset}__{domain}__{model}__seed{seed}"


# ----------------------------------------------------------------------------------------------
# The rows
# ----------------------------------------------------------------------------------------------
def _row_settings(profile: str, dataset: str) -> tuple[list[str] | None, int | None]:
    """The domains and test rows per domain of ``dataset``'s generative rows: those of GenCDR and
    TIGER (``gencdr_tokenizer.datasets``, ``generative_eval``) or, for the set of TIGER's own
    benchmark, those of ``tiger_benchmark`` (its domains, its ``eval`` over ``generative_eval``)."""
    prof = get_profile(profile)
    chosen = prof["gencdr_tokenizer"]["datasets"]
    if dataset in chosen:
        domains = chosen[dataset]
        return (None if domains is None else list(domains)), prof["generative_eval"]["test_rows_per_domain"]
    bench = prof["tiger_benchmark"]
    if dataset == bench["dataset"]:
        return list(bench["domains"]), {**prof["generative_eval"], **bench["eval"]}["test_rows_per_domain"]
    raise ValueError(f"profile {profile!r} evaluates generative recommenders on {sorted(chosen)} and TIGER's "
                     f"benchmark on {bench['dataset']!r}, not {dataset!r}")


def generative_test_rows(dataset: str, *, profile: str = "book", seed: int = 0, data_root=None) -> pd.DataFrame:
    """The test rows GenCDR and TIGER are scored on, with raw keys.

    Columns ``user``, ``domain``, ``history``, ``target`` (ids of the multi-domain dataset), and
    ``user_key``, ``domain_name``, ``target_key``; in the order of ``sample_rows``.
    """
    from .generative import evaluation_rows

    domains, per_domain = _row_settings(profile, dataset)
    ds = data.load(dataset, root=data_root, domains=domains)
    rows = evaluation_rows(data.leave_last_out(ds).test, per_domain, seed)
    return _with_keys(rows, ds)


def _with_keys(rows: pd.DataFrame, ds) -> pd.DataFrame:
    rows = rows.copy()
    rows["user_key"] = ds.users["user_key"].to_numpy()[rows["user"].to_numpy()]
    rows["domain_name"] = np.asarray(ds.domains, dtype=object)[rows["domain"].to_numpy()]
    rows["target_key"] = ds.items["item_key"].to_numpy()[rows["target"].to_numpy()]
    return rows


def _single_domain_rows(gen_rows: pd.DataFrame, domain_test: pd.DataFrame) -> pd.DataFrame:
    """The rows of the single-domain split that hold out the same events as ``gen_rows`` (same order)."""
    by_user = domain_test.set_index("user_key")
    if not by_user.index.is_unique:
        raise ValueError("the single-domain split has two test rows for one user")
    missing = ~gen_rows["user_key"].isin(by_user.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} sampled users (e.g. {gen_rows['user_key'][missing].iloc[0]!r}) have no "
                         "test row in the single-domain split: the two splits disagree")
    matched = by_user.loc[gen_rows["user_key"].to_numpy()].reset_index()
    differ = matched["target_key"].to_numpy() != gen_rows["target_key"].to_numpy()
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        raise ValueError(f"user {gen_rows['user_key'].iloc[i]!r}: the generative split holds out "
                         f"{gen_rows['target_key'].iloc[i]!r}, the single-domain split {matched['target_key'].iloc[i]!r}")
    return matched


# ----------------------------------------------------------------------------------------------
# The stored baselines
# ----------------------------------------------------------------------------------------------
def _baseline_settings(model: str, profile: str) -> tuple[dict[str, Any], str]:
    from .baselines.experiment import _model_config, run_key

    model_cfg = _model_config(model, get_profile(profile)["id_baselines"])
    return model_cfg, run_key(code_fingerprint(*BASELINE_MODULES), model_cfg)


def baseline_checkpoint(model: str, dataset: str, domain: str, *, profile: str = "book", seed: int = 0) -> Path:
    """The best weights :func:`~xdrec.baselines.experiment.run_id_baseline` kept for this run (current code and settings).

    Raises ``FileNotFoundError`` saying which file is missing and how to create it.
    """
    from .baselines.experiment import result_name as baseline_name

    if model == "pop":
        raise ValueError("the popularity baseline has no weights")
    _, key = _baseline_settings(model, profile)
    folder = checkpoint_dir(profile) / baseline_name(model, dataset, domain, seed) / key
    found = sorted(folder.glob("best-epoch*.safetensors"))
    done = folder / "done.json"
    if done.exists():  # the finished run names its best file
        from .io import read_json

        best = read_json(done).get("best_file")
        if best and (folder / best).exists():
            return folder / best
    if len(found) == 1:
        return found[0]
    what = "several best-epoch*.safetensors and no done.json" if found else "no best-epoch*.safetensors"
    raise FileNotFoundError(
        f"{folder}: {what}, so no trained {model} for {dataset}/{domain} (seed {seed}) with the current baseline code "
        f"and {profile!r} settings. Create it with `./reproduce.sh run --profile {profile}` (notebook of the ID "
        f"baselines) or `python -m xdrec.baselines.experiment --model {model} --dataset {dataset} --domain {domain} "
        f"--profile {profile} --seed {seed}`.")


def _load_net(model: str, n_items: int, path: Path, profile: str):
    from .baselines import BERT4Rec, SASRec
    from .training import load_model_state

    cfg = get_profile(profile)["id_baselines"]
    common = dict(hidden=cfg["hidden"], max_len=cfg["max_len"], dropout=cfg["dropout"])
    if model.startswith("sasrec"):  # as xdrec.baselines.trainers.train_sasrec builds it
        net = SASRec(n_items, loss=model.split("-")[1], n_blocks=cfg["layers"], n_heads=cfg["sasrec_heads"], **common)
    else:
        net = BERT4Rec(n_items, mask_prob=cfg["bert4rec_mask_prob"], n_layers=cfg["layers"],
                       n_heads=cfg["bert4rec_heads"], **common)
    load_model_state(net, path)
    return net.eval()


def _popularity_ranks(split, n_items: int, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target when every item is ranked by training interactions (stable ties).

    Ranks exactly as :func:`xdrec.baselines.experiment.most_popular` does, one row at a time.
    """
    counts = np.zeros(n_items, dtype=np.int64)
    for seq in split.train.values():
        np.add.at(counts, np.asarray(seq, dtype=np.int64), 1)
    position = np.empty(n_items, dtype=np.int64)
    position[np.argsort(-counts, kind="stable")] = np.arange(n_items)
    return position[targets]


def baseline_on_rows(model: str, dataset: str, domain: str, *, profile: str = "book", seed: int = 0,
                     force: bool = False, data_root=None) -> dict[str, Any]:
    """Score the stored single-domain baseline ``model`` on the generative test rows of ``dataset``/``domain``.

    The rows are those of :func:`generative_test_rows` whose target domain is ``domain``; each is
    ranked by the baseline (trained by :func:`xdrec.baselines.experiment.run_id_baseline` with
    ``seed``) against every item of the domain. Stores and returns the result record
    (see the module docstring); a current stored result is read back instead, so this works
    without the checkpoints (e.g. on CI) once it has been stored.

    Raises ``FileNotFoundError`` if neither a current stored result nor the baseline's checkpoint exists.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    domains, per_domain = _row_settings(profile, dataset)
    if domains is not None and domain not in domains:
        raise ValueError(f"profile {profile!r} evaluates {dataset} on the domains {domains}, not {domain!r}")
    from .generative import sample_rows

    model_cfg, key = _baseline_settings(model, profile)
    config = {"model": model, "baseline": model_cfg, "baseline_run": None if model == "pop" else key,
              "rows": {"dataset": dataset, "domains": domains, "test_rows_per_domain": per_domain, "seed": seed,
                       "sample_rows": sha256_text(inspect.getsource(sample_rows))[:16]}}
    fingerprint = code_fingerprint("xdrec.comparison", *BASELINE_MODULES)
    name = result_name(model, dataset, domain, seed)

    def compute():
        ckpt = None if model == "pop" else baseline_checkpoint(model, dataset, domain, profile=profile, seed=seed)

        t0 = time.perf_counter()
        gen = generative_test_rows(dataset, profile=profile, seed=seed, data_root=data_root)
        gen = gen[gen["domain_name"] == domain].reset_index(drop=True)
        if gen.empty:
            raise ValueError(f"{dataset}: no generative test rows in domain {domain!r}")
        single = data.load(dataset, root=data_root).subset([domain])  # as run_id_baseline loads it
        split = data.leave_last_out(single)
        rows = _single_domain_rows(gen, _with_keys(split.test, single))
        if model == "pop":
            ranks = _popularity_ranks(split, single.n_items, rows["target"].to_numpy())
            params = 0
        else:
            from .baselines.evaluation import evaluate
            from .training import count_trainable_params

            net = _load_net(model, single.n_items, ckpt, profile)
            ranks = evaluate(net, rows, per_row=True)["rank"]
            params = count_trainable_params(net)
        metrics = metrics_from_ranks(ranks, DEFAULT_KS)
        if ckpt is not None and ckpt.is_relative_to(checkpoint_dir()):
            ckpt = ckpt.relative_to(checkpoint_dir())
        extra = {"rows": {"user": gen["user"].tolist(), "user_key": gen["user_key"].tolist(),
                          "domain": gen["domain_name"].tolist(), "target_key": gen["target_key"].tolist(),
                          "rank": np.asarray(ranks).tolist()},
                 "single_domain_user": rows["user"].tolist(),
                 "domain_test_rows": int(len(split.test)), "domain_items": int(single.n_items),
                 "checkpoint": None if ckpt is None else str(ckpt),
                 "full_test_result": f"id_baseline__{dataset}__{domain}__{model}__seed{seed}"}
        return dict(metrics=metrics, dataset=f"{dataset}/{domain}", seed=seed,
                    split=(f"the generative test rows (leave-last-out on the merged timeline of {dataset}, up to "
                           f"{per_domain} rows per domain, seed {seed}) of {domain}; each ranked by the single-domain "
                           "model on its in-domain history against all of the domain's items"),
                    wall_time_s=time.perf_counter() - t0, trainable_params=params, extra=extra)

    return stored_or_computed(name, profile, fingerprint, config, compute, force=force)


def run_all(profile: str = "book", seed: int = 0, *, force: bool = False, data_root=None) -> list[dict[str, Any]]:
    """:func:`baseline_on_rows` for every (dataset, domain, model) of the profile's ``id_baselines.runs``
    whose dataset (and domain) the generative recommenders are evaluated on."""
    prof = get_profile(profile)
    chosen = prof["gencdr_tokenizer"]["datasets"]
    out = []
    for dataset, domain, models in prof["id_baselines"]["runs"]:
        if dataset in chosen and (chosen[dataset] is None or domain in chosen[dataset]):
            for model in models:
                out.append(baseline_on_rows(model, dataset, domain, profile=profile, seed=seed, force=force,
                                            data_root=data_root))
    return out


# ----------------------------------------------------------------------------------------------
# Paired comparison
# ----------------------------------------------------------------------------------------------
def rows_of(result: Mapping[str, Any], mode: str | None = None) -> dict[str, list]:
    """The per-row lists of a stored result (``extra["rows"]``) or of such a rows mapping, with one ``rank`` list.

    GenCDR stores one rank list per decoding mode (``{"fused": [...], ...}``): ``mode`` picks one
    (default ``"fused"``, the mode its headline metrics are taken from).
    """
    rows = result.get("extra", {}).get("rows") if "extra" in result else result
    if not isinstance(rows, Mapping) or "rank" not in rows:
        raise ValueError(f"{result.get('name', 'this result')}: no per-row ranks (extra.rows.rank)")
    rank = rows["rank"]
    if isinstance(rank, Mapping):
        pick = mode or ("fused" if "fused" in rank else None)
        if pick not in rank:
            raise ValueError(f"ranks are stored per mode {sorted(rank)}: pass mode= one of them")
        rank = rank[pick]
    elif mode is not None:
        raise ValueError(f"{result.get('name', 'this result')} has a single rank list; mode={mode!r} does not apply")
    out = {k: list(v) for k, v in rows.items() if k != "rank" and isinstance(v, Sequence) and len(v) == len(rank)}
    out["rank"] = list(rank)
    return out


def align_rows(result_a_rows: Mapping[str, Any], result_b_rows: Mapping[str, Any], *,
               mode_a: str | None = None, mode_b: str | None = None) -> pd.DataFrame:
    """Rows present in both results, matched by (user, domain): ``user``, ``domain``, ``rank_a``, ``rank_b``.

    Users are matched by ``user_key`` when both results have it (it survives renumbering), else by
    ``user``. The order is ``a``'s. Raises ``ValueError`` if a row appears twice in one result or
    if both results name a different target for one (user, domain).
    """
    a, b = pd.DataFrame(rows_of(result_a_rows, mode_a)), pd.DataFrame(rows_of(result_b_rows, mode_b))
    user = "user_key" if "user_key" in a and "user_key" in b else "user"
    for side, f in (("a", a), ("b", b)):
        if user not in f or "domain" not in f:
            raise ValueError(f"result {side} has no per-row {user!r} and 'domain'")
        if f.duplicated([user, "domain"]).any():
            raise ValueError(f"result {side} holds a (user, domain) twice")
    cols = [user, "domain", "rank"] + (["target_key"] if "target_key" in a and "target_key" in b else [])
    m = a[cols].merge(b[cols], on=[user, "domain"], suffixes=("_a", "_b"), how="inner", sort=False)
    if "target_key" in cols:
        differ = m["target_key_a"] != m["target_key_b"]
        if differ.any():
            r = m[differ].iloc[0]
            raise ValueError(f"user {r[user]!r} in {r['domain']}: target {r['target_key_a']!r} in a but "
                             f"{r['target_key_b']!r} in b (different splits?)")
        m = m.drop(columns="target_key_b").rename(columns={"target_key_a": "target_key"})
    return m.rename(columns={user: "user"})


def paired_comparison(result_a_rows: Mapping[str, Any], result_b_rows: Mapping[str, Any], metric: str = "ndcg@10", *,
                      mode_a: str | None = None, mode_b: str | None = None) -> dict[str, Any]:
    """Paired two-sided t-test of ``metric`` between two per-row results on their common (user, domain) rows.

    Either argument is a stored result record or its ``extra["rows"]``. Returns the number of
    common rows ``n`` (and of rows only in ``a`` / only in ``b``), both means, their difference,
    and ``t``, ``p`` of :func:`xdrec.metrics.paired_ttest` (``t > 0``: ``a`` is better).
    """
    m = align_rows(result_a_rows, result_b_rows, mode_a=mode_a, mode_b=mode_b)
    ks = [int(metric.split("@")[1])] if "@" in metric and metric.split("@")[1].isdigit() else list(DEFAULT_KS)
    va = metrics_from_ranks(m["rank_a"].to_numpy(), ks, per_row=True)
    if metric not in va or metric == "rank":
        raise ValueError(f"unknown metric {metric!r}; use e.g. recall@10, ndcg@10, mrr@10 or mrr")
    va = va[metric]
    vb = metrics_from_ranks(m["rank_b"].to_numpy(), ks, per_row=True)[metric]
    n_a, n_b = len(rows_of(result_a_rows, mode_a)["rank"]), len(rows_of(result_b_rows, mode_b)["rank"])
    test = paired_ttest(va, vb)
    return {"metric": metric, "n": len(m), "only_a": n_a - len(m), "only_b": n_b - len(m),
            "mean_a": float(va.mean()) if len(m) else float("nan"), "mean_b": float(vb.mean()) if len(m) else float("nan"),
            "diff": float((va - vb).mean()) if len(m) else float("nan"), "t": test.t, "p": test.p}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="book")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    for rec in run_all(a.profile, a.seed, force=a.force):
        m = rec["metrics"]
        print(f"{rec['name']}: n={m['n']} " + " ".join(f"{k}={m[k]:.4f}" for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")))


if __name__ == "__main__":
    main()

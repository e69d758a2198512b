"""Train and test GenCDR's recommender: one pipeline for the main result and every study run.

:func:`train_and_test` is the pipeline (each stage resumable, each skipped when finished):

1. semantic IDs of the items from the tokenizer (:func:`xdrec.gencdr.train_tokenizer.run_tokenizer`);
2. the backbone with the ID tokens added, universal LoRA experts trained on every user's
   cross-domain timeline (Eq. 9), early-stopped on validation Recall@10 of ``P_uni``;
3. per tested domain: its LoRA adapter (Eq. 10) and its user router (Eq. 11), early-stopped on the
   domain's validation Recall@10 of ``P_final``;
4. test: constrained beam search (Eq. 12) on a seeded sample of test rows per domain (the same
   rows as TIGER and the ID baselines).

What a run changes is said by its *switches* (:data:`DEFAULTS` is the main run; each Table 3
ablation of :mod:`xdrec.gencdr.experiment` changes one) and its recommender settings (a Figure 4
point changes one hyper-parameter). :func:`run_recommender` is the main result: the defaults,
tested under ``P_final``, ``P_uni`` and ``P_spec``, stored as
``results/<profile>/gencdr__<dataset>__<variant>__seed<s>.json`` with the metrics per domain,
per-row ranks and ``gamma`` (for paired tests and the router's distribution), the experts' gate
usage per domain, training histories and throughput.

Checkpoints hold only what trains (ID embeddings, experts, gates, adapters, routers), never the
backbone, under ``checkpoints/gencdr_recommender/<dataset>/seed<s>-<phase 1 key>/``: phase 1 is
keyed by what it depends on (the switches that change training, the settings outside phase 2),
each domain's phase 2 by its own settings on top, so runs that differ only in decoding or in the
domain adapters share what they can. ``force`` retrains (deletes that folder).

Command line: ``python -m xdrec.gencdr.train_recommender --dataset amazon18-xcross --profile book``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from typing import Any

import numpy as np
import torch

from .. import data
from ..decoding import INVALID, TrieTensors, UnconstrainedTrie, keep_valid
from ..encoders.backbones import load_causal_lm
from ..generative import ItemTokens, evaluate_generative, evaluation_rows, next_id_batch, user_timelines
from ..io import is_main_process, sha256_text, wait_for_main
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint, stored_or_computed
from ..training import TrainConfig, count_trainable_params, fit
from .experts import AverageGate
from .recommender import MODES, GenCDRRecommender, add_semantic_id_tokens
from .train_tokenizer import run_tokenizer

FINGERPRINT_MODULES = ("xdrec.gencdr.recommender", "xdrec.gencdr.experts", "xdrec.gencdr.train_recommender",
                       "xdrec.gencdr.routing", "xdrec.gencdr.tokenizer", "xdrec.gencdr.train_tokenizer",
                       "xdrec.generative", "xdrec.decoding", "xdrec.quantization", "xdrec.training", "xdrec.data",
                       "xdrec.metrics", "xdrec.encoders")
VARIANTS = {"full": {"tokenizer": "full"}}
REPORTED = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")

DEFAULTS: dict[str, Any] = {"tokenizer": "full", "universal_experts": True, "gate": "learned", "decode": "fused",
                            "prefix_tree": True}
"""The main run's switches: semantic IDs of the full tokenizer, the universal experts with their
learned MoE gate, decoding under ``P_final`` in the prefix tree."""
TRAINING_KEYS = ("tokenizer", "universal_experts", "gate")
"""The switches that change what trains (the others only change decoding)."""
PHASE2_SETTINGS = ("domain_lora", "domain", "router")
"""The recommender settings that phase 1 does not depend on."""


def result_name(dataset: str, variant: str, seed: int) -> str:
    return f"gencdr__{dataset}__{variant}__seed{seed}"


def backbone_location(cfg: dict[str, Any]) -> str:
    """The profile's backbone, unless ``XDREC_BACKBONE`` names a local model folder (paper profile)."""
    return os.environ.get("XDREC_BACKBONE") or cfg["backbone"]


class TimelineBatches:
    """Shuffled, length-bucketed batches of training timelines, rebuilt every epoch (seeded)."""

    def __init__(self, timelines: list[np.ndarray], items: ItemTokens, *, batch_size: int, max_items: int,
                 prefix: list[int], pad_id: int, seed: int):
        self.timelines, self.items, self.bs, self.max_items = timelines, items, batch_size, max_items
        self.prefix, self.pad_id, self.seed = prefix, pad_id, seed
        self.tokens_per_epoch = sum(len(prefix) + min(len(s), max_items) * (items.vocab.n_levels + 1) for s in timelines)

    def __call__(self, epoch: int) -> list[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(self.seed * 100_003 + epoch)
        order = rng.permutation(len(self.timelines))
        chunk = self.bs * 32  # sort by length within chunks of 32 batches: little padding, still shuffled
        batches = []
        for s in range(0, len(order), chunk):
            part = sorted(order[s:s + chunk], key=lambda i: len(self.timelines[i]))
            batches += [part[j:j + self.bs] for j in range(0, len(part), self.bs)]
        rng.shuffle(batches)
        return [next_id_batch([self.timelines[i] for i in b], self.items, max_items=self.max_items,
                              prefix=self.prefix, pad_id=self.pad_id) for b in batches]


def _has_target_in(seq: np.ndarray, item_domain: np.ndarray, domain: int, max_items: int) -> bool:
    return bool((item_domain[seq[-max_items:][1:]] == domain).any())


def codebook_sizes(ids: np.ndarray, tokenizer_cfg: dict[str, Any]) -> list[int]:
    """Codes per level of the recommender's vocabulary: at least the tokenizer's codebook size on
    its quantised levels (so every code it could emit has a token), the collision level as used."""
    return [max(int(ids[:, l].max()) + 1, tokenizer_cfg["codebook_size"] if l < tokenizer_cfg["n_levels"] else 0)
            for l in range(ids.shape[1])]


def build(dataset: str, profile: str = "book", *, seed: int = 0, variant: str = "full", cfg: dict | None = None,
          switches: dict | None = None, data_root=None, progress: bool = True) -> dict[str, Any]:
    """Everything a run needs, without training: tokenizer run, dataset, split, items, trie, model, settings.

    ``cfg``: the recommender settings (default: the profile's); ``switches``: a run's switches
    (default: :data:`DEFAULTS` with the tokenizer of ``variant``).
    """
    prof = get_profile(profile)
    cfg = cfg if cfg is not None else prof["gencdr_recommender"]
    switches = switches if switches is not None else {**DEFAULTS, "tokenizer": VARIANTS[variant]["tokenizer"]}
    tok = run_tokenizer(dataset, profile=profile, variant=switches["tokenizer"], seed=seed, data_root=data_root, progress=progress)
    ds = data.load(dataset, root=data_root, domains=tok.domains)
    if not (ds.items["item_key"].to_numpy() == tok.items["item_key"].to_numpy()).all():
        raise ValueError(f"{dataset}: the tokenizer's items are not the dataset's items (stale cache?)")
    ids = tok.ids[tok.rule]
    sizes = codebook_sizes(ids, prof["gencdr_tokenizer"])
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
    split = data.leave_last_out(ds)
    return {"profile": prof, "cfg": cfg, "tokenizer_run": tok, "dataset": ds, "split": split,
            "model": model, "tokenizer": tokenizer, "items": items, "trie": trie, "ids": ids, "seed": seed}


def recommend_fn(model: GenCDRRecommender, items: ItemTokens, trie: TrieTensors, ev: dict, mode: str,
                 gammas: list | None = None, *, prefix_tree: bool = True, invalid: list | None = None):
    """``(histories, domains, k) -> [n, k]`` items, decoding under ``mode`` (see :data:`MODES`).

    ``gammas`` collects each row's ``gamma``; ``prefix_tree=False`` searches every ID (an
    :class:`~xdrec.decoding.UnconstrainedTrie`), counts each row's beams that are no item of its
    domain into ``invalid`` and keeps the first ``k`` that are.
    """
    def rec(histories, domains, k):
        if not prefix_tree:
            out = model.recommend(histories, domains, ev["beams"], items=items, trie=UnconstrainedTrie(trie),
                                  beams=ev["beams"], max_items=ev["max_items"], mode=mode)
            invalid.extend((out == INVALID).sum(1).tolist())
            return keep_valid(out, k)
        out = model.recommend(histories, domains, k, items=items, trie=trie, beams=ev["beams"],
                              max_items=ev["max_items"], mode=mode)
        if gammas is not None and model.last_gamma is not None:
            gammas.extend(model.last_gamma.float().cpu().tolist())
        return out
    return rec


def _sample_users(seqs: list, cap: int | None, seed: int, stream: int | None) -> list:
    """At most ``cap`` of ``seqs`` (in order), drawn from the seeded ``(seed, stream)`` stream, or from
    the seed's own when ``stream`` is None."""
    if not cap or len(seqs) <= cap:
        return seqs
    rng = np.random.default_rng(seed if stream is None else (seed, stream))
    return [seqs[i] for i in sorted(rng.choice(len(seqs), cap, replace=False))]


def train_and_test(dataset: str, *, profile: str, cfg: dict[str, Any], ev: dict[str, Any],
                   switches: dict[str, Any], test_modes: tuple[str, ...], fingerprint: str, seed: int = 0,
                   domains: list[str] | None = None, user_streams: bool = True, data_root=None, force: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """The GenCDR pipeline: build, phase 1, phase 2 for the tested ``domains`` (default all), test
    under each of ``test_modes``; returns what a result records (see :func:`run_recommender`).

    ``user_streams``: a phase's user sample (``max_users``) comes from its own seeded stream, so a
    domain's sample does not depend on which domains are tested (the studies); otherwise both
    phases draw from the seed's stream (the main run; at the ``book`` profile it samples no one).
    """
    run = build(dataset, profile, seed=seed, cfg=cfg, switches=switches, data_root=data_root, progress=progress)
    model, items, trie, split, ds = run["model"], run["items"], run["trie"], run["split"], run["dataset"]
    unknown = sorted(set(domains or []) - set(ds.domains))
    if unknown:
        raise ValueError(f"{dataset} has no domain {unknown}; it has {ds.domains}")
    tested = [ds.domains.index(d) for d in (domains or ds.domains)]
    item_domain = ds.items["domain"].to_numpy()

    ids_key = sha256_text(np.asarray(run["ids"], dtype=np.int64).tobytes().hex())
    phase1 = {k: switches[k] for k in TRAINING_KEYS} | {"seed": seed, "backbone": backbone_location(cfg), "eval": ev,
                                                         "recommender": {k: v for k, v in cfg.items() if k not in PHASE2_SETTINGS}}
    key1 = sha256_text(fingerprint, json.dumps(phase1, sort_keys=True), ids_key)[:16]
    key2 = sha256_text(key1, json.dumps({k: cfg[k] for k in PHASE2_SETTINGS}, sort_keys=True))[:16]
    base = checkpoint_dir("gencdr_recommender", dataset, f"seed{seed}-{key1}")
    if force and is_main_process():
        shutil.rmtree(base, ignore_errors=True)
    wait_for_main()
    cpu = run["profile"]["device"] == "cpu"
    valid = evaluation_rows(split.valid, ev["valid_rows_per_domain"], seed)
    test = evaluation_rows(split.test, ev["test_rows_per_domain"], seed)
    test = test[test["domain"].isin(tested)].reset_index(drop=True)
    timelines = user_timelines(split.train)

    def train_config(phase: str, ckpt) -> TrainConfig:
        c = cfg[phase]
        return TrainConfig(epochs=c["epochs"], lr=c["lr"], batch_size=c["batch_size"], patience=c["patience"], seed=seed,
                           checkpoint_dir=ckpt, cpu=cpu, progress=progress, checkpoint_trainable_only=True,
                           mixed_precision=cfg["mixed_precision"] if not cpu else "no")

    def validate(rows, mode):
        def fn(m):
            res = evaluate_generative(recommend_fn(m, items, trie, ev, mode), rows, k=ev["top_k"], batch_size=ev["batch_size"])
            return {k: v for k, v in res["all"].items() if k in REPORTED}
        return fn

    # ---- phase 1: universal experts on every domain (Eq. 9); switched off, only the ID embeddings train
    uni_seqs = _sample_users(timelines, cfg["universal"].get("max_users"), seed, 0 if user_streams else None)
    uni = TimelineBatches(uni_seqs, items, batch_size=cfg["universal"]["batch_size"], max_items=ev["max_items"],
                          prefix=model.prefix_tokens, pad_id=model.pad_id, seed=seed)
    model.train_phase(universal=True)
    if not switches["universal_experts"]:
        for layer in model.layers:
            for p in (layer.expert_A, layer.expert_B, layer.gate.weight):
                p.requires_grad_(False)
    fits = {"universal": fit(model, uni, validate(valid, "universal"), train_config("universal", base / "universal"),
                             loss_fn=lambda m, b: m.universal_loss(b), metric="recall@10")}
    params = {"universal": count_trainable_params(model)}
    tokens = {"universal": uni.tokens_per_epoch}

    # ---- phase 2: one adapter + user router per tested domain (Eqs. 10-11) -----------------------------
    if any(mode != "universal" for mode in test_modes):
        for d in tested:
            seqs = _sample_users([s for s in timelines if _has_target_in(s, item_domain, d, ev["max_items"])],
                                 cfg["domain"].get("max_users"), seed, d + 1 if user_streams else None)
            batches = TimelineBatches(seqs, items, batch_size=cfg["domain"]["batch_size"], max_items=ev["max_items"],
                                      prefix=model.prefix_tokens, pad_id=model.pad_id, seed=seed + d + 1)
            model.train_phase(domain=d)
            mode = "fused" if switches["universal_experts"] else "specific"
            name = f"domain/{ds.domains[d]}"
            fits[name] = fit(model, batches, validate(valid[valid["domain"] == d], mode),
                             train_config("domain", base / f"phase2-{key2}" / f"domain-{ds.domains[d]}"),
                             loss_fn=lambda m, b, d=d: m.domain_loss(b, d), metric="recall@10")
            params[name], tokens[name] = count_trainable_params(model), batches.tokens_per_epoch
    model.train_phase()
    model.eval()

    # ---- test -------------------------------------------------------------------------------------------
    per_mode, timings, gammas, invalid = {}, {}, [], []
    for mode in test_modes:
        t = time.perf_counter()
        rec = recommend_fn(model, items, trie, ev, mode, gammas if mode == "fused" else None,
                           prefix_tree=switches["prefix_tree"], invalid=invalid)
        per_mode[mode] = evaluate_generative(rec, test, k=ev["top_k"], batch_size=ev["batch_size"], per_row=True,
                                             show_progress=progress, desc=f"test {mode}")
        timings[f"test_{mode}_s"] = time.perf_counter() - t
    # which experts the gate uses, per domain (phase 2 leaves experts and gates as phase 1 left them)
    usage_rows = [uni_seqs[i] for i in np.random.default_rng(seed).choice(len(uni_seqs), min(256, len(uni_seqs)), replace=False)]
    gate_usage = model.gate_usage(next_id_batch(usage_rows, items, max_items=ev["max_items"], prefix=model.prefix_tokens,
                                                pad_id=model.pad_id))
    users = ds.users.set_index("user")["user_key"]
    rows = {"user": test["user"].tolist(), "user_key": users.loc[test["user"]].tolist(),
            "domain": [ds.domains[d] for d in test["domain"]],
            "target_key": ds.items["item_key"].to_numpy()[test["target"]].tolist()}
    return {"dataset": ds, "tested": [ds.domains[d] for d in tested], "test": test, "rows": rows,
            "metrics": {mode: _flat({k: _means(r) for k, r in res.items()}, ds.domains) for mode, res in per_mode.items()},
            "ranks": {mode: res["all"]["rank"].tolist() for mode, res in per_mode.items()},
            "gammas": gammas, "invalid": invalid, "fits": fits, "params": params, "tokens_per_epoch": tokens,
            "gate_usage": gate_usage, "backbone_params": sum(p.numel() for p in model.lm.parameters()), "timings": timings, "checkpoints": f"{base.name}/phase2-{key2}",
            "split": {"train_timelines": len(timelines), "valid_rows": len(valid), "test_rows": len(test)}}


def run_recommender(dataset: str, *, profile: str = "book", seed: int = 0, variant: str = "full", data_root=None,
                    force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or read back) GenCDR's recommender on ``dataset`` and test it; returns the stored result."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {sorted(VARIANTS)}")
    prof = get_profile(profile)
    cfg, ev = prof["gencdr_recommender"], prof["generative_eval"]
    fingerprint = code_fingerprint(*FINGERPRINT_MODULES)
    config = {"variant": variant, "recommender": cfg, "eval": ev, "tokenizer": prof["gencdr_tokenizer"],
              "backbone": backbone_location(cfg), "seed": seed}

    def compute():
        out = train_and_test(dataset, profile=profile, cfg=cfg, ev=ev, fingerprint=fingerprint, seed=seed,
                             switches={**DEFAULTS, "tokenizer": VARIANTS[variant]["tokenizer"]}, test_modes=MODES,
                             user_streams=False, data_root=data_root, force=force, progress=progress)
        fits, ds = out["fits"], out["dataset"]
        domain_fits = {k.split("/", 1)[1]: v for k, v in fits.items() if k != "universal"}
        extra = {
            "modes": out["metrics"],
            "rows": {**out["rows"], "rank": out["ranks"], "gamma": out["gammas"]},
            "gate_usage": out["gate_usage"].tolist(),
            "training": {"universal": fits["universal"].to_dict(), **{f"domain/{k}": v.to_dict() for k, v in domain_fits.items()}},
            "throughput": {
                "universal_tokens_per_epoch": out["tokens_per_epoch"]["universal"],
                "universal_tokens_per_s": _tokens_per_s(fits["universal"], out["tokens_per_epoch"]["universal"]),
                **{f"domain/{k}_tokens_per_s": _tokens_per_s(v, out["tokens_per_epoch"][f"domain/{k}"])
                   for k, v in domain_fits.items()},
            },
            "trainable_params": out["params"],
            "backbone_params": out["backbone_params"],
            "timings": out["timings"],
            "split": out["split"],
        }
        wall = sum(f.wall_time for f in fits.values()) + sum(out["timings"].values())
        return dict(metrics=out["metrics"]["fused"], dataset=f"{dataset}/{'+'.join(ds.domains)}", seed=seed,
                    split=f"leave-last-out on the merged timeline; test: up to {ev['test_rows_per_domain']} rows per domain",
                    wall_time_s=wall, trainable_params=sum(out["params"].values()), extra=extra)

    return stored_or_computed(name=result_name(dataset, variant, seed), profile=profile, fingerprint=fingerprint,
                              config=config, compute=compute, force=force)


def _flat(metrics: dict[str, Any], names: list[str]) -> dict[str, Any]:
    out = {"all": {k: metrics["all"][k] for k in (*REPORTED, "n")}}
    for key, m in metrics.items():
        if key != "all":
            out[names[int(key)]] = {k: m[k] for k in (*REPORTED, "n")}
    return out


def _means(per_row: dict[str, Any]) -> dict[str, Any]:
    return {k: float(np.mean(v)) if len(v) else 0.0 for k, v in per_row.items() if k != "rank"} | {"n": len(per_row["rank"])}


def _tokens_per_s(res, tokens_per_epoch: int) -> float | None:
    times = [h.get("train_time") for h in res.history if h.get("train_time")]
    return tokens_per_epoch / float(np.mean(times)) if times else None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--profile", default="book")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", default="full", choices=sorted(VARIANTS))
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    rec = run_recommender(a.dataset, profile=a.profile, seed=a.seed, variant=a.variant, force=a.force)
    print(json.dumps(rec["metrics"], indent=1))


if __name__ == "__main__":
    main()

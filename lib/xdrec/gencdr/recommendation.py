"""Train and test GenCDR's recommender on a dataset: ``run_recommender(dataset, profile=...)``.

Stages (each resumable, each skipped when finished; a current stored result skips them all):

1. semantic IDs of the items from the tokenizer (:func:`xdrec.gencdr.tokenization.run_tokenizer`);
2. the backbone with the ID tokens added, universal LoRA experts trained on every user's
   cross-domain timeline (Eq. 9), early-stopped on validation Recall@10 of ``P_uni``;
3. per domain: its LoRA adapter (Eq. 10) and its user router (Eq. 11), early-stopped on the
   domain's validation Recall@10 of ``P_final``;
4. test: constrained beam search (Eq. 12) on a seeded sample of test rows per domain (the same
   rows as TIGER and the ID baselines), under ``P_final``, ``P_uni`` and ``P_spec``.

The result ``results/<profile>/gencdr__<dataset>__<variant>__seed<s>.json`` holds the metrics
per domain, per-row ranks and ``gamma`` (for paired tests and the router's distribution), the
experts' gate usage per domain, training histories and throughput. Checkpoints hold only what
trains (ID embeddings, experts, gates, adapters, routers), never the backbone.

Command line: ``python -m xdrec.gencdr.recommendation --dataset amazon18-xcross --profile book``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from .. import data
from ..decoding import TrieTensors
from ..encoders.backbones import load_causal_lm
from ..generative import ItemTokens, evaluate_generative, evaluation_rows, next_id_batch, user_timelines
from ..io import is_main_process, sha256_text, wait_for_main
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint, stored_or_computed
from ..training import TrainConfig, count_trainable_params, fit
from .recommender import MODES, GenCDRRecommender, add_semantic_id_tokens
from .tokenization import run_tokenizer

FINGERPRINT_MODULES = ("xdrec.gencdr.recommender", "xdrec.gencdr.experts", "xdrec.gencdr.recommendation",
                       "xdrec.gencdr.routing", "xdrec.gencdr.tokenizer", "xdrec.gencdr.tokenization",
                       "xdrec.generative", "xdrec.decoding", "xdrec.quantization", "xdrec.training", "xdrec.data",
                       "xdrec.metrics", "xdrec.encoders")
VARIANTS = {"full": {"tokenizer": "full"}}
REPORTED = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


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


def _flat(metrics: dict[str, Any], names: list[str]) -> dict[str, Any]:
    out = {"all": {k: metrics["all"][k] for k in (*REPORTED, "n")}}
    for key, m in metrics.items():
        if key != "all":
            out[names[int(key)]] = {k: m[k] for k in (*REPORTED, "n")}
    return out


def build(dataset: str, profile: str = "book", *, seed: int = 0, variant: str = "full", root=None,
          progress: bool = True) -> dict[str, Any]:
    """Everything a run needs, without training: tokenizer run, dataset, split, items, trie, model, settings."""
    prof = get_profile(profile)
    cfg, ev = prof["gencdr_recommender"], prof["generative_eval"]
    tok = run_tokenizer(dataset, profile=profile, variant=VARIANTS[variant]["tokenizer"], seed=seed, root=root,
                        progress=progress)
    ds = data.load(dataset, root=root, domains=tok.domains)
    if not (ds.items["item_key"].to_numpy() == tok.items["item_key"].to_numpy()).all():
        raise ValueError(f"{dataset}: the tokenizer's items are not the dataset's items (stale cache?)")
    ids = tok.ids[tok.rule]
    sizes = [int(ids[:, l].max()) + 1 for l in range(ids.shape[1])]
    sizes = [max(s, prof["gencdr_tokenizer"]["codebook_size"]) if l < prof["gencdr_tokenizer"]["n_levels"] else s
             for l, s in enumerate(sizes)]
    item_domain = ds.items["domain"].to_numpy()
    torch.manual_seed(seed)
    lm, tokenizer = load_causal_lm(backbone_location(cfg), num_hidden_layers=cfg["num_layers"])
    vocab = add_semantic_id_tokens(tokenizer, lm, sizes, ds.domains)
    prefix = tokenizer(cfg["prompt_prefix"], add_special_tokens=False)["input_ids"] if cfg["prompt_prefix"] else []
    model = GenCDRRecommender(lm, vocab, target_modules=cfg["target_modules"], experts=cfg["experts"],
                              domain_lora=cfg["domain_lora"], router=cfg["router"], prefix_tokens=prefix,
                              pad_id=tokenizer.pad_token_id)
    items = ItemTokens.from_ids(vocab, ids, item_domain)
    trie = TrieTensors(ids, item_domain, ds.n_domains, sizes)
    split = data.leave_last_out(ds)
    return {"profile": prof, "cfg": cfg, "eval": ev, "tokenizer_run": tok, "dataset": ds, "split": split,
            "model": model, "tokenizer": tokenizer, "items": items, "trie": trie, "ids": ids, "seed": seed}


def recommend_fn(model: GenCDRRecommender, items: ItemTokens, trie: TrieTensors, ev: dict, mode: str, gammas: list | None = None):
    def rec(histories, domains, k):
        out = model.recommend(histories, domains, k, items=items, trie=trie, beams=ev["beams"],
                              max_items=ev["max_items"], mode=mode)
        if gammas is not None and model.last_gamma is not None:
            gammas.extend(model.last_gamma.float().cpu().tolist())
        return out
    return rec


def run_recommender(dataset: str, *, profile: str = "book", seed: int = 0, variant: str = "full", root=None,
                    force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or read back) GenCDR's recommender on ``dataset`` and test it; returns the stored result."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {sorted(VARIANTS)}")
    prof = get_profile(profile)
    cfg, ev = prof["gencdr_recommender"], prof["generative_eval"]
    fingerprint = code_fingerprint(*FINGERPRINT_MODULES)
    config = {"variant": variant, "recommender": cfg, "eval": ev, "tokenizer": prof["gencdr_tokenizer"],
              "backbone": backbone_location(cfg), "seed": seed}
    name = result_name(dataset, variant, seed)

    def compute():
        run = build(dataset, profile, seed=seed, variant=variant, root=root, progress=progress)
        model, items, trie, split, ds = run["model"], run["items"], run["trie"], run["split"], run["dataset"]
        key = sha256_text(fingerprint, json.dumps(config, sort_keys=True), sha256_text(run["ids"].tobytes().hex()))[:16]
        base = checkpoint_dir("gencdr_recommender", dataset, f"{variant}-seed{seed}-{key}")
        if force and is_main_process():
            import shutil

            shutil.rmtree(base, ignore_errors=True)
        wait_for_main()
        cpu = prof["device"] == "cpu"
        item_domain = ds.items["domain"].to_numpy()
        valid = evaluation_rows(split.valid, ev["valid_rows_per_domain"], seed)
        test = evaluation_rows(split.test, ev["test_rows_per_domain"], seed)
        timelines = user_timelines(split.train)

        def subsample(seqs, phase):
            cap = cfg[phase].get("max_users")
            if cap and len(seqs) > cap:
                keep = np.random.default_rng(seed).choice(len(seqs), cap, replace=False)
                seqs = [seqs[i] for i in sorted(keep)]
            return seqs

        def train_config(phase: str, ckpt) -> TrainConfig:
            c = cfg[phase]
            return TrainConfig(epochs=c["epochs"], lr=c["lr"], batch_size=c["batch_size"], patience=c["patience"], seed=seed,
                               checkpoint_dir=ckpt, cpu=cpu, progress=progress, checkpoint_trainable_only=True,
                               mixed_precision=cfg["mixed_precision"] if not cpu else "no")

        def validate(rows, mode):
            def fn(m):
                res = evaluate_generative(recommend_fn(m, items, trie, ev, mode), rows, k=ev["top_k"],
                                          batch_size=ev["batch_size"])
                return {k: v for k, v in res["all"].items() if k in REPORTED}
            return fn

        # ---- phase 1: universal experts on every domain (Eq. 9) --------------------------------------
        uni_seqs = subsample(timelines, "universal")
        uni_batches = TimelineBatches(uni_seqs, items, batch_size=cfg["universal"]["batch_size"], max_items=ev["max_items"],
                                      prefix=model.prefix_tokens, pad_id=model.pad_id, seed=seed)
        model.train_phase(universal=True)
        res_uni = fit(model, uni_batches, validate(valid, "universal"), train_config("universal", base / "universal"),
                      loss_fn=lambda m, b: m.universal_loss(b), metric="recall@10")
        params_uni = count_trainable_params(model)
        usage_rows = [uni_seqs[i] for i in np.random.default_rng(seed).choice(len(uni_seqs), min(256, len(uni_seqs)), replace=False)]
        model.eval()
        gate_usage = model.gate_usage(next_id_batch(usage_rows, items, max_items=ev["max_items"], prefix=model.prefix_tokens,
                                                    pad_id=model.pad_id))

        # ---- phase 2: one adapter + router per domain (Eqs. 10-11) ------------------------------------
        res_dom, tokens_dom, params_dom = {}, {}, {}
        for d, dname in enumerate(ds.domains):
            seqs = subsample([s for s in timelines if _has_target_in(s, item_domain, d, ev["max_items"])], "domain")
            batches = TimelineBatches(seqs, items, batch_size=cfg["domain"]["batch_size"], max_items=ev["max_items"],
                                      prefix=model.prefix_tokens, pad_id=model.pad_id, seed=seed + d + 1)
            model.train_phase(domain=d)
            rows = valid[valid["domain"] == d]
            res_dom[dname] = fit(model, batches, validate(rows, "fused"), train_config("domain", base / f"domain-{dname}"),
                                 loss_fn=lambda m, b, d=d: m.domain_loss(b, d), metric="recall@10")
            tokens_dom[dname], params_dom[dname] = batches.tokens_per_epoch, count_trainable_params(model)
        model.train_phase()
        model.eval()

        # ---- test -----------------------------------------------------------------------------------
        modes, rows_out, timings = {}, {}, {}
        gammas: list[float] = []
        for mode in cfg.get("test_modes", list(MODES)):
            t = time.perf_counter()
            res = evaluate_generative(recommend_fn(model, items, trie, ev, mode, gammas if mode == "fused" else None), test,
                                      k=ev["top_k"], batch_size=ev["batch_size"], per_row=True, show_progress=progress,
                                      desc=f"test {mode}")
            timings[f"test_{mode}_s"] = time.perf_counter() - t
            modes[mode] = _flat({k: _means(r) for k, r in res.items()}, ds.domains)
            rows_out[mode] = res["all"]["rank"].tolist()

        users = ds.users.set_index("user")["user_key"]
        keys = ds.items["item_key"].to_numpy()
        extra = {
            "modes": modes,
            "rows": {"user": test["user"].tolist(), "user_key": users.loc[test["user"]].tolist(),
                     "domain": [ds.domains[d] for d in test["domain"]], "target_key": keys[test["target"]].tolist(),
                     "rank": rows_out, "gamma": gammas},
            "gate_usage": gate_usage.tolist(),
            "training": {"universal": res_uni.to_dict(), **{f"domain/{k}": v.to_dict() for k, v in res_dom.items()}},
            "throughput": {
                "universal_tokens_per_epoch": uni_batches.tokens_per_epoch,
                "universal_tokens_per_s": _tokens_per_s(res_uni, uni_batches.tokens_per_epoch),
                **{f"domain/{k}_tokens_per_s": _tokens_per_s(res_dom[k], tokens_dom[k]) for k in res_dom},
            },
            "trainable_params": {"universal": params_uni, **{f"domain/{k}": v for k, v in params_dom.items()}},
            "backbone_params": sum(p.numel() for p in model.lm.parameters()),
            "timings": timings,
            "split": {"train_timelines": len(timelines), "valid_rows": len(valid), "test_rows": len(test)},
        }
        wall = res_uni.wall_time + sum(r.wall_time for r in res_dom.values()) + sum(timings.values())
        return dict(metrics=modes["fused"] if "fused" in modes else next(iter(modes.values())),
                    dataset=f"{dataset}/{'+'.join(ds.domains)}", seed=seed,
                    split=f"leave-last-out on the merged timeline; test: up to {ev['test_rows_per_domain']} rows per domain",
                    wall_time_s=wall, trainable_params=params_uni + sum(params_dom.values()), extra=extra)

    return stored_or_computed(name, profile, fingerprint, config, compute, force=force)


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

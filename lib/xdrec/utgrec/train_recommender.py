"""UTGRec's transferable generative recommender (Sec. 2.4) and its Table 3 variants.

The recommender is TIGER's T5 (:class:`xdrec.tiger.TIGER`: item codes in, the next item's codes
out by constrained beam search) over the universal identifiers:

1. **multi-domain pre-training** (Sec. 2.4.1): on the training timelines of the source domains,
   whose items carry the identifiers of the pre-trained tokenizer (:func:`~.train_tokenizer.source_ids`);
2. **fine-tuning** (Sec. 2.4.2): on the held-out target domain, whose items carry the identifiers of
   the fine-tuned tokenizer (:func:`~.train_tokenizer.finetune`), starting from the pre-trained T5.

Both T5s share the code vocabulary (``K_root`` codes at level 1, ``K_leaf`` at the later levels), so
every weight carries over; only the domain-marker rows of the embedding (one marker per domain of
the model) are new in the target's model (:func:`transfer_t5`).

Evaluation as TIGER's: leave-last-out on the target domain, full ranking over its items by
constrained beam search, Recall/NDCG@5/10 on the ``generative_eval`` sample of test rows, with
per-row ranks for paired tests. Variants (Table 3): see :data:`VARIANTS`.

Baselines (:func:`run_baseline`): TIGER and LETTER on the target alone, with the same T5, schedule
and test rows.

Command line: ``python -m xdrec.utgrec.train_recommender --target Tools --profile book [--variant full|tiger|letter] [--layers N]``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .. import data
from ..generative import evaluate_generative, evaluation_rows, user_timelines
from ..io import load_safetensors, read_json, save_safetensors, sha256_text, write_json
from ..paths import checkpoint_dir
from ..profiles import get_profile
from ..results import code_fingerprint, stored_or_computed
from ..tiger import TIGER
from ..tiger.examples import NextItemExamples
from ..tiger.model import TIGERConfig
from ..training import TrainConfig, count_trainable_params, fit
from . import train_tokenizer as tz

# the T5, its training and its test: shared by UTGRec and by the TIGER/LETTER baselines, whose results
# therefore do not depend on the UTGRec tokenizer's code
RECOMMENDER_MODULES = ("xdrec.utgrec.train_recommender", "xdrec.tiger", "xdrec.generative", "xdrec.decoding",
                       "xdrec.metrics", "xdrec.training", "xdrec.data")
FINGERPRINT_MODULES = (*tz.FINGERPRINT_MODULES, *RECOMMENDER_MODULES)
REPORTED = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")

# Table 3's rows: what each variant changes (tokenizer settings, tokenizer fine-tuning, pre-training)
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-tree": {"tokenizer": {"tree": False}},  # w/o TreeCode: per-level plain codebooks
    "no-ali": {"tokenizer": {"mu": 0.0}},  # w/o L_Ali
    "no-re": {"tokenizer": {"eta": 0.0}},  # w/o L_Re
    "no-ft-tokenizer": {"tune_tokenizer": False},  # w/o FT(T): the pre-trained tokenizer as it is
    "full-ft": {"freeze_codebook_vectors": False},  # Full FT: E trains in fine-tuning too
    "no-pt-recommender": {"pretrain_recommender": False},  # w/o PT(R): the T5 trained from scratch on the target
    "no-pt": {"domain_specific": True},  # w/o PT: tokenizer and recommender learned on the target alone
}


def settings(profile: str, t5: dict | None = None) -> dict[str, Any]:
    """The profile's ``utgrec_recommender`` section (``t5`` overrides its T5 settings, e.g. Figure 2's
    ``{"n_layers": 3}``), and ``generative_eval`` with its ``eval`` overrides."""
    prof = get_profile(profile)
    rec = dict(prof["utgrec_recommender"])
    unknown = set(t5 or {}) - set(rec["t5"])
    if unknown:
        raise ValueError(f"unknown T5 setting(s) {sorted(unknown)}; the profile has {sorted(rec['t5'])}")
    rec["t5"] = {**rec["t5"], **(t5 or {})}
    return {"recommender": rec, "eval": {**prof["generative_eval"], **rec.get("eval", {})}, "device": prof["device"]}


def tiger_config(cfg: dict) -> TIGERConfig:
    return TIGERConfig.from_profile(cfg["recommender"]["t5"], cfg["eval"])


def codebook_sizes(tok_cfg: dict) -> list[int]:
    """``K`` of every ID level: root then leaf (or the plain per-level codebooks without the tree)."""
    L = tok_cfg["n_codes"]
    if tok_cfg.get("tree", True):
        return [tok_cfg["root_size"]] + [tok_cfg["leaf_size"]] * (L - 1)
    return [(tok_cfg["root_size"] + tok_cfg["leaf_size"]) // L] * L


def ids_for(ds, folder) -> np.ndarray:
    """The ``[n_items, L]`` IDs of ``ds``'s items from a tokenizer folder's ``ids.parquet``."""
    table = pd.read_parquet(folder / "ids.parquet")
    if len(table) != ds.n_items or not (table["item"].to_numpy() == np.arange(ds.n_items)).all():
        raise ValueError(f"{folder / 'ids.parquet'}: its {len(table)} items are not the {ds.n_items} items of "
                         f"{'+'.join(ds.domains)} (stale cache?)")
    return table[[c for c in table.columns if c.startswith("id_")]].to_numpy().astype(np.int64)


def transfer_t5(src: TIGER, dst: TIGER) -> list[str]:
    """Copy ``src``'s T5 weights into ``dst``.

    The code vocabularies must be equal. Vocabulary-sized matrices (the shared embedding and the
    tied output layer) copy only the rows of the special tokens and the codes: the domain markers
    that follow them belong to other domains in ``src`` and keep their fresh values in ``dst``.
    Returns the names of the tensors copied in part.
    """
    if src.vocab.codebook_sizes != dst.vocab.codebook_sizes:
        raise ValueError(f"code vocabularies differ: {src.vocab.codebook_sizes} vs {dst.vocab.codebook_sizes}")
    shared_rows = src.vocab.offset + src.vocab.n_code_tokens
    src_vocab, dst_vocab = src.t5.config.vocab_size, dst.t5.config.vocab_size
    s_state, partial = src.t5.state_dict(), []
    with torch.no_grad():
        for name, p in dst.t5.state_dict().items():
            q = s_state[name]
            if q.dim() == 2 and q.shape[0] == src_vocab and p.shape[0] == dst_vocab and q.shape[1] == p.shape[1]:
                p[:shared_rows].copy_(q[:shared_rows])
                partial.append(name)
            elif q.shape == p.shape:
                p.copy_(q)
            else:
                raise ValueError(f"{name}: shapes {tuple(q.shape)} and {tuple(p.shape)} cannot be transferred")
    return partial


def _model(ds, ids: np.ndarray, cfg: dict, sizes: Sequence[int], seed: int) -> TIGER:
    torch.manual_seed(seed)
    model = TIGER(ids, ds.items["domain"].to_numpy(), ds.domains, tiger_config(cfg), codebook_sizes=sizes)
    if cfg["device"] != "cpu" and torch.cuda.is_available():
        model.to("cuda")
    return model


def _key(*parts) -> str:
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:10]


# ====================================================================== stages
def pretrain_recommender(sources: Sequence[str], *, profile: str = "book", seed: int | None = None, data_root=None,
                         force: bool = False, tokenizer_overrides: dict | None = None, t5: dict | None = None):
    """Multi-domain pre-training of the T5 on the source domains (Sec. 2.4.1); returns its checkpoint folder."""
    cfg = settings(profile, t5)
    tok_cfg = tz.settings(profile, tokenizer_overrides)
    seed = tok_cfg["seed"] if seed is None else seed
    ids_folder = tz.source_ids(sources, profile=profile, seed=seed, data_root=data_root, overrides=tokenizer_overrides)
    fp = code_fingerprint(*FINGERPRINT_MODULES)
    folder = checkpoint_dir("utgrec", profile, f"t5-pretrain-{'+'.join(sources)}-seed{seed}-"
                            f"{_key(cfg, tok_cfg, ids_folder.name, fp)}")
    if force:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    if (folder / "t5.json").exists():
        return folder
    ds = tz.load_domains(tok_cfg["dataset"], sources, data_root, tok_cfg.get("max_source_items_per_domain"))
    model = _model(ds, ids_for(ds, ids_folder), cfg, codebook_sizes(tok_cfg), seed)
    split = data.leave_last_out(ds)
    rc = cfg["recommender"]["pretrain"]
    examples = NextItemExamples(user_timelines(split.train), model, batch_size=rc["batch_size"], seed=seed,
                                tokens_per_epoch=rc.get("tokens_per_epoch"))
    res = fit(model, examples, None, TrainConfig(epochs=rc["epochs"], lr=rc["lr"], batch_size=rc["batch_size"],
                                                 patience=None, seed=seed, schedule="cosine",
                                                 max_steps=rc["epochs"] * len(examples(1)),
                                                 checkpoint_dir=folder / "fit", cpu=cfg["device"] == "cpu"))
    # tied embeddings share memory: save one copy per name (they load back tied)
    save_safetensors(folder / "t5.safetensors", {k: v.detach().cpu().clone() for k, v in model.t5.state_dict().items()})
    write_json(folder / "t5.json", {"sources": list(sources), "examples": len(examples),
                                    "loss": [h["train_loss"] for h in res.history], "wall_time_s": res.wall_time})
    return folder


def result_name(target: str, variant: str, seed: int, n_layers: int | None = None) -> str:
    return f"utgrec__{target}__{variant}{'' if n_layers is None else f'-L{n_layers}'}__seed{seed}"


def baseline_result_name(target: str, tokenizer: str, seed: int, n_layers: int | None = None) -> str:
    return f"utgrec_baseline__{target}__{tokenizer}{'' if n_layers is None else f'-L{n_layers}'}__seed{seed}"


def _fit_and_test(model: TIGER, ds, cfg: dict, *, config: dict, fp: str, ckpt_name: str, profile: str,
                  seed: int, dataset: str, force: bool, t0: float, extra: dict) -> dict[str, Any]:
    """Train ``model`` on the target's training timelines (early stopping on validation Recall@10) and
    test it; returns the fields of its result record."""
    split = data.leave_last_out(ds)
    ev, rc = cfg["eval"], cfg["recommender"]["finetune"]
    valid = evaluation_rows(split.valid, ev["valid_rows_per_domain"], seed)
    test = evaluation_rows(split.test, ev["test_rows_per_domain"], seed)
    examples = NextItemExamples(user_timelines(split.train), model, batch_size=rc["batch_size"], seed=seed,
                                tokens_per_epoch=rc.get("tokens_per_epoch"))

    def validate(m: TIGER) -> dict[str, float]:
        res = evaluate_generative(m.recommend, valid, k=ev["top_k"], batch_size=ev["batch_size"])
        return {k: res["all"][k] for k in REPORTED}

    ckpt = checkpoint_dir("utgrec", profile, f"{ckpt_name}-seed{seed}-{_key(config, fp)}")
    if force:
        shutil.rmtree(ckpt, ignore_errors=True)
        ckpt.mkdir(parents=True)
    res = fit(model, examples, validate, TrainConfig(epochs=rc["epochs"], lr=rc["lr"], batch_size=rc["batch_size"],
                                                     patience=rc["patience"], seed=seed, schedule="cosine",
                                                     max_steps=rc["epochs"] * len(examples(1)),
                                                     checkpoint_dir=ckpt, cpu=cfg["device"] == "cpu"),
              metric="recall@10")
    model.eval()
    out = evaluate_generative(model.recommend, test, k=ev["top_k"], batch_size=ev["batch_size"], per_row=True,
                              desc="test")
    metrics = {k: float(np.mean(out["all"][k])) for k in REPORTED} | {"n": len(test)}
    extra = {"rows": {"user": test["user"].tolist(), "target": test["target"].tolist(),
                      "rank": out["all"]["rank"].tolist()},
             "training": res.to_dict(), **extra}
    return dict(metrics=metrics, dataset=dataset, seed=seed, split=f"leave-last-out; test: {len(test)} rows",
                wall_time_s=time.perf_counter() - t0, trainable_params=count_trainable_params(model), extra=extra)


def run_utgrec(target: str, sources: Sequence[str] | None = None, *, variant: str = "full", profile: str = "book",
               seed: int | None = None, data_root=None, force: bool = False, n_layers: int | None = None,
               tokenizer_overrides: dict | None = None, name: str | None = None) -> dict[str, Any]:
    """Tokenize, (pre-train,) fine-tune and test UTGRec on ``target``; returns the stored result.

    ``n_layers`` sets the T5's depth (Figure 2); ``tokenizer_overrides`` change tokenizer settings
    on top of the variant's (Figure 3's ``alpha``, ``mu``, ``eta``), under the result ``name``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    v = VARIANTS[variant]
    t5 = None if n_layers is None else {"n_layers": n_layers}
    cfg = settings(profile, t5)
    tok_over = {**(v.get("tokenizer") or {}), **(tokenizer_overrides or {})} or None
    tok_cfg = tz.settings(profile, tok_over)
    seed = tok_cfg["seed"] if seed is None else seed
    domains = get_profile(profile)["xcross"]["domains"]
    sources = list(sources or [d for d in domains if d != target])
    config = {**cfg, "tokenizer": tok_cfg, "variant": variant, "target": target, "sources": sources, "seed": seed}
    fp = code_fingerprint(*FINGERPRINT_MODULES)
    name = name or result_name(target, variant, seed, n_layers)

    def compute():
        t0 = time.perf_counter()
        if v.get("domain_specific"):  # w/o PT: the tokenizer learns on the target's items only
            ids_folder = tz.finetune(target, [target], profile=profile, seed=seed, data_root=data_root, tune=False,
                                     overrides=tok_over)
            pre = None
        else:
            ids_folder = tz.finetune(target, sources, profile=profile, seed=seed, data_root=data_root,
                                     tune=v.get("tune_tokenizer", True),
                                     freeze_codebook_vectors=v.get("freeze_codebook_vectors", True), overrides=tok_over)
            pre = (pretrain_recommender(sources, profile=profile, seed=seed, data_root=data_root,
                                        tokenizer_overrides=tok_over, t5=t5)
                   if v.get("pretrain_recommender", True) else None)
        ds = data.load(tok_cfg["dataset"], data_root, domains=[target])
        model = _model(ds, ids_for(ds, ids_folder), cfg, codebook_sizes(tok_cfg), seed)
        if pre is not None:  # the pre-trained T5, over the source items and their IDs, hands its weights on
            src_ds = tz.load_domains(tok_cfg["dataset"], sources, data_root, tok_cfg.get("max_source_items_per_domain"))
            src_ids = tz.source_ids(sources, profile=profile, seed=seed, data_root=data_root, overrides=tok_over)
            src = _model(src_ds, ids_for(src_ds, src_ids), cfg, codebook_sizes(tok_cfg), seed)
            src.t5.load_state_dict(load_safetensors(pre / "t5.safetensors"))
            transfer_t5(src, model)
            del src
        return _fit_and_test(model, ds, cfg, config=config, fp=fp, ckpt_name=f"t5-{target}-{variant}",
                             profile=profile, seed=seed, dataset=f"{tok_cfg['dataset']}/{target}", force=force, t0=t0,
                             extra={"ids": read_json(ids_folder / "ids.json")["stats"],
                                    "pretrained_recommender": None if pre is None else pre.name})

    return stored_or_computed(name, profile, fp, config, compute, force=force)


BASELINES = ("tiger", "letter")


def run_baseline(target: str, tokenizer: str = "tiger", *, profile: str = "book", seed: int | None = None,
                 data_root=None, force: bool = False, n_layers: int | None = None) -> dict[str, Any]:
    """TIGER or LETTER on ``target`` alone, as UTGRec's Table 2 compares them.

    The items get the tokenizer's IDs (an RQ-VAE on their MiniLM text embeddings, trained on the
    target's items: :func:`~xdrec.tiger.semantic_ids.tiger_semantic_ids` or
    :func:`~xdrec.letter.semantic_ids.letter_semantic_ids`); the T5, its training schedule (the
    profile's fine-tuning stage, from scratch) and the test rows are UTGRec's, so that only the
    identifiers and the pre-training differ.
    """
    from ..letter.semantic_ids import FINGERPRINT_MODULES as LETTER_MODULES
    from ..letter.semantic_ids import letter_semantic_ids
    from ..letter.semantic_ids import settings as letter_settings
    from ..tiger.semantic_ids import FINGERPRINT_MODULES as TIGER_MODULES
    from ..tiger.semantic_ids import rqvae_settings, tiger_semantic_ids

    if tokenizer not in BASELINES:
        raise ValueError(f"tokenizer must be one of {BASELINES}, got {tokenizer!r}")
    cfg = settings(profile, None if n_layers is None else {"n_layers": n_layers})
    tok_cfg = tz.settings(profile)
    dataset = tok_cfg["dataset"]
    seed = tok_cfg["seed"] if seed is None else seed
    ids_cfg = letter_settings(profile, dataset) if tokenizer == "letter" else rqvae_settings(profile, dataset)
    config = {**cfg, "tokenizer": tokenizer, "ids": ids_cfg, "target": target, "seed": seed}
    fp = code_fingerprint(*RECOMMENDER_MODULES, *(LETTER_MODULES if tokenizer == "letter" else TIGER_MODULES))
    name = baseline_result_name(target, tokenizer, seed, n_layers)

    def compute():
        t0 = time.perf_counter()
        if tokenizer == "letter":
            sid = letter_semantic_ids(dataset, [target], profile, seed, data_root=data_root)
        else:
            sid = tiger_semantic_ids(dataset, profile, seed, domains=[target], data_root=data_root)
        ds = data.load(dataset, data_root, domains=[target])
        if len(ds.items) != len(sid.items) or not (ds.items["item_key"].to_numpy() == sid.items["item_key"].to_numpy()).all():
            raise ValueError(f"{sid.directory}: its items are not the items of {dataset}/{target} (stale cache?)")
        model = _model(ds, sid.ids, cfg, sid.codebook_sizes, seed)
        return _fit_and_test(model, ds, cfg, config=config, fp=fp, ckpt_name=f"t5-{target}-{tokenizer}",
                             profile=profile, seed=seed, dataset=f"{dataset}/{target}", force=force, t0=t0,
                             extra={"ids": {"rule": sid.rule, "codebook_sizes": sid.codebook_sizes,
                                            "stats": sid.stats["all"],
                                            "directory": str(sid.directory.relative_to(checkpoint_dir()))}})

    return stored_or_computed(name, profile, fp, config, compute, force=force)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--variant", default="full", choices=sorted(VARIANTS) + list(BASELINES),
                    help="a Table 3 variant of UTGRec, or a baseline (tiger, letter) on the target alone")
    ap.add_argument("--layers", type=int, default=None, help="T5 depth (Figure 2); default: the profile's")
    ap.add_argument("--profile", default="book")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if args.variant in BASELINES:
        rec = run_baseline(args.target, args.variant, profile=args.profile, data_root=args.data_root, force=args.force,
                           n_layers=args.layers)
    else:
        rec = run_utgrec(args.target, variant=args.variant, profile=args.profile, data_root=args.data_root,
                         force=args.force, n_layers=args.layers)
    print(rec["name"], json.dumps(rec["metrics"]))


if __name__ == "__main__":
    main()

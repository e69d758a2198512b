"""X-Cross experiments on ``amazon18-xcross``: every model of Table 2, the ablations of Table 4,
the layer study (Figure 4) and the limited-data curve (Figure 3, Table 3).

Stages (each skips itself when its result or checkpoint is current; see :func:`result_or_run`):

1. :func:`train_source` trains one LoRA adapter + head per domain on that domain (frozen backbone).
2. :func:`evaluate_source` evaluates a source model on any domain: on its own domain it is the
   "LoRA fine-tuned on the target" row of Table 2, elsewhere a zero-shot row.
3. :func:`select_sources` ranks the other domains' models by zero-shot Hit@1 (then MRR) on the
   target's holdout (validation) users and keeps the top ``n_sources`` (Sec. 4.1.2).
4. :func:`run_target_model` trains and tests X-Cross (and its variants: ablations, layer counts,
   training subsets), Pooler + Scorer, and the XLoRA- and MeteoRA-style mixtures on the target.
5. :func:`run_id_baseline` trains SASRec / BERT4Rec on the target's training users and scores the
   same 30 choices.

Every model is tested on the same choice rows (same users, same 29 negatives), and each result
stores its per-row ranks, so any two rows of Table 2 can be compared with a paired t-test.

Command line: ``python -m xdrec.xcross.experiment table2 --profile book [--targets Tools Sports]``
(``all``: every study for each target in turn). Models run on ``$XDREC_DEVICE``, else on the GPU
when there is one (:func:`run_device`).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import smoke
from ..io import (is_main_process, load_safetensors, read_json, save_safetensors, sha256_text, wait_for_main,
                  write_json)
from ..metrics import metrics_from_ranks, sampled_ranking
from ..paths import checkpoint_dir, results_dir
from ..profiles import get_profile
from ..results import code_fingerprint, stored_or_computed
from ..training import TrainConfig, count_trainable_params, fit
from .deberta import DebertaLoRAEncoder, is_deberta
from .encoder import DomainLoRAEncoder, PoolerScorer, SourceModel
from .integration import AdapterMixture, XCross
from .prompts import ChoiceRows, choice_loader, choice_rows, cut_title

KS = (1, 3, 10)
METRICS = ("hit@1", "hit@3", "hit@10", "mrr@10")
# The fingerprint covers this runner too, so a change here that changes a result makes it stale like
# any other. ``runner_version`` stays in every config only because the stored results carry it (it
# was a hand-bumped stand-in for that); it is no longer bumped.
RUNNER_VERSION = 1
FINGERPRINT_MODULES = ("xdrec.xcross.prompts", "xdrec.xcross.encoder", "xdrec.xcross.integration",
                       "xdrec.xcross.experiment", "xdrec.metrics", "xdrec.training")


# ====================================================================== data
@dataclass
class DomainData:
    """One domain of the multiple-choice task: titles, the user split and its choice rows."""

    name: str
    titles: list[str]
    popularity: np.ndarray
    train: ChoiceRows
    valid: ChoiceRows
    test: ChoiceRows
    split_summary: dict


@functools.lru_cache(maxsize=8)
def _domain_data(profile: str, domain: str, data_root: str | None) -> DomainData:
    from .. import data as xdata
    from ..data.splits import user_split

    cfg = get_profile(profile)["xcross"]
    ds = xdata.load(cfg["dataset"], data_root, domains=[domain])
    split = user_split(ds, domain, ratios=cfg["ratios"], seed=cfg["split_seed"])
    popularity = np.zeros(ds.n_items, dtype=np.float64)
    for seq in split.train_sequences.values():
        np.add.at(popularity, seq, 1.0)
    seed = cfg["split_seed"]
    titles = [cut_title(t, cfg["title_words"]) for t in ds.item_texts()]
    return DomainData(
        name=domain, titles=titles, popularity=popularity,
        train=choice_rows(split.train, popularity, cfg["n_neg_train"], seed + 1, cfg["max_train_rows"]),
        # a smoke run (xdrec.smoke) scores a few holdout and test rows
        valid=choice_rows(split.valid, popularity, cfg["n_neg_eval"], seed + 2, smoke.rows(cfg["max_valid_rows"])),
        test=choice_rows(split.test, popularity, cfg["n_neg_eval"], seed + 3, smoke.rows(cfg["max_test_rows"])),
        split_summary=split.summary(),
    )


def domain_data(profile: str, domain: str, data_root=None) -> DomainData:
    return _domain_data(profile, domain, None if data_root is None else str(data_root))


# ====================================================================== backbone
def load_backbone(name: str, seed: int = 0):
    """(encoder model, tokenizer): ``"minilm"``, ``"tiny"`` (random 2-layer BERT) or a local folder."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    from ..encoders import minilm_path

    if name == "tiny":
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        torch.manual_seed(seed)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=64, max_position_embeddings=512)
        return BertModel(config, add_pooling_layer=False).eval(), tokenizer
    path = minilm_path() if name == "minilm" else Path(name).expanduser()
    if name != "minilm":  # a local folder (XDREC_ENCODER): weights, tokenizer, an encoder architecture
        from ..preflight import check_model_folder

        check_model_folder(path, "encoder", f"X-Cross backbone {name!r}")
    from transformers import AutoConfig

    kwargs = {"add_pooling_layer": False} if AutoConfig.from_pretrained(path).model_type == "bert" else {}
    return AutoModel.from_pretrained(path, **kwargs), AutoTokenizer.from_pretrained(path)


def new_encoder(profile: str) -> tuple[DomainLoRAEncoder, Any]:
    """A fresh :class:`DomainLoRAEncoder` over every domain of the profile (adapters untrained)."""
    cfg = get_profile(profile)["xcross"]
    name = cfg["backbone"]
    if name not in ("minilm", "tiny") and os.environ.get("XDREC_ENCODER"):
        name = os.environ["XDREC_ENCODER"]  # the paper's DeBERTa-v3-base, from a local folder
    backbone, tokenizer = load_backbone(name, cfg["seed"])
    torch.manual_seed(cfg["seed"])
    lora = cfg["lora"]
    cls = DebertaLoRAEncoder if is_deberta(backbone) else DomainLoRAEncoder
    enc = cls(backbone, cfg["domains"], r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"],
                            target_modules=lora["target_modules"], pooling=cfg.get("pooling", "first"))
    enc.freeze()  # each stage unfreezes what it trains
    return enc, tokenizer


def run_device() -> torch.device:
    """Where the models run: ``$XDREC_DEVICE``, else CUDA when there is a GPU, else the CPU.

    Training goes through Accelerate with the same choice (:func:`train_choices`). The profile
    fixes what is computed; the device only changes the last digits (as the thread count does).
    """
    from ..preflight import check_device

    return torch.device(check_device())


# ====================================================================== evaluation
@torch.no_grad()
def choice_ranks(model: torch.nn.Module, tokenizer, data: DomainData, rows: ChoiceRows, profile: str,
                 batch_size: int = 4, desc: str = "testing") -> np.ndarray:
    """0-based rank of the true item among each row's choices (ties count against it)."""
    cfg = get_profile(profile)["xcross"]
    was = model.training
    model.eval()
    loader = choice_loader(tokenizer, data.titles, rows, batch_size, shuffle=False,
                           max_history=cfg["max_history"], max_length=cfg["max_length"])
    from ..progress import progress

    device = next(model.parameters()).device
    out = []
    try:
        for batch in progress(loader, desc=desc, leave=False):
            s = model(**{k: v.to(device) for k, v in batch.items()}).float()
            out.append(sampled_ranking(s.cpu().numpy(), KS, per_row=True)["rank"])
    finally:
        model.train(was)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def summarize(ranks: np.ndarray) -> dict[str, float]:
    m = metrics_from_ranks(ranks, KS)
    return {k: m[k] for k in METRICS} | {"n": m["n"]}


def choice_loss(model, batch) -> torch.Tensor:
    """Eq. 1: softmax NLL of the true item (column 0) among the row's choices."""
    scores = model(**batch)
    return torch.nn.functional.cross_entropy(scores.float(), torch.zeros(len(scores), dtype=torch.long,
                                                                          device=scores.device))


def train_choices(model, tokenizer, data: DomainData, rows: ChoiceRows, profile: str, ckpt: Path,
                  lr: float | None = None, seed: int = 0):
    cfg = get_profile(profile)["xcross"]
    t = cfg["train"]
    config = TrainConfig(epochs=t["epochs"], lr=lr or t["lr"], weight_decay=t["weight_decay"],
                         batch_size=t["batch_size"], patience=t["patience"], seed=seed, checkpoint_dir=ckpt,
                         checkpoint_trainable_only=True, schedule="constant", grad_clip=1.0,
                         cpu=run_device().type == "cpu")
    loader = choice_loader(tokenizer, data.titles, rows, t["batch_size"], shuffle=True, seed=seed,
                           max_history=cfg["max_history"], max_length=cfg["max_length"])
    return fit(model, loader, None, config, loss_fn=choice_loss)


# ====================================================================== results
def result_name(model: str, target: str, seed: int) -> str:
    return f"xcross__{model}__{target}__seed{seed}"


# What each stage's result depends on: the profile's ``xcross`` section minus what the stage never
# reads. A study's own settings (its layer counts, training sizes) never enter a stored config, so
# widening a study reuses every finished run.
_UNUSED_BY = {
    "source": ("layers_study", "limited", "id_baselines", "xcross", "mixture_lr", "max_valid_rows", "max_test_rows",
               "n_neg_eval"),
    "evaluation": ("layers_study", "limited", "id_baselines", "xcross", "mixture_lr"),
    "target": ("layers_study", "limited", "id_baselines"),
    "id": ("layers_study", "limited", "lora", "train", "xcross", "mixture_lr", "backbone", "max_train_rows",
           "n_neg_train", "title_words", "max_history", "max_length"),
}


def _config(profile: str, stage: str, **extra) -> dict[str, Any]:
    cfg = get_profile(profile)["xcross"]
    return {"xcross": {k: v for k, v in cfg.items() if k not in _UNUSED_BY[stage]}, "stage": stage,
            "runner_version": RUNNER_VERSION, **extra}


def _fingerprint() -> str:
    return code_fingerprint(*FINGERPRINT_MODULES)


def _run_folder(profile: str, tag: str, config: dict, force: bool) -> Path:
    """The fit checkpoint folder of one run, keyed by its config and code (``force`` empties it)."""
    key = sha256_text(json.dumps({"config": config, "fingerprint": _fingerprint()}, sort_keys=True, default=str))[:10]
    folder = checkpoint_dir("xcross", profile, f"{tag}-{key}")
    if force and folder.exists() and is_main_process():
        shutil.rmtree(folder)
    wait_for_main()
    return folder


def _record(ranks: np.ndarray, rows: ChoiceRows, target: str, seed: int, wall: float, params: int | None,
            extra: dict | None = None) -> dict:
    """The fields of one X-Cross result record: metrics over ``rows`` and each row's rank."""
    return dict(metrics=summarize(ranks), dataset="amazon18-xcross", split=f"user 3:1:1 ({target})", seed=seed,
                wall_time_s=wall, trainable_params=params,
                extra={"rows": {"user": rows.users.tolist(), "rank": ranks.astype(int).tolist()}, **(extra or {})})


def source_files(profile: str, domain: str, seed: int) -> tuple[Path, Path]:
    """(adapter + head safetensors, its JSON key) of a source-domain model.

    They are small (LoRA and one head) and live beside the results, so that later stages and
    sessions reuse the trained source models instead of retraining them.
    """
    folder = results_dir(profile) / "xcross_sources"
    return folder / f"{domain}-seed{seed}.safetensors", folder / f"{domain}-seed{seed}.json"


def train_source(domain: str, *, profile: str = "book", data_root=None, force: bool = False) -> Path:
    """Train (or find) domain ``domain``'s LoRA adapter + head; returns its safetensors file."""
    cfg = get_profile(profile)["xcross"]
    seed = cfg["seed"]
    out, meta = source_files(profile, domain, seed)
    key = json.loads(json.dumps({"fingerprint": _fingerprint(), **_config(profile, "source")}))
    if not force and out.exists() and meta.exists() and read_json(meta).get("key") == key:
        return out
    enc, tok = new_encoder(profile)
    for p in enc.adapter_parameters(domain) + list(enc.heads[domain].parameters()):
        p.requires_grad_(True)
    data = domain_data(profile, domain, data_root)
    model = SourceModel(enc, domain)
    params = count_trainable_params(model)
    folder = _run_folder(profile, f"source-{domain}-seed{seed}", key, force)
    result = train_choices(model, tok, data, data.train, profile, folder, seed=seed)
    if is_main_process():  # under several processes, one writes
        save_safetensors(out, enc.domain_state(domain))
        write_json(meta, {"key": key, "trainable_params": params, "train_rows": len(data.train),
                          "training": {"wall_time": result.wall_time,
                                       "loss": [h["train_loss"] for h in result.history]}})
    wait_for_main()
    return out


def load_sources(enc: DomainLoRAEncoder, sources: Sequence[str], profile: str, data_root=None) -> None:
    for s in sources:
        enc.load_domain_state(s, load_safetensors(train_source(s, profile=profile, data_root=data_root)))
    enc.freeze()


def evaluate_source(source: str, target: str, *, part: str = "test", profile: str = "book", data_root=None,
                    force: bool = False) -> dict:
    """Source model ``source`` on ``target``'s ``part`` rows (zero-shot unless ``source == target``)."""
    cfg = get_profile(profile)["xcross"]
    seed = cfg["seed"]
    kind = "lora" if source == target else f"zeroshot-{source}"
    name = result_name(kind if part == "test" else f"{kind}-{part}", target, seed)
    config = _config(profile, "evaluation", source=source, part=part)

    def compute():
        t0 = time.perf_counter()
        path = train_source(source, profile=profile, data_root=data_root)
        enc, tok = new_encoder(profile)
        enc.load_domain_state(source, load_safetensors(path))
        data = domain_data(profile, target, data_root)
        rows = getattr(data, part)
        ranks = choice_ranks(SourceModel(enc, source).to(run_device()), tok, data, rows, profile,
                             desc=f"{source} on {target} ({part})")
        params = sum(v.numel() for v in enc.domain_state(source).values())
        return _record(ranks, rows, target, seed, time.perf_counter() - t0, params)

    return stored_or_computed(name, profile, _fingerprint(), config, compute, force=force)


def select_sources(target: str, *, profile: str = "book", data_root=None) -> list[str]:
    """The ``n_sources`` other domains whose models do best zero-shot on ``target``'s holdout users."""
    cfg = get_profile(profile)["xcross"]
    scored = []
    for s in cfg["domains"]:
        if s == target:
            continue
        m = evaluate_source(s, target, part="valid", profile=profile, data_root=data_root)["metrics"]
        scored.append((-m["hit@1"], -m["mrr@10"], s))
    return [s for *_, s in sorted(scored)][: cfg["xcross"]["n_sources"]]


def training_subset(rows: ChoiceRows, size: int, subset: int, seed: int) -> ChoiceRows:
    """Random subset number ``subset`` of ``size`` training rows (Figure 3), seeded by (seed, size, subset)."""
    rng = np.random.default_rng([seed, size, subset])
    return rows.subset(np.sort(rng.choice(len(rows), size=min(size, len(rows)), replace=False)))


TARGET_MODELS = ("xcross", "xcross-no-layers", "xcross-no-interactions", "xcross-no-experts", "pooler-scorer",
                 "xlora", "meteora", "lora")


def _variant(model: str, cfg: dict) -> dict:
    x = cfg["xcross"]
    settings = {"beta": x["beta"], "gamma": x["gamma"], "n_layers": x["n_layers"]}
    if model == "xcross-no-layers":
        settings.update(beta=0.0, gamma=0.0)
    elif model == "xcross-no-interactions":
        settings.update(gamma=0.0)
    elif model == "xcross-no-experts":
        settings.update(beta=0.0)
    return settings


def run_target_model(model: str, target: str, *, profile: str = "book", n_layers: int | None = None,
                     train_size: int | None = None, subset: int = 0, data_root=None, force: bool = False) -> dict:
    """Train ``model`` (one of :data:`TARGET_MODELS`) on ``target`` and test it.

    ``n_layers`` overrides X-Cross's number of integrated layers (Figure 4); ``train_size`` and
    ``subset`` train on a seeded random subset of that many training rows (Figure 3).
    ``"lora"`` with a ``train_size`` is a new LoRA adapter trained on the subset.
    """
    if model not in TARGET_MODELS:
        raise ValueError(f"model must be one of {TARGET_MODELS}, got {model!r}")
    cfg = get_profile(profile)["xcross"]
    seed = cfg["seed"]
    settings = _variant(model, cfg) if model.startswith("xcross") else {}
    if n_layers is not None:
        settings["n_layers"] = n_layers
    tag = model
    if n_layers is not None:
        tag += f"-L{n_layers}"
    if train_size is not None:
        tag += f"-n{train_size}-s{subset}"
    if model == "lora" and train_size is None:
        return evaluate_source(target, target, profile=profile, data_root=data_root, force=force)
    name = result_name(tag, target, seed)
    sources = select_sources(target, profile=profile, data_root=data_root) if model != "lora" else []
    config = _config(profile, "target", model=model, settings=settings, sources=sources, train_size=train_size,
                     subset=subset)

    def compute():
        t0 = time.perf_counter()
        enc, tok = new_encoder(profile)
        load_sources(enc, sources, profile, data_root)
        data = domain_data(profile, target, data_root)
        rows = data.train if train_size is None else training_subset(data.train, train_size, subset, seed)
        lr = cfg["mixture_lr"] if model in ("xlora", "meteora") else None
        torch.manual_seed(seed)
        if model.startswith("xcross"):
            net = XCross(enc, sources, head_from=sources[0], **settings)
        elif model == "pooler-scorer":
            net = PoolerScorer(enc, sources[0])
        elif model in ("xlora", "meteora"):
            net = AdapterMixture(enc, sources, model, head_from=sources[0])
        else:  # a new LoRA adapter on the target (limited-data runs)
            for p in enc.adapter_parameters(target) + list(enc.heads[target].parameters()):
                p.requires_grad_(True)
            net = SourceModel(enc, target)
        params = count_trainable_params(net)
        folder = _run_folder(profile, f"{tag}-{target}-seed{seed}", config, force)
        train = train_choices(net, tok, data, rows, profile, folder, lr=lr, seed=seed)
        ranks = choice_ranks(net, tok, data, data.test, profile, desc=f"{tag} on {target}")
        extra = {"training": {"wall_time": train.wall_time, "loss": [h["train_loss"] for h in train.history]},
                 "train_rows": len(rows)}
        if isinstance(net, XCross):
            extra["integrator_params"] = net.integrator_params()
            extra["w_final"] = net.w_final.detach().tolist()
        return _record(ranks, data.test, target, seed, time.perf_counter() - t0, params, extra)

    return stored_or_computed(name, profile, _fingerprint(), config, compute, force=force)


# ====================================================================== ID baselines
def run_id_baseline(model: str, target: str, *, profile: str = "book", data_root=None, force: bool = False) -> dict:
    """SASRec (CE loss) or BERT4Rec on the target's training users, scored on the same 30 choices."""
    from .. import data as xdata
    from ..baselines import train_bert4rec, train_sasrec
    from ..data.splits import user_split

    if model not in ("sasrec", "bert4rec"):
        raise ValueError(f"model must be 'sasrec' or 'bert4rec', got {model!r}")
    cfg = get_profile(profile)["xcross"]
    seed = cfg["seed"]
    name = result_name(model, target, seed)
    idc = cfg["id_baselines"]
    config = _config(profile, "id", model=model)
    fp = code_fingerprint(*FINGERPRINT_MODULES, "xdrec.baselines")

    def compute():
        t0 = time.perf_counter()
        ds = xdata.load(cfg["dataset"], data_root, domains=[target])
        split = user_split(ds, target, ratios=cfg["ratios"], seed=cfg["split_seed"])

        class _Split:  # what train_sequential reads: training sequences and validation rows
            train = split.train_sequences
            valid = split.valid

        tc = TrainConfig(epochs=idc["epochs"], patience=idc["patience"], lr=idc["lr"], batch_size=idc["batch_size"],
                         seed=seed, checkpoint_dir=_run_folder(profile, f"{model}-{target}-seed{seed}", config, force))
        kwargs = {"hidden": idc["hidden"], "max_len": idc["max_len"], "dropout": idc["dropout"]}
        if model == "sasrec":
            net, result = train_sasrec(_Split, ds.n_items, tc, loss="ce", n_blocks=idc["layers"], **kwargs)
        else:
            net, result = train_bert4rec(_Split, ds.n_items, tc, n_layers=idc["layers"], **kwargs)
        data = domain_data(profile, target, data_root)
        rows = data.test
        scores = net.score_all([h.tolist() for h in rows.histories]).cpu().numpy()
        s = np.take_along_axis(scores, rows.candidates, axis=1)
        ranks = sampled_ranking(s, KS, per_row=True)["rank"]
        return _record(ranks, rows, target, seed, time.perf_counter() - t0, result.trainable_params,
                       {"training": {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch}})

    return stored_or_computed(name, profile, fp, config, compute, force=force)


# ====================================================================== whole studies
def run_table2(targets: Sequence[str] | None = None, *, profile: str = "book", data_root=None, force: bool = False,
               models: Sequence[str] = ("sasrec", "bert4rec", "pooler-scorer", "xlora", "meteora", "xcross")) -> list[dict]:
    """Every Table 2 row for ``targets``: ID baselines, every source LoRA on every target, integrations."""
    cfg = get_profile(profile)["xcross"]
    targets = list(targets or cfg["domains"])
    out = []
    for s in cfg["domains"]:
        train_source(s, profile=profile, data_root=data_root, force=force)
    for t in targets:
        for s in cfg["domains"]:
            out.append(evaluate_source(s, t, profile=profile, data_root=data_root, force=force))
        for m in models:
            if m in ("sasrec", "bert4rec"):
                out.append(run_id_baseline(m, t, profile=profile, data_root=data_root, force=force))
            else:
                out.append(run_target_model(m, t, profile=profile, data_root=data_root, force=force))
    return out


def run_ablations(targets: Sequence[str] | None = None, *, profile: str = "book", data_root=None,
                  force: bool = False) -> list[dict]:
    cfg = get_profile(profile)["xcross"]
    return [run_target_model(m, t, profile=profile, data_root=data_root, force=force)
            for t in (targets or cfg["domains"])
            for m in ("xcross", "xcross-no-layers", "xcross-no-interactions", "xcross-no-experts")]


def run_layers(targets: Sequence[str] | None = None, *, profile: str = "book", data_root=None,
               force: bool = False) -> list[dict]:
    cfg = get_profile(profile)["xcross"]
    default = cfg["xcross"]["n_layers"]  # that point of the curve is the main X-Cross run
    return [run_target_model("xcross", t, profile=profile, n_layers=None if k == default else k,
                             data_root=data_root, force=force)
            for t in (targets or cfg["domains"]) for k in cfg["layers_study"]]


def run_limited(targets: Sequence[str] | None = None, *, profile: str = "book", data_root=None,
                force: bool = False) -> list[dict]:
    """X-Cross and a new LoRA on random training subsets (Figure 3).

    A size that is not below the training pool makes every subset the whole training set: that
    point is the main X-Cross run and the target's own LoRA (the same rows in the same order).
    """
    cfg = get_profile(profile)["xcross"]
    lim = cfg["limited"]
    kw = {"profile": profile, "data_root": data_root, "force": force}
    out = []
    for t in targets or cfg["domains"]:
        pool = len(domain_data(profile, t, data_root).train)
        for n in lim["sizes"]:
            if n >= pool:
                out += [run_target_model("xcross", t, **kw), evaluate_source(t, t, **kw)]
                continue
            out += [run_target_model(m, t, train_size=n, subset=j, **kw)
                    for j in range(lim["subsets"]) for m in ("xcross", "lora")]
    return out


def run_all(targets: Sequence[str] | None = None, *, profile: str = "book", data_root=None, force: bool = False,
            models: Sequence[str] | None = None) -> list[dict]:
    """Table 2, Table 4, the limited-data curve and the layer study, one target after the other."""
    kw = {"profile": profile, "data_root": data_root, "force": force}
    out = []
    for t in targets or get_profile(profile)["xcross"]["domains"]:
        out += run_table2([t], **kw, **({"models": models} if models else {}))
        out += run_ablations([t], **kw) + run_limited([t], **kw) + run_layers([t], **kw)
    return out


STUDIES = {"table2": run_table2, "ablations": run_ablations, "layers": run_layers, "limited": run_limited,
           "all": run_all}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=sorted(STUDIES) + ["sources"])
    ap.add_argument("--profile", default="book")
    ap.add_argument("--targets", nargs="*", default=None)
    ap.add_argument("--models", nargs="*", default=None, help="table2 and all: which Table 2 models to run")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--force", action="store_true", help="recompute instead of reading finished results back")
    args = ap.parse_args(argv)
    if args.study == "sources":
        for d in args.targets or get_profile(args.profile)["xcross"]["domains"]:
            print(d, train_source(d, profile=args.profile, data_root=args.data_root, force=args.force))
        return
    kwargs = {"models": args.models} if (args.study in ("table2", "all") and args.models) else {}
    for rec in STUDIES[args.study](args.targets, profile=args.profile, data_root=args.data_root, force=args.force,
                                   **kwargs):
        m = rec["metrics"]
        print(f"{rec['name']:<55} " + "  ".join(f"{k} {m[k]:.4f}" for k in METRICS))


if __name__ == "__main__":
    main()

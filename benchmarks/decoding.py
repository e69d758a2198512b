"""Time per decoding step of the domain-aware prefix-tree constraint: ours vs Hugging Face's.

GenCDR decodes an item's semantic ID with beam search constrained by its target domain's prefix
tree (GenCDR Eqs. 12-13). In Hugging Face ``generate`` that constraint is a logits processor,
called once per decoding step on scores ``[batch * beams, V]``. Two implementations are timed
side by side, on the same inputs, at every step (levels 0, 1, 2 of a 3-level ID):

- ours, :class:`xdrec.decoding.PrefixTreeLogitsProcessor`: every row's trie walk is one gather
  per generated level on :class:`xdrec.decoding.TrieTensors`; the scores are masked in place
  (the level's block of code columns is copied out, masked, and written back after one fill);
- Hugging Face's ``PrefixConstrainedLogitsProcessor`` with
  :func:`xdrec.decoding.hf_prefix_allowed_tokens_fn` (the ``prefix_allowed_tokens_fn`` of
  De Cao et al., "Autoregressive Entity Retrieval", ICLR 2021: one Python call per row and step).

For scale, the model's own step is timed too: one new token per row through SmolLM2-135M with a
KV cache of an ~80-token prompt, at the same batch x beams, with all 30 layers and with the
first 2 (the ``book`` profile's GenCDR backbone). The processor's overhead is its time as a
share of that step.

The tries are built from the semantic IDs the GenCDR tokenizer wrote
(``checkpoints/gencdr_tokenizer/<dataset>/full-*/semantic_ids.parquet``, columns ``domain_name``
and ``reassign0..2``, K = 256 per level) when present, else from random IDs of the same sizes
(the output says which). The vocabulary is SmolLM2's 49,152 text tokens plus the semantic-ID
tokens (3 x 256 codes and one marker per domain).

Run from the repository root::

    .venv/bin/python benchmarks/decoding.py            # full run (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/decoding.py --quick    # one dataset, fewer repeats, 2-layer model only

Measurements go to ``--out`` (default ``results/benchmarks/decoding.json``), written atomically.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from xdrec.decoding import PrefixTree, PrefixTreeLogitsProcessor, TrieTensors, hf_prefix_allowed_tokens_fn
from xdrec.generative import SemanticIdVocab
from xdrec.io import write_json
from xdrec.paths import checkpoint_dir, project_root

DATASETS = ("amazon14-food-kitchen", "amazon18-xcross")
# Items per domain of the tokenizer's IDs (book profile), for random stand-ins when the IDs are absent.
FALLBACK_SIZES = {"amazon14-food-kitchen": {"Food": 11837, "Kitchen": 16258},
                  "amazon18-xcross": {"Sports": 10036, "Tools": 5820}}
TEXT_VOCAB = 49_152  # SmolLM2's tokenizer
CODEBOOK = 256
LEVELS = 3
PROMPT_LEN = 80
EOS = 2  # SmolLM2's <|im_end|>
CONFIGS = ((1, 10), (16, 10), (32, 20), (64, 20))  # batch x beams; 32 x 20 is the book profile's evaluation
GOAL_SPEEDUP, GOAL_SPEEDUP_AT = 10.0, (64, 20)
GOAL_OVERHEAD = 0.10


# ----------------------------------------------------------------------------------------------
# Tries
# ----------------------------------------------------------------------------------------------
def load_catalogue(dataset: str, seed: int = 0) -> dict:
    """Semantic IDs of a dataset's items: the tokenizer's (newest ``full-*`` run) or random ones of the same sizes."""
    import pandas as pd

    runs = sorted(checkpoint_dir("gencdr_tokenizer", dataset).glob("full-*/semantic_ids.parquet"),
                  key=lambda p: p.stat().st_mtime)
    if runs:
        df = pd.read_parquet(runs[-1], columns=["item", "domain_name", "reassign0", "reassign1", "reassign2"])
        names = list(dict.fromkeys(df["domain_name"]))
        return {"ids": df[[f"reassign{l}" for l in range(LEVELS)]].to_numpy(np.int64),
                "domain": df["domain_name"].map({n: i for i, n in enumerate(names)}).to_numpy(np.int64),
                "items": df["item"].to_numpy(np.int64), "domains": names,
                "source": str(runs[-1].relative_to(project_root()) if runs[-1].is_relative_to(project_root()) else runs[-1])}
    rng = np.random.default_rng(seed)
    names = list(FALLBACK_SIZES[dataset])
    ids, domain = [], []
    for d, n in enumerate(FALLBACK_SIZES[dataset].values()):
        flat = rng.choice(CODEBOOK ** LEVELS, n, replace=False)
        ids.append(np.stack([flat // CODEBOOK ** (LEVELS - 1 - l) % CODEBOOK for l in range(LEVELS)], 1))
        domain.append(np.full(n, d))
    ids = np.concatenate(ids)
    return {"ids": ids, "domain": np.concatenate(domain), "items": np.arange(len(ids)), "domains": names,
            "source": f"random IDs (no semantic_ids.parquet under {checkpoint_dir('gencdr_tokenizer', dataset)})"}


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], repeats: int, warmup: int, between: Callable[[], None] | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (``between`` runs untimed)."""
    for _ in range(warmup):
        fn()
        if between:
            between()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if between:
            between()
    return times


def interleaved(calls: dict[str, Callable[[], object]], repeats: dict[str, int], warmup: int,
                before: dict[str, Callable[[], None]] | None = None) -> dict[str, list[float]]:
    """Time several functions in turns (a, b, c, a, b, c, ...) so that they share the machine's load.

    ``before[name]`` runs, untimed, before every call of ``name``.
    """
    before = before or {}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(warmup + max(repeats.values())):
        for name, fn in calls.items():
            if r >= warmup + repeats[name]:
                continue
            if name in before:
                before[name]()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    return times


def step_inputs(cat: dict, vocab: SemanticIdVocab, batch: int, beams: int, t: int, rng: np.random.Generator):
    """``input_ids [batch * beams, 80 + t]`` (a prompt, then ``t`` codes of a random item of the row's domain), scores, domains."""
    n_dom = len(cat["domains"])
    domains = np.arange(batch) % n_dom
    rows = np.repeat(domains, beams)
    by_domain = [np.flatnonzero(cat["domain"] == d) for d in range(n_dom)]
    items = np.array([rng.choice(by_domain[d]) for d in rows])
    prompt = rng.integers(0, len(vocab) + vocab.offset, (len(rows), PROMPT_LEN))
    gen = cat["ids"][items, :t] + np.asarray(vocab.level_offsets[:t], dtype=np.int64)
    input_ids = torch.from_numpy(np.concatenate([prompt, gen], 1)).long()
    scores = torch.randn(len(rows), vocab.offset + len(vocab), generator=torch.Generator().manual_seed(int(t)))
    return input_ids, scores, domains


def _summary(times: list[list[float]]) -> dict:
    by_level = [statistics.fmean(x) for x in times]
    return {"mean_s": statistics.fmean(by_level), "by_level_s": by_level,
            "median_by_level_s": [statistics.median(x) for x in times], "times_s": times}


def bench_processors(cat: dict, batch: int, beams: int, repeats: int, hf_repeats: int, warmup: int, seed: int = 0) -> dict:
    """Mean seconds per call of both processors at levels 0..2.

    Ours masks ``scores`` in place, so each timed call gets a fresh copy, refilled untimed before it.
    """
    from transformers import PrefixConstrainedLogitsProcessor

    vocab = SemanticIdVocab((CODEBOOK,) * LEVELS, tuple(cat["domains"]), offset=TEXT_VOCAB)
    trie = TrieTensors(cat["ids"], cat["domain"], len(cat["domains"]), codebook_sizes=(CODEBOOK,) * LEVELS,
                       items=cat["items"])
    trees = {d: PrefixTree(cat["ids"][cat["domain"] == d].tolist()) for d in range(len(cat["domains"]))}
    rng = np.random.default_rng(seed)
    times = {"ours": [], "hf": []}
    allowed_per_row = []
    for t in range(LEVELS):
        input_ids, scores, domains = step_inputs(cat, vocab, batch, beams, t, rng)
        ours = PrefixTreeLogitsProcessor(trie, vocab.level_offsets, PROMPT_LEN, torch.from_numpy(domains), beams, EOS)
        hf = PrefixConstrainedLogitsProcessor(
            hf_prefix_allowed_tokens_fn(trees, vocab.level_offsets, PROMPT_LEN, domains.tolist(), beams, EOS), beams)
        a, b = ours(input_ids, scores.clone()), hf(input_ids, scores)
        fa, fb = torch.isfinite(a), torch.isfinite(b)  # same constraint, or the timing means nothing
        if not (torch.equal(fa, fb) and torch.equal(a[fa], b[fb])):
            raise AssertionError(f"the processors disagree at level {t} ({batch} x {beams})")
        allowed_per_row.append(float(fa.sum(1).float().mean()))
        del a, b, fa, fb
        work = scores.clone()  # ours overwrites its input: refilled, untimed, before each call
        calls = {"ours": lambda: ours(input_ids, work), "hf": lambda: hf(input_ids, scores)}
        level = interleaved(calls, {"ours": repeats, "hf": hf_repeats}, warmup,
                            before={"ours": lambda: work.copy_(scores)})
        for name, x in level.items():
            times[name].append(x)
        del work
    out = {name: _summary(x) for name, x in times.items()}
    out["allowed_per_row"] = allowed_per_row
    out["speedup"] = out["hf"]["mean_s"] / out["ours"]["mean_s"]
    return out


def load_model(layers: int | None, n_domains: int):
    from xdrec.encoders.backbones import load_causal_lm

    model, _ = load_causal_lm("smollm2-135m", num_hidden_layers=layers)
    model.resize_token_embeddings(TEXT_VOCAB + LEVELS * CODEBOOK + n_domains, mean_resizing=False)
    return model.eval()


@torch.inference_mode()
def bench_model_step(model, rows: int, repeats: int, warmup: int) -> list[float]:
    """One new token for each of ``rows`` rows, with a KV cache of a ``PROMPT_LEN``-token prompt."""
    V = model.get_input_embeddings().num_embeddings
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(V, (1, PROMPT_LEN), generator=g)
    cache = model(input_ids=prompt, use_cache=True).past_key_values  # beams share their prompt's cache
    cache.batch_repeat_interleave(rows)
    new = torch.randint(V, (rows, 1), generator=g)

    def back_to_prompt():  # drop the token just added, so every timed step sees the same cache
        extra = cache.get_seq_length() - PROMPT_LEN
        if extra:
            cache.crop(-extra)

    return timed(lambda: model(input_ids=new, past_key_values=cache, use_cache=True), repeats, warmup,
                 between=back_to_prompt)


# ----------------------------------------------------------------------------------------------
def _ms(s: float) -> str:
    return f"{1e3 * s:9.2f}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one dataset, fewer repeats, 2-layer model only")
    p.add_argument("--out", default=str(project_root() / "results" / "benchmarks" / "decoding.json"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    repeats, hf_repeats, warmup, model_repeats = (5, 2, 1, 2) if a.quick else (20, 5, 2, 3)
    datasets = DATASETS[:1] if a.quick else DATASETS
    depths = [2] if a.quick else [30, 2]
    started = time.perf_counter()

    record = {"settings": {"quick": a.quick, "threads": a.threads, "repeats_ours": repeats, "repeats_hf": hf_repeats,
                           "warmup": warmup, "repeats_model": model_repeats, "prompt_len": PROMPT_LEN,
                           "vocab": f"{TEXT_VOCAB} text + {LEVELS} x {CODEBOOK} codes + domain markers",
                           "configs": [list(c) for c in CONFIGS]},
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "load_average_start": list(os.getloadavg())},
              "processors": {}, "model_step": {}, "goals": {}}
    import transformers
    record["machine"]["transformers"] = transformers.__version__

    print(f"Decoding-step benchmark: {a.threads} threads, prompt {PROMPT_LEN} tokens, 3 levels x K={CODEBOOK}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other jobs on the machine slow every timing)\n")
    cats = {}
    for ds in datasets:
        cats[ds] = cat = load_catalogue(ds)
        sizes = ", ".join(f"{n} {int((cat['domain'] == d).sum())}" for d, n in enumerate(cat["domains"]))
        print(f"[{ds}] tries from {cat['source']}: {sizes} items")
        record["processors"][ds] = {"source": cat["source"], "items": {n: int((cat["domain"] == d).sum())
                                                                      for d, n in enumerate(cat["domains"])},
                                    "configs": {}}
        for batch, beams in CONFIGS:
            res = bench_processors(cat, batch, beams, repeats, hf_repeats, warmup)
            record["processors"][ds]["configs"][f"{batch}x{beams}"] = res
            print(f"  {batch:3d} x {beams:2d}: ours {_ms(res['ours']['mean_s'])} ms  HF {_ms(res['hf']['mean_s'])} ms  "
                  f"HF/ours {res['speedup']:7.1f}x   "
                  "(ours per level: " + " ".join(f"{1e3 * x:.2f}" for x in res["ours"]["by_level_s"]) + " ms)",
                  flush=True)

    n_domains = max(len(c["domains"]) for c in cats.values())
    for layers in depths:
        model = load_model(None if layers == 30 else layers, n_domains)
        record["model_step"][str(layers)] = {}
        for batch, beams in CONFIGS:
            times = bench_model_step(model, batch * beams, model_repeats, 1)
            record["model_step"][str(layers)][f"{batch}x{beams}"] = {"times_s": times, "mean_s": statistics.fmean(times)}
            print(f"  SmolLM2-135M, {layers} layers, {batch:3d} x {beams:2d} rows: {_ms(statistics.fmean(times))} ms per step",
                  flush=True)
        del model

    # ---- table and goals
    print("\nPer decoding step (mean over levels 0-2), milliseconds; overhead = ours / model step")
    head = f"{'dataset':22s} {'batch x beams':>13s} {'ours':>9s} {'HF':>9s} {'HF/ours':>8s}"
    for layers in depths:
        head += f" {'model ' + str(layers) + 'L':>10s} {'ovh ' + str(layers) + 'L':>8s}"
    print(head)
    print("-" * len(head))
    goals = record["goals"]
    for ds in datasets:
        for batch, beams in CONFIGS:
            key = f"{batch}x{beams}"
            res = record["processors"][ds]["configs"][key]
            line = (f"{ds:22s} {key:>13s} {_ms(res['ours']['mean_s'])} {_ms(res['hf']['mean_s'])} {res['speedup']:7.1f}x")
            res["overhead"] = {}
            for layers in depths:
                step = record["model_step"][str(layers)][key]["mean_s"]
                ovh = res["ours"]["mean_s"] / step
                res["overhead"][str(layers)] = ovh
                line += f" {_ms(step)}  {100 * ovh:6.2f}%"
                goals[f"overhead<{GOAL_OVERHEAD:.0%} of the {layers}-layer step, {ds} {key}"] = ovh < GOAL_OVERHEAD
            print(line)
            if (batch, beams) == GOAL_SPEEDUP_AT:
                goals[f"HF/ours >= {GOAL_SPEEDUP:g}x, {ds} {key}"] = res["speedup"] >= GOAL_SPEEDUP
    print("\nGoals:")
    for name, ok in goals.items():
        print(f"  [{'pass' if ok else 'FAIL'}] {name}")
    record["all_goals_met"] = all(goals.values())
    record["machine"]["load_average_end"] = list(os.getloadavg())
    record["wall_time_s"] = round(time.perf_counter() - started, 1)
    path = write_json(Path(a.out), record)
    print(f"\n{'all goals met' if record['all_goals_met'] else 'some goals missed'}; "
          f"measurements written to {path} ({record['wall_time_s']:.0f} s)")
    return record


if __name__ == "__main__":
    sys.exit(0 if main()["all_goals_met"] else 1)

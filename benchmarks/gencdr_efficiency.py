"""GenCDR's efficiency (RQ5): training cost of LoRA vs full fine-tuning, inference cost vs item-pool size.

Two measurements, mirroring Figures 5 and 6 of the GenCDR paper ("Analysis of Efficiency (RQ5)").
Every setup runs in a fresh subprocess (this script re-invoked with ``--worker``), so that the
peak memory of one setup is never the peak of another.

**Training (Figure 5)**: one step of phase 1 of GenCDR (Eq. 9) = forward, backward, gradient
clipping at 1.0 and an AdamW step (as :func:`xdrec.training.fit` does), in two setups on the same
backbone and the same batches:

- ``lora``: exactly what phase 1 trains, built as :func:`xdrec.gencdr.train_recommender.build` does:
  SmolLM2-135M with the semantic-ID tokens, the ``book`` profile's universal LoRA experts, gates,
  domain adapters and routers, ``model.train_phase(universal=True)`` (experts, gates and ID
  embeddings train), loss ``model.universal_loss(batch)``;
- ``full``: full fine-tuning with the same loss. The recommender is built with one expert of rank
  1 (and domain adapters of rank 1), whose weights are frozen; every weight of the backbone
  (``model.lm``) and the ID embeddings train. The tiny frozen rank-1 expert branch still runs in
  every projection (a few percent of a projection's cost), so "full" is a slight over-estimate.

Batches are the real phase-1 batches (:class:`xdrec.gencdr.train_recommender.TimelineBatches`, epoch
0, batch 16, last 20 items per timeline) of ``amazon14-food-kitchen``, with the semantic IDs the
GenCDR tokenizer stored (``checkpoints/gencdr_tokenizer/<dataset>/full-*/semantic_ids.parquet``,
newest run, collision rule ``reassign``) or, where absent, random unique IDs (3 levels, K = 256;
the output says which: step cost does not depend on which codes the items have). Reported per
setup and depth: trainable parameters, the mean seconds per step over ``--steps`` steps after
``--warmup`` steps, the time per epoch **projected** as mean step time x the number of phase-1
batches in an epoch (not measured), and memory (below). Depths: all 30 layers of SmolLM2-135M (the
"same backbone" at full depth) and the first 2 (the ``book`` profile's GenCDR).

**Inference (Figure 6)**: time per user and memory of top-10 recommendation against a pool of P
items (P = 1e3 ... 1e5), for three models, one subprocess per (model, P):

- ``gencdr``: the ``book`` recommender (2-layer SmolLM2, experts, domain LoRA, routers) decoding
  with ``model.recommend(..., mode="fused")`` (two passes, ``P_uni`` and ``P_spec``, Eq. 11) and
  20 beams over the prefix trees (:class:`xdrec.decoding.TrieTensors`) of the pool;
- ``tiger``: :class:`xdrec.tiger.TIGER` with the ``book`` profile's T5, the same constrained beam
  search with 20 beams (its IDs have a 4th, collision level: here always code 0);
- ``sasrec``: :class:`xdrec.baselines.sasrec.SASRec` with the ``book`` ID-baseline settings
  (hidden 64, 2 blocks, 1 head), scoring every one of the P items and taking the top 10, as an ID
  model does.

The pool is synthetic: P items with unique random semantic IDs (3 levels, K = 256), split evenly
between two domains (one prefix tree each); the users (``--users``, a fixed seeded batch) have
random histories of 20 pool items and alternate target domains; they are processed in chunks of
the ``book`` evaluation batch (32), as :func:`xdrec.generative.evaluate_generative` does. The
models are untrained (freshly initialised): the cost of a forward pass or a beam search does not
depend on the weights' values (beam search always keeps 20 beams; every level has more than 20
allowed codes). Reported: the median time per user over ``--repeats`` passes over all users after
one warm-up pass, memory (below), and the bytes of the pool-dependent structures (the tries'
``child`` tables and ID arrays; SASRec's item-embedding matrix).

**Memory.** On CPU: the resident set (RSS) of the worker. ``base`` is the RSS once everything is
built (after ``gc`` and ``malloc_trim``), ``peak`` the highest RSS during the measured work (the
kernel's high-water mark, reset just before it through ``/proc/self/clear_refs``), ``work`` =
peak - base: the working set of training (gradients, AdamW state, activations) or of inference.
``load peak`` is the worker's peak RSS before that reset (``ru_maxrss``: loading the backbone
file, building the tries). On CUDA: ``torch.cuda.memory_allocated`` for base and
``max_memory_allocated`` after ``reset_peak_memory_stats`` for peak.

Run from the repository root::

    .venv/bin/python benchmarks/gencdr_efficiency.py                     # full run (see README for times)
    .venv/bin/python benchmarks/gencdr_efficiency.py --quick --threads 1 # 2 layers, P in {1e3, 1e4}: ~2 min
    .venv/bin/python benchmarks/gencdr_efficiency.py --part training --layers 30 --steps 10

Measurements go to ``--out`` (default ``results/benchmarks/gencdr_efficiency.json``), written atomically.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xdrec.io import write_json
from xdrec.paths import checkpoint_dir, project_root

DATASET = "amazon14-food-kitchen"
PROFILE = "book"  # --profile: whose settings (and backbone: XDREC_BACKBONE at the paper profile) are measured
CODEBOOK, LEVELS = 256, 3
TOP_K = 10
POOLS = (1_000, 3_000, 10_000, 30_000, 100_000)
QUICK_POOLS = (1_000, 10_000)
MODELS = ("gencdr", "tiger", "sasrec")
SETUPS = ("lora", "full")
INFERENCE_DOMAINS = ("D0", "D1")
MB = 2 ** 20


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------
def _proc_status_bytes(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` (Linux), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class MemoryProbe:
    """The memory a piece of work adds to what is already built: ``base()``, the work, then ``peak()``.

    CPU: resident set size. ``base()`` collects garbage, returns freed heap to the OS
    (``malloc_trim``), reads the RSS and resets the kernel's RSS high-water mark, so that
    ``peak()`` is the highest RSS of the work alone. CUDA: allocated memory, with torch's counters.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.load_peak: int | None = None  # the process's peak before base() (loading, building)
        self.resettable = False

    def base(self) -> int:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            self.load_peak = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.load_peak = _ru_maxrss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM (and ru_maxrss) to the current RSS
            self.resettable = True
        except OSError:
            self.resettable = False
        rss = _proc_status_bytes("VmRSS")
        return rss if rss is not None else self.load_peak

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        hwm = _proc_status_bytes("VmHWM") if self.resettable else None
        return hwm if hwm is not None else _ru_maxrss_bytes()

    def summary(self, base: int) -> dict[str, Any]:
        peak = self.peak()
        return {"kind": "cuda_allocated" if self.cuda else "rss", "base_bytes": base, "peak_bytes": peak,
                "work_bytes": peak - base, "load_peak_bytes": self.load_peak,
                "peak_reset": self.cuda or self.resettable}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def nbytes(*arrays) -> int:
    return int(sum(a.nbytes if isinstance(a, np.ndarray) else a.numel() * a.element_size() for a in arrays))


# ----------------------------------------------------------------------------------------------
# Semantic IDs
# ----------------------------------------------------------------------------------------------
def random_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` distinct random IDs with codes in ``[0, 256)``."""
    flat = rng.choice(CODEBOOK ** LEVELS, n, replace=False)
    return np.stack([flat // CODEBOOK ** (LEVELS - 1 - l) % CODEBOOK for l in range(LEVELS)], 1).astype(np.int64)


def stored_or_random_ids(ds, seed: int = 0) -> tuple[np.ndarray, str]:
    """The GenCDR tokenizer's IDs of ``ds``'s items (newest ``full-*`` run, ``reassign``), else random ones."""
    import pandas as pd

    runs = sorted(checkpoint_dir("gencdr_tokenizer", DATASET).glob("full-*/semantic_ids.parquet"),
                  key=lambda p: p.stat().st_mtime)
    if runs:
        df = pd.read_parquet(runs[-1], columns=["item_key"] + [f"reassign{l}" for l in range(LEVELS)])
        if len(df) == len(ds.items) and (df["item_key"].to_numpy() == ds.items["item_key"].to_numpy()).all():
            root = project_root()
            return (df[[f"reassign{l}" for l in range(LEVELS)]].to_numpy(np.int64),
                    str(runs[-1].relative_to(root) if runs[-1].is_relative_to(root) else runs[-1]))
    return random_ids(len(ds.items), np.random.default_rng(seed)), "random unique IDs (no matching semantic_ids.parquet)"


# ----------------------------------------------------------------------------------------------
# Workers (each runs in its own process)
# ----------------------------------------------------------------------------------------------
def build_recommender(layers: int, codebook_sizes, domains, *, experts: dict | None = None,
                      domain_lora: dict | None = None):
    """GenCDR's recommender as :func:`xdrec.gencdr.train_recommender.build` makes it (the ``book`` settings)."""
    from xdrec.encoders.backbones import load_causal_lm
    from xdrec.gencdr.train_recommender import backbone_location
    from xdrec.gencdr.recommender import GenCDRRecommender, add_semantic_id_tokens
    from xdrec.profiles import get_profile

    cfg = get_profile(PROFILE)["gencdr_recommender"]
    lm, tokenizer = load_causal_lm(backbone_location(cfg), num_hidden_layers=layers or None)  # 0: every layer
    vocab = add_semantic_id_tokens(tokenizer, lm, codebook_sizes, domains)
    prefix = tokenizer(cfg["prompt_prefix"], add_special_tokens=False)["input_ids"] if cfg["prompt_prefix"] else []
    return GenCDRRecommender(lm, vocab, target_modules=cfg["target_modules"], experts=experts or cfg["experts"],
                             domain_lora=domain_lora or cfg["domain_lora"], router=cfg["router"],
                             prefix_tokens=prefix, pad_id=tokenizer.pad_token_id)


def make_full_finetuning(model) -> None:
    """Every backbone weight and the ID embeddings train; the (rank-1) LoRA experts, gates, adapters, routers do not."""
    from xdrec.gencdr.experts import set_trainable

    model.train_phase(universal=True)  # ID embeddings (and experts, switched off below)
    set_trainable(model.layers, experts=False, domain=None)
    lora = {id(p) for m in model.layers
            for p in (m.expert_A, m.expert_B, m.gate.weight, *m.domain_A, *m.domain_B)}
    for p in model.lm.parameters():  # the wrapped projections' base weights are among these
        p.requires_grad_(id(p) not in lora)


def train_worker(spec: dict, device: torch.device) -> dict[str, Any]:
    """Seconds per phase-1 training step and memory of one setup (``lora`` or ``full``) at one depth."""
    from xdrec import data
    from xdrec.gencdr.train_recommender import TimelineBatches
    from xdrec.generative import ItemTokens, user_timelines
    from xdrec.profiles import get_profile
    from xdrec.training import count_trainable_params

    prof = get_profile(PROFILE)
    torch.set_num_threads(spec["threads"])
    cfg, ev = prof["gencdr_recommender"], prof["generative_eval"]
    torch.manual_seed(0)
    ds = data.load(DATASET)
    ids, ids_source = stored_or_random_ids(ds)
    sizes = [max(int(ids[:, l].max()) + 1, CODEBOOK) for l in range(LEVELS)]
    if spec["setup"] == "lora":
        model = build_recommender(spec["layers"], sizes, ds.domains)
        model.train_phase(universal=True)  # phase 1: experts, gates, ID embeddings
    else:
        tiny = {"n": 1, "r": 1, "alpha": 1, "dropout": cfg["experts"]["dropout"]}
        model = build_recommender(spec["layers"], sizes, ds.domains, experts={**cfg["experts"], **tiny},
                                  domain_lora={**cfg["domain_lora"], "r": 1, "alpha": 1})
        make_full_finetuning(model)
    model.to(device).train()

    items = ItemTokens.from_ids(model.vocab, ids, ds.items["domain"].to_numpy())
    timelines = user_timelines(data.leave_last_out(ds).train)
    cap = cfg["universal"].get("max_users")  # as run_recommender subsamples phase 1 (the book profile: no cap)
    if cap and len(timelines) > cap:
        keep = np.random.default_rng(0).choice(len(timelines), cap, replace=False)
        timelines = [timelines[i] for i in sorted(keep)]
    epoch = TimelineBatches(timelines, items, batch_size=cfg["universal"]["batch_size"], max_items=ev["max_items"],
                            prefix=model.prefix_tokens, pad_id=model.pad_id, seed=0)(0)
    n_steps = spec["warmup"] + spec["steps"]
    batches = [{k: v.to(device) for k, v in epoch[i % len(epoch)].items()} for i in range(n_steps)]
    steps_per_epoch = len(epoch)
    del epoch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["universal"]["lr"], weight_decay=0.0)  # fit's defaults

    def step(batch):
        loss = model.universal_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    probe = MemoryProbe(device)
    base = probe.base()
    times = []
    for i, batch in enumerate(batches):
        _sync(device)
        t0 = time.perf_counter()
        step(batch)
        _sync(device)
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    mean = statistics.fmean(times)
    return {"setup": spec["setup"], "layers": spec["layers"],
            "trainable_params": count_trainable_params(model),
            "total_params": sum(p.numel() for p in model.parameters()),
            "backbone_params": sum(p.numel() for p in model.lm.parameters()),
            "ids_source": ids_source, "timelines": len(timelines), "steps_per_epoch": steps_per_epoch,
            "batch_tokens": [int(b["attention_mask"].sum()) for b in batches[spec["warmup"]:]],
            "step_times_s": times, "mean_step_s": mean, "median_step_s": statistics.median(times),
            "projected_epoch_s": mean * steps_per_epoch, "memory": probe.summary(base)}


def synthetic_pool(P: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``P`` items with distinct random 3-level IDs, alternating between two domains."""
    return random_ids(P, np.random.default_rng(seed)), np.arange(P) % len(INFERENCE_DOMAINS)


def build_for_inference(name: str, ids: np.ndarray, domain: np.ndarray, device: torch.device):
    """``(recommend(histories, domains) -> [n, 10] items, pool-dependent bytes {name: bytes}, parameters)``."""
    from xdrec.profiles import get_profile

    prof = get_profile(PROFILE)
    ev = prof["generative_eval"]
    if name == "gencdr":
        from xdrec.decoding import TrieTensors
        from xdrec.generative import ItemTokens

        model = build_recommender(prof["gencdr_recommender"]["num_layers"], (CODEBOOK,) * LEVELS, INFERENCE_DOMAINS)
        model.to(device).eval()
        items = ItemTokens.from_ids(model.vocab, ids, domain)
        trie = TrieTensors(ids, domain, len(INFERENCE_DOMAINS), (CODEBOOK,) * LEVELS).to(device)

        def recommend(histories, domains):
            return model.recommend(histories, domains, TOP_K, items=items, trie=trie, beams=ev["beams"],
                                   max_items=ev["max_items"], mode="fused")
        pool = {"trie_child": nbytes(trie.child), "trie_depth": nbytes(trie.depth),
                "item_tokens": nbytes(items.tokens, items.domain)}
    elif name == "tiger":
        from xdrec.tiger.model import TIGER, TIGERConfig

        with_collision = np.concatenate([ids, np.zeros((len(ids), 1), np.int64)], 1)
        model = TIGER(with_collision, domain, INFERENCE_DOMAINS, TIGERConfig.from_profile(prof["tiger"], ev),
                      codebook_sizes=(CODEBOOK,) * LEVELS + (1,))
        model.to(device).eval()
        model.trie.to(device)

        def recommend(histories, domains):
            return model.recommend(histories, domains, TOP_K, beams=ev["beams"])
        pool = {"trie_child": nbytes(model.trie.child), "trie_depth": nbytes(model.trie.depth),
                "item_tokens": nbytes(model.items.tokens, model.items.domain, model.ids, model.item_domain)}
    elif name == "sasrec":
        from xdrec.baselines.sasrec import SASRec

        cfg = prof["id_baselines"]
        model = SASRec(len(ids), hidden=cfg["hidden"], n_blocks=cfg["layers"], n_heads=cfg["sasrec_heads"],
                       max_len=cfg["max_len"], dropout=cfg["dropout"])
        model.to(device).eval()

        def recommend(histories, domains):  # an ID model scores every item (one pool, domains unused)
            return model.score_all(histories).topk(TOP_K, dim=1).indices.cpu().numpy()
        pool = {"item_embedding": nbytes(model.item_emb.weight)}
    else:
        raise ValueError(f"unknown model {name!r}: choose one of {MODELS}")
    return recommend, pool, sum(p.numel() for p in model.parameters())


def inference_worker(spec: dict, device: torch.device) -> dict[str, Any]:
    """Time per user and memory of top-10 recommendation by one model against a pool of ``P`` items."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    P, n_users, chunk = spec["pool"], spec["users"], spec["chunk"]
    t0 = time.perf_counter()
    ids, domain = synthetic_pool(P, seed=0)
    recommend, pool_bytes, params = build_for_inference(spec["model"], ids, domain, device)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    histories = rng.integers(0, P, (n_users, 20)).tolist()
    targets = (np.arange(n_users) % len(INFERENCE_DOMAINS)).tolist()

    def all_users():
        with torch.no_grad():
            for s in range(0, n_users, chunk):
                out = recommend(histories[s:s + chunk], targets[s:s + chunk])
        _sync(device)
        return out

    probe = MemoryProbe(device)
    base = probe.base()
    all_users()  # warm-up
    times = []  # at least `repeats` passes, and enough for `min_time` seconds (SASRec's pass takes milliseconds)
    while len(times) < spec["repeats"] or (sum(times) < spec["min_time"] and len(times) < 1000):
        t = time.perf_counter()
        all_users()
        times.append(time.perf_counter() - t)
    return {"model": spec["model"], "pool": P, "users": n_users, "chunk": chunk, "params": params,
            "build_s": build_s, "pass_times_s": times, "median_s_per_user": statistics.median(times) / n_users,
            "pool_bytes": pool_bytes, "pool_bytes_total": sum(pool_bytes.values()), "memory": probe.summary(base)}



def worker_main(spec: dict, device: str) -> None:
    """Run one measurement; its JSON is the only thing written to stdout (libraries' prints go to stderr)."""
    out, sys.stdout = sys.stdout, sys.stderr
    dev = torch.device(device)
    res = train_worker(spec, dev) if spec["kind"] == "train" else inference_worker(spec, dev)
    res["load_average"] = list(os.getloadavg())
    print(json.dumps(res), file=out, flush=True)


def run_worker(spec: dict, threads: int, device: str) -> dict[str, Any]:
    """This script in a fresh process on ``spec``; returns its JSON."""
    env = {**os.environ, "XDREC_TORCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({**spec, "threads": threads}),
           "--device", device, "--threads", str(threads), "--profile", PROFILE]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=project_root())
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Main: run the workers, print tables and ratios
# ----------------------------------------------------------------------------------------------
def _mb(b: int | None) -> str:
    return f"{b / MB:9.1f}" if b is not None else f"{'-':>9s}"


def _duration(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def run_training(a, record: dict) -> None:
    out = record["training"]
    for layers in a.layers:
        out[str(layers)] = res = {}
        for setup in SETUPS:
            t = time.perf_counter()
            res[setup] = run_worker({"kind": "train", "setup": setup, "layers": layers, "steps": a.steps,
                                     "warmup": a.warmup}, a.threads, a.device)
            print(f"  training, {layers:2d} layers, {setup:4s}: {res[setup]['mean_step_s']:.3f} s/step "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
        lora, full = res["lora"], res["full"]
        res["ratios"] = {
            "trainable_params_lora_over_full": lora["trainable_params"] / full["trainable_params"],
            "step_time_full_over_lora": full["mean_step_s"] / lora["mean_step_s"],
            "peak_memory_full_over_lora": full["memory"]["peak_bytes"] / lora["memory"]["peak_bytes"],
            "work_memory_full_over_lora": full["memory"]["work_bytes"] / max(lora["memory"]["work_bytes"], 1),
        }

    first = out[str(a.layers[0])]["lora"]
    unit = "MiB RSS" if a.device == "cpu" else "MiB CUDA allocated"
    print(f"\nTraining, phase 1 of GenCDR (Eq. 9) on {DATASET}: batch 16, AdamW, {a.warmup} warm-up + {a.steps} timed steps")
    print(f"IDs: {first['ids_source']}; {first['steps_per_epoch']} steps per epoch "
          f"({first['timelines']} timelines); epoch time is PROJECTED = mean step x steps per epoch")
    head = (f"{'layers':>6s} {'setup':>5s} {'trainable':>12s} {'total':>12s} {'s/step':>8s} {'epoch (proj.)':>13s} "
            f"{'base':>9s} {'peak':>9s} {'work':>9s}   ({unit})")
    print(head)
    print("-" * len(head))
    for layers in a.layers:
        for setup in SETUPS:
            r = out[str(layers)][setup]
            m = r["memory"]
            print(f"{layers:6d} {setup:>5s} {r['trainable_params']:12,d} {r['total_params']:12,d} {r['mean_step_s']:8.3f} "
                  f"{_duration(r['projected_epoch_s']):>13s} {_mb(m['base_bytes'])} {_mb(m['peak_bytes'])} {_mb(m['work_bytes'])}")
    print("\nMeasured ratios (Figure 5: LoRA needs far fewer parameters, less time and less memory):")
    for layers in a.layers:
        q = out[str(layers)]["ratios"]
        print(f"  {layers:2d} layers: trainable params LoRA/full {q['trainable_params_lora_over_full']:.4f}   "
              f"step time full/LoRA {q['step_time_full_over_lora']:.2f}x   "
              f"peak memory full/LoRA {q['peak_memory_full_over_lora']:.2f}x   "
              f"working set full/LoRA {q['work_memory_full_over_lora']:.2f}x")


def run_inference(a, record: dict) -> None:
    out = record["inference"]
    for model in MODELS:
        out[model] = {}
        for P in a.pools:
            r = run_worker({"kind": "infer", "model": model, "pool": P, "users": a.users, "chunk": a.chunk,
                            "repeats": a.repeats, "min_time": a.min_time}, a.threads, a.device)
            out[model][str(P)] = r
            print(f"  inference, {model:6s} P={P:>7,d}: {1e3 * r['median_s_per_user']:8.2f} ms/user "
                  f"(built in {r['build_s']:.1f} s)", flush=True)

    unit = "MiB RSS" if a.device == "cpu" else "MiB CUDA allocated"
    print(f"\nInference: top-{TOP_K} for {a.users} users (chunks of {a.chunk}), beams 20 for the generative models; "
          f"median of >= {a.repeats} passes (>= {a.min_time:g} s) after 1 warm-up")
    head = (f"{'model':>6s} {'pool P':>8s} {'ms/user':>9s} {'base':>9s} {'peak':>9s} {'work':>9s} {'pool data':>9s}"
            f" {'params':>11s}   ({unit}; pool data = pool-dependent tensors)")
    print(head)
    print("-" * len(head))
    for model in MODELS:
        for P in a.pools:
            r = out[model][str(P)]
            m = r["memory"]
            print(f"{model:>6s} {P:8,d} {1e3 * r['median_s_per_user']:9.2f} {_mb(m['base_bytes'])} {_mb(m['peak_bytes'])} "
                  f"{_mb(m['work_bytes'])} {_mb(r['pool_bytes_total'])} {r['params']:11,d}")
    lo, hi = str(min(a.pools)), str(max(a.pools))
    ratios = record["inference_ratios"] = {}
    print(f"\nMeasured ratios P={int(hi):,d} / P={int(lo):,d} (Figure 6: the generative models' cost stays constant in P):")
    for model in MODELS:
        x, y = out[model][lo], out[model][hi]
        ratios[model] = q = {"time": y["median_s_per_user"] / x["median_s_per_user"],
                             "peak_memory": y["memory"]["peak_bytes"] / x["memory"]["peak_bytes"],
                             "work_memory": y["memory"]["work_bytes"] / max(x["memory"]["work_bytes"], 1),
                             "pool_bytes": y["pool_bytes_total"] / x["pool_bytes_total"]}
        print(f"  {model:6s}: time {q['time']:6.2f}x   peak memory {q['peak_memory']:6.2f}x   "
              f"inference working set {q['work_memory']:6.2f}x   pool data {q['pool_bytes']:8.1f}x")


def main(argv: list[str] | None = None) -> dict:
    global PROFILE
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 layers, 3 timed steps; pools 1e3 and 1e4, 16 users, 2 repeats")
    p.add_argument("--part", choices=("both", "training", "inference"), default="both")
    p.add_argument("--layers", type=int, nargs="+",
                   help="backbone depths to train, 0 = every layer (default: every layer, and 2; --quick: 2)")
    p.add_argument("--steps", type=int, help="timed training steps (default 10; --quick: 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps before them")
    p.add_argument("--pools", type=int, nargs="+", help=f"item-pool sizes (default {' '.join(map(str, POOLS))})")
    p.add_argument("--users", type=int, help="users per inference pass (default 64; --quick: 16)")
    p.add_argument("--chunk", type=int, default=32, help="users per recommend call (the book evaluation batch)")
    p.add_argument("--repeats", type=int, help="timed inference passes (default 3; --quick: 2)")
    p.add_argument("--min-time", type=float, default=1.0,
                   help="timed inference passes continue until they add up to this many seconds")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(project_root() / "results" / "benchmarks" / "gencdr_efficiency.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", default=PROFILE, help="the profile whose settings are measured (default book)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement, JSON on stdout
    a = p.parse_args(argv)
    PROFILE = a.profile
    torch.set_num_threads(a.threads)
    if a.worker:
        worker_main(json.loads(a.worker), a.device)
        return {}
    if not a.layers:  # every layer of the profile's backbone (SmolLM2-135M: 30), and the book's 2
        from xdrec.encoders.backbones import backbone_depth
        from xdrec.gencdr.train_recommender import backbone_location
        from xdrec.profiles import get_profile

        depth = backbone_depth(backbone_location(get_profile(PROFILE)["gencdr_recommender"]))
        a.layers = [2] if a.quick else list(dict.fromkeys(d for d in (depth, 2) if d <= depth))
    a.steps = a.steps or (3 if a.quick else 10)
    a.pools = sorted(a.pools or (QUICK_POOLS if a.quick else POOLS))
    a.users = a.users or (16 if a.quick else 64)
    a.repeats = a.repeats or (2 if a.quick else 3)
    from xdrec import smoke

    if smoke.active():  # a smoke run (xdrec.smoke): a few timed steps, the quick pools, a few users, one pass
        a.steps, a.warmup = smoke.steps(a.steps), min(a.warmup, 1)
        a.pools, a.users, a.repeats, a.min_time = sorted(QUICK_POOLS), smoke.rows(a.users), 1, 0.0
    started = time.perf_counter()

    import transformers

    record = {"settings": {k: getattr(a, k) for k in ("quick", "part", "layers", "steps", "warmup", "pools", "users",
                                                        "chunk", "repeats", "min_time", "device", "threads")}
              | {"dataset": DATASET, "profile": PROFILE, "top_k": TOP_K, "beams": 20,
                 "inference_domains": len(INFERENCE_DOMAINS), "id_levels": LEVELS, "codebook": CODEBOOK},
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "threads": a.threads, "device": a.device,
                          "cuda_device": torch.cuda.get_device_name() if a.device == "cuda" else None,
                          "torch": torch.__version__, "transformers": transformers.__version__,
                          "load_average_start": list(os.getloadavg())},
              "training": {}, "inference": {}}
    print(f"GenCDR efficiency benchmark (RQ5): device {a.device}, {a.threads} threads, one subprocess per measurement")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    if a.part in ("both", "training"):
        run_training(a, record)
        print()
    if a.part in ("both", "inference"):
        run_inference(a, record)
    record["machine"]["load_average_end"] = list(os.getloadavg())
    record["wall_time_s"] = round(time.perf_counter() - started, 1)
    path = write_json(Path(a.out), record)
    print(f"\nmeasurements written to {path} ({_duration(record['wall_time_s'])})")
    return record


if __name__ == "__main__":
    main()

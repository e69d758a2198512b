"""Training speed of every model, as a share of what this machine's matrix multiply can do.

For each model, at the ``book`` profile's settings, on real batches, one training step (forward,
backward, gradient clipping at 1.0, AdamW, as :func:`xdrec.training.fit` takes it) is timed over
``--steps`` steps after one warm-up step:

- ``tiger``: :class:`xdrec.tiger.TIGER` (2 + 2-layer T5) on Food-Kitchen's next-item examples
  (:class:`xdrec.tiger.examples.NextItemExamples`, batch 256), random unique semantic IDs;
- ``sasrec``: SASRec with the cross-entropy loss over every item of a domain (Food), batch 256;
- ``gencdr``: GenCDR's phase 1 (universal LoRA experts on SmolLM2-135M cut to 2 layers, batch 16
  timelines of at most 20 items), built as ``benchmarks/gencdr_efficiency.py`` builds it;
- ``utgrec``: UTGRec's tokenizer (Eq. 13, both collaborative terms) through SmolLM2 (2 layers,
  16-token texts), batch 32 Tools items, as ``benchmarks/utgrec_tokenizer_throughput.py`` does;
- ``xcross``: an X-Cross source model (MiniLM with one LoRA adapter and its head), batch 2 rows of
  10 choices (the ``book`` profile's training rows of Tools).

Reported per model: training examples per second (an example: TIGER a next item, SASRec and
GenCDR a user sequence, UTGRec an item, X-Cross a row of choices), the floating-point operations of
a step (``torch.utils.flop_counter``: matrix multiplies, attention and convolutions of the forward
and backward passes; element-wise work is not counted), and those operations per second as a share
of the machine's measured matrix-multiply rate (a 1024 x 1024 x 1024 product, fp32; bf16 too).
Each model also runs under ``torch.autocast("cpu", torch.bfloat16)``: the ratio bf16 / fp32 says
whether that would be a faster default here (it is not on a CPU without bf16 instructions).

Two more layouts are measured against the defaults (``--models`` names them):

- ``tiger-unbucketed``: TIGER's examples in plain shuffled batches (``bucket=1``) instead of the
  default length-bucketed ones (sorted by history length within chunks of 32 batches), so each
  batch pads to its longest history;
- ``tiger-eager`` and ``gencdr-eager``: attention computed by Hugging Face's eager path instead of
  PyTorch's fused ``scaled_dot_product_attention``, which transformers 5 picks by default for T5
  and Llama.

    .venv/bin/python benchmarks/training_speed.py                  # ~10 min, 2 threads
    .venv/bin/python benchmarks/training_speed.py --models tiger,sasrec --steps 3
    .venv/bin/python benchmarks/training_speed.py --models tiger,tiger-unbucketed,tiger-eager,gencdr,gencdr-eager \
        --bf16-steps 0 --out results/benchmarks/training_layouts.json

Writes ``results/benchmarks/training_speed.json`` (``--out`` to change): a list of records, one per
machine (CPU model, its bf16 instructions) and thread count; a rerun replaces its machine's record.
Ratios, not timed tests.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("tiger", "sasrec", "gencdr", "utgrec", "xcross")
PROFILE = "book"
N_BATCHES = 9  # a warm-up batch and at most 8 timed ones


def spread(batches: list) -> list:
    """:data:`N_BATCHES` batches evenly spaced over one epoch's (shuffled) batches."""
    idx = np.linspace(0, len(batches) - 1, min(N_BATCHES, len(batches))).round().astype(int)
    return [batches[i] for i in idx]


def matmul_rate(dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of an ``n x n`` by ``n x n`` product (``2 n^3`` operations), best of ``repeats``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ one setup per model
def tiger_setup(bucket: int = 32, attention: str | None = None):
    from xdrec import data
    from xdrec.generative import user_timelines
    from xdrec.profiles import get_profile
    from xdrec.tiger.examples import NextItemExamples
    from xdrec.tiger.model import TIGER, TIGERConfig
    from gencdr_efficiency import random_ids

    prof = get_profile(PROFILE)
    ds = data.load("amazon14-food-kitchen")
    ids = np.concatenate([random_ids(len(ds.items), np.random.default_rng(0)),
                          np.zeros((len(ds.items), 1), np.int64)], 1)
    model = TIGER(ids, ds.items["domain"].to_numpy(), ds.domains,
                  TIGERConfig.from_profile(prof["tiger"], prof["generative_eval"]), codebook_sizes=(256, 256, 256, 1))
    bs = prof["tiger"]["batch_size"]
    if attention is not None:
        model.t5.config._attn_implementation = attention  # every layer reads the shared config
    ex = NextItemExamples(user_timelines(data.leave_last_out(ds).train), model, batch_size=bs, seed=0,
                          bucket=bucket, tokens_per_epoch=prof["tiger"]["tokens_per_epoch"])  # the book's epoch sample
    return model, (lambda m, b: m(**b)), spread(list(iter(ex(0)))), bs, prof["tiger"]["lr"]


def sasrec_setup():
    from xdrec import data
    from xdrec.baselines.sasrec import SASRec
    from xdrec.baselines.trainers import sequence_loader
    from xdrec.profiles import get_profile

    cfg = get_profile(PROFILE)["id_baselines"]
    ds = data.load("amazon14-food-kitchen", domains=["Food"])
    model = SASRec(ds.n_items, hidden=cfg["hidden"], n_blocks=cfg["layers"], n_heads=cfg["sasrec_heads"],
                   max_len=cfg["max_len"], dropout=cfg["dropout"], loss="ce")
    bs = cfg["batch_size"]
    torch.manual_seed(0)
    batches = spread(list(sequence_loader(model, data.leave_last_out(ds).train, bs)))
    return model, (lambda m, b: m(**b)), batches, bs, cfg["lr"]


def gencdr_setup(attention: str | None = None):
    from xdrec import data
    from xdrec.gencdr.train_recommender import TimelineBatches
    from xdrec.generative import ItemTokens, user_timelines
    from xdrec.profiles import get_profile
    from gencdr_efficiency import build_recommender, random_ids

    prof = get_profile(PROFILE)
    cfg, ev = prof["gencdr_recommender"], prof["generative_eval"]
    ds = data.load("amazon14-food-kitchen")
    ids = random_ids(len(ds.items), np.random.default_rng(0))
    model = build_recommender(cfg["num_layers"], (256,) * 3, ds.domains)
    model.train_phase(universal=True)
    if attention is not None:
        for module in model.modules():
            if hasattr(module, "config") and hasattr(module.config, "_attn_implementation"):
                module.config._attn_implementation = attention
    items = ItemTokens.from_ids(model.vocab, ids, ds.items["domain"].to_numpy())
    bs = cfg["universal"]["batch_size"]
    epoch = TimelineBatches(user_timelines(data.leave_last_out(ds).train), items, batch_size=bs,
                            max_items=ev["max_items"], prefix=model.prefix_tokens, pad_id=model.pad_id, seed=0)(0)
    return model, (lambda m, b: m.universal_loss(b)), spread(epoch), bs, cfg["universal"]["lr"]


def utgrec_setup():
    from xdrec.utgrec.train_tokenizer import _collator, build, domain_items, settings

    cfg = settings(PROFILE)
    model, tok = build(cfg, seed=0)
    items = domain_items(cfg["dataset"], ["Tools"])
    col = _collator(tok, items, cfg, seed=0)
    bs = cfg["pretrain"]["batch_size"]
    rng = np.random.default_rng(0)
    batches = [col(rng.choice(len(items.items), bs, replace=False)) for _ in range(N_BATCHES)]
    return model, (lambda m, b: m(b).total), batches, bs, cfg["pretrain"]["lr"]


def xcross_setup():
    from xdrec.profiles import get_profile
    from xdrec.xcross.experiment import choice_loss, domain_data, new_encoder
    from xdrec.xcross.encoder import SourceModel
    from xdrec.xcross.prompts import choice_loader

    cfg = get_profile(PROFILE)["xcross"]
    enc, tok = new_encoder(PROFILE)
    for p in enc.adapter_parameters("Tools") + list(enc.heads["Tools"].parameters()):
        p.requires_grad_(True)
    d = domain_data(PROFILE, "Tools")
    bs = cfg["train"]["batch_size"]
    loader = choice_loader(tok, d.titles, d.train, bs, shuffle=True, seed=0, max_history=cfg["max_history"],
                           max_length=cfg["max_length"])
    batches = spread(list(loader))
    return SourceModel(enc, "Tools"), choice_loss, batches, bs, cfg["train"]["lr"]


SETUPS = {"tiger": tiger_setup, "sasrec": sasrec_setup, "gencdr": gencdr_setup, "utgrec": utgrec_setup,
          "xcross": xcross_setup, "tiger-unbucketed": lambda: tiger_setup(bucket=1),
          "tiger-eager": lambda: tiger_setup(attention="eager"),
          "gencdr-eager": lambda: gencdr_setup(attention="eager")}
LAYOUTS = {"tiger-unbucketed": "tiger", "tiger-eager": "tiger", "gencdr-eager": "gencdr"}  # variant -> default


# ------------------------------------------------------------------ measuring
def step_flops(model, loss_fn, batch) -> int:
    """Operations of one forward + backward pass (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def measure(name: str, steps: int, bf16_steps: int) -> dict:
    """Steps over ``steps`` distinct batches spread over the epoch (fp32), then ``bf16_steps`` under
    bf16 autocast; rates are totals over the timed steps (batches differ in length)."""
    torch.manual_seed(0)
    model, loss_fn, batches, bs, lr = SETUPS[name]()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    timed = batches[1:steps + 1]
    flops = [step_flops(model, loss_fn, b) for b in timed]
    out = {"batch_size": bs, "trainable_params": sum(p.numel() for p in params), "steps": len(timed),
           "flops_per_step": statistics.fmean(flops)}
    for mode, n in (("fp32", len(timed)), ("bf16", min(bf16_steps, len(timed)))):
        if n == 0:  # --bf16-steps 0: fp32 only
            continue
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "bf16" else contextlib.nullcontext

        def step(b):
            with ctx():
                loss = loss_fn(model, b)
            loss.float().backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        step(batches[0])  # warm-up
        times = [_time(lambda b=b: step(b)) for b in timed[:n]]
        out[mode] = {"step_s": sum(times) / n, "examples_per_s": bs * n / sum(times),
                     "flops_per_s": sum(flops[:n]) / sum(times)}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="timed fp32 steps per model (distinct batches)")
    ap.add_argument("--bf16-steps", type=int, default=2, help="timed steps under bf16 autocast")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from xdrec.io import write_json
    from xdrec.paths import results_dir

    peak = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    print(f"matmul 1024^3 on {a.threads} threads: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s ({peak['bf16'] / peak['fp32']:.2f}x)", flush=True)
    rows = {}
    for name in a.models.split(","):
        r = measure(name, a.steps, a.bf16_steps)
        r["share_of_fp32_matmul"] = r["fp32"]["flops_per_s"] / peak["fp32"]
        if "bf16" in r:
            r["bf16_speedup"] = r["bf16"]["flops_per_s"] / r["fp32"]["flops_per_s"]  # < 1: bf16 is slower
        rows[name] = r
        print(f"{name:7s} fp32 {r['fp32']['examples_per_s']:8.1f} examples/s  "
              f"{r['flops_per_step'] / 1e9:7.2f} GFLOP/step  {100 * r['share_of_fp32_matmul']:5.1f}% of matmul"
              + (f"  bf16/fp32 speed {r['bf16_speedup']:.2f}x" if "bf16" in r else ""), flush=True)
    for name, default in LAYOUTS.items():
        if name in rows and default in rows:  # > 1: the variant trains faster than the default
            rows[name]["speed_vs_default"] = rows[name]["fp32"]["examples_per_s"] / rows[default]["fp32"]["examples_per_s"]
            print(f"{name} / {default}: {rows[name]['speed_vs_default']:.2f}x the default's examples/s", flush=True)
    record = {"threads": a.threads, "steps": a.steps, "matmul_flops_per_s": peak, "models": rows,
              "machine": machine()}
    out = Path(a.out) if a.out else results_dir("benchmarks") / "training_speed.json"
    write_json(out, keep_other_machines(out, record))
    return record


BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")
"""The CPU flags (``/proc/cpuinfo``) of bf16 in hardware: AMX tiles, AVX-512 bf16 dot products."""


def machine() -> dict:
    """Platform, CPU model, which bf16 instructions the CPU has, and torch's version."""
    flags, model = set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "model name" and model is None:
                model = value.strip()
    except OSError:  # not Linux: the measured rates still say it
        pass
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": model, "bf16_flags": sorted(f for f in BF16_FLAGS if f in flags), "torch": torch.__version__}


def keep_other_machines(path: Path, record: dict) -> list:
    """The file's records of other machines (or thread counts), then ``record``.

    One file holds every machine measured: bf16 autocast is 8x slower than fp32 on a CPU without
    bf16 instructions and nearly 2x faster on one with AMX, so a measurement is read with its machine.
    """
    import json

    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    old = old if isinstance(old, list) else [old]  # the first layout held one record

    def same(r):
        m, n = r.get("machine", {}), record["machine"]
        return (r.get("threads"), m.get("cpu"), m.get("bf16_flags")) == (record["threads"], n["cpu"], n["bf16_flags"])

    return [r for r in old if not same(r)] + [record]


if __name__ == "__main__":
    main()

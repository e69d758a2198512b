"""UTGRec's tokenizer on a CPU: items per second through SmolLM2-135M, and what each profile would cost.

The tokenizer encodes every item's text through a causal LM (Sec. 2.2.1). On two CPU cores that is
the whole cost of UTGRec, so this script measures it on real item texts of ``amazon18-xcross`` with
the library's own model (:class:`xdrec.utgrec.UniversalItemTokenizer`, built by
:func:`xdrec.utgrec.train_tokenizer.build`) for a grid of

- LM depth: SmolLM2-135M cut to its first ``2`` layers (the ``book`` profile) or all 30;
- text length: ``max_text_tokens`` 16 (``book``) or 64 (``paper``);

and two kinds of work, at batch 64 (16 for the 30-layer model, to keep the run short; rates are
per item):

- **encode**: a forward pass of the content encoder and the codebooks under ``no_grad`` (what
  k-means initialisation and ID assignment do for every item);
- **train**: one optimizer step of Eq. 13 with both collaborative terms on (the item and one
  co-occurring item through the LM, both decoders, AdamW).

From these rates it **projects** (does not measure) the wall time of one held-out target's
tokenizer (pre-training on three domains, fine-tuning on the fourth, and encoding every item) at
the ``book`` profile's settings and at the ``paper`` profile's (every item, 3 + 20 epochs) with
SmolLM2 in place of Qwen2-VL-2B. Notebook 15 reads the JSON it writes.

    .venv/bin/python benchmarks/utgrec_tokenizer_throughput.py            # ~15 min on one core
    .venv/bin/python benchmarks/utgrec_tokenizer_throughput.py --threads 2 --batches 3

Writes ``results/benchmarks/utgrec_tokenizer_throughput.json`` (``--out`` to change).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

DOMAINS = ("Tools", "Sports", "Toys", "Electronics")


def _rate(step, batches: int, batch_size: int) -> dict:
    step()  # warm-up (allocations, first-call dispatch)
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"times_s": [round(t, 4) for t in times], "items_per_s": round(batch_size * batches / sum(times), 2)}


def measure(items, cfg: dict, batches: int, batch_size: int) -> dict:
    from xdrec.utgrec.train_tokenizer import _collator, build

    model, tok = build(cfg, seed=0)
    col = _collator(tok, items, cfg, seed=0)
    rng = np.random.default_rng(0)
    rows = [rng.choice(len(items.items), batch_size, replace=False) for _ in range(batches + 1)]
    it = iter(rows * 2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def encode():
        b = col(next(it))
        with torch.no_grad():
            model.encode(b["prompt_ids"], b["prompt_mask"])

    def train():
        b = col(next(it))
        loss = model(b).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.eval()
    enc = _rate(encode, batches, batch_size)
    it = iter(rows * 2)
    model.train()
    tr = _rate(train, batches, batch_size)
    return {"encode": enc, "train": tr,
            "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}


def projection(cfg: dict, n_items: dict, rates: dict, target: str = "Tools") -> dict:
    """Seconds of one target's tokenizer from the measured rates and :func:`xdrec.utgrec.train_tokenizer.workload`."""
    from xdrec.utgrec.train_tokenizer import workload

    w = workload(cfg, n_items, target)
    enc_s, train_s = w["encoded"] / rates["encode"]["items_per_s"], w["trained"] / rates["train"]["items_per_s"]
    return {"target": target, "encoded_items": w["encoded"], "trained_items": w["trained"],
            "encode_s": round(enc_s), "train_s": round(train_s), "total_s": round(enc_s + train_s)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, default=2, help="timed batches per measurement (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--full-batch-size", type=int, default=16, help="batch size for the 30-layer model")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from xdrec import data as xdata
    from xdrec.io import write_json
    from xdrec.paths import results_dir
    from xdrec.progress import progress
    from xdrec.utgrec.train_tokenizer import domain_items, settings

    book = settings("book")
    ds = xdata.load(book["dataset"], None, domains=list(DOMAINS))
    n_items = {d: int(len(ds.domain_items(d))) for d in DOMAINS}
    items = domain_items(book["dataset"], ["Tools"])
    load0 = os.getloadavg()[0]
    grid = [(2, 16), (2, 64), (None, 16), (None, 64)]
    rows = []
    for layers, text in progress(grid, desc="settings"):
        cfg = {**book, "num_layers": layers, "max_text_tokens": text}
        bs = args.batch_size if layers else args.full_batch_size
        r = measure(items, cfg, args.batches, bs)
        rows.append({"num_layers": layers or 30, "max_text_tokens": text, "batch_size": bs, **r})
        print(f"layers {layers or 30:>2}  text {text:>2}: encode {r['encode']['items_per_s']:7.1f} items/s   "
              f"train {r['train']['items_per_s']:6.1f} items/s", flush=True)

    def rates(layers, text):
        return next(r for r in rows if r["num_layers"] == layers and r["max_text_tokens"] == text)

    paper = {**settings("paper"), "backbone": "smollm2-135m"}
    proj = {"book": projection(book, n_items, rates(2, 16)),
            "paper-recipe-smollm2": projection(paper, n_items, rates(30, 64))}
    base = rates(30, 64)
    for r in rows:
        r["encode_speedup_vs_full"] = round(r["encode"]["items_per_s"] / base["encode"]["items_per_s"], 2)
        r["train_speedup_vs_full"] = round(r["train"]["items_per_s"] / base["train"]["items_per_s"], 2)
    for name, p in proj.items():
        print(f"{name}: {p['trained_items']:,} trained + {p['encoded_items']:,} encoded items -> "
              f"{p['total_s'] / 60:.1f} min projected on {args.threads} thread(s)")
    out = args.out or results_dir("benchmarks") / "utgrec_tokenizer_throughput.json"
    write_json(out, {"threads": args.threads, "batches": args.batches,
                     "n_items": n_items, "rows": rows, "projection": proj,
                     "machine": {"platform": platform.platform(), "torch": torch.__version__,
                                 "load_average_start": round(load0, 2),
                                 "load_average_end": round(os.getloadavg()[0], 2)}})
    print("wrote", out)


if __name__ == "__main__":
    main()

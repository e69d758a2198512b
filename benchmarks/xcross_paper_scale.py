"""X-Cross at the paper's training recipe: does a source LoRA learn the task, and what would the paper profile cost?

The ``book`` profile trains each source model on 200 users x 10 choices for one epoch (100 steps),
and its language-model rows stay at chance. This check runs the ``paper`` profile's recipe for one
source domain (Sec. 4.1: every training user, 29 popularity negatives, batch 1, AdamW lr 5e-5,
weight decay 0.01, LoRA r = 16, alpha = 32 on query/value, gradient clipping at 1.0) for a fixed
wall-clock budget, and reports:

- the learning curve: validation Hit@1 / Hit@10 / MRR@10 on ``--eval-rows`` holdout users every
  ``--eval-every`` steps, and the test metrics of the last state on every test user of the domain;
- throughput: optimizer steps (= training rows) per second, and the time of one epoch and of the
  paper's 40 epochs **projected** from it (not measured).

The backbone is the ``paper`` profile's unless ``--backbone minilm`` is given: DeBERTa-v3-base
cannot be installed here, so this check can run the recipe on all-MiniLM-L6-v2 (with its own
LoRA target modules, ``query`` and ``value``). It uses the library's own prompts, loader, model
and loss (:mod:`xdrec.xcross`), with a plain loop in place of :func:`xdrec.training.fit` only to
evaluate inside the epoch.

    python benchmarks/xcross_paper_scale.py --backbone minilm --domain Tools --minutes 5

Writes ``results/paper/xcross_paper_scale-<backbone>-<domain>.json`` (``--out`` to change).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch


def derived_profile(backbone: str) -> str:
    """The ``paper`` profile, on ``backbone`` ("paper": its own DeBERTa-v3-base; "minilm": MiniLM)."""
    from xdrec.profiles import PROFILES

    if backbone == "paper":
        return "paper"
    name = f"paper-{backbone}"
    prof = copy.deepcopy(PROFILES["paper"])
    prof["xcross"]["backbone"] = backbone
    prof["xcross"]["lora"] = {**prof["xcross"]["lora"], "target_modules": ["query", "value"]}
    PROFILES[name] = prof
    return name


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="paper", choices=["paper", "minilm"])
    ap.add_argument("--domain", default="Tools")
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget (wall clock)")
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--eval-rows", type=int, default=500)
    ap.add_argument("--test-rows", type=int, default=None, help="test on the first N test users (default: all)")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (the paper does not say)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from xdrec.io import write_json
    from xdrec.paths import results_dir
    from xdrec.profiles import get_profile
    from xdrec.results import device_name
    from xdrec.xcross.encoder import SourceModel
    from xdrec.xcross.experiment import choice_loss, choice_ranks, domain_data, new_encoder, run_device, summarize
    from xdrec.xcross.prompts import choice_loader

    profile = derived_profile(args.backbone)
    cfg = get_profile(profile)["xcross"]
    t_cfg = cfg["train"]
    device = run_device()
    t_load = time.perf_counter()
    data = domain_data(profile, args.domain)
    enc, tok = new_encoder(profile)
    for p in enc.adapter_parameters(args.domain) + list(enc.heads[args.domain].parameters()):
        p.requires_grad_(True)
    model = SourceModel(enc, args.domain).to(device)
    t_load = time.perf_counter() - t_load
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t_cfg["lr"], weight_decay=t_cfg["weight_decay"])
    loader = choice_loader(tok, data.titles, data.train, t_cfg["batch_size"], shuffle=True, seed=cfg["seed"],
                           max_history=cfg["max_history"], max_length=cfg["max_length"])
    valid = data.valid.subset(np.arange(min(args.eval_rows, len(data.valid))))
    torch.manual_seed(cfg["seed"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def evaluate(rows, desc):
        with autocast:
            return summarize(choice_ranks(model, tok, data, rows, profile, batch_size=8, desc=desc))

    curve = [{"step": 0, "train_seconds": 0.0, "valid": evaluate(valid, "valid")}]
    print(json.dumps(curve[-1]), flush=True)
    budget, step, train_s, losses, window = args.minutes * 60, 0, 0.0, [], []
    from tqdm import tqdm

    bar = tqdm(desc=f"{args.domain} paper recipe", unit="step")
    done = False
    epoch = 0
    while not done:
        epoch += 1
        for batch in loader:
            t0 = time.perf_counter()
            model.train()
            with autocast:
                loss = choice_loss(model, {k: v.to(device) for k, v in batch.items()})
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            train_s += dt
            window.append(dt)
            step += 1
            bar.update(1)
            done = train_s >= budget
            if step % args.eval_every == 0 or done:
                rec = {"step": step, "epoch": epoch, "train_seconds": round(train_s, 1),
                       "steps_per_s_window": round(len(window) / sum(window), 2),
                       "train_loss_window": float(np.mean(losses[-len(window):])),
                       "valid": evaluate(valid, "valid")}
                window = []
                curve.append(rec)
                print(json.dumps(rec), flush=True)
            if done:
                break
    bar.close()
    test_rows = data.test if args.test_rows is None else data.test.subset(np.arange(min(args.test_rows, len(data.test))))
    test = evaluate(test_rows, "test")
    steps_per_s = step / train_s
    epoch_steps = len(data.train) // t_cfg["batch_size"]
    out = {
        "profile": profile, "backbone": cfg["backbone"], "domain": args.domain, "device": device_name(),
        "torch": torch.__version__, "bf16": args.bf16, "seed": cfg["seed"],
        "recipe": {"n_choices": int(data.train.n_choices), "batch_size": t_cfg["batch_size"], "lr": t_cfg["lr"],
                   "weight_decay": t_cfg["weight_decay"], "lora": cfg["lora"], "max_length": cfg["max_length"]},
        "train_rows": len(data.train), "valid_rows_evaluated": len(valid), "test_rows": len(test_rows),
        "trainable_params": sum(p.numel() for p in params), "load_seconds": round(t_load, 1),
        "steps": step, "epochs_started": epoch, "train_seconds": round(train_s, 1),
        "steps_per_s": round(steps_per_s, 2),
        "projected_epoch_minutes": round(epoch_steps / steps_per_s / 60, 1),
        "projected_paper_source_hours": round(t_cfg["epochs"] * epoch_steps / steps_per_s / 3600, 2),
        "chance_hit@1": 1 / data.test.n_choices, "curve": curve, "test": test,
    }
    path = Path(args.out) if args.out else results_dir("paper") / f"xcross_paper_scale-{args.backbone}-{args.domain}.json"
    write_json(path, out)
    print(f"{args.domain}: {step} steps in {train_s:.0f} s ({steps_per_s:.1f} steps/s; one epoch of "
          f"{epoch_steps} rows ~{out['projected_epoch_minutes']} min, 40 epochs ~{out['projected_paper_source_hours']} h)")
    print(f"test ({len(test_rows)} users x {data.test.n_choices} choices): " +
          "  ".join(f"{k} {v:.4f}" for k, v in test.items() if k != "n") + f"  (chance Hit@1 {1 / data.test.n_choices:.4f})")
    print("wrote", path)


if __name__ == "__main__":
    main()

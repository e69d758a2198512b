"""Two processes train like one: one training stage per family under ``torchrun --nproc_per_node 2``.

For SASRec, TIGER, GenCDR's universal experts (phase 1), an X-Cross source model and the UTGRec
tokenizer, the stage is trained by :func:`xdrec.training.fit` once in one process and once in two
CPU processes (gloo, localhost) with the same *global* batch, so each process trains on half of
every batch. The two runs must end at the same validation metric, final training loss and weights.

What makes the comparison exact up to float rounding: dropout 0; every batch splits into halves of
equal weight (SASRec and GenCDR: timelines of one length, so each half has as many target tokens;
the others: one loss term per example); data-side randomness is drawn before the batches are cut
(the seeded sampler of a DataLoader, the seeded order of TIGER's and GenCDR's callables, X-Cross's
negatives drawn with the rows, UTGRec positives fixed by the data); the loss terms that depend on
the whole batch are switched off (GenCDR's expert-balance term, UTGRec's in-batch InfoNCE
alignment: under several processes they see only the process's half, as in any DDP training
without a gather). What remains: the two processes' gradients are summed by a float32 all-reduce,
and a half batch is padded to its own longest row (TIGER, X-Cross) and multiplied in smaller
matrices: float32 rounding, ~1e-7 relative per step, grown over a few dozen Adam steps (and made ~lr
per step on parameters whose true gradient is zero, see NO_GRADIENT). Measured: the per-epoch losses
agree to ~1e-7 relative (float32 epsilon) and the weights to ~1e-6. Tolerance: losses, validation
metrics and the L1 norm of every trainable tensor within 1e-4 relative (absolute 1e-5), a hundred
times the measured drift and far below any real difference (a process training on the whole batch
instead of its half, or on another half, moves the loss in the second or third digit); rank metrics
come out equal (rounding does not reorder the scores here).

Only the main process may write: the worker records, per process, every file opened for writing
(an audit hook on ``open``) and every call of the writers of :mod:`xdrec.training`; the second
process must have written nothing, the first the checkpoints.

The worker is this file run as a script (``python tests/test_multiprocess.py OUT``).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FAMILIES = ("sasrec", "tiger", "gencdr", "xcross", "utgrec")
RTOL, ATOL = 1e-4, 1e-5
NO_GRADIENT = {
    # a key bias adds the same q.b to every attention logit of a row: softmax removes it, its gradient is 0
    "sasrec": ("attn.qkv.bias",),
    # the scorer's bias adds the same to every choice's score: the softmax of Eq. 1 removes it
    "xcross": ("heads.A.scorer.bias",),
}
"""Parameters whose gradient is zero, up to rounding: Adam divides a gradient by its own
running scale, so these move by about ``lr`` a step driven by float noise alone, differently in any
two runs that round differently; the losses and metrics do not see them, so the weights are not compared."""


# =============================================================================== the stages
SEEN: dict[str, int] = {}  # examples each process's loss saw, per family
CURRENT = [""]


def counted(loss_fn):
    """``loss_fn`` that also counts the examples (first dimension) of the batches this process trains on."""
    def fn(model, batch):
        first = next(v for v in (batch.values() if isinstance(batch, dict) else [batch]) if hasattr(v, "shape"))
        SEEN[CURRENT[0]] = SEEN.get(CURRENT[0], 0) + int(first.shape[0])
        return loss_fn(model, batch)
    return fn


def _config(ckpt: Path, **over):
    from xdrec.training import TrainConfig

    base = dict(epochs=3, lr=1e-2, batch_size=8, patience=None, seed=0, checkpoint_dir=ckpt, cpu=True, progress=False)
    return TrainConfig(**{**base, **over})


def sasrec(ckpt: Path):
    """xdrec.baselines: SASRec (full-softmax CE) through train_sasrec (a DataLoader)."""
    import pandas as pd
    from types import SimpleNamespace

    from xdrec.baselines.trainers import train_sasrec

    rng = np.random.default_rng(0)
    seqs = {u: rng.choice(30, 7, replace=False).tolist() for u in range(32)}  # one length: equal tokens per half
    valid = pd.DataFrame({"user": list(seqs), "history": [s[:-1] for s in seqs.values()],
                          "target": [s[-1] for s in seqs.values()]})
    split = SimpleNamespace(train={u: s[:-1] for u, s in seqs.items()}, valid=valid)
    model, res = train_sasrec(split, 30, _config(ckpt, epochs=4), loss="ce", hidden=16, n_blocks=1, n_heads=1,
                              max_len=8, dropout=0.0)
    return model, res


def tiger(ckpt: Path):
    """xdrec.tiger: TIGER on NextItemExamples (a callable epoch -> batches)."""
    import pandas as pd
    import torch

    from xdrec.generative import evaluate_generative
    from xdrec.tiger import TIGER, NextItemExamples, TIGERConfig
    from xdrec.training import fit

    n = 20
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(n, 3))
    extra, seen = np.zeros(n, dtype=np.int64), {}
    for i, c in enumerate(map(tuple, codes)):
        extra[i] = seen.get(c, 0)
        seen[c] = extra[i] + 1
    ids = np.concatenate([codes, extra[:, None]], 1)
    domain = (np.arange(n) >= n // 2).astype(np.int64)
    torch.manual_seed(0)
    cfg = TIGERConfig(d_model=16, n_layers=1, n_heads=2, d_kv=8, d_ff=32, dropout=0.0, max_items=3, beams=6)
    model = TIGER(ids, domain, ["A", "B"], cfg)
    timelines = [rng.choice(n, 5, replace=False).tolist() for _ in range(16)]  # 64 examples: 8 batches of 8
    examples = NextItemExamples(timelines, model, batch_size=8, seed=0, bucket=2)
    valid = pd.DataFrame({"history": [t[1:] for t in timelines], "target": [t[0] for t in timelines],
                          "domain": [int(domain[t[0]]) for t in timelines]})

    def validate(m):
        return evaluate_generative(m.recommend, valid, k=10, batch_size=16)["all"]

    return model, fit(model, examples, validate, _config(ckpt), metric="ndcg@10")


def gencdr(ckpt: Path):
    """xdrec.gencdr.train_recommender: phase 1 (universal LoRA experts) on TimelineBatches (a callable)."""
    import pandas as pd
    import torch

    from xdrec.decoding import TrieTensors
    from xdrec.encoders.backbones import tiny_causal_lm
    from xdrec.gencdr.train_recommender import TimelineBatches, recommend_fn
    from xdrec.gencdr.recommender import GenCDRRecommender, add_semantic_id_tokens
    from xdrec.generative import ItemTokens, evaluate_generative
    from xdrec.training import fit

    K = [4, 3, 3]
    torch.manual_seed(0)
    lm = tiny_causal_lm(vocab_size=50, hidden_size=32, num_hidden_layers=2, seed=0)
    vocab = add_semantic_id_tokens(None, lm, K, ["A", "B"])
    rng = np.random.default_rng(0)
    all_ids = np.array([(a, b, c) for a in range(K[0]) for b in range(K[1]) for c in range(K[2])])
    ids = all_ids[rng.permutation(len(all_ids))[:24]]
    dom = (np.arange(24) >= 12).astype(int)
    # balance_weight 0: the balance term is a function of the whole batch's gate usage (see the module doc)
    model = GenCDRRecommender(lm, vocab, target_modules=["q_proj", "v_proj", "down_proj"],
                              experts=dict(n=3, r=2, alpha=4, dropout=0.0, balance_weight=0.0),
                              domain_lora=dict(r=2, alpha=4, dropout=0.0),
                              router=dict(hidden=8, latent_dim=1, vib_weight=1e-3), prefix_tokens=[5, 6], pad_id=0)
    items, trie = ItemTokens.from_ids(vocab, ids, dom), TrieTensors(ids, dom, 2, K)
    timelines = [rng.choice(24, 5, replace=False) for _ in range(32)]  # one length: equal target tokens per half
    batches = TimelineBatches(timelines, items, batch_size=8, max_items=5, prefix=model.prefix_tokens,
                              pad_id=model.pad_id, seed=0)
    valid = pd.DataFrame({"history": [t[:-1].tolist() for t in timelines], "target": [int(t[-1]) for t in timelines],
                          "domain": [int(dom[t[-1]]) for t in timelines]})
    ev = {"beams": 5, "max_items": 5}

    def validate(m):
        return evaluate_generative(recommend_fn(m, items, trie, ev, "universal"), valid, k=10, batch_size=16)["all"]

    model.train_phase(universal=True)
    return model, fit(model, batches, validate, _config(ckpt, checkpoint_trainable_only=True),
                      loss_fn=counted(lambda m, b: m.universal_loss(b)), metric="recall@10")


def xcross(ckpt: Path):
    """xdrec.xcross: a source model (LoRA adapter + head) on choice_loader (a DataLoader) with choice_loss."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from xdrec.encoders import minilm_path
    from xdrec.training import fit
    from xdrec.xcross import ChoiceRows, DomainLoRAEncoder
    from xdrec.xcross.encoder import SourceModel
    from xdrec.xcross.experiment import choice_loss
    from xdrec.xcross.prompts import choice_loader

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0), add_pooling_layer=False)
    enc = DomainLoRAEncoder(bert, ["A"], r=2, alpha=4, dropout=0.0, pooling="mean")
    for p in enc.parameters():
        p.requires_grad_(False)
    for p in enc.adapter_parameters("A") + list(enc.heads["A"].parameters()):
        p.requires_grad_(True)
    model = SourceModel(enc, "A")
    words = ["red", "blue", "mug", "lamp", "saw", "drill", "ball", "kite", "tent", "rope", "glue", "fan"]
    rng = np.random.default_rng(0)
    titles = [" ".join(rng.choice(words, int(rng.integers(1, 4)))) for _ in range(24)]

    def rows(n, seed):  # negatives drawn with the rows, before any batch is cut
        r = np.random.default_rng(seed)
        hist = [r.choice(24, int(r.integers(1, 4)), replace=False) for _ in range(n)]
        cand = np.stack([r.choice(24, 4, replace=False) for _ in range(n)])
        return ChoiceRows(np.arange(n), hist, cand)

    train, valid = rows(32, 1), rows(16, 2)
    loader = choice_loader(tok, titles, train, 8, shuffle=True, seed=0, max_history=3, max_length=32)
    valid_loader = choice_loader(tok, titles, valid, 16, shuffle=False, max_history=3, max_length=32)

    def validate(m):
        s = torch.cat([m(**b).float() for b in valid_loader])
        rank = (s[:, 1:] >= s[:, :1]).sum(1)
        return {"hit@1": float((rank == 0).float().mean()), "true_logit_margin": float((s[:, 0] - s[:, 1:].max(1).values).mean())}

    return model, fit(model, loader, validate, _config(ckpt, lr=2e-2, epochs=4, checkpoint_trainable_only=True),
                      loss_fn=counted(choice_loss), metric="true_logit_margin")


def utgrec(ckpt: Path):
    """xdrec.utgrec.train_tokenizer: the universal item tokenizer (Eq. 13) on a DataLoader, cosine schedule."""
    import torch

    from xdrec.encoders.backbones import tiny_causal_lm
    from xdrec.training import fit
    from xdrec.utgrec.tokenizer import UniversalItemTokenizer

    # mu = 0: the alignment term is an in-batch InfoNCE (see the module doc)
    s = {"n_codes": 3, "code_dim": 6, "root_size": 4, "leaf_size": 8, "beta": 0.25, "tree": True, "mlp_hidden": 16,
         "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
         "decoder": {"d_model": 16, "n_heads": 2, "d_ff": 32}, "max_text_tokens": 5,
         "lambda": 200.0, "mu": 0.0, "eta": 0.03, "alpha": 3.0, "temperature": 0.07}
    torch.manual_seed(0)
    model = UniversalItemTokenizer(tiny_causal_lm(seed=0), 128, s)
    g = torch.Generator().manual_seed(0)
    n = 32
    prompt, text = torch.randint(1, 128, (n, 6), generator=g), torch.randint(1, 128, (n, 5), generator=g)
    pos = (torch.arange(n) + 1) % n  # each item's one co-occurring item: positives fixed by the data
    examples = [{"prompt_ids": prompt[i], "prompt_mask": torch.ones(6, dtype=torch.long), "text_ids": text[i],
                 "text_mask": torch.ones(5, dtype=torch.long), "pos_prompt_ids": prompt[pos[i]],
                 "pos_prompt_mask": torch.ones(6, dtype=torch.long), "pos_text_ids": text[pos[i]],
                 "pos_text_mask": torch.ones(5, dtype=torch.long)} for i in range(n)]
    loader = torch.utils.data.DataLoader(examples, batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    held_out = torch.utils.data.default_collate(examples[:16])

    def validate(m):
        return {"neg_loss": -float(m(held_out).total)}

    return model, fit(model, loader, validate, _config(ckpt, lr=3e-3, schedule="cosine", grad_clip=1.0,
                                                         checkpoint_trainable_only=True),
                      loss_fn=counted(lambda m, b: m(b).total), metric="neg_loss")


# =============================================================================== the worker
def worker(out: Path) -> None:
    """Run every family's stage; record each process's writes; the main process writes the numbers."""
    import torch

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    opened: list[str] = []

    def audit(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            mode = args[1] if len(args) > 1 else "r"
            if isinstance(mode, str) and any(c in mode for c in "wax+"):
                opened.append(str(args[0]))

    from xdrec import training

    calls: list[str] = []

    def record(name, fn):
        def wrapped(*a, **k):
            calls.append(name)
            return fn(*a, **k)
        return wrapped

    for name in ("save_model_state", "_save_checkpoint", "write_json"):
        setattr(training, name, record(name, getattr(training, name)))
    training.default_loss = counted(training.default_loss)  # SASRec and TIGER train with it
    sys.addaudithook(audit)

    ckpts = out / "checkpoints"
    numbers = {}
    for family in os.environ.get("XDREC_MP_FAMILIES", ",".join(FAMILIES)).split(","):
        t0 = time.perf_counter()
        CURRENT[0] = family
        model, res = globals()[family](ckpts / family)
        weights = {n: p.detach().double() for n, p in model.named_parameters() if p.requires_grad}
        numbers[family] = {
            "metric": res.metric, "best_metric": res.best_metric, "best_epoch": res.best_epoch,
            "final_train_loss": res.history[-1]["train_loss"], "losses": [h["train_loss"] for h in res.history],
            "valid": {k: v for k, v in res.history[-1].items() if k.startswith("valid/")},
            "steps": res.global_step, "weights_by_name": {n: float(w.abs().sum()) for n, w in weights.items()},
            "seconds": time.perf_counter() - t0,
        }
    log = {"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")), "opened": opened, "calls": calls,
           "examples": SEEN}
    # the instrumentation's own output: every process reports here, outside the checkpoints
    (out / f"writes-rank{rank}.json").write_text(json.dumps(log))
    if rank == 0:
        (out / "numbers.json").write_text(json.dumps(numbers))


# =============================================================================== the test
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc: int, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}
    env.pop("XDREC_SMOKE", None)
    if nproc == 1:  # the reference: a plain process, the single-process path of fit
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(k, None)
        cmd = [sys.executable, __file__, str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("accelerate")
    base = tmp_path_factory.mktemp("multiprocess")
    out = {}
    for n in (1, 2):
        (base / str(n)).mkdir()
        wall = _launch(n, base / str(n))
        out[n] = {"numbers": json.loads((base / str(n) / "numbers.json").read_text()), "wall": wall,
                  "writes": [json.loads((base / str(n) / f"writes-rank{r}.json").read_text()) for r in range(n)],
                  "dir": base / str(n)}
    report = {f: {"one": out[1]["numbers"][f], "two": out[2]["numbers"][f]} for f in FAMILIES}
    print(json.dumps({"wall_s": {n: out[n]["wall"] for n in out}, "families": report}, indent=1))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_two_processes_end_where_one_does(runs, family):
    one, two = runs[1]["numbers"][family], runs[2]["numbers"][family]
    seen = [w["examples"][family] for w in runs[2]["writes"]]
    assert seen == [runs[1]["writes"][0]["examples"][family] // 2] * 2  # each process trained on half
    assert two["steps"] == one["steps"] > 0  # the same optimizer steps: halves of the same global batches
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(two["final_train_loss"], one["final_train_loss"], rtol=RTOL, atol=ATOL)
    assert two["best_epoch"] == one["best_epoch"]
    assert set(two["valid"]) == set(one["valid"])
    for k in one["valid"]:
        np.testing.assert_allclose(two["valid"][k], one["valid"][k], rtol=RTOL, atol=ATOL, err_msg=k)
    np.testing.assert_allclose(two["best_metric"], one["best_metric"], rtol=RTOL, atol=ATOL)
    w1, w2 = one["weights_by_name"], two["weights_by_name"]
    assert set(w1) == set(w2)
    for name in w1:  # the L1 norm of every trainable tensor, but those the loss does not see
        if not any(name.endswith(tail) for tail in NO_GRADIENT.get(family, ())):
            np.testing.assert_allclose(w2[name], w1[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_only_the_main_process_writes(runs):
    main, other = runs[2]["writes"]
    assert main["rank"] == 0 and other["rank"] == 1 and other["world"] == 2
    assert other["calls"] == [] and other["opened"] == [], other
    assert "_save_checkpoint" in main["calls"]
    for family in FAMILIES:  # the main process wrote each stage's finished checkpoint
        assert (runs[2]["dir"] / "checkpoints" / family / "done.json").exists()


def test_process_share_cuts_every_field_into_contiguous_parts():
    import torch

    from xdrec.training import process_share

    batch = {"ids": torch.arange(10).view(5, 2), "mask": np.ones((5, 3)), "pair": (torch.arange(5), [torch.arange(5)]),
             "level": 3, "name": "x"}
    parts = [process_share(batch, r, 2) for r in range(2)]
    assert [p["ids"][:, 0].tolist() for p in parts] == [[0, 2, 4], [6, 8]]  # sizes 3 and 2, in order
    assert [p["mask"].shape[0] for p in parts] == [3, 2] and parts[1]["pair"][1][0].tolist() == [3, 4]
    assert parts[0]["level"] == 3 and parts[1]["name"] == "x"
    assert torch.equal(torch.cat([p["ids"] for p in parts]), batch["ids"])
    assert process_share(batch, 0, 1)["ids"] is not None and torch.equal(process_share(batch, 0, 1)["ids"], batch["ids"])
    with pytest.raises(ValueError, match="fields hold"):
        process_share({"a": torch.zeros(4), "b": torch.zeros(3)}, 0, 2)
    with pytest.raises(ValueError, match="cannot be split"):
        process_share({"a": torch.zeros(1)}, 0, 2)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))

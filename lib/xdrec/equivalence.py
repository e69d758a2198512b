"""Stored results that survive behaviour-preserving code changes: equivalence certificates.

A stored result is reused only while the code that made it is unchanged: its
``code_fingerprint`` (:func:`xdrec.results.code_fingerprint`, a hash of the source files of the
modules a runner names) must match the code's. Any edit of those files, even one that cannot
change a number (a new keyword that defaults to off, a docstring), would make every result stale
and have CI retrain for hours. A *certificate* says, for one code change, that it changed no
result, and is only written when that was measured:

1. ``python -m xdrec.equivalence certify --base REV`` checks out ``REV`` (a commit whose
   fingerprints the stored results carry) in a temporary git worktree;
2. it runs the same *probe* against both code states, each in its own process with its own
   results and checkpoint folders: every paper's pipeline at the ``ci`` profile on real data
   (ID baselines, on the generative rows too; the GenCDR tokenizer, recommender, an ablation and a
   sensitivity point; TIGER; X-Cross and its ID baseline; UTGRec with TIGER and LETTER), one
   thread, seeded;
3. it compares what the two probes stored — every metric, per-row rank, training history and
   ID statistic, with wall times, dates, commits and paths left out — for exact equality;
4. only if all are equal, it records in ``code_equivalence.json`` (beside this file) that each
   fingerprint the new code computes equals the one the base code computed at the same place:
   the same probe step, the same order of first use within it. Module sets are paired by where
   they are used, not by their names, so a renamed or moved module is certified like any other
   change that leaves every result as it was (the new probe's runners are handed the base's
   fingerprints at those places, so what they derive from them, checkpoint folders and run
   keys, is comparable, and each result must carry the base's fingerprint).
   :func:`xdrec.results.code_fingerprint` then returns the base's fingerprint, so results stored
   under it stay current.

Any difference refuses the certificate and names the result and key that differ. What the probe
does not run (the ``book`` profile's larger settings) is covered only as far as the ``ci`` runs
exercise the same code, which is the rule this project accepts for "behaviour-preserving".
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CERTIFICATES = Path(__file__).with_name("code_equivalence.json")
# Keys of a stored record that depend on when, where and how fast it ran, not on what it computed.
VOLATILE = {"provenance", "timings", "wall_time", "wall_time_s", "train_time", "eval_time", "train_s", "test_s",
            "seconds", "build_s", "ids_s", "test_rows_per_s", "examples_per_s", "mean_epoch_train_s",
            "mean_validation_s", "tokens_per_s", "items_per_s", "directory", "checkpoint", "written_at",
            "fit_skipped", "skipped", "resumed_from", "trained", "ids_trained", "rows_per_s", "steps_per_s",
            "checkpoints"}


# ------------------------------------------------------------------------------------------ certificates
def load_certificates(path: Path = CERTIFICATES) -> dict[str, str]:
    """``{new fingerprint: base fingerprint}`` from ``path`` (empty when there is none)."""
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): str(v) for cert in doc["certificates"] for k, v in cert["fingerprints"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a certificate file ({e}); restore it from git") from e


def canonical(fingerprint: str, table: dict[str, str] | None = None) -> str:
    """The fingerprint a certified chain of changes leads back to (itself if uncertified)."""
    if table is None:
        table = load_certificates()
    seen = {fingerprint}
    while fingerprint in table:
        fingerprint = table[fingerprint]
        if fingerprint in seen:
            raise ValueError(f"{CERTIFICATES}: the certificates form a cycle at {fingerprint}")
        seen.add(fingerprint)
    return fingerprint


def volatile(key: str) -> bool:
    """A key that records time, place or speed: :data:`VOLATILE`, ``throughput``, or a name ending
    in ``_s`` / ``_seconds`` / ``_time`` or containing ``per_s`` (seconds, rates, wall times)."""
    return (key in VOLATILE or key == "throughput" or "per_s" in key
            or key.endswith(("_s", "_seconds", "_time")))


def comparable(record: Any) -> Any:
    """``record`` without the keys that record time, place or speed (see :func:`volatile`)."""
    if isinstance(record, dict):
        return {k: comparable(v) for k, v in record.items() if not volatile(k)}
    if isinstance(record, list):
        return [comparable(v) for v in record]
    return record


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two JSON values first differ (``None`` if equal)."""
    if type(a) is not type(b):
        return f"{where or '/'}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}/{k}: only in the {'new' if k in b else 'base'} run"
            d = first_difference(a[k], b[k], f"{where}/{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


# ------------------------------------------------------------------------------------------ settings
# Settings that no code reads any more, with why; a stored result's settings are compared without
# them (:func:`settings_key`), so retiring one keeps the results that carried it current.
RETIRED_SETTINGS = {
    ("recommender", "t5", k): "UTGRec's T5 block carried TIGER's training settings, which "
    "TIGERConfig.from_profile never read (the recommender's pretrain / finetune phases set them)"
    for k in ("epochs", "lr", "batch_size", "patience")
}


def settings_key(config: Any, where: tuple = ()) -> Any:
    """``config`` (a run's settings, as JSON) as stored results are matched on it: without
    :data:`RETIRED_SETTINGS` and without settings at ``None``. Every runner reads ``None`` as "not
    set" (no cap, all rows, no early stopping), the value it used while the field did not exist,
    so a typed field added at ``None`` changes no key; any other added, removed or changed value
    does."""
    if isinstance(config, dict):
        return {k: settings_key(v, (*where, k)) for k, v in config.items()
                if v is not None and (*where, k) not in RETIRED_SETTINGS}
    if isinstance(config, list):
        return [settings_key(v, where) for v in config]
    return config


# ------------------------------------------------------------------------------------------ the probe
PROBE = r'''
import json, os, sys
import xdrec.results as R

seen = {}
calls = {}  # step -> the module sets it fingerprinted, in the order of their first use
step = {"name": None}
original = R.code_fingerprint
pairing = json.load(open(os.environ["XDREC_PROBE_PAIRING"])) if os.environ.get("XDREC_PROBE_PAIRING") else None

def raw(*modules):
    import hashlib, importlib
    from pathlib import Path
    h = hashlib.sha256()
    for name in sorted(modules):
        path = Path(importlib.import_module(name).__file__)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for f in files:
            h.update(str(f.relative_to(path.parents[1] if path.name == "__init__.py" else path.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]

def recording(*modules):
    key = " ".join(sorted(modules))
    order = calls.setdefault(str(step["name"]), [])
    if key not in [c["modules"] for c in order]:
        order.append({"modules": key, "raw": raw(*modules)})
    at = [c["modules"] for c in order].index(key)
    base = (pairing or {}).get(str(step["name"]), [])
    # paired: the base's fingerprint at the same place (this step, this order of first use)
    value = base[at]["value"] if pairing is not None and at < len(base) else original(*modules)
    order[at]["value"] = value
    seen[key] = {"raw": order[at]["raw"], "value": value}
    return value


def runner(*names):
    """The first of ``names`` that imports: a runner module under its name now or before a rename."""
    import importlib
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name not in names:
                raise
    raise ModuleNotFoundError(f"none of {names}")

R.code_fingerprint = recording  # before the runners import it

from xdrec.baselines import experiment as baselines
run_tokenizer = runner("xdrec.gencdr.train_tokenizer", "xdrec.gencdr.tokenization").run_tokenizer
run_recommender = runner("xdrec.gencdr.train_recommender", "xdrec.gencdr.recommendation").run_recommender
from xdrec.tiger.experiment import run_tiger
from xdrec.xcross import experiment as xcross
utgrec = runner("xdrec.utgrec.experiment")
studies = runner("xdrec.gencdr.experiment", "xdrec.gencdr.studies")
from xdrec import comparison

steps = {
    "id_baselines": lambda: baselines.run_all("ci"),
    "gencdr_tokenizer": lambda: run_tokenizer("amazon18-xcross", profile="ci", variant="full", seed=0),
    "gencdr_recommender": lambda: run_recommender("amazon18-xcross", profile="ci", seed=0),
    "tiger": lambda: run_tiger("amazon18-xcross", profile="ci", seed=0, progress=False),
    "comparison": lambda: [comparison.baseline_on_rows(m, "amazon18-xcross", "Tools", profile="ci")
                           for m in ("pop", "sasrec-ce")],
    "gencdr_studies": lambda: (studies.run_ablation("amazon18-xcross", "average-gate", profile="ci"),
                               studies.run_sensitivity("n_experts", 1, profile="ci")),
    "xcross": lambda: xcross.run_target_model("xcross", "Tools", profile="ci"),
    "xcross_id": lambda: xcross.run_id_baseline("sasrec", "Tools", profile="ci"),
    "utgrec": lambda: utgrec.run_table2("Tools", "ci"),
}
only = [s for s in os.environ.get("XDREC_PROBE_ONLY", "").split(",") if s]
for name, run in steps.items():
    if not only or name in only:
        print(f"probe: {name}", flush=True)
        step["name"] = name
        run()
        step["name"] = None
results = {}
for p in sorted(R.results_dir("ci").glob("*.json")):
    results[p.stem] = json.loads(p.read_text())
json.dump({"fingerprints": seen, "calls": calls, "results": results}, open(sys.argv[1], "w"), indent=1,
          sort_keys=True)
'''


def run_probe(lib: Path, out: Path, work: Path, *, only: str = "", pairing: Path | None = None) -> dict[str, Any]:
    """Run :data:`PROBE` with ``lib`` first on the path, its results and checkpoints under ``work``
    (``pairing``: the base probe's fingerprints by step, handed to the runners at the same places)."""
    from .data import find_dataset
    from .paths import cache_dir

    script = work / "probe.py"
    script.write_text(PROBE, encoding="utf-8")
    # a fresh cache, except for what is keyed by its own inputs: text embeddings (by the texts and
    # the encoder) and the converted SmolLM2 folder
    cache = work / "cache"
    cache.mkdir(exist_ok=True)
    for shared in ("embeddings", "models"):
        if not (cache / shared).exists():
            (cache / shared).symlink_to(cache_dir(shared), target_is_directory=True)
    data_root = find_dataset("amazon18-xcross").parent
    env = {**os.environ, "PYTHONPATH": str(lib), "XDREC_RESULTS": str(work / "results"),
           "XDREC_CACHE": str(cache), "XDREC_DATA": str(data_root),
           "XDREC_CHECKPOINTS": str(work / "checkpoints"), "XDREC_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0", "XDREC_PROGRESS": "0", "XDREC_LAUNCH": "inprocess", "XDREC_PROBE_ONLY": only}
    env.pop("XDREC_REQUIRE_STORED", None)
    env.pop("XDREC_PROBE_PAIRING", None)
    if pairing is not None:
        env["XDREC_PROBE_PAIRING"] = str(pairing)
    subprocess.run([sys.executable, str(script), str(out)], env=env, check=True, cwd=lib.parent)
    return json.loads(out.read_text())


def certify(base: str, *, repo: Path, only: str = "", keep: Path | None = None,
            certificates: Path | None = None) -> dict[str, Any]:
    """Probe ``base`` and the working tree of ``repo``; on equal results, add their fingerprint pairs
    to ``certificates`` (default: the working tree's ``lib/xdrec/code_equivalence.json``)."""
    certificates = Path(certificates) if certificates else repo / "lib" / "xdrec" / CERTIFICATES.name
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="xdrec-certify-"))
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", base], cwd=repo, check=True, capture_output=True,
                            text=True).stdout.strip()
    # the base's probe is kept (``keep``) and reused while it is of the same commit and steps
    stamp = work / "base.stamp"
    import hashlib

    probe_key = f"{commit} {only} {hashlib.sha256(PROBE.encode()).hexdigest()[:12]}"
    if stamp.exists() and stamp.read_text() == probe_key and (work / "base.json").exists():
        old = json.loads((work / "base.json").read_text())
    else:
        tree = work / "base-tree"
        shutil.rmtree(work / "base", ignore_errors=True)
        if not tree.exists():
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), base], cwd=repo, check=True,
                           capture_output=True)
        try:
            (work / "base").mkdir(exist_ok=True)
            old = run_probe(tree / "lib", work / "base.json", work / "base", only=only)
            stamp.write_text(probe_key)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, capture_output=True)
    shutil.rmtree(work / "new", ignore_errors=True)
    (work / "new").mkdir()
    # the new code's runners get the base's fingerprints at the same places (step, order of first use)
    (work / "pairing.json").write_text(json.dumps(old["calls"]))
    new = run_probe(repo / "lib", work / "new.json", work / "new", only=only, pairing=work / "pairing.json")
    if sorted(old["results"]) != sorted(new["results"]):
        raise SystemExit(f"refused: the probes stored different results: base {sorted(old['results'])}, "
                         f"new {sorted(new['results'])}")
    for name in old["results"]:
        diff = first_difference(comparable(old["results"][name]), comparable(new["results"][name]))
        if diff:
            raise SystemExit(f"refused: result {name} differs at {diff}")
        made = [r.get("provenance", {}).get("code_fingerprint") for r in (old["results"][name], new["results"][name])]
        if made[0] != made[1]:
            raise SystemExit(f"refused: result {name} was made under fingerprint {made[1]}, the base's under "
                             f"{made[0]} (the module sets were paired in another order)")
    pairs, modules = {}, {}
    for where in sorted(set(old["calls"]) | set(new["calls"])):
        base_sets, new_sets = old["calls"].get(where, []), new["calls"].get(where, [])
        if len(base_sets) != len(new_sets):
            raise SystemExit(f"refused: probe step {where} fingerprinted {len(new_sets)} module sets, the base "
                             f"{len(base_sets)}: {[c['modules'] for c in new_sets]} vs {[c['modules'] for c in base_sets]}")
        for b, n in zip(base_sets, new_sets):
            if pairs.get(n["raw"], b["value"]) != b["value"]:
                raise SystemExit(f"refused: the new module set {n['modules']!r} stands for two base fingerprints")
            if n["raw"] != b["value"]:
                pairs[n["raw"]] = b["value"]
            modules[n["modules"]] = {"base": b["value"], "base_modules": b["modules"], "new": n["raw"]}
    doc = json.loads(certificates.read_text()) if certificates.exists() else {"certificates": []}
    cert = {"base": commit, "results_compared": sorted(old["results"]), "fingerprints": pairs, "modules": modules}
    doc["certificates"].append(cert)
    from .io import write_json

    write_json(certificates, doc)
    return cert


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("certify", help="probe BASE and the working tree; certify the change if nothing differs")
    c.add_argument("--base", required=True, help="the commit whose fingerprints the stored results carry")
    c.add_argument("--only", default="", help="comma-separated probe steps (default: all)")
    c.add_argument("--keep", default=None, help="a folder for the probes' files (default: a temporary one)")
    a = p.parse_args(argv)
    repo = Path(__file__).resolve().parents[2]
    cert = certify(a.base, repo=repo, only=a.only, keep=a.keep)
    print(f"certified against {cert['base']}: {len(cert['results_compared'])} results equal, "
          f"{len(cert['fingerprints'])} fingerprints mapped")


if __name__ == "__main__":
    main()

"""Experiment results with provenance: ``results/<profile>/<name>.json``.

Every table and figure in the book reads these files; each records what produced it (dataset,
split, seed, profile, git commit, device, wall time, trainable parameters) next to the metrics.

The rule for reusing one (:func:`stored_or_computed`, which every runner goes through): a stored
result is read back while it was made with the same settings (the run's full configuration, as
:func:`xdrec.equivalence.settings_key` matches it) by the
same code (:func:`code_fingerprint` of the modules the runner names, or a fingerprint certified to
store the same results, :mod:`xdrec.equivalence`); otherwise it is computed, written by the main
process, and read back.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from . import smoke
from .io import BadInput, is_main_process, read_json, wait_for_main, write_json
from .paths import project_root, results_dir, safe_part


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project_root(),
                             capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def result_path(name: str, profile: str) -> Path:
    """Where result ``name`` of ``profile`` is stored: ``results/<profile>/<name>.json`` (a name or
    profile that is not a plain file name, e.g. with ``/`` or ``..``, is refused)."""
    return results_dir(profile) / f"{safe_part(name, 'result name')}.json"


def read_record(path: Path) -> dict[str, Any]:
    """A stored result: a JSON object with ``metrics`` and ``provenance`` (else :class:`BadInput` naming the file)."""
    rec = read_json(path, expect=dict)
    missing = [k for k in ("metrics", "provenance") if k not in rec]
    if missing:
        raise BadInput(f"{path}: not a result record (no {' or '.join(repr(k) for k in missing)} key)")
    return rec


def make_record(name: str, metrics: dict[str, Any], *, profile: str, dataset: str, split: str, seed: int,
                wall_time_s: float | None = None, trainable_params: int | None = None,
                config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                code_fingerprint: str | None = None) -> dict[str, Any]:
    """The stored form of a result: metrics, provenance (dataset, split, seed, profile, commit,
    device, wall time, parameters, code fingerprint, date), settings and anything ``extra``."""
    record = {
        "name": name,
        "metrics": metrics,
        "provenance": {
            "dataset": dataset,
            "split": split,
            "seed": seed,
            "profile": profile,
            "git_commit": git_commit(),
            "device": device_name(),
            "torch": torch.__version__,
            "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 2),
            "trainable_params": trainable_params,
            "code_fingerprint": code_fingerprint,
            "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "config": config or {},
    }
    if smoke.active():  # a smoke run's result (xdrec.smoke): a few steps and rows, never a measurement
        record["provenance"]["smoke"] = smoke.provenance()
    if extra:
        record["extra"] = extra
    return record


def save_result(name: str, metrics: dict[str, Any], *, profile: str, dataset: str, split: str, seed: int,
                wall_time_s: float | None = None, trainable_params: int | None = None,
                config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                code_fingerprint: str | None = None) -> Path:
    """Write ``results/<profile>/<name>.json`` (:func:`make_record`) atomically and return its path."""
    record = make_record(name, metrics, profile=profile, dataset=dataset, split=split, seed=seed,
                         wall_time_s=wall_time_s, trainable_params=trainable_params, config=config, extra=extra,
                         code_fingerprint=code_fingerprint)
    return write_json(result_path(name, profile), record)


def load_result(name: str, profile: str) -> dict[str, Any]:
    path = result_path(name, profile)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such result; run the notebook or `./reproduce.sh --profile {profile}` that writes it")
    return smoke.check_record(read_record(path), path)


def load_results(profile: str, prefix: str = "") -> list[dict[str, Any]]:
    return [smoke.check_record(read_record(p), p) for p in sorted(results_dir(profile).glob(f"{prefix}*.json"))]


def code_fingerprint(*modules: str) -> str:
    """SHA-256 (16 hex) of the source files of ``modules`` (packages: every ``.py`` below them).

    Stored with a result, it lets a rerun skip a finished experiment only while the code that
    produced it is unchanged, or changed in a way certified not to change any result (see
    :mod:`xdrec.equivalence`: a certified fingerprint maps back to the one it replaced).
    """
    import hashlib
    import importlib

    h = hashlib.sha256()
    for name in sorted(modules):
        mod = importlib.import_module(name)
        path = Path(mod.__file__)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for f in files:
            h.update(str(f.relative_to(path.parents[1] if path.name == "__init__.py" else path.parent)).encode())
            h.update(f.read_bytes())
    from .equivalence import canonical

    return canonical(h.hexdigest()[:16])


class StaleResult(RuntimeError):
    """A stored result was required (``XDREC_REQUIRE_STORED=1``) but is missing or not current."""


def load_if_current(name: str, profile: str, fingerprint: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result ``name`` if it was made by this code (``fingerprint``) and ``config``; else None.

    With ``XDREC_REQUIRE_STORED=1`` a missing or stale result raises :class:`StaleResult` naming
    the file and what differs, instead of returning None (which makes the caller recompute): a
    check that a change left every stored result current, in seconds instead of hours.
    """
    path = result_path(name, profile)
    why, rec = None, None
    if not path.exists():
        why = "no such file"
    else:
        try:
            rec = read_record(path)
        except BadInput as e:  # cut short, not UTF-8, not a record: recomputed (and rewritten), with a warning
            why = f"unreadable ({str(e).removeprefix(f'{path}: ')})"
            import warnings

            warnings.warn(f"{path}: {why}; it is recomputed", stacklevel=2)
    if rec is not None:
        stored_fp = rec.get("provenance", {}).get("code_fingerprint")
        if stored_fp != fingerprint:
            why = f"made by code {stored_fp}, the code now is {fingerprint}"
        else:
            from .equivalence import first_difference, settings_key

            stored_cfg = settings_key(json.loads(json.dumps(rec.get("config", {}))))
            cfg = settings_key(json.loads(json.dumps(config)))
            if stored_cfg != cfg:
                why = f"its settings differ: {first_difference(stored_cfg, cfg)} (stored vs now)"
    if why is None:
        return rec
    import os

    if os.environ.get("XDREC_REQUIRE_STORED") == "1":
        raise StaleResult(f"{path}: {why}")
    return None


def stored_or_computed(name: str, profile: str, fingerprint: str, config: dict[str, Any],
                       compute, *, force: bool = False) -> dict[str, Any]:
    """Result ``name`` of ``profile``: read back while current (:func:`load_if_current`), else
    ``compute()`` it and store it; returns the stored record.

    ``compute`` returns the fields :func:`save_result` takes besides the key (``metrics``,
    ``dataset``, ``split``, ``seed``, and optionally ``wall_time_s``, ``trainable_params``,
    ``extra``); ``force`` recomputes a current result. Under several processes every process
    computes (training is data-parallel), the main one writes, and all read back what it wrote.
    """
    if not force:
        stored = load_if_current(name, profile, fingerprint, config)
        if stored is not None:
            return stored
    fields = compute()
    if is_main_process():
        save_result(name, profile=profile, config=config, code_fingerprint=fingerprint, **fields)
    wait_for_main()
    stored = load_if_current(name, profile, fingerprint, config)
    if stored is None:
        raise RuntimeError(f"{result_path(name, profile)}: written but not read back as current")
    return stored

"""Run a training stage in this process, or through ``accelerate launch`` on GPUs.

Notebooks call a stage's Python function directly at the ``ci`` and ``book`` profiles. At the
``paper`` profile the same stage runs as ``accelerate launch -m <module> <args>`` so that every
GPU configured with ``accelerate config`` takes part; the stage writes its result file, which the
notebook then reads. ``XDREC_LAUNCH`` overrides the launcher (``inprocess`` disables it).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from .paths import project_root


def launcher_for(profile: str) -> list[str] | None:
    """The command prefix that launches stages at ``profile`` (``None``: run in this process)."""
    default = "accelerate launch" if profile == "paper" else "inprocess"
    value = os.environ.get("XDREC_LAUNCH", default).strip()
    return None if value in ("", "inprocess") else shlex.split(value)


def run_stage(module: str, cli_args: list[str], profile: str, inprocess: Callable[[], Any]) -> Any:
    """``inprocess()`` where no launcher applies; otherwise ``<launcher> -m module *cli_args``."""
    prefix = launcher_for(profile)
    if prefix is None:
        return inprocess()
    if prefix == ["python"]:  # XDREC_LAUNCH=python: this interpreter, one process
        prefix = [sys.executable]
    elif prefix and os.sep not in prefix[0] and shutil.which(prefix[0]) is None:
        # a Jupyter kernel of the venv runs without the venv's bin/ on PATH: take the launcher
        # (``accelerate``) from beside this interpreter
        beside = Path(sys.executable).parent / prefix[0]
        if not beside.exists():
            raise FileNotFoundError(f"launcher {prefix[0]!r} (XDREC_LAUNCH) is neither on PATH nor at {beside}")
        prefix = [str(beside), *prefix[1:]]
    cmd = [*prefix, "-m", module, *cli_args]
    print("launching:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=project_root())
    return None

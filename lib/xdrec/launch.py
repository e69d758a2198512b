"""Run a training stage in this process, or through ``accelerate launch`` on GPUs.

Notebooks call a stage's Python function directly at the ``ci`` and ``book`` profiles. At the
``paper`` profile the same stage runs as ``accelerate launch -m <module> <args>`` so that every
GPU configured with ``accelerate config`` takes part; the stage writes its result file, which the
notebook then reads. ``XDREC_LAUNCH`` overrides the launcher (``inprocess`` disables it).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
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
    cmd = [*prefix, "-m", module, *cli_args]
    print("launching:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=project_root())
    return None

"""Progress bars that stay readable everywhere.

In a terminal this is ordinary ``tqdm``. Inside an executed notebook (papermill, nbval) without
ipywidgets, a text bar would store every refresh in the notebook's output, so there it refreshes
at most every ``XDREC_PROGRESS_INTERVAL`` seconds (default 30). ``XDREC_PROGRESS=0`` turns bars off.
"""
from __future__ import annotations

import os
import sys

from tqdm import tqdm as _tqdm


def _in_kernel() -> bool:
    return "ipykernel" in sys.modules


def progress(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` with notebook-friendly defaults."""
    if os.environ.get("XDREC_PROGRESS", "1") == "0":
        kwargs["disable"] = True
    if _in_kernel():
        kwargs.setdefault("mininterval", float(os.environ.get("XDREC_PROGRESS_INTERVAL", 30)))
        kwargs.setdefault("file", sys.stderr)
    return _tqdm(iterable, **kwargs)

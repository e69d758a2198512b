"""Where things live: the data root, the cache, checkpoints and results.

The data root is resolved, in order, from
1. the ``root`` argument a caller passes,
2. the ``XDREC_DATA`` environment variable,
3. ``./data`` under the project root,
4. ``../shared/data`` beside the project checkout.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The checkout holding ``pyproject.toml`` (falls back to the cwd for installed copies)."""
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT
    return Path.cwd()


def data_root_candidates(root: str | os.PathLike | None = None) -> list[Path]:
    cands: list[Path] = []
    if root is not None:
        cands.append(Path(root))
    if os.environ.get("XDREC_DATA"):
        cands.append(Path(os.environ["XDREC_DATA"]))
    cands.append(project_root() / "data")
    cands.append(project_root().parent / "shared" / "data")
    return cands


def cache_dir(*parts: str) -> Path:
    """Cache for processed data, embeddings and converted models (``XDREC_CACHE`` or ``./.cache``)."""
    base = Path(os.environ.get("XDREC_CACHE", project_root() / ".cache"))
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def safe_part(part: str, what: str = "name") -> str:
    """``part`` if it is one plain path component (no ``/``, ``\\``, ``..``, NUL, not empty); else a
    ``ValueError``: a profile or result name must never write outside its folder."""
    if not isinstance(part, str) or not part or part in (".", "..") or any(c in part for c in "/\\\0") \
            or part != part.strip():
        raise ValueError(f"{what} {part!r} is not a plain file name (no '/', '\\', '..' or surrounding spaces)")
    return part


def results_dir(profile: str) -> Path:
    """``results/<profile>/`` (``XDREC_RESULTS`` overrides the ``results`` folder).

    A smoke run (``XDREC_SMOKE``, :mod:`xdrec.smoke`) without ``XDREC_RESULTS`` writes under
    ``results/smoke/<profile>/`` (git-ignored), never beside the real results.
    """
    from . import smoke

    default = project_root() / "results" / ("smoke" if smoke.active() else "")
    base = Path(os.environ.get("XDREC_RESULTS", default))
    p = base / safe_part(profile, "profile")
    p.mkdir(parents=True, exist_ok=True)
    return p


def checkpoint_dir(*parts: str) -> Path:
    """``checkpoints/...`` (``XDREC_CHECKPOINTS`` overrides it; a smoke run: ``checkpoints/smoke/...``)."""
    from . import smoke

    default = project_root() / "checkpoints" / ("smoke" if smoke.active() else "")
    base = Path(os.environ.get("XDREC_CHECKPOINTS", default))
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p

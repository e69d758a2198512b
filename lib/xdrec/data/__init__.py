"""Datasets in one canonical multi-domain form, loaders for the raw Amazon formats, splits.

The entry point is :func:`load`::

    from xdrec import data
    ds = data.load("amazon18-xcross", domains=["Sports", "Tools"])
    print(ds.stats())
    split = data.leave_last_out(ds)

Three processed research sets are known by name (see ``shared_sets``):
``amazon18-xcross``, ``amazon14-food-kitchen`` and ``amazon14-5core-sequences``. The raw
Amazon 2014 / 2018 / 2023 dumps are read by :mod:`xdrec.data.amazon_raw`, and
:func:`make_synthetic` builds a small dataset with a known, planted structure.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from xdrec import smoke
from xdrec.io import sha256_text
from xdrec.paths import cache_dir, data_root_candidates

from xdrec.data.amazon_raw import (
    MalformedLineError,
    RawDomainFiles,
    load_amazon2014,
    load_amazon2018,
    load_amazon2023,
)
from xdrec.data.dataset import (
    MISSING_TEXT_POLICIES,
    MultiDomainDataset,
    apply_missing_text_policy,
    assemble,
)
from xdrec.data.shared_sets import (
    SHARED_SETS,
    read_5core_sequences,
    read_amazon18_xcross,
    read_food_kitchen,
)
from xdrec.data.splits import LeaveLastOutSplit, UserSplit, kcore, leave_last_out, user_split
from xdrec.data.synthetic import ground_truth, make_synthetic

__all__ = [
    "DatasetNotFoundError",
    "LeaveLastOutSplit",
    "MISSING_TEXT_POLICIES",
    "MalformedLineError",
    "MultiDomainDataset",
    "RawDomainFiles",
    "SHARED_SETS",
    "UserSplit",
    "apply_missing_text_policy",
    "assemble",
    "dataset_names",
    "find_dataset",
    "ground_truth",
    "kcore",
    "leave_last_out",
    "load",
    "load_amazon2014",
    "load_amazon2018",
    "load_amazon2023",
    "make_synthetic",
    "read_5core_sequences",
    "read_amazon18_xcross",
    "read_food_kitchen",
    "user_split",
]

#: Bumped when the processing of the shared sets changes, so old cache entries are ignored.
PROCESSING_VERSION = 1

OFFICIAL_SOURCES = (
    "Amazon 2014 reviews (McAuley et al., SIGIR 2015): https://jmcauley.ucsd.edu/data/amazon/",
    "Amazon 2018 reviews (Ni, Li & McAuley, EMNLP 2019): https://nijianmo.github.io/amazon/",
    "Amazon 2023 reviews (Hou et al., 2024): https://amazon-reviews-2023.github.io/",
)


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset is in none of the data roots (or its folder lacks files)."""


def dataset_names() -> list[str]:
    """Names accepted by :func:`load`."""
    return list(SHARED_SETS)


def find_dataset(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of dataset ``name``: the first data root (see
    :func:`xdrec.paths.data_root_candidates`) that holds a folder called ``name``.

    Raises :class:`DatasetNotFoundError`, listing every place looked, if there is none. A ``root``
    given explicitly is the only place looked: a folder that does not exist, or lacks ``name``, is
    refused rather than silently replaced by ``$XDREC_DATA`` or ``../shared/data``.
    """
    spec = _spec(name)
    if root is not None:
        if not Path(root).is_dir():
            raise DatasetNotFoundError(f"{root}: no such data folder (passed as root= for dataset {name!r})")
        if not (Path(root) / name).is_dir():
            raise DatasetNotFoundError(_not_found_message(spec, [Path(root) / name]))
        return Path(root) / name
    candidates = data_root_candidates(root)
    for cand in candidates:
        if (cand / name).is_dir():
            return cand / name
    raise DatasetNotFoundError(_not_found_message(spec, [c / name for c in candidates]))


def load(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    domains: Sequence[str] | None = None,
    missing_text: str = "fallback",
    cache: bool = True,
) -> MultiDomainDataset:
    """Load one of the shared processed sets as a :class:`MultiDomainDataset`.

    Args:
        name: ``"amazon18-xcross"``, ``"amazon14-food-kitchen"`` or
            ``"amazon14-5core-sequences"``.
        root: a data root to try before ``$XDREC_DATA``, ``./data`` and ``../shared/data``.
        domains: keep only these domains (names, in this order; default: all).
        missing_text: what to do with items without text: ``"fallback"`` (text
            ``"<domain> item <ASIN>"``), ``"drop"`` (remove them and their interactions) or
            ``"empty"`` (keep them with ``""``). Counts go to ``meta["missing_text"]``.
        cache: read/write the processed dataset under ``xdrec.paths.cache_dir("datasets")``,
            keyed by name, options and the sizes and modification times of the source files.
    """
    spec = _spec(name)
    if missing_text not in MISSING_TEXT_POLICIES:
        raise ValueError(f"missing_text must be one of {list(MISSING_TEXT_POLICIES)}, got {missing_text!r}")
    chosen = list(spec.domains) if domains is None else [str(d) for d in domains]
    unknown = [d for d in chosen if d not in spec.domains]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"{name}: domains must be distinct names among {list(spec.domains)}, got {list(chosen)}")

    folder = find_dataset(name, root)
    files = [folder / f for f in spec.files(chosen)]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise DatasetNotFoundError(
            f"Dataset {name!r} was found at {folder}, but these files are missing:\n  "
            + "\n  ".join(absent) + f"\nExpected layout: {spec.layout}")

    if smoke.active() and chosen != list(spec.domains):
        # a smoke run samples users from the whole set, so that every subset of its domains
        # agrees on which users and items are in it (xdrec.smoke.USERS_PER_DOMAIN)
        return load(name, root, missing_text=missing_text, cache=cache).subset(chosen)
    files += [f for f in (folder / o for o in spec.optional_files(chosen)) if f.is_file()]
    options = {"domains": chosen, "missing_text": missing_text}
    fingerprint = [(str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = sha256_text(str(PROCESSING_VERSION), name, json.dumps(options), json.dumps(fingerprint))[:20]
    entry = cache_dir("datasets") / f"{name}-{key}"
    ds = None
    if cache and (entry / "dataset.json").is_file():
        try:
            ds = MultiDomainDataset.load(entry)
        except (ValueError, OSError, KeyError) as e:  # a damaged or outdated entry: rebuilt below
            import warnings

            warnings.warn(f"{entry}: a damaged cache entry ({type(e).__name__}: {e}); the dataset is rebuilt",
                          stacklevel=2)
    if ds is None:
        started = time.perf_counter()
        ds = spec.reader(folder, chosen)
        ds = apply_missing_text_policy(ds, missing_text)
        ds.meta["options"] = options
        ds.meta["source_files"] = [{"path": p, "bytes": size} for p, size, _ in fingerprint]
        ds.meta["build_seconds"] = round(time.perf_counter() - started, 3)
        if cache:
            ds.save(entry)
    if smoke.active():  # a smoke run: a few users per domain (xdrec.smoke)
        ds = ds.sample_users(smoke.USERS_PER_DOMAIN, seed=0)
    return ds


def _spec(name: str):
    try:
        return SHARED_SETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {dataset_names()}") from None


def _not_found_message(spec, looked: list[Path]) -> str:
    lines = [f"Dataset {spec.name!r} not found. Looked for a folder named {spec.name!r} in:"]
    lines += [f"  - {p}" for p in looked]
    lines += [
        "",
        "To use a data folder elsewhere, point XDREC_DATA at the folder that contains "
        f"{spec.name!r} (e.g. `export XDREC_DATA=/path/to/data`) or pass root=... to load().",
        "",
        f"Expected layout: <data root>/{spec.layout}",
        f"These files are the processed set from: {spec.origin}.",
        "The original raw data is public:",
        *[f"  - {s}" for s in OFFICIAL_SOURCES],
        "Raw downloads in those formats can be read with xdrec.data.load_amazon2014 / "
        "load_amazon2018 / load_amazon2023.",
    ]
    return "\n".join(lines)

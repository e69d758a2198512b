"""Loaders for the official Amazon review dumps (2014, 2018 and 2023 releases).

Each loader takes one entry per domain, ``(domain_name, reviews_path, meta_path)``, and
returns a :class:`~xdrec.data.dataset.MultiDomainDataset`. Files may be gzip-compressed or
plain (detected from their first bytes, not their name).

===========  =====================================  ==========================================
release      reviews (one JSON object a line)       metadata (one object a line)
===========  =====================================  ==========================================
2014         ``reviews_<Cat>_5.json.gz``:            ``meta_<Cat>.json.gz``: **Python literals**
             reviewerID, asin, unixReviewTime        (``{'asin': ..., 'title': ...}``), read with
                                                     :func:`ast.literal_eval`, never ``eval``
2018         ``<Cat>_5.json.gz``:                    ``meta_<Cat>.json.gz`` (JSON): asin, title,
             reviewerID, asin, unixReviewTime        brand, category, feature, description
2023         ``<Cat>.jsonl``: user_id, parent_asin,  ``meta_<Cat>.jsonl`` (JSON): parent_asin,
             timestamp (milliseconds)                title, features, categories, description
===========  =====================================  ==========================================

Item text is the title followed by whichever of brand, categories, features and description
exist, in that order (see :func:`item_text`). A user's interactions of all domains are
merged and sorted by time (stable: ties keep file order). A line that cannot be read raises
:class:`MalformedLineError`, which names the file and the 1-based line number.
"""
from __future__ import annotations

import ast
import gzip
import io
import json
import math
import os
from zlib import error as zlib_error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from xdrec.data.dataset import MultiDomainDataset, apply_missing_text_policy, assemble
from xdrec.data.text import DEFAULT_MAX_TEXT_CHARS, flatten_strings, join_fields


class MalformedLineError(ValueError):
    """A line of a raw file could not be read; ``path`` and ``line_number`` (1-based) say where."""

    def __init__(self, path: str | os.PathLike, line_number: int, reason: str):
        self.path = Path(path)
        self.line_number = line_number
        self.reason = reason
        super().__init__(f"{self.path}, line {line_number}: {reason}")


@dataclass(frozen=True)
class RawDomainFiles:
    """The raw files of one domain: its reviews and (optionally) its item metadata."""

    domain: str
    reviews: Path
    meta: Path | None = None

    @classmethod
    def coerce(cls, entry: "RawDomainFiles | Sequence[Any]") -> "RawDomainFiles":
        if isinstance(entry, RawDomainFiles):
            return entry
        if not 2 <= len(entry) <= 3:
            raise ValueError(f"expected (domain, reviews_path[, meta_path]), got {entry!r}")
        meta = entry[2] if len(entry) == 3 else None
        return cls(str(entry[0]), Path(entry[1]), None if meta is None else Path(meta))


@dataclass(frozen=True)
class RawFormat:
    """Field names and parsers of one Amazon release."""

    release: str
    user_field: str
    item_field: str
    time_field: str
    time_divisor: int            # raw time / time_divisor = unix seconds
    meta_item_field: str
    meta_parser: Callable[[str], Any]
    meta_parser_name: str


AMAZON2014 = RawFormat("amazon2014", "reviewerID", "asin", "unixReviewTime", 1, "asin",
                       ast.literal_eval, "Python literal")
AMAZON2018 = RawFormat("amazon2018", "reviewerID", "asin", "unixReviewTime", 1, "asin", json.loads, "JSON")
AMAZON2023 = RawFormat("amazon2023", "user_id", "parent_asin", "timestamp", 1000, "parent_asin", json.loads, "JSON")


# ====================================================================== reading lines

def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a UTF-8 text file, decompressing it if it is gzip (by magic bytes)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """The numbered lines of ``path`` (gzip or plain), each decoded as UTF-8 on its own, so that a
    byte that is not UTF-8 or a gzip stream cut short raises :class:`MalformedLineError` at its line."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    line_number = 0
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        while True:
            try:
                raw = f.readline()
            except (EOFError, gzip.BadGzipFile, OSError, zlib_error) as e:
                raise MalformedLineError(path, line_number + 1, f"the file is cut short or not valid gzip "
                                         f"({type(e).__name__}: {e})") from None
            if not raw:
                return
            line_number += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MalformedLineError(path, line_number, f"not UTF-8 text ({e.reason} at byte {e.start} "
                                         "of the line)") from None
            yield line_number, line


def iter_records(path: str | os.PathLike, parse: Callable[[str], Any], parser_name: str) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line; each record must be a dict."""
    path = Path(path)
    for line_number, line in _lines(path):
        line = line.strip()
        if not line:
            continue
        try:
            record = parse(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
            raise MalformedLineError(path, line_number, f"not a valid {parser_name} object ({type(e).__name__}: {e})") from None
        if not isinstance(record, dict):
            raise MalformedLineError(path, line_number, f"expected an object, got {type(record).__name__}")
        yield line_number, record


def _require_str(record: dict, field: str, path: Path, line_number: int) -> str:
    value = record.get(field)
    if value is None:
        raise MalformedLineError(path, line_number, f"missing field {field!r}")
    if not isinstance(value, str) or not value:
        raise MalformedLineError(path, line_number, f"field {field!r} must be a non-empty string, got {value!r}")
    return value


MAX_TIME = 2 ** 53  # the largest time kept exactly (milliseconds reach 1.7e12 in 2023)


def _require_time(record: dict, field: str, path: Path, line_number: int) -> int:
    value = record.get(field)
    if value is None:
        raise MalformedLineError(path, line_number, f"missing field {field!r}")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # 1.7e9 written as a float
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedLineError(path, line_number, f"field {field!r} must be an integer time, got {value!r}")
    if not 0 <= value < MAX_TIME:
        raise MalformedLineError(path, line_number, f"field {field!r} = {value} is outside 0..{MAX_TIME - 1} "
                                 "(unix seconds or milliseconds)")
    return value


def read_reviews(path: str | os.PathLike, fmt: RawFormat) -> pd.DataFrame:
    """Reviews of one file as a table ``user_key, item_key, timestamp`` (unix seconds), file order."""
    path = Path(path)
    users, items, times = [], [], []
    for line_number, rec in iter_records(path, json.loads, "JSON"):
        users.append(_require_str(rec, fmt.user_field, path, line_number))
        items.append(_require_str(rec, fmt.item_field, path, line_number))
        times.append(_require_time(rec, fmt.time_field, path, line_number))
    if not users:
        raise MalformedLineError(path, 1, "no reviews: the file is empty or blank")
    return pd.DataFrame({
        "user_key": pd.Series(users, dtype=object),
        "item_key": pd.Series(items, dtype=object),
        "timestamp": np.asarray(times, dtype=np.int64) // fmt.time_divisor,
    })


def item_text(record: dict, max_chars: int | None = DEFAULT_MAX_TEXT_CHARS) -> str:
    """Text of one metadata record: title, brand, categories, features, description.

    Only fields that exist and are non-empty are used. Lists (2014's list of category
    paths, 2018/2023 lists) are flattened; repeated entries are left out. Description
    paragraphs are joined with spaces. HTML entities and tags are removed, whitespace is
    normalised and the result is cut to ``max_chars`` characters.
    """
    def first(*names: str) -> Any:
        for n in names:
            if record.get(n):
                return record[n]
        return None

    description = " ".join(flatten_strings(record.get("description")))
    return join_fields([record.get("title"), record.get("brand"), first("categories", "category"),
                        first("features", "feature"), description], max_chars)


def read_item_texts(path: str | os.PathLike, fmt: RawFormat, wanted: set[str] | None = None,
                    max_chars: int | None = DEFAULT_MAX_TEXT_CHARS) -> dict[str, str]:
    """``{item_key: text}`` from a metadata file (first record wins for a repeated key).

    Every line is parsed (so a malformed line is always reported); texts are built only for
    the keys in ``wanted`` when given.
    """
    path = Path(path)
    texts: dict[str, str] = {}
    records = 0
    for line_number, rec in iter_records(path, fmt.meta_parser, fmt.meta_parser_name):
        records += 1
        key = _require_str(rec, fmt.meta_item_field, path, line_number)
        title = rec.get("title")
        if title is not None and not isinstance(title, str):  # e.g. a Python set in a 2014 meta line
            raise MalformedLineError(path, line_number, f"item {key!r}: field 'title' must be a string, got "
                                     f"{type(title).__name__} {title!r:.60}")
        if key in texts or (wanted is not None and key not in wanted):
            continue
        texts[key] = item_text(rec, max_chars)
    if not records:
        raise MalformedLineError(path, 1, "no item records: the file is empty or blank (leave meta out "
                                 "for a domain without text)")
    return texts


# ====================================================================== building a dataset

def load_amazon_raw(
    files: Sequence[RawDomainFiles | Sequence[Any]],
    fmt: RawFormat,
    *,
    name: str | None = None,
    kcore: int | None = None,
    max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
    missing_text: str = "fallback",
    drop_duplicates: bool = True,
) -> MultiDomainDataset:
    """Read raw Amazon files of one release into a :class:`MultiDomainDataset`.

    Args:
        files: one ``(domain_name, reviews_path, meta_path)`` per domain (``meta_path`` may
            be ``None`` or left out: then no item has text).
        fmt: the release (:data:`AMAZON2014`, :data:`AMAZON2018` or :data:`AMAZON2023`).
        name: dataset name (default: the release name).
        kcore: if given, keep the ``kcore``-core of each domain separately (every user and
            item with at least ``kcore`` interactions in that domain), as the Amazon
            "5-core" files are built per category.
        max_text_chars: cap on the length of an item text.
        missing_text: policy for items without text (see
            :func:`~xdrec.data.dataset.apply_missing_text_policy`).
        drop_duplicates: drop repeated (user, item, time) reviews of a domain; the
            2018 files contain such copies.
    """
    from xdrec.data.splits import kcore as kcore_filter

    entries = [RawDomainFiles.coerce(e) for e in files]
    if not entries:
        raise ValueError("no domain files given")
    domains = [e.domain for e in entries]
    if len(set(domains)) != len(domains):
        raise ValueError(f"domain names must be distinct, got {domains}")

    event_frames, item_frames, report = [], [], {}
    for d, entry in enumerate(entries):
        reviews = read_reviews(entry.reviews, fmt)
        counts = {"reviews": len(reviews)}
        if drop_duplicates:
            reviews = reviews.drop_duplicates(["user_key", "item_key", "timestamp"], keep="first")
            counts["duplicates_dropped"] = counts["reviews"] - len(reviews)
        if kcore:
            before = len(reviews)
            reviews = kcore_filter(reviews, kcore, user_col="user_key", item_col="item_key")
            counts["removed_by_kcore"] = before - len(reviews)
        item_keys = pd.unique(reviews["item_key"])
        texts = (read_item_texts(entry.meta, fmt, set(item_keys), max_text_chars)
                 if entry.meta is not None else {})
        counts["items_with_meta"] = sum(1 for k in item_keys if k in texts)
        event_frames.append(reviews.assign(domain=d))
        item_frames.append(pd.DataFrame({"domain": d, "item_key": item_keys,
                                         "text": [texts.get(k, "") for k in item_keys]}))
        report[entry.domain] = counts

    ds = assemble(
        name or fmt.release, domains, pd.concat(event_frames, ignore_index=True),
        pd.concat(item_frames, ignore_index=True), timeline="timestamp",
        meta={
            "source": fmt.release,
            "files": [{"domain": e.domain, "reviews": str(e.reviews), "meta": None if e.meta is None else str(e.meta)}
                      for e in entries],
            "kcore": kcore,
            "max_text_chars": max_text_chars,
            "text": "title. brand. categories. features. description (those present)",
            "per_domain": report,
        },
    )
    return apply_missing_text_policy(ds, missing_text)


def load_amazon2014(files: Sequence[RawDomainFiles | Sequence[Any]], **kwargs: Any) -> MultiDomainDataset:
    """Amazon 2014 (McAuley et al.): ``reviews_<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz``.

    Metadata lines are Python dict literals, read with :func:`ast.literal_eval`. Keyword
    arguments are those of :func:`load_amazon_raw`.
    """
    return load_amazon_raw(files, AMAZON2014, **kwargs)


def load_amazon2018(files: Sequence[RawDomainFiles | Sequence[Any]], **kwargs: Any) -> MultiDomainDataset:
    """Amazon 2018 (Ni, Li & McAuley): ``<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz`` (JSON lines).

    Keyword arguments are those of :func:`load_amazon_raw`.
    """
    return load_amazon_raw(files, AMAZON2018, **kwargs)


def load_amazon2023(files: Sequence[RawDomainFiles | Sequence[Any]], **kwargs: Any) -> MultiDomainDataset:
    """Amazon 2023 (Hou et al.): ``<Cat>.jsonl`` + ``meta_<Cat>.jsonl``; items are ``parent_asin``.

    Timestamps are in milliseconds in the files and converted to seconds. Keyword
    arguments are those of :func:`load_amazon_raw`.
    """
    return load_amazon_raw(files, AMAZON2023, **kwargs)

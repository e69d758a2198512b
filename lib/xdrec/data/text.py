"""Item text: cleaning raw Amazon strings and joining metadata fields into one text.

Amazon titles and descriptions carry HTML entities (``&amp;``, ``&quot;``), the odd HTML tag
and irregular whitespace. Every loader passes item text through :func:`clean_text`, and the
raw-format loaders build one text per item with :func:`join_fields`.
"""
from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable

_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r" ([.,;:!?])(?=\s|$)")

#: Default cap on the length of an item text, in characters.
DEFAULT_MAX_TEXT_CHARS = 512


def clean_text(value: Any) -> str:
    """Unescape HTML entities, drop HTML tags and normalise whitespace.

    ``None``, NaN and non-strings other than numbers give ``""``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, str):
        if isinstance(value, (int, float)):
            value = str(value)
        else:
            return ""
    # Unescape twice: some Amazon titles are escaped twice ("&amp;amp;").
    text = html.unescape(html.unescape(value))
    text = _SPACE.sub(" ", _TAG.sub(" ", text)).strip()
    # a tag removed just before punctuation leaves "face ." -> "face."
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def flatten_strings(value: Any) -> list[str]:
    """All strings in a (possibly nested) list, cleaned, empty ones and repeats left out.

    Amazon 2014 ``categories`` is a list of lists; 2018 ``category`` and 2023
    ``features``/``description`` are lists of strings; some fields are plain strings.
    """
    out: list[str] = []
    seen: set[str] = set()

    def visit(v: Any) -> None:
        if isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
            return
        s = clean_text(v)
        if s and s not in seen:
            seen.add(s)
            out.append(s)

    visit(value)
    return out


def truncate(text: str, max_chars: int | None) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary where possible."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip()


def join_fields(fields: Iterable[Any], max_chars: int | None = DEFAULT_MAX_TEXT_CHARS) -> str:
    """One item text from metadata fields, in the order given.

    Each field may be a string or a (nested) list of strings; list entries are joined with
    ``", "``, fields with ``". "``. Empty fields are skipped. The result is cleaned and cut
    to ``max_chars``.
    """
    parts = []
    for f in fields:
        strings = flatten_strings(f)
        if strings:
            parts.append(", ".join(strings))
    return truncate(_SPACE.sub(" ", ". ".join(parts)).strip(), max_chars)

"""How the book shows a result: titled tables, one colour per model, figures drawn for the column.

The book's pages are about 690 px (7 inches at the notebooks' 100 dpi) wide. Every results table
goes through :func:`table` (a caption naming what it mirrors, numbers at a stated precision, and no
``NaN``/``inf`` cell without the reason it is missing); every figure is at most
:data:`COLUMN_INCHES` wide (:func:`figsize`) and draws each model in its one colour
(:func:`colour`), the same on every page. ``tests/test_pages.py`` checks the committed notebooks
for what a program can see of these rules (:func:`xdrec.pages.output_defects`).

    from xdrec import book
    book.table(df, "Table 2 (GenCDR): Recall@10 on Amazon 2018, book profile, seed 0", digits=4)
    fig, ax = plt.subplots(figsize=book.figsize())
    ax.bar(models, values, color=book.palette(models))
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

COLUMN_INCHES = 7.0
"""The widest figure a page shows without shrinking it (the column at 100 dpi)."""

# One colour per model on every page (colour-blind safe, after Okabe & Ito / seaborn "colorblind").
# Keys are model names as :func:`model_key` normalises them (lower case, no spaces or punctuation).
MODEL_COLOURS: dict[str, str] = {
    "pop": "#949494", "popularity": "#949494",
    "sasrec": "#0173b2", "sasrecce": "#0173b2", "sasrecbce": "#56b4e9",
    "bert4rec": "#029e73",
    "tiger": "#de8f05",
    "letter": "#cc78bc",
    "gencdr": "#d55e00",
    "xcross": "#d55e00",
    "utgrec": "#d55e00",
    "lora": "#ca9161", "loratarget": "#ca9161",
    "zeroshot": "#fbafe4", "zeroshotsports": "#fbafe4", "zeroshottoys": "#ece133",
    "ownlora": "#ca9161",  # X-Cross's "LoRA fine-tuned on the target"
    "xlora": "#8172b3", "meteora": "#64b5cd", "poolerscorer": "#bcbd22",  # X-Cross's integrations
    "paper": "#000000",
}
_FALLBACK = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494",
             "#ece133", "#56b4e9"]


def model_key(name: str) -> str:
    """``name`` as :data:`MODEL_COLOURS` spells it: ``"SASRec-CE"`` -> ``"sasrecce"``."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def colour(model: str) -> str:
    """The colour of ``model`` on every page (a variant such as "GenCDR w/o router" takes its
    model's colour when it starts with that model's name; any other name a fixed fallback)."""
    key = model_key(model)
    if key in MODEL_COLOURS:
        return MODEL_COLOURS[key]
    for known in sorted(MODEL_COLOURS, key=len, reverse=True):
        if key.startswith(known):
            return MODEL_COLOURS[known]
    return _FALLBACK[sum(map(ord, key)) % len(_FALLBACK)]


def palette(models: Iterable[str]) -> list[str]:
    """The colours of ``models``, in order (for ``color=`` or seaborn's ``palette=``)."""
    return [colour(m) for m in models]


def figsize(rows: int = 1, height: float = 2.8, width: float = COLUMN_INCHES) -> tuple[float, float]:
    """A figure size that fits the column: ``width`` (at most :data:`COLUMN_INCHES`) by ``rows`` panels
    of ``height`` inches each."""
    if width > COLUMN_INCHES:
        raise ValueError(f"a figure {width} in wide is shrunk on the page; at most {COLUMN_INCHES} in")
    return (width, height * rows)


def number(x: Any, digits: int = 3) -> str:
    """``x`` at ``digits`` significant digits (integers in full, with thousands separators)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if x == 0:
            return "0"
        if abs(x) >= 10 ** digits:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}" if abs(x) >= 1e-4 else f"{x:.{digits - 1}e}"
    return str(x)


def table(df: pd.DataFrame, title: str, *, digits: int | Mapping[str, int] = 3,
          missing: str | None = None, formats: Mapping[str, Callable[[Any], str]] | None = None,
          index: bool = True):
    """``df`` as the book shows it: captioned with ``title``, floats at ``digits`` significant digits
    (one number, or one per column), and each empty, ``NaN`` or infinite cell shown as "—" with
    ``missing`` (why those cells are empty) appended to the caption; a table with such a cell and no
    ``missing`` is refused, so no page shows a value without its reason."""
    if not title or not title.strip():
        raise ValueError("a table needs a title naming what it shows")
    shown = df.copy()
    numeric = shown.select_dtypes(include="number")
    blank = shown.isna().to_numpy().any() or (not numeric.empty and np.isinf(numeric.to_numpy(dtype=float)).any())
    if blank and not missing:
        cols = [c for c in shown.columns if shown[c].isna().any()
                or (c in numeric and np.isinf(numeric[c].to_numpy(dtype=float)).any())]
        raise ValueError(f"table {title!r}: columns {cols} have empty, NaN or infinite cells; "
                         "say why with missing=...")
    for c in numeric:
        shown[c] = shown[c].replace([np.inf, -np.inf], np.nan)
    caption = title.strip() + (f" (—: {missing})" if blank else "")

    def formatter(col):
        if formats and col in formats:
            f = formats[col]
        else:
            d = digits.get(col, 3) if isinstance(digits, Mapping) else digits
            f = lambda v, d=d: number(v, d)  # noqa: E731
        return lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f(v)

    styler = shown.style.format({c: formatter(c) for c in shown.columns}).set_caption(caption)
    styler = styler.set_table_styles([{"selector": "caption", "props": "caption-side: top; text-align: left; "
                                       "font-weight: bold; padding-bottom: 0.4em;"}])
    if not index:
        styler = styler.hide(axis="index")
    import hashlib

    # the HTML's element ids come from the title, not from a random uuid: a rerun shows the same page
    return styler.set_uuid(hashlib.sha256(caption.encode()).hexdigest()[:8])

"""How the book shows results (xdrec.book): titled tables with stated precision, one colour per model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xdrec import book


def test_table_has_its_title_as_caption_and_numbers_at_the_stated_precision():
    df = pd.DataFrame({"Recall@10": [0.0123456, 0.1], "rows": [1000, 25000]}, index=["SASRec", "GenCDR"])
    html = book.table(df, "Table 2: Recall@10", digits=2)._repr_html_()
    assert "<caption>Table 2: Recall@10</caption>" in html
    assert ">0.012<" in html and ">0.1<" in html  # two significant digits
    assert ">1,000<" in html and ">25,000<" in html  # integers in full


def test_table_refuses_an_unexplained_empty_cell_and_shows_an_explained_one_as_a_dash():
    df = pd.DataFrame({"a": [1.0, np.nan], "b": [np.inf, 2.0]})
    with pytest.raises(ValueError, match=r"columns \['a', 'b'\]"):
        book.table(df, "T")
    html = book.table(df, "T", missing="not measured on CPU")._repr_html_()
    assert "(—: not measured on CPU)" in html and "nan" not in html.lower() and "inf<" not in html
    assert html.count(">—<") == 2


def test_table_needs_a_title_and_a_rerun_renders_the_same_html():
    df = pd.DataFrame({"a": [1.5]})
    with pytest.raises(ValueError, match="title"):
        book.table(df, "  ")
    assert book.table(df, "T")._repr_html_() == book.table(df, "T")._repr_html_()


@pytest.mark.parametrize("x, digits, shown", [
    (0.012345, 3, "0.0123"), (12.3456, 3, "12.3"), (0.5, 2, "0.5"), (123456.7, 3, "123,457"),
    (7, 3, "7"), (1234567, 2, "1,234,567"), (0.0, 3, "0"), (3.2e-6, 2, "3.2e-06"),
])
def test_number(x, digits, shown):
    assert book.number(x, digits) == shown


def test_one_colour_per_model_and_variants_take_their_models_colour():
    assert book.colour("SASRec-CE") == book.colour("sasrec ce") == book.colour("SASRec")
    assert book.colour("GenCDR w/o router") == book.colour("GenCDR")
    assert len({book.colour(m) for m in ("Pop", "SASRec", "BERT4Rec", "TIGER", "LETTER", "GenCDR")}) == 6
    assert book.palette(["TIGER", "Pop"]) == [book.colour("TIGER"), book.colour("Pop")]
    assert book.colour("some new model") == book.colour("some new model")  # a fixed fallback


def test_figsize_fits_the_column():
    assert book.figsize() == (book.COLUMN_INCHES, 2.8) and book.figsize(rows=2, height=2)[1] == 4
    with pytest.raises(ValueError, match="at most"):
        book.figsize(width=12)

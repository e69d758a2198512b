"""Notebook outputs as a reader sees them: progress bars rendered, no machine paths (xdrec.pages)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from xdrec import pages

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WARNING = ("/home/someone/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found. "
           "Please update jupyter and ipywidgets.\n  from .autonotebook import tqdm as notebook_tqdm\n")


@pytest.mark.parametrize("raw, shown", [
    ("\repoch 1:  0%|  | 0/4\repoch 1: 50%|# | 2/4\repoch 1: 100%|##| 4/4\n", "epoch 1: 100%|##| 4/4\n"),
    ("\rbar 3/4 loss=1.5\r                   \r", ""),  # a bar cleared with blanks (leave=False) leaves nothing
    ("abcdef\rXY\n", "XYcdef\n"),  # a carriage return overwrites, it does not erase
    ("plain line\nand another\n", "plain line\nand another\n"),
    ("a prompt\n\nthe next one\n\n", "a prompt\n\nthe next one\n\n"),  # lines printed empty stay
    ("\rbar 9/9\r        \r\nafter the bar\n", "after the bar\n"),  # a cleared bar leaves no empty line
])
def test_terminal_text(raw, shown):
    assert pages.terminal_text(raw) == shown


def _stream(name, text):
    return {"name": name, "output_type": "stream", "text": text}


def test_clean_renders_progress_and_drops_the_ipywidgets_warning(tmp_path):
    outputs = [_stream("stderr", WARNING), _stream("stderr", "\rep 1/2:   0%|  | 0/9"),
               _stream("stderr", "\rep 1/2:  50%|# | 4/9"), _stream("stderr", "\r                    \r"),
               _stream("stdout", "epoch 1: loss 2.0\n"), _stream("stderr", "\rep 2/2: 0%| | 0/9\r                 \r"),
               _stream("stdout", "epoch 2: loss 1.0\n"),
               {"output_type": "execute_result", "data": {"text/plain": ["3"]}, "metadata": {}, "execution_count": 1}]
    nb = {"cells": [{"cell_type": "code", "source": "x", "outputs": outputs, "metadata": {}}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    assert pages.output_defects(path)  # a path and carriage returns
    assert pages.clean_outputs(path) is True
    cleaned = json.loads(path.read_text())["cells"][0]["outputs"]
    assert cleaned[0] == _stream("stdout", ["epoch 1: loss 2.0\n", "epoch 2: loss 1.0\n"])
    assert cleaned[1]["output_type"] == "execute_result" and len(cleaned) == 2
    assert pages.output_defects(path) == []
    assert pages.clean_outputs(path) is False  # idempotent: a second pass changes nothing


def test_a_machine_path_is_named_with_its_cell(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [
        _stream("stdout", "ok\n")]}, {"cell_type": "code", "source": "", "metadata": {}, "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {"text/plain": ["wrote /work/main/results/x.json"]}}]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    (defect,) = pages.output_defects(path)
    assert defect.startswith("cell 1: a machine path") and "/work/main" in defect


def _png(width, height):
    import base64
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


def _notebook(tmp_path, outputs):
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs}],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def _html(html):
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": [html], "text/plain": ["x"]}}


@pytest.mark.parametrize("output, defect", [
    (_html("<table><tr><td>0.1</td></tr></table>"), "a table without a title"),
    (_html("<table><caption>T</caption><tr><td>NaN</td></tr></table>"), "a table cell shown as 'NaN'"),
    (_html("<table><caption>T</caption><tr><td >inf</td></tr></table>"), "a table cell shown as 'inf'"),
    (_html("<table><caption>T</caption><tr><td>{'lr': 0.1}</td></tr></table>"), "a Python repr in a table cell"),
    ({"output_type": "execute_result", "metadata": {}, "execution_count": 1,
      "data": {"text/plain": ["<pandas.io.formats.style.Styler at 0x7f12ab34cd56>"]}}, "a Python repr as its output"),
    (_stream("stdout", "".join(f"epoch {i}: loss 1.0\n" for i in range(12))), "a 12-line stdout log"),
])
def test_each_defect_a_program_can_see_is_named(tmp_path, output, defect):
    (found,) = pages.output_defects(_notebook(tmp_path, [output]))
    assert found.startswith(f"cell 0: {defect}"), found


def test_a_figure_wider_than_the_column_is_named_and_one_that_fits_is_not(tmp_path):
    wide = {"output_type": "display_data", "metadata": {}, "data": {"image/png": _png(1484, 20), "text/plain": ["<Figure>"]}}
    fits = {"output_type": "display_data", "metadata": {}, "data": {"image/png": _png(700, 20), "text/plain": ["<Figure>"]}}
    assert pages.png_size(_png(1484, 20)) == (1484, 20)
    (found,) = pages.output_defects(_notebook(tmp_path, [wide, fits]))
    assert "a figure 1484 px wide" in found


def test_a_code_line_wider_than_88_characters_is_named_and_one_of_88_is_not(tmp_path):
    path = tmp_path / "nb.ipynb"
    source = "x = 1\n" + "y = " + "1" * 84 + "\n" + "z = " + "2" * 85
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": source, "metadata": {}, "outputs": []},
                                          {"cell_type": "markdown", "source": "w" * 200, "metadata": {}}],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert pages.output_defects(path) == ["cell 0: a code line of 89 characters (line 3; at most 88)"]
    assert pages.style_debt(path) == {"long code line": 1}


def test_a_table_from_xdrec_book_passes_the_checks(tmp_path):
    import numpy as np
    import pandas as pd

    from xdrec import book

    df = pd.DataFrame({"Recall@10": [0.012345, np.nan], "p": [0.0312, np.inf]}, index=["SASRec", "GenCDR"])
    html = book.table(df, "Table 2 (GenCDR paper): a test", missing="not run")._repr_html_()
    assert pages.output_defects(_notebook(tmp_path, [_html(html)])) == []


STYLE_DEBT = Path(__file__).with_name("style_debt.json")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_show_no_machine_path_nor_raw_progress(notebook):
    assert [d for d in pages.output_defects(notebook) if d.split(": ", 1)[1].startswith(pages.HYGIENE)] == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_style_defects_only_ever_shrink(notebook):
    """The style defects a program can see (untitled tables, NaN cells, reprs, wide figures, long
    logs) that a notebook still shows are counted in tests/style_debt.json, measured when the check
    was written; a notebook may show fewer, never more, of each kind. Lower the count when you fix
    one (``python -m xdrec.pages debt`` prints the counts now)."""
    allowed = json.loads(STYLE_DEBT.read_text()).get(notebook.name, {})
    now = pages.style_debt(notebook)
    grown = {k: (allowed.get(k, 0), n) for k, n in now.items() if n > allowed.get(k, 0)}
    assert not grown, f"{notebook.name}: more style defects than recorded (recorded, now): {grown}; " \
                      f"{[d for d in pages.output_defects(notebook) if not d.split(': ', 1)[1].startswith(pages.HYGIENE)]}"

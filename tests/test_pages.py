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


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_show_no_machine_path_nor_raw_progress(notebook):
    assert pages.output_defects(notebook) == []

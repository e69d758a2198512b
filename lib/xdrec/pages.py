"""What an executed notebook keeps in its outputs: what a terminal would show, and no machine's paths.

papermill stores every refresh of a text progress bar as its own stream output (``\\r`` and all),
and a kernel without ipywidgets prints tqdm's ``IProgress not found`` warning with the path of
the interpreter's site-packages. :func:`clean_outputs` rewrites a notebook's stream outputs the
way a terminal renders them (consecutive outputs of one stream joined, each line cut to what
follows its last carriage return, tqdm's ipywidgets warning dropped); ``./reproduce.sh`` runs it
on every notebook it executes. :func:`output_defects` lists what a program can see is wrong in
the outputs (a machine path, a raw ``\\r`` progress log); ``tests/test_pages.py`` runs it on the
committed notebooks.

    python -m xdrec.pages clean NOTEBOOK...   # rewrite in place (atomically)
    python -m xdrec.pages check NOTEBOOK...   # exit 1 and name every defect
    python -m xdrec.pages debt NOTEBOOK...    # the style defects of each, counted by kind (JSON)
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .io import write_text

# tqdm.auto in a kernel without ipywidgets: a warning naming this machine's site-packages
_NOISE = re.compile(r"^.*TqdmWarning: IProgress not found.*\n(?:\s+from \.autonotebook import .*\n)?", re.M)
# absolute paths of a machine (a project checkout, a home, a virtual environment, a temporary folder)
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|Users|tmp|root|usr|opt|var)/[\w.+-]+|site-packages|[A-Z]:\\\\Users")


def terminal_text(text: str) -> str:
    """``text`` as a terminal shows it: within a line, each ``\\r`` returns to its start and what
    follows overwrites what was there; a line a progress bar cleared with blanks leaves nothing,
    not even an empty line. Lines the program printed empty stay."""
    lines = []
    for line in text.split("\n"):
        if "\r" in line:
            shown = ""
            for part in line.split("\r"):
                shown = part + shown[len(part):]
            line = shown.rstrip()
            if not line:
                lines.append(None)  # cleared: nothing on screen, no line either
                continue
        lines.append(line)
    last = lines.pop()  # what follows the last newline
    kept = [line + "\n" for line in lines if line is not None]
    return "".join(kept) + (last or "")


def clean_cell_outputs(outputs: list[dict]) -> list[dict]:
    """A cell's outputs as a terminal shows them: stream outputs rendered (:func:`terminal_text`),
    tqdm's ipywidgets warning dropped, empty ones dropped, consecutive ones of a stream joined."""
    merged = _merge(outputs)  # a progress bar's refreshes are separate outputs: render them together
    shown = []
    for o in merged:
        if o.get("output_type") == "stream":
            text = terminal_text(_NOISE.sub("", _text(o)))
            if not text.strip():
                continue
            o = {**o, "text": text if text.endswith("\n") else text + "\n"}
        shown.append(o)
    # the lines a cleared bar sat between are one output again, in nbformat's form: a list of lines
    return [{**o, "text": _text(o).splitlines(keepends=True)} if o.get("output_type") == "stream" else o
            for o in _merge(shown)]


def _merge(outputs: list[dict]) -> list[dict]:
    out: list[dict] = []
    for o in outputs:
        if o.get("output_type") == "stream" and out and out[-1].get("output_type") == "stream" \
                and out[-1].get("name") == o.get("name"):
            out[-1] = {**out[-1], "text": _text(out[-1]) + _text(o)}
        else:
            out.append(dict(o))
    return out


def _shown(o: dict) -> dict:
    return {**o, "text": _text(o)} if "text" in o else o


def _text(o: dict) -> str:
    t = o.get("text", "")
    return "".join(t) if isinstance(t, list) else str(t)


def clean_outputs(path: str | Path) -> bool:
    """Rewrite the stream outputs of notebook ``path`` (:func:`clean_cell_outputs`); True if it changed."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a notebook ({e})") from e
    changed = False
    for cell in cells:
        if "outputs" in cell:
            new = clean_cell_outputs(cell["outputs"])
            if [_shown(o) for o in new] != [_shown(o) for o in cell["outputs"]]:
                cell["outputs"], changed = new, True
    if changed:
        raw = path.read_text(encoding="utf-8")
        write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + ("\n" if raw.endswith("\n") else ""))
    return changed


MAX_FIGURE_PX = 750  # the column is about 690 px: 7 in at the inline backend's 100 dpi, plus a tight bbox
MAX_LOG_LINES = 10
MAX_CODE_LINE = 88  # STYLE.md: code lines of at most 88 characters (wider ones scroll in the column)
_EMPTY_CELL = re.compile(r"<td[^>]*>\s*(NaN|nan|NaT|inf|-inf|None|<NA>)\s*</td>")
_REPR_CELL = re.compile(r"<td[^>]*>\s*(\{'|\[\(|\[\{|<[\w.]+ object)")
_REPR_TEXT = re.compile(r"\w at 0x[0-9a-f]+|^\s*\{'|^\s*\[\(")


def png_size(data: str) -> tuple[int, int]:
    """(width, height) in pixels of a base64 PNG."""
    import base64
    import struct

    head = base64.b64decode(data[:64])
    return struct.unpack(">II", head[16:24])


HYGIENE = ("a machine path", "a raw progress log")
"""Defects no committed notebook may have (the others are counted per notebook: :func:`style_debt`)."""


STYLE_KINDS = {"a table without a title": "untitled table", "a table cell shown as": "NaN/inf/None cell",
               "a Python repr in a table cell": "repr in a table", "a Python repr as its output": "repr output",
               "a figure": "figure wider than the column", "a code line": "long code line"}


def style_debt(path: str | Path) -> dict[str, int]:
    """How many of each style defect (:func:`output_defects` beyond :data:`HYGIENE`) ``path`` shows,
    by kind (:data:`STYLE_KINDS`, and "long log")."""
    debt: dict[str, int] = {}
    for d in output_defects(path):
        what = d.split(": ", 1)[1]
        if what.startswith(HYGIENE):
            continue
        kind = next((k for prefix, k in STYLE_KINDS.items() if what.startswith(prefix)), "long log")
        debt[kind] = debt.get(kind, 0) + 1
    return dict(sorted(debt.items()))


def output_defects(path: str | Path) -> list[str]:
    """What is wrong in notebook ``path``'s outputs, one line each: ``cell N: what``.

    What a program can see of the book's rules (``STYLE.md``, "How a results page reads"): a
    machine's path, a raw progress log, a log longer than :data:`MAX_LOG_LINES` lines, a table
    without a title (an HTML ``<caption>``, as :func:`xdrec.book.table` writes), a ``NaN``/``inf``
    cell, a Python repr, a figure wider than :data:`MAX_FIGURE_PX` (shrunk on the page), a code
    line longer than :data:`MAX_CODE_LINE` characters.
    """
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") == "code":
            for n, line in enumerate("".join(cell.get("source", [])).splitlines(), 1):
                if len(line) > MAX_CODE_LINE:
                    found.append(f"cell {i}: a code line of {len(line)} characters (line {n}; at most "
                                 f"{MAX_CODE_LINE})")
        for o in cell.get("outputs", []):
            text = _text(o) + json.dumps(o.get("data", {}))
            m = MACHINE_PATH.search(text)
            if m:
                found.append(f"cell {i}: a machine path in its output: ...{text[max(0, m.start() - 30):m.end() + 30]!r}")
            if o.get("output_type") == "stream":
                if "\r" in _text(o):
                    found.append(f"cell {i}: a raw progress log (carriage returns) in its {o.get('name')} output")
                lines = len(_text(o).splitlines())
                if lines > MAX_LOG_LINES:
                    found.append(f"cell {i}: a {lines}-line {o.get('name')} log (at most {MAX_LOG_LINES}: "
                                 "a learning curve instead)")
            data = o.get("data", {})
            html = "".join(data.get("text/html", []))
            for t in re.findall(r"<table.*?</table>", html, re.S):
                if "<caption" not in t:
                    found.append(f"cell {i}: a table without a title (xdrec.book.table)")
                if (e := _EMPTY_CELL.search(t)):
                    found.append(f"cell {i}: a table cell shown as {e.group(1)!r} (say why it is empty)")
                if _REPR_CELL.search(t):
                    found.append(f"cell {i}: a Python repr in a table cell")
            plain = "".join(data.get("text/plain", []))
            if plain and not html and "image/png" not in data and _REPR_TEXT.search(plain):
                found.append(f"cell {i}: a Python repr as its output: {plain[:60]!r}")
            if "image/png" in data:
                w, h = png_size("".join(data["image/png"]))
                if w > MAX_FIGURE_PX:
                    found.append(f"cell {i}: a figure {w} px wide, shrunk to the column's ~690 px "
                                 "(xdrec.book.figsize)")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in ("clean", "check", "debt"):
        for line in __doc__.strip().splitlines()[-3:]:
            print(line.strip(), file=sys.stderr)
        return 2
    if argv[0] == "debt":
        print(json.dumps({Path(nb).name: style_debt(nb) for nb in argv[1:]}, indent=1))
        return 0
    status = 0
    for nb in argv[1:]:
        if argv[0] == "clean":
            clean_outputs(nb)
        else:
            for d in output_defects(nb):
                print(f"{nb}: {d}")
                status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())

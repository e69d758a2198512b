"""The smoke run: a profile's whole code path at a few optimiser steps and a few rows.

``XDREC_SMOKE=1`` (set by ``./reproduce.sh --profile paper --smoke``) changes two things and
nothing else; every architecture, layer count, loss, beam width and data set stays the profile's:

- :func:`steps`: every training stage stops after ``STEPS`` optimiser steps.
  :func:`xdrec.training.fit` applies it to ``TrainConfig.max_steps``; the training loops that do
  not go through ``fit`` (the GenCDR efficiency benchmark's few timed steps) are left as they are.
- :func:`rows`: every evaluation (validation and test) scores at most ``ROWS`` rows per domain:
  :func:`xdrec.generative.evaluation_rows` (GenCDR, TIGER, UTGRec, the comparisons), X-Cross's
  ``max_*_rows`` (:func:`xdrec.xcross.experiment.choice_rows`), and the ID baselines' validation
  and test users.

Not reduced: k-means initialisations (a few thousand latents, seconds), the MiniLM text
embeddings of every item (cached in ``.cache/embeddings``, the same at every profile), and the
encoding of every item by the stand-in backbones (tiny models: the item universe must be whole
for the prefix trees and the semantic IDs).

Cost, measured on this project's 2-core CPU machine (one torch thread, other jobs on the cores):
most notebooks take 10 s to 2.5 min, but the paper's batch sizes, sequence lengths and numbers of
runs are kept, so a few steps still cost: UTGRec's tokenizer steps (batch 256, a 512-wide decoder
over the stand-in's 49,152-token vocabulary) keep notebook 16 over 12 minutes, and X-Cross's
30-choice, 512-token DeBERTa steps keep notebooks 12-14 at several minutes each. The whole run is
far over a 10-minute CI budget, so ``./reproduce.sh test`` runs it only with ``XDREC_TEST_SMOKE=1``.

Results of a smoke run carry ``"smoke": {...}`` in their provenance (:func:`provenance`, written by
:func:`xdrec.results.save_result`); :func:`xdrec.results.load_result` refuses to hand a smoke
result to a run that is not one, and the other way round. ``./reproduce.sh --smoke`` also writes
them under their own folder (``XDREC_RESULTS=results/smoke``, git-ignored).
"""
from __future__ import annotations

import os

ENV = "XDREC_SMOKE"
STEPS = 2  # optimiser steps per training stage
ROWS = 4  # evaluation rows per domain (validation and test)


def active() -> bool:
    """True when ``$XDREC_SMOKE`` is set to anything but ``""`` / ``0``."""
    return os.environ.get(ENV, "").strip() not in ("", "0")


def steps(max_steps: int | None) -> int | None:
    """``max_steps`` capped at :data:`STEPS` in a smoke run (unchanged otherwise)."""
    if not active():
        return max_steps
    return STEPS if max_steps is None else min(int(max_steps), STEPS)


def rows(n: int | None) -> int | None:
    """A row budget (``None``: all rows) capped at :data:`ROWS` in a smoke run (unchanged otherwise)."""
    if not active():
        return n
    return ROWS if n is None else min(int(n), ROWS)


def provenance() -> dict | None:
    """What a result of this run records about the smoke reduction (``None``: not a smoke run)."""
    return {"steps": STEPS, "rows_per_domain": ROWS} if active() else None


def is_smoke(record: dict) -> bool:
    """True for a result record written by a smoke run."""
    return bool(record.get("provenance", {}).get("smoke"))


class SmokeMismatch(RuntimeError):
    """A smoke result read by a real run, or a real result read by a smoke run."""


def check_record(record: dict, path) -> dict:
    """``record``, or :class:`SmokeMismatch` when its smoke flag differs from this run's."""
    if is_smoke(record) != active():
        what = "a smoke-run result (a few steps and rows, not a measurement)" if is_smoke(record) else "a real result"
        run = "a smoke run (XDREC_SMOKE is set)" if active() else "a real run"
        raise SmokeMismatch(f"{path} is {what}; this is {run}: the two never mix "
                            "(./reproduce.sh --smoke writes under results/smoke/)")
    return record


FIGURE_POINTS = 100  # points per group of a figure's sample (t-SNE panels)


def points(n: int) -> int:
    """A figure's sample size per group, capped at :data:`FIGURE_POINTS` in a smoke run.

    The t-SNE panels of notebooks 01 and 04 are not training nor evaluation, but at 1,500 items a
    domain they took half of a smoke run's two notebooks (46 s and 81 s on one thread)."""
    return min(int(n), FIGURE_POINTS) if active() else int(n)

"""The smoke run: a profile's whole code path at a few optimiser steps, rows and users.

``XDREC_SMOKE=1`` (set by ``./reproduce.sh --profile paper --smoke`` and ``./reproduce.sh smoke``)
reduces how much is computed and nothing else; every architecture, layer count, loss, beam width,
number of choices, main-run domain and data set stays the profile's:

- :func:`steps`: every training stage stops after ``STEPS`` optimiser steps.
  :func:`xdrec.training.fit` applies it to ``TrainConfig.max_steps``; the training loops that do
  not go through ``fit`` (the GenCDR efficiency benchmark's few timed steps) are left as they are.
- :func:`rows`: every evaluation (validation and test) scores at most ``ROWS`` rows per domain:
  :func:`xdrec.generative.evaluation_rows` (GenCDR, TIGER, UTGRec, the comparisons), X-Cross's
  ``max_*_rows`` (:func:`xdrec.xcross.experiment.choice_rows`), and the ID baselines' validation
  and test users.
- :data:`USERS_PER_DOMAIN`: :func:`xdrec.data.load` reads the whole set from the real files, then
  keeps that many users of each domain (drawn once from the whole set, so that every subset of
  its domains agrees), all their events and only the items they touched
  (:meth:`xdrec.data.MultiDomainDataset.sample_users`).
- :func:`reduce_profile` (applied by :func:`xdrec.profiles.get_profile`): training batches at most
  :data:`BATCH`, :data:`GRID` values per study axis (sweeps, depths, layer counts, data sizes,
  subsets), :data:`SEEDS` seed per seeds list, the first target or set of a study; and
  :func:`points`: a figure's sample at :data:`FIGURE_POINTS` points per group.

Why more than steps and rows: measured on this project's 2-core CPU machine, a smoke that kept
the whole data sets, the paper's batch sizes, grids and seeds spent its time outside the steps
(k-means and collision resolution over every item, building every training example, one UTGRec
tokenizer per study point, MiniLM over every item): 36 minutes for notebooks 00-15, and notebook
16 did not finish in 58 minutes. ``./reproduce.sh smoke`` runs the notebooks in two lanes side by
side (00, 02-11 | 01, 12-16), one torch thread each, then builds the smoke book.

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


# The third reduction (see the module docstring): what multiplies the number of runs or the rows a
# step sees, never what a run computes.
USERS_PER_DOMAIN = 200  # users drawn per domain of every data set (xdrec.data.load), with all their events
BATCH = 4  # training batch size cap (global batch) per stage
TOKENS = 32  # text length cap: X-Cross's prompts (the paper's 512 tokens x 30 choices per row), UTGRec's item texts
GRID = 2  # values per study axis: sweep values, depths, layer counts, data sizes and subsets
# UTGRec's study axes keep only the main run's value: each other value is a new tokenizer (about
# 35 s of a smoke run, most of it two backward passes through a decoder over the LLM's vocabulary)
_ONE_VALUE = ("utgrec_studies",)
SEEDS = 1  # seeds of any seeds list
# profile sections whose "batch_size" is an inference batch (rows per forward pass, not per step)
_INFERENCE_BATCHES = ("text_encoder", "generative_eval")
_GRIDS = {("gencdr_studies", "sweeps"), ("utgrec_studies", "sweeps")}
_LISTS = {("utgrec_studies", "depths"), ("xcross", "layers_study"), ("xcross", "limited", "sizes")}
_FIRST = {("utgrec_studies", "targets"), ("gencdr_studies", "datasets")}  # a study's first target or set only


def reduce_profile(prof: dict) -> dict:
    """``prof`` as a smoke run uses it (unchanged outside one): training batches capped at
    :data:`BATCH`, X-Cross's prompts and UTGRec's item texts at :data:`TOKENS` tokens, every study grid at :data:`GRID` values an axis (one of them the main run's
    value where the grid has it), every seeds list at
    :data:`SEEDS`, UTGRec's study targets and GenCDR's study sets at their first. Architectures, losses, beams,
    data sets, the main runs' domains and every code path stay the profile's."""
    if not active():
        return prof

    def default(path):  # the main run's value of a study axis (kept in its reduced grid), or None
        def get(*keys):
            d = prof
            for key in keys:
                if not isinstance(d, dict) or key not in d:
                    return None
                d = d[key]
            return d
        if path[:2] == ("gencdr_studies", "sweeps"):
            return get("gencdr_recommender", "experts", "n") if path[2] == "n_experts" else \
                get("gencdr_recommender", "domain_lora", path[2])
        if path[:2] == ("utgrec_studies", "sweeps"):
            return get("utgrec_tokenizer", path[2])
        return {("utgrec_studies", "depths"): get("utgrec_recommender", "t5", "n_layers"),
                ("xcross", "layers_study"): get("xcross", "xcross", "n_layers")}.get(tuple(path))

    def grid(values, path):
        values, main = list(values), default(path)
        if path[0] in _ONE_VALUE and main in values:
            return [main]
        kept = values[:GRID]
        if main in values and main not in kept:
            kept = kept[:GRID - 1] + [main]
        return kept

    def walk(d, path):
        for k, v in list(d.items()):
            here = (*path, k)
            if k == "batch_size" and isinstance(v, int) and path and path[0] not in _INFERENCE_BATCHES:
                d[k] = min(v, BATCH)
            elif here in (("xcross", "max_length"), ("utgrec_tokenizer", "max_text_tokens")) and isinstance(v, int):
                d[k] = min(v, TOKENS)
            elif k == "seeds" and isinstance(v, (list, tuple)):
                d[k] = list(v)[:SEEDS]
            elif k == "subsets" and isinstance(v, int):
                d[k] = min(v, GRID)
            elif here in _GRIDS and isinstance(v, dict):
                d[k] = {axis: grid(vals, (*here, axis)) for axis, vals in v.items()}
            elif here in _LISTS and isinstance(v, (list, tuple)):
                d[k] = grid(v, here)
            elif here in _FIRST and isinstance(v, (list, tuple)):
                d[k] = list(v)[:1]
            elif isinstance(v, dict):
                walk(v, here)

    walk(prof, ())
    return prof


FIGURE_POINTS = 100  # points per group of a figure's sample (t-SNE panels)


def points(n: int) -> int:
    """A figure's sample size per group, capped at :data:`FIGURE_POINTS` in a smoke run.

    The t-SNE panels of notebooks 01 and 04 are not training nor evaluation, but at 1,500 items a
    domain they took half of a smoke run's two notebooks (46 s and 81 s on one thread)."""
    return min(int(n), FIGURE_POINTS) if active() else int(n)

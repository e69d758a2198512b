"""The evidence behind a row of a results table: its budget, whether it converged, what it can resolve.

Every generative model of the book (TIGER, LETTER, GenCDR, UTGRec) is trained by
:func:`xdrec.training.fit`, whose result (stored in each record's ``extra["training"]``) holds the
optimiser steps, the per-epoch history and the stop reason. From it:

- :func:`budget`: optimiser steps, training targets seen, true epochs (targets seen over the
  targets of one pass over the training data), wall time and device, the columns every table
  states per row;
- :func:`convergence`: a run *converged* when its validation metric did not improve over its last
  ``k`` evaluations (or training stopped early for that reason); otherwise it was *still
  improving* when its budget ended, and the verdict says by how much over those evaluations;
- :func:`detectable_difference`: the smallest difference in a per-row metric that a two-sided
  paired t-test at level ``alpha`` detects with probability ``power`` on ``n`` test rows,
  ``(z_{1-alpha/2} + z_{power}) * sd(diff) / sqrt(n)``; from the measured per-row values of two
  runs, or, before a second run exists, from one run's hit rate ``p`` (the other run's rows
  independent, at ``p + d``). A table states it, so that a reader knows which of the
  paper's claimed differences the table could have seen;
- :func:`across_seeds`: two models over several seeds (each seed its own training runs and its
  own sample of test rows): the mean and spread of each over the seeds, and one paired test of
  the per-row differences pooled over every seed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Budget:
    """What a training run spent: the columns a results table states for each row."""

    steps: int  # optimiser steps
    targets_seen: int  # training targets (next items) the steps were computed on
    true_epochs: float  # targets_seen / the training targets of one pass over the data
    wall_time_s: float | None
    device: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def budget(training: Mapping[str, Any], *, batch_size: int, targets_per_pass: int,
           targets_per_epoch: int | None = None, device: str | None = None) -> Budget:
    """The budget of a :class:`xdrec.training.TrainResult` (as stored, a dict).

    ``targets_per_pass``: the training targets of one pass over all training data (e.g. TIGER's
    ``all_examples``). ``targets_per_epoch``: what one epoch of the run used, when it was capped
    (else ``steps * batch_size`` bounds it: the last batch of an epoch may be smaller). An epoch
    cut short (by ``max_steps`` or a deadline) counts only the batches it took: each epoch of the
    history counts ``min(targets_per_epoch, its steps * batch_size)``.
    """
    if targets_per_pass < 1:
        raise ValueError(f"targets_per_pass must be >= 1, got {targets_per_pass}")
    steps = int(training["global_step"])
    history = training.get("history", [])
    epochs = int(training.get("epochs_run") or len(history))
    if targets_per_epoch is None:
        seen = steps * int(batch_size)
    elif history and all("steps" in h for h in history):
        seen = sum(min(int(targets_per_epoch), int(h["steps"]) * int(batch_size)) for h in history)
    else:
        seen = int(targets_per_epoch) * epochs
    wall = training.get("wall_time")
    return Budget(steps=steps, targets_seen=seen, true_epochs=seen / targets_per_pass,
                  wall_time_s=None if wall is None else float(wall), device=device)


def validation_curve(history: Sequence[Mapping[str, Any]], metric: str = "recall@10") -> list[tuple[int, int, float]]:
    """``(epoch, optimiser steps so far, validation metric)`` for every evaluated epoch of a history."""
    key = metric if metric.startswith("valid/") else f"valid/{metric}"
    out, steps = [], 0
    for rec in history:
        steps += int(rec.get("steps", 0))
        if rec.get(key) is not None:
            out.append((int(rec["epoch"]), steps, float(rec[key])))
    return out


def convergence(training: Mapping[str, Any], metric: str = "recall@10", k: int = 3) -> dict[str, Any]:
    """Whether a run converged: no validation gain over its last ``k`` evaluations, or early stopping.

    Returns ``converged`` (bool), ``verdict`` (one line for a table), ``best_epoch``,
    ``evaluations`` and ``last_gain`` (the last evaluation's metric minus the best before the last
    ``k``; positive: still improving). Fewer than ``k + 1`` evaluations never count as converged.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    curve = validation_curve(training.get("history", []), metric)
    if training.get("stop_reason") == "early_stop":
        best = max(curve, key=lambda c: c[2]) if curve else None
        return {"converged": True, "verdict": "converged (stopped early: no validation gain)",
                "best_epoch": best[0] if best else training.get("best_epoch"), "evaluations": len(curve),
                "last_gain": 0.0}
    if not curve:
        return {"converged": False, "verdict": "not validated: convergence unknown", "best_epoch": None,
                "evaluations": 0, "last_gain": None}
    values = [c[2] for c in curve]
    best_i = int(np.argmax(values))
    if len(values) <= k:
        return {"converged": False, "best_epoch": curve[best_i][0], "evaluations": len(values),
                "last_gain": None,
                "verdict": f"not converged: {len(values)} evaluation(s), fewer than the {k + 1} that could show it"}
    before = max(values[:-k])
    gain = max(values[-k:]) - before
    if gain <= 0:
        return {"converged": True, "best_epoch": curve[best_i][0], "evaluations": len(values), "last_gain": gain,
                "verdict": f"converged: no validation gain over the last {k} evaluations"}
    return {"converged": False, "best_epoch": curve[best_i][0], "evaluations": len(values), "last_gain": gain,
            "verdict": f"still improving: +{gain:.4g} {metric} over the last {k} evaluations"}


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def detectable_difference(n: int, *, sd_diff: float | None = None, rate: float | None = None,
                          alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean per-row difference a two-sided paired test at ``alpha`` detects with ``power``.

    ``sd_diff``: the standard deviation of the per-row differences (measured, under the difference
    to detect); or ``rate``: the hit rate of the reference run, for independent rows of a run at
    ``rate + d``: ``d = z * sqrt(rate (1 - rate) + (rate + d)(1 - rate - d)) / sqrt(n)``, solved for
    ``d`` (the t-test's sample spread is the one under that difference). Normal approximation, good
    for the hundreds of rows of every table here.
    """
    if n < 2:
        raise ValueError(f"need at least 2 test rows, got {n}")
    if (sd_diff is None) == (rate is None):
        raise ValueError("give exactly one of sd_diff or rate")
    z = _z(1 - alpha / 2) + _z(power)
    if sd_diff is not None:
        return z * float(sd_diff) / math.sqrt(n)
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    d = z * math.sqrt(2 * rate * (1 - rate)) / math.sqrt(n)
    for _ in range(100):  # a contraction for every rate and n used here: converges in a few steps
        q = min(rate + d, 1.0)
        new = z * math.sqrt(rate * (1 - rate) + q * (1 - q)) / math.sqrt(n)
        if abs(new - d) < 1e-12:
            break
        d = new
    return d


def detectable_from_rows(a: Sequence[float], b: Sequence[float] | None = None, *, alpha: float = 0.05,
                         power: float = 0.8) -> dict[str, float]:
    """:func:`detectable_difference` from measured per-row values: of the differences ``a - b`` when
    ``b`` is given, else for hits of an independent run at a higher rate (``rate=``), for graded
    values of two independent runs with ``a``'s spread. Returns ``absolute`` and ``relative`` (to the
    mean of ``a``; ``inf`` when ``a`` has no hit) and ``n``."""
    a = np.asarray(a, dtype=np.float64)
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"paired rows need equal lengths, got {a.shape} and {b.shape}")
        d = detectable_difference(len(a), sd_diff=float(np.std(a - b, ddof=1)), alpha=alpha, power=power)
    elif set(np.unique(a)) <= {0.0, 1.0}:  # hits: against an independent run at a higher rate
        d = detectable_difference(len(a), rate=float(a.mean()), alpha=alpha, power=power)
    else:  # graded (NDCG): two independent runs with a's per-row spread
        d = detectable_difference(len(a), sd_diff=math.sqrt(2) * float(np.std(a)), alpha=alpha, power=power)
    mean = float(a.mean())
    return {"n": int(len(a)), "absolute": d, "relative": d / mean if mean > 0 else math.inf}


# ------------------------------------------------------------------ from stored records
def detectable_between(result_a: Mapping[str, Any], result_b: Mapping[str, Any], metric: str = "recall@10", *,
                       mode_a: str | None = None, mode_b: str | None = None, alpha: float = 0.05,
                       power: float = 0.8) -> dict[str, float]:
    """:func:`detectable_from_rows` of two stored results on the rows they share: the smallest
    difference of ``metric`` that their paired test could have detected. Rows are matched as
    :func:`xdrec.comparison.align_rows` matches them (by user and domain) where both results have a
    per-row domain, else by user (single-domain results: UTGRec's, X-Cross's)."""
    from .comparison import align_rows, rows_of
    from .metrics import metrics_from_ranks

    ra, rb = rows_of(result_a, mode_a), rows_of(result_b, mode_b)
    if "domain" in ra and "domain" in rb:
        m = align_rows(result_a, result_b, mode_a=mode_a, mode_b=mode_b)
        rank_a, rank_b = m["rank_a"].to_numpy(), m["rank_b"].to_numpy()
    else:
        where = {u: i for i, u in enumerate(rb["user"])}
        if len(where) != len(rb["user"]) or len(set(ra["user"])) != len(ra["user"]):
            raise ValueError("a user holds two test rows: give the results a per-row domain")
        pairs = [(i, where[u]) for i, u in enumerate(ra["user"]) if u in where]
        rank_a = np.asarray([ra["rank"][i] for i, _ in pairs])
        rank_b = np.asarray([rb["rank"][j] for _, j in pairs])
    k = int(metric.split("@")[1])
    a = metrics_from_ranks(rank_a, [k], per_row=True)[metric]
    b = metrics_from_ranks(rank_b, [k], per_row=True)[metric]
    return detectable_from_rows(a, b, alpha=alpha, power=power)


def run_evidence(training: Mapping[str, Any], *, batch_size: int, targets_per_pass: int,
                 targets_per_epoch: int | None = None, device: str | None = None,
                 metric: str = "recall@10", k: int = 3) -> dict[str, Any]:
    """One row of a table's budget and convergence columns: :func:`budget` and :func:`convergence`."""
    b, v = budget(training, batch_size=batch_size, targets_per_pass=targets_per_pass,
                  targets_per_epoch=targets_per_epoch, device=device), convergence(training, metric, k)
    best = training.get("best_metric")
    return {"optimiser steps": b.steps, "training targets seen": b.targets_seen,
            "passes over the training data": round(b.true_epochs, 2),
            "wall time (min)": None if b.wall_time_s is None else round(b.wall_time_s / 60, 1),
            "device": b.device, f"best valid {metric}": best, "at epoch": v["best_epoch"],
            "converged": v["verdict"]}


# ------------------------------------------------------------------ across seeds
def across_seeds(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], metric: str = "recall@10", *,
                 domain: str | None = None, mode_a: str | None = None, mode_b: str | None = None,
                 alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:
    """Two models over several seeds, each seed one ``(result_a, result_b)`` pair scored on its own rows.

    Per seed, the rows both results scored (matched as :func:`xdrec.comparison.align_rows` matches
    them; only ``domain``'s when it is given) give one mean of ``metric`` per model; the returned
    ``mean_a``, ``sd_a``, ``mean_b``, ``sd_b`` are the mean and sample standard deviation of those
    per-seed means (``sd`` is ``nan`` for one seed). The per-row differences ``a - b`` of every seed
    are pooled into one two-sided paired t-test (``t``, ``p``; ``t > 0``: ``a`` is better) and one
    :func:`detectable_difference` (``detectable``), so that seeds add test rows as well as training
    runs. ``n``: the pooled rows; ``seeds``: the number of pairs.
    """
    from .comparison import align_rows
    from .metrics import metrics_from_ranks, paired_ttest

    if not pairs:
        raise ValueError("across_seeds needs at least one (result_a, result_b) pair")
    k = int(metric.split("@")[1])
    means_a, means_b, diffs = [], [], []
    for result_a, result_b in pairs:
        m = align_rows(result_a, result_b, mode_a=mode_a, mode_b=mode_b)
        if domain is not None:
            m = m[m["domain"] == domain]
        if m.empty:
            raise ValueError(f"a seed's results share no test row{'' if domain is None else ' in ' + domain}")
        a = metrics_from_ranks(m["rank_a"].to_numpy(), [k], per_row=True)[metric]
        b = metrics_from_ranks(m["rank_b"].to_numpy(), [k], per_row=True)[metric]
        means_a.append(float(a.mean()))
        means_b.append(float(b.mean()))
        diffs.append(a - b)
    d = np.concatenate(diffs)
    test = paired_ttest(d, np.zeros_like(d))
    sd = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan)
    spread = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    return {"metric": metric, "seeds": len(pairs), "n": int(len(d)),
            "mean_a": float(np.mean(means_a)), "sd_a": sd(means_a),
            "mean_b": float(np.mean(means_b)), "sd_b": sd(means_b),
            "diff": float(d.mean()), "t": test.t, "p": test.p,
            "detectable": detectable_difference(len(d), sd_diff=spread, alpha=alpha, power=power)}

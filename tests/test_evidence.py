"""xdrec.evidence: budgets, convergence verdicts and the smallest detectable difference, against
hand-computed values and a simulation of the paired test's power."""
import math

import numpy as np
import pytest

from xdrec import evidence


def history(values, steps=10):
    return [{"epoch": i + 1, "steps": steps, "valid/recall@10": v} for i, v in enumerate(values)]


def test_budget_counts_steps_targets_and_true_epochs():
    tr = {"global_step": 240, "epochs_run": 4, "wall_time": 1209.0, "history": history([0.0] * 4, 60)}
    capped = evidence.budget(tr, batch_size=256, targets_per_pass=137_828, targets_per_epoch=15_257, device="cpu")
    assert (capped.steps, capped.targets_seen) == (240, 4 * 15_257)
    assert capped.true_epochs == pytest.approx(61_028 / 137_828)  # 0.44 of a pass, TIGER's book run
    cut = {**tr, "global_step": 190, "history": history([0.0] * 4, 60)[:3] + [{"epoch": 4, "steps": 10}]}
    short = evidence.budget(cut, batch_size=256, targets_per_pass=137_828, targets_per_epoch=15_257)
    assert short.targets_seen == 3 * 15_257 + 10 * 256  # the last epoch stopped after 10 steps
    whole = evidence.budget(tr, batch_size=16, targets_per_pass=1000)
    assert whole.targets_seen == 240 * 16 and whole.true_epochs == pytest.approx(3.84)
    with pytest.raises(ValueError):
        evidence.budget(tr, batch_size=1, targets_per_pass=0)


def test_validation_curve_accumulates_steps():
    assert evidence.validation_curve(history([0.1, 0.2], steps=7)) == [(1, 7, 0.1), (2, 14, 0.2)]


@pytest.mark.parametrize("values, stop, converged, says", [
    ([0.1, 0.3, 0.3, 0.2, 0.25], "epochs", True, "no validation gain over the last 3"),
    ([0.1, 0.2, 0.3, 0.4, 0.5], "epochs", False, "still improving: +0.3"),
    ([0.1, 0.2], "epochs", False, "fewer than the 4"),
    ([0.1, 0.2], "early_stop", True, "stopped early"),
    ([], "epochs", False, "convergence unknown"),
])
def test_convergence_verdicts(values, stop, converged, says):
    v = evidence.convergence({"history": history(values), "stop_reason": stop}, k=3)
    assert v["converged"] is converged and says in v["verdict"], v


def test_detectable_difference_matches_the_hand_computed_formula():
    z = 1.959964 + 0.841621  # z_.975 + z_.8
    assert evidence.detectable_difference(400, sd_diff=0.5) == pytest.approx(z * 0.5 / 20, rel=1e-5)
    d = evidence.detectable_difference(1000, rate=0.01)  # solves d = z sqrt(.01 .99 + (.01+d)(.99-d)) / sqrt(1000)
    assert d == pytest.approx(z * math.sqrt(0.01 * 0.99 + (0.01 + d) * (0.99 - d)) / math.sqrt(1000), rel=1e-6)
    assert 0.0167 < d < 0.0169  # by hand: 0.0168 (the naive sqrt(2 p (1 - p)) gives 0.0125)
    with pytest.raises(ValueError):
        evidence.detectable_difference(1000)
    hits = np.r_[np.ones(10), np.zeros(990)]
    out = evidence.detectable_from_rows(hits)
    assert out["absolute"] == pytest.approx(d) and out["relative"] == pytest.approx(d / 0.01)


def test_a_difference_of_that_size_is_detected_about_80_percent_of_the_time():
    """The oracle: simulated independent hit rows at p and p + d, the paired t-test at 5%."""
    from scipy.stats import ttest_rel

    n, p, sims = 800, 0.05, 3000
    d = evidence.detectable_difference(n, rate=p)
    rng = np.random.default_rng(0)
    a = (rng.random((sims, n)) < p + d).astype(float)
    b = (rng.random((sims, n)) < p).astype(float)
    power = float((ttest_rel(a, b, axis=1).pvalue < 0.05).mean())
    assert 0.75 < power < 0.85, power
    half = float((ttest_rel((rng.random((sims, n)) < p + d / 2).astype(float),
                            (rng.random((sims, n)) < p).astype(float), axis=1).pvalue < 0.05).mean())
    assert half < 0.4  # half that difference is mostly missed


def test_detectable_between_two_stored_results_pairs_their_shared_rows():
    rng = np.random.default_rng(1)
    ranks_a, ranks_b = rng.integers(0, 40, 300), rng.integers(0, 40, 300)
    a = {"extra": {"rows": {"user": list(range(300)), "domain": ["Food"] * 300, "rank": ranks_a.tolist()}}}
    b = {"extra": {"rows": {"user": list(range(299, -1, -1)), "domain": ["Food"] * 300,
                            "rank": ranks_b[::-1].tolist()}}}  # the same rows in another order
    got = evidence.detectable_between(a, b, "recall@10")
    hits_a, hits_b = (ranks_a < 10).astype(float), (ranks_b < 10).astype(float)
    assert got == evidence.detectable_from_rows(hits_a, hits_b)
    assert got["absolute"] == pytest.approx(2.801585 * np.std(hits_a - hits_b, ddof=1) / math.sqrt(300), rel=1e-5)
    for r in (a, b):  # single-domain rows (UTGRec, X-Cross) are matched by user alone
        del r["extra"]["rows"]["domain"]
    assert evidence.detectable_between(a, b, "recall@10") == got
    b["extra"]["rows"]["user"][0] = 1  # a user twice: refused, not paired at random
    with pytest.raises(ValueError, match="two test rows"):
        evidence.detectable_between(a, b, "recall@10")


def test_run_evidence_is_one_row_of_budget_and_convergence():
    tr = {"global_step": 240, "epochs_run": 4, "wall_time": 1212.0, "best_metric": 0.0075, "stop_reason": "epochs",
          "history": history([0.0, 0.0025, 0.005, 0.0075], 60)}
    row = evidence.run_evidence(tr, batch_size=256, targets_per_pass=137_828, targets_per_epoch=15_257, device="cpu")
    assert row["optimiser steps"] == 240 and row["passes over the training data"] == 0.44
    assert row["wall time (min)"] == 20.2 and row["at epoch"] == 4
    assert row["converged"].startswith("still improving: +0.0075")


def _rows(ranks, domain="Food"):
    return {"user": [f"u{i}" for i in range(len(ranks))], "domain": [domain] * len(ranks), "rank": list(ranks)}


def test_across_seeds_pools_the_paired_rows_of_every_seed():
    # seed 0: Recall@10 a = [1, 0, 1], b = [0, 0, 1]; seed 1: a = [1, 0], b = [1, 0]
    pairs = [(_rows([0, 20, 3]), _rows([20, 20, 1])), (_rows([5, 30]), _rows([2, 40]))]
    out = evidence.across_seeds(pairs, "recall@10")
    assert out["seeds"] == 2 and out["n"] == 5
    assert out["mean_a"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["sd_a"] == pytest.approx(abs(2 / 3 - 1 / 2) / math.sqrt(2))
    assert out["mean_b"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    # pooled differences [1, 0, 0, 0, 0]: mean 0.2, sd sqrt(0.2), t = 0.2 / (sqrt(0.2) / sqrt(5)) = 1
    assert out["diff"] == pytest.approx(0.2)
    assert out["t"] == pytest.approx(1.0)
    from scipy.stats import t as student

    assert out["p"] == pytest.approx(2 * student.sf(1.0, df=4))
    z = 1.959963984540054 + 0.8416212335729143
    assert out["detectable"] == pytest.approx(z * math.sqrt(0.2) / math.sqrt(5))


def test_across_seeds_keeps_one_domain_and_says_when_a_seed_shares_no_row():
    a = {"user": ["u0", "u1"], "domain": ["Food", "Kitchen"], "rank": [0, 50]}
    b = {"user": ["u0", "u1"], "domain": ["Food", "Kitchen"], "rank": [50, 0]}
    food = evidence.across_seeds([(a, b), (a, b)], "recall@10", domain="Food")
    assert food["n"] == 2 and food["diff"] == 1.0 and food["sd_a"] == 0.0
    with pytest.raises(ValueError, match="no test row in Tools"):
        evidence.across_seeds([(a, b)], "recall@10", domain="Tools")
    with pytest.raises(ValueError, match="at least one"):
        evidence.across_seeds([])

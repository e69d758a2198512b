"""xdrec.metrics: hand-computed ranking metrics, tie rule, candidate masks, sampling, t-test."""
import math

import numpy as np
import pytest
import torch

from xdrec.metrics import (
    full_ranking,
    metrics_from_ranks,
    paired_ttest,
    rank_metrics,
    sample_negatives,
    sampled_ranking,
    target_ranks,
)


def test_rank_metrics_hand_computed():
    # Target 7 sits at 0-based rank 2 in [5, 3, 7, 1]:
    #   recall@1 = 0 (rank 2 >= 1), recall@3 = recall@5 = 1,
    #   ndcg@3 = 1 / log2(2 + 2) = 1 / 2 = 0.5, mrr = 1 / (2 + 1) = 1/3.
    m = rank_metrics([[5, 3, 7, 1]], [7], ks=(1, 3, 5))
    assert m["recall@1"] == 0.0 and m["ndcg@1"] == 0.0
    assert m["recall@3"] == m["hit@3"] == 1.0
    assert m["ndcg@3"] == pytest.approx(0.5)
    assert m["ndcg@5"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx(1 / 3)
    assert m["mrr@3"] == pytest.approx(1 / 3) and m["mrr@1"] == 0.0  # MRR@k is cut at rank k
    assert m["n"] == 1


def test_rank_metrics_average_over_rows():
    # row 0: target 4 at rank 0 -> ndcg = 1/log2(2) = 1, mrr = 1
    # row 1: target 9 at rank 1 -> ndcg@5 = 1/log2(3) = 0.6309, mrr = 1/2
    # row 2: target 8 absent    -> 0 everywhere
    ranked = np.array([[4, 1, 2], [0, 9, 3], [5, 6, 7]])
    m = rank_metrics(ranked, [4, 9, 8], ks=(1, 5))
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_missing_target_scores_zero_everywhere():
    m = rank_metrics([[1, 2, 3]], [99], ks=(1, 3, 10))
    assert all(v == 0.0 for k, v in m.items() if k != "n")


def test_per_row_and_ragged_lists_and_duplicates():
    # ragged lists are padded; with a duplicate the first occurrence counts (rank 1, not 3)
    per = rank_metrics([[1], [2, 3, 3, 3]], [1, 3], ks=(1, 2), per_row=True)
    assert per["rank"].tolist() == [0, 1]
    assert per["recall@1"].tolist() == [1.0, 0.0]
    assert per["ndcg@2"][1] == pytest.approx(1 / math.log2(3))
    assert target_ranks(np.zeros((2, 0), dtype=int), [1, 2]).tolist() == [-1, -1]


def test_metrics_from_ranks_rejects_bad_ks():
    with pytest.raises(ValueError):
        metrics_from_ranks([0], ks=(0,))


def test_full_ranking_matches_ranked_lists_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 30))
    targets = rng.integers(0, 30, size=50)
    ranked = np.argsort(-scores, axis=1)
    expected = rank_metrics(ranked, targets, ks=(1, 5, 10))
    for s in (scores, torch.from_numpy(scores)):
        got = full_ranking(s, targets, ks=(1, 5, 10), chunk_size=7)
        for k in expected:
            assert got[k] == pytest.approx(expected[k])


def test_full_ranking_tie_rule():
    # scores: item0 0.1, item1 0.5, item2 0.5 (target), item3 0.2
    # pessimistic: rank = #higher (0) + #other ties (1) = 1 -> ndcg@2 = 1/log2(3), mrr = 1/2
    # optimistic:  rank = #higher = 0                    -> ndcg = 1, mrr = 1
    s = np.array([[0.1, 0.5, 0.5, 0.2]])
    pes = full_ranking(s, [2], ks=(1, 2))
    assert pes["recall@1"] == 0.0 and pes["recall@2"] == 1.0
    assert pes["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert pes["mrr"] == pytest.approx(0.5)
    opt = full_ranking(s, [2], ks=(1, 2), ties="optimistic")
    assert opt["recall@1"] == 1.0 and opt["mrr"] == 1.0
    # a constant model earns nothing under the pessimistic rule: rank = n_items - 1
    const = full_ranking(np.zeros((3, 100)), [0, 5, 99], ks=(10,), per_row=True)
    assert const["rank"].tolist() == [99, 99, 99]


def test_full_ranking_candidate_mask_and_exclude():
    # scores 0..9 ascending, so item 9 is best; target is item 5.
    s = np.arange(10, dtype=float)[None, :].repeat(2, axis=0)
    # all items: items 6,7,8,9 score higher -> rank 4
    assert full_ranking(s, [5, 5], per_row=True)["rank"].tolist() == [4, 4]
    # candidates = even items + target: higher candidates are 6, 8 -> rank 2
    mask = np.zeros(10, dtype=bool)
    mask[[0, 2, 4, 5, 6, 8]] = True
    assert full_ranking(s, [5, 5], candidate_mask=mask, per_row=True)["rank"].tolist() == [2, 2]
    # per-row mask: row 0 all items, row 1 only {5, 9}
    per_row_mask = np.ones((2, 10), dtype=bool)
    per_row_mask[1] = False
    per_row_mask[1, [5, 9]] = True
    assert full_ranking(s, [5, 5], candidate_mask=per_row_mask, per_row=True)["rank"].tolist() == [4, 1]
    # excluding the history {9, 8} (and the target itself, which is kept) -> rank 2
    r = full_ranking(s, [5, 5], exclude=[[9, 8, 5], []], per_row=True)["rank"]
    assert r.tolist() == [2, 4]
    # a target outside the candidates is a data error
    with pytest.raises(ValueError, match="not among the candidate"):
        full_ranking(s, [1, 5], candidate_mask=mask)


def test_full_ranking_rejects_nan_target():
    with pytest.raises(ValueError, match="NaN"):
        full_ranking(np.array([[np.nan, 1.0]]), [0])


def test_sample_negatives_excludes_target_and_has_no_duplicates():
    rng = np.random.default_rng(1)
    n_items = 60
    pop = rng.integers(1, 50, size=n_items).astype(float)
    targets = rng.integers(0, n_items, size=500)
    history = [rng.choice(n_items, size=5, replace=False) for _ in targets]
    cand = sample_negatives(targets, pop, n_neg=29, exclude=history, rng=0)
    assert cand.shape == (500, 30)
    assert (cand[:, 0] == targets).all()
    for row, t, h in zip(cand, targets, history):
        negs = row[1:]
        assert t not in negs
        assert len(set(negs.tolist())) == 29
        assert not set(negs.tolist()) & set(h.tolist())
    # deterministic given the seed
    assert (sample_negatives(targets, pop, exclude=history, rng=0) == cand).all()


def test_sample_negatives_follows_popularity_and_skips_zero_weight():
    # 20 "popular" items of weight 10, 180 of weight 1, 20 of weight 0 (never drawn).
    pop = np.r_[np.full(20, 10.0), np.ones(180), np.zeros(20)]
    cand = sample_negatives(np.full(2000, 100), pop, n_neg=29, rng=3)
    counts = np.bincount(cand[:, 1:].ravel(), minlength=len(pop))
    assert counts[200:].sum() == 0
    popular_rate = counts[:20].mean() / 2000
    rare_rate = np.delete(counts[20:200], 80).mean() / 2000  # item 100 is the target
    # With-replacement rates would be 29*10/380 = 0.76 vs 0.076; without replacement the popular
    # rate saturates below 1, so we only require a generous factor of 4.
    assert popular_rate > 4 * rare_rate
    assert popular_rate > 0.5


def test_sample_negatives_too_few_items():
    with pytest.raises(ValueError, match="eligible"):
        sample_negatives([0], np.ones(10), n_neg=29)


def test_sampled_ranking():
    # row 0: target 0.9 beats all -> rank 0; row 1: two negatives higher, one tie -> rank 3
    s = np.array([[0.9, 0.1, 0.2, 0.3], [0.5, 0.6, 0.7, 0.5]])
    per = sampled_ranking(s, ks=(1, 3, 5), per_row=True)
    assert per["rank"].tolist() == [0, 3]
    m = sampled_ranking(s, ks=(1, 3, 5))
    assert m["recall@1"] == 0.5 and m["recall@3"] == 0.5 and m["recall@5"] == 1.0
    # ndcg@5 = (1 + 1/log2(5)) / 2
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(5)) / 2)
    assert sampled_ranking(s, ties="optimistic", per_row=True)["rank"].tolist() == [0, 2]


def test_paired_ttest():
    rng = np.random.default_rng(0)
    b = rng.random(200)
    a = b + 0.1 + rng.normal(scale=0.05, size=200)
    t, p = paired_ttest(a, b)
    assert t > 0 and p < 1e-6
    assert paired_ttest(b, b) == (0.0, 1.0)
    with pytest.raises(ValueError):
        paired_ttest(a, b[:10])

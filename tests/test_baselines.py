"""SASRec and BERT4Rec: data conventions, causality, padding invariance, and learning a pattern."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from xdrec.baselines import (
    BERT4Rec,
    BERT4RecCollator,
    IGNORE_INDEX,
    SASRec,
    SASRecCollator,
    SequenceDataset,
    evaluate,
    evaluate_sampled,
    left_pad,
    restrict_to_items,
    train_bert4rec,
    train_sasrec,
)
from xdrec.training import TrainConfig

N_ITEMS = 40


pytestmark = pytest.mark.usefixtures("one_thread")


def planted_split(n_users=400, n_items=N_ITEMS, p=0.9, seed=0):
    """Item i is followed by item (i + 1) mod n_items with probability p, else a random item.

    The held-out last item is the validation target; chance Recall@10 is 10/40 = 0.25 and the
    best possible is about p + (1 - p) * 10/40 = 0.925.
    """
    rng = np.random.default_rng(seed)
    train, rows = {}, []
    for u in range(n_users):
        seq = [int(rng.integers(n_items))]
        for _ in range(int(rng.integers(8, 20)) - 1):
            seq.append((seq[-1] + 1) % n_items if rng.random() < p else int(rng.integers(n_items)))
        train[u] = np.array(seq[:-1])
        rows.append({"user": u, "domain": "a", "history": seq[:-1], "target": seq[-1]})
    return SimpleNamespace(train=train, valid=pd.DataFrame(rows))


# ---------------------------------------------------------------------------------------------
# data plumbing
# ---------------------------------------------------------------------------------------------
def test_left_pad_truncates_and_pads_on_the_left():
    out = left_pad([[1, 2, 3, 4], [5]], max_len=3, pad_value=9)
    assert out.tolist() == [[2, 3, 4], [9, 9, 5]]
    assert left_pad([[1]], max_len=3, pad_value=9, width=3).tolist() == [[9, 9, 1]]


def test_sasrec_collator_shifts_labels_and_samples_unseen_negatives():
    torch.manual_seed(0)
    ds = SequenceDataset({7: [1, 2, 3, 4, 5, 6], 8: [3, 4], 9: [5]})  # user 9 is too short
    assert len(ds) == 2 and ds.users == [7, 8]
    batch = SASRecCollator(n_items=10, max_len=4, negatives=True)([ds[0], ds[1]])
    # last max_len + 1 = 5 items of user 7: 2..6 -> inputs 2..5, labels 3..6
    assert batch["input_ids"].tolist() == [[2, 3, 4, 5], [10, 10, 10, 3]]
    assert batch["labels"].tolist() == [[3, 4, 5, 6], [IGNORE_INDEX] * 3 + [4]]
    negs = batch["negatives"]
    assert negs[1, :3].tolist() == [10, 10, 10]  # no negatives at padding
    for _ in range(20):
        negs = SASRecCollator(10, 4, negatives=True)([ds[0]])["negatives"][0]
        assert not set(negs.tolist()) & {1, 2, 3, 4, 5, 6}  # never an item the user saw


def test_bert4rec_collator_masks_a_fifth():
    torch.manual_seed(0)
    seqs = [np.arange(10), np.array([3, 4])]
    batch = BERT4RecCollator(n_items=20, max_len=8, mask_prob=0.2)(seqs)
    ids, labels = batch["input_ids"], batch["labels"]
    masked = labels != IGNORE_INDEX
    # row 0: 8 items -> round(1.6) = 2 masks; row 1: 2 items -> max(1, round(0.4)) = 1 mask
    assert masked.sum(1).tolist() == [2, 1]
    assert (ids[masked] == 21).all()  # MASK = n_items + 1
    original = left_pad(seqs, 8, 20)
    assert torch.equal(labels[masked], original[masked])
    assert torch.equal(ids[~masked], original[~masked])


def test_restrict_to_items_renumbers_one_domain():
    rows = pd.DataFrame({"history": [[1, 5, 2], [5]], "target": [7, 3], "domain": ["b", "a"]})
    train_local, rows_local, index = restrict_to_items({0: [1, 5, 7, 2]}, rows, item_ids=[5, 7, 1])
    assert index.global_ids.tolist() == [1, 5, 7]
    assert train_local[0].tolist() == [0, 1, 2]
    assert rows_local["target"].tolist() == [2] and rows_local["history"].tolist() == [[0, 1]]
    assert index.to_global([2]).tolist() == [7]


# ---------------------------------------------------------------------------------------------
# model structure
# ---------------------------------------------------------------------------------------------
def test_sasrec_is_causal():
    torch.manual_seed(0)
    model = SASRec(N_ITEMS, hidden=16, max_len=10).eval()
    ids = torch.tensor([[40, 40, 3, 4, 5, 6, 7, 8, 9, 10]])
    changed = ids.clone()
    changed[0, 6:] = torch.tensor([30, 31, 32, 33])  # alter every item after position 5
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6)
    assert not torch.allclose(a[0, 6:], b[0, 6:])


def test_bert4rec_is_bidirectional():
    torch.manual_seed(0)
    model = BERT4Rec(N_ITEMS, hidden=16, max_len=10).eval()
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    changed = torch.tensor([[3, 4, 5, 6, 30]])
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0, 0], model(changed)[0, 0])


@pytest.mark.parametrize("cls", [SASRec, BERT4Rec])
def test_batch_width_does_not_change_scores(cls):
    # Batches are padded to their longest sequence, not max_len: the result must be identical.
    torch.manual_seed(0)
    model = cls(N_ITEMS, hidden=16, max_len=12).eval()
    histories = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], []]
    scores = model.score_all(histories)
    assert scores.shape == (3, N_ITEMS) and torch.isfinite(scores).all()
    for i, h in enumerate(histories):
        single = model.score_all([h])
        assert torch.allclose(scores[i], single[0], atol=1e-5)
    ids = model.prepare_histories(histories)
    full = torch.nn.functional.pad(ids, (model.max_len - ids.shape[1], 0), value=N_ITEMS)
    with torch.no_grad():
        assert torch.allclose(model.next_item_logits(ids), model.next_item_logits(full), atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: SASRec(N_ITEMS, hidden=16, max_len=12, loss="ce"),
    lambda: SASRec(N_ITEMS, hidden=16, max_len=12, loss="bce"),
    lambda: BERT4Rec(N_ITEMS, hidden=16, max_len=12),
])
def test_length_groups_give_the_same_loss_and_gradient(make):
    # Encoding a batch in groups of similar length is only a speed-up: same loss, same gradient.
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, N_ITEMS, size=n) for n in (2, 3, 3, 5, 8, 13, 20, 2, 4)]
    torch.manual_seed(0)
    model = make().eval()  # no dropout, so both passes are deterministic
    batch = model.collator()(seqs)
    results = []
    for groups in (1, 4):
        model.length_groups = groups
        model.zero_grad()
        loss = model(**batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    for g1, g4 in zip(results[0][1], results[1][1]):
        assert torch.allclose(g1, g4, atol=1e-6)


def test_losses_are_finite_and_bce_needs_negatives():
    torch.manual_seed(0)
    seqs = [np.arange(12) % N_ITEMS, np.array([1, 2, 3])]
    for model in (SASRec(N_ITEMS, hidden=16, max_len=8, loss="bce"), SASRec(N_ITEMS, hidden=16, max_len=8),
                  BERT4Rec(N_ITEMS, hidden=16, max_len=8)):
        batch = model.collator()(seqs)
        loss = model(**batch)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
    with pytest.raises(ValueError, match="negatives"):
        SASRec(N_ITEMS, hidden=16, max_len=8, loss="bce")(**SASRecCollator(N_ITEMS, 8)(seqs))


def test_evaluate_ranks_within_each_rows_domain():
    class Fixed:
        """Scores item j as j: higher ids rank first."""

        n_items = 10

        def score_all(self, histories):
            return torch.arange(10, dtype=torch.float32).repeat(len(histories), 1)

    rows = pd.DataFrame({"history": [[1], [2]], "target": [5, 2], "domain": ["a", "b"]})
    # all items: ranks 4 and 7
    assert evaluate(Fixed(), rows, per_row=True)["rank"].tolist() == [4, 7]
    # domain a = {0..5}: target 5 is best; domain b = {2, 3}: item 3 beats 2 -> ranks 0 and 1
    m = evaluate(Fixed(), rows, ks=(1,), candidate_items={"a": range(6), "b": [2, 3]}, per_row=True)
    assert m["rank"].tolist() == [0, 1]
    # excluding the histories ([1] and [2]) changes nothing: item 1 ranks below both targets,
    # and target 2 is never excluded from its own ranking
    assert evaluate(Fixed(), rows, exclude_history=True, per_row=True)["rank"].tolist() == [4, 7]


def test_evaluate_sampled_uses_the_given_candidates():
    class Fixed:
        n_items = 10

        def score_all(self, histories):
            return torch.arange(10, dtype=torch.float32).repeat(len(histories), 1)

    rows = pd.DataFrame({"history": [[1], [2]], "target": [5, 2]})
    # row 0: candidates 5 | 1, 2 -> target best (rank 0); row 1: 2 | 9, 3, 0 -> rank 2
    candidates = np.array([[5, 1, 2, 0], [2, 9, 3, 0]])
    assert evaluate_sampled(Fixed(), rows, candidates, per_row=True)["rank"].tolist() == [0, 2]
    with pytest.raises(ValueError):
        evaluate_sampled(Fixed(), rows, candidates[::-1])


# ---------------------------------------------------------------------------------------------
# learning a planted pattern (chance Recall@10 = 0.25)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_sasrec_learns_planted_pattern(loss):
    split = planted_split()
    cfg = TrainConfig(epochs=5, batch_size=64, lr=5e-3, patience=None, progress=False, seed=0)
    model, result = train_sasrec(split, N_ITEMS, cfg, loss=loss, hidden=32, max_len=20)
    assert result.best_metric > 0.6, result.history
    assert evaluate(model, split.valid)["recall@10"] == pytest.approx(result.best_metric)


def test_bert4rec_learns_planted_pattern():
    # The Cloze task gives fewer targets per sequence than SASRec's every-position loss, and
    # relative order must be learned from absolute position embeddings: it needs more steps.
    split = planted_split(n_users=600)
    cfg = TrainConfig(epochs=15, batch_size=32, lr=3e-3, patience=None, progress=False, seed=0)
    model, result = train_bert4rec(split, N_ITEMS, cfg, hidden=32, max_len=20)
    assert result.best_metric > 0.6, result.history


def test_sasrec_on_a_leave_last_out_split_ranks_within_the_target_domain():
    # End to end with the library's own data layer: two domains of 60 items with planted
    # ring structure; each valid/test row ranks only its own domain's items (chance 10/60).
    from xdrec.data import leave_last_out, make_synthetic

    ds = make_synthetic(n_users=200, n_domains=2, items_per_domain=60, seed=0)
    split = leave_last_out(ds)
    candidates = {d: ds.domain_items(d) for d in split.target_domains}
    cfg = TrainConfig(epochs=6, batch_size=64, lr=5e-3, patience=None, progress=False)
    model, result = train_sasrec(split, ds.n_items, cfg, hidden=32, max_len=30, candidate_items=candidates)
    test = evaluate(model, split.test, candidate_items=candidates)
    assert result.best_metric > 0.4 and test["recall@10"] > 0.4
    assert test["n"] == len(split.test)

"""ID baselines on the generative recommenders' rows, and paired comparisons between per-row results.

On a synthetic set: a tiny SASRec is trained (1 epoch) by the real baseline experiment in a temporary
checkpoint folder, scored on the generative test rows by :func:`xdrec.comparison.baseline_on_rows`,
and its per-row ranks are checked against a brute-force ranking built from the raw interactions
and ``score_all``. Some users have no items in one domain, so the single-domain user ids differ
from the multi-domain ones and rows must be matched by user key.
"""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

import xdrec.data
from xdrec import profiles
from xdrec.baselines import SASRec
from xdrec.baselines.experiment import run_id_baseline
from xdrec.comparison import align_rows, baseline_on_rows, paired_comparison, result_name, rows_of
from xdrec.data import assemble, leave_last_out, make_synthetic
from xdrec.generative import sample_rows
from xdrec.metrics import metrics_from_ranks, paired_ttest
from xdrec.training import load_model_state

ROWS_PER_DOMAIN = 40


def synthetic_with_gaps():
    """Two domains; every fourth user has no Movies items (so the Movies subset renumbers users)."""
    base = make_synthetic(n_users=160, n_domains=2, items_per_domain=30, seq_len=(3, 7), seed=0)
    inter = base.interactions
    keep = ~((inter["domain"] == 1) & (inter["user"] % 4 == 0))
    inter = inter[keep]
    events = pd.DataFrame({"user_key": base.users["user_key"].to_numpy()[inter["user"].to_numpy()],
                           "domain": inter["domain"].to_numpy(),
                           "item_key": base.items["item_key"].to_numpy()[inter["item"].to_numpy()]})
    return assemble("synthetic", base.domains, events, base.items[["domain", "item_key", "text"]], timeline="given")


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("XDREC_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("XDREC_TORCH_THREADS", "1")
    ds = synthetic_with_gaps()

    def load(name, root=None, *, domains=None, **kwargs):
        assert name == "synthetic"
        return ds if domains is None else ds.subset(domains)

    monkeypatch.setattr(xdrec.data, "load", load)
    prof = copy.deepcopy(profiles.PROFILES["ci"])
    prof["torch_threads"] = 1
    prof["id_baselines"].update(hidden=16, layers=1, max_len=20, epochs=1, patience=None, batch_size=64,
                                max_valid_rows=None, epochs_by_model={}, patience_by_model={},
                                runs=[("synthetic", "Books", ["pop", "sasrec-ce"]), ("synthetic", "Movies", ["pop"])])
    prof["gencdr_tokenizer"]["datasets"] = {"synthetic": None}
    prof["generative_eval"]["test_rows_per_domain"] = ROWS_PER_DOMAIN
    monkeypatch.setitem(profiles.PROFILES, "unit", prof)
    threads = torch.get_num_threads()  # get_profile sets the thread count
    yield ds, tmp_path
    torch.set_num_threads(threads)


def domain_timelines(ds, domain: str) -> dict[str, list[str]]:
    """Each user's item keys in one domain, in order, read straight from the interactions."""
    d = ds.domains.index(domain)
    inter = ds.interactions[ds.interactions["domain"] == d]
    keys = ds.items["item_key"].to_numpy()
    users = ds.users["user_key"].to_numpy()
    out: dict[str, list[str]] = {}
    for u, i in zip(inter["user"].to_numpy(), inter["item"].to_numpy()):  # sorted by (user, position)
        out.setdefault(users[u], []).append(keys[i])
    return out


def expected_rows(ds, domain: str, seed: int = 0) -> pd.DataFrame:
    rows = sample_rows(leave_last_out(ds).test, ROWS_PER_DOMAIN, seed)
    rows = rows[rows["domain"] == ds.domains.index(domain)]
    return pd.DataFrame({"user": rows["user"].to_numpy(),
                         "user_key": ds.users["user_key"].to_numpy()[rows["user"].to_numpy()],
                         "target_key": ds.items["item_key"].to_numpy()[rows["target"].to_numpy()]})


def test_sasrec_on_the_generative_rows_matches_a_brute_force_ranking(world):
    ds, tmp = world
    run_id_baseline("sasrec-ce", "synthetic", "Movies", profile="unit")
    rec = baseline_on_rows("sasrec-ce", "synthetic", "Movies", profile="unit")
    assert rec["name"] == result_name("sasrec-ce", "synthetic", "Movies", 0)
    rows = rec["extra"]["rows"]

    # exactly the sampled generative rows of the domain, in their order
    want = expected_rows(ds, "Movies")
    assert 0 < len(want) <= ROWS_PER_DOMAIN
    assert rows["user_key"] == want["user_key"].tolist() and rows["target_key"] == want["target_key"].tolist()
    assert rows["user"] == want["user"].tolist() and set(rows["domain"]) == {"Movies"}
    # the single-domain ids differ from the multi-domain ones: matching by position or id would be wrong
    assert rec["extra"]["single_domain_user"] != rows["user"]

    # brute force: in-domain history from the raw interactions, scores of every item, pessimistic ties
    sub = ds.subset(["Movies"])
    item_id = dict(zip(sub.items["item_key"], sub.items["item"]))
    cfg = profiles.get_profile("unit")["id_baselines"]
    net = SASRec(sub.n_items, hidden=cfg["hidden"], n_blocks=cfg["layers"], n_heads=cfg["sasrec_heads"],
                 max_len=cfg["max_len"], dropout=cfg["dropout"], loss="ce")
    (best,) = (tmp / "checkpoints").rglob("best-epoch*.safetensors")
    load_model_state(net, best)
    timelines = domain_timelines(ds, "Movies")
    for user_key, target_key, rank in zip(rows["user_key"], rows["target_key"], rows["rank"]):
        seq = timelines[user_key]
        assert seq[-1] == target_key
        scores = net.score_all([[item_id[k] for k in seq[:-1]]])[0]
        s = scores[item_id[target_key]]
        assert rank == int((scores > s).sum() + (scores == s).sum() - 1), user_key
    means = metrics_from_ranks(rows["rank"])
    assert rec["metrics"]["ndcg@10"] == pytest.approx(means["ndcg@10"]) and rec["metrics"]["n"] == len(want)

    # stored: read back while current, even without the checkpoints (CI has none)
    import shutil

    shutil.rmtree(tmp / "checkpoints")
    again = baseline_on_rows("sasrec-ce", "synthetic", "Movies", profile="unit")
    assert again["provenance"]["written_at"] == rec["provenance"]["written_at"] and again["extra"] == rec["extra"]
    with pytest.raises(FileNotFoundError, match=r"best-epoch\*\.safetensors.*xdrec\.baselines\.experiment --model sasrec-ce"):
        baseline_on_rows("sasrec-ce", "synthetic", "Movies", profile="unit", force=True)

    # paired against a "generative" result holding the same rows in another order: aligned by user
    gen = {"user_key": rows["user_key"][::-1], "domain": rows["domain"][::-1], "target_key": rows["target_key"][::-1],
           "rank": rows["rank"][::-1]}
    same = paired_comparison(rec, gen)
    assert same["n"] == len(want) and same["only_a"] == same["only_b"] == 0
    assert same["diff"] == 0 and (same["t"], same["p"]) == (0.0, 1.0)


def test_popularity_on_the_generative_rows_matches_a_brute_force_ranking(world):
    ds, _ = world
    rec = baseline_on_rows("pop", "synthetic", "Books", profile="unit")
    rows = rec["extra"]["rows"]
    want = expected_rows(ds, "Books")
    assert rows["user_key"] == want["user_key"].tolist() and rows["target_key"] == want["target_key"].tolist()
    sub = ds.subset(["Books"])
    keys = sub.items["item_key"].tolist()  # single-domain item order: ties go to the lower id
    timelines = domain_timelines(ds, "Books")
    counts = dict.fromkeys(keys, 0)
    for seq in timelines.values():  # training: all but the validation and test targets
        for k in (seq[:-2] if len(seq) >= 3 else seq):
            counts[k] += 1
    for target_key, rank in zip(rows["target_key"], rows["rank"]):
        c, pos = counts[target_key], keys.index(target_key)
        assert rank == sum(counts[k] > c or (counts[k] == c and j < pos) for j, k in enumerate(keys))


def test_missing_checkpoint_says_what_to_run(world):
    with pytest.raises(FileNotFoundError, match=r"no trained bert4rec for synthetic/Books.*reproduce\.sh run"):
        baseline_on_rows("bert4rec", "synthetic", "Books", profile="unit")
    with pytest.raises(ValueError, match="model must be one of"):
        baseline_on_rows("gru4rec", "synthetic", "Books", profile="unit")
    with pytest.raises(ValueError, match="not 'other-set'"):
        baseline_on_rows("pop", "other-set", "Books", profile="unit")


# ---------------------------------------------------------------------------------------------
# paired_comparison on hand-made rows
# ---------------------------------------------------------------------------------------------
def make_rows(users, domains, ranks, targets=None):
    return {"user_key": list(users), "domain": list(domains), "rank": list(ranks),
            "target_key": list(targets if targets is not None else [f"T{u}{d}" for u, d in zip(users, domains)])}


def test_paired_comparison_aligns_by_user_and_domain_not_by_position():
    a = make_rows(["u1", "u2", "u3", "u4", "u5", "u1"], ["X", "X", "X", "X", "X", "Y"], [0, 3, 50, 1, 9, 2])
    # b: another order, u5 missing, an extra user u9; u1 appears in two domains with different ranks
    b = make_rows(["u4", "u9", "u1", "u3", "u1", "u2"], ["X", "X", "Y", "X", "X", "X"], [12, 0, 0, 2, 4, -1])
    m = align_rows(a, b)
    assert list(zip(m["user"], m["domain"])) == [("u1", "X"), ("u2", "X"), ("u3", "X"), ("u4", "X"), ("u1", "Y")]
    assert m["rank_a"].tolist() == [0, 3, 50, 1, 2] and m["rank_b"].tolist() == [4, -1, 2, 12, 0]
    res = paired_comparison(a, b, "ndcg@10")
    va = metrics_from_ranks([0, 3, 50, 1, 2], [10], per_row=True)["ndcg@10"]
    vb = metrics_from_ranks([4, -1, 2, 12, 0], [10], per_row=True)["ndcg@10"]
    t, p = paired_ttest(va, vb)
    assert (res["n"], res["only_a"], res["only_b"]) == (5, 1, 1)
    assert res["t"] == pytest.approx(t) and res["p"] == pytest.approx(p)
    assert res["mean_a"] == pytest.approx(va.mean()) and res["diff"] == pytest.approx((va - vb).mean())
    # pairing by position would give another answer
    pos = paired_ttest(metrics_from_ranks(a["rank"][:5], [10], per_row=True)["ndcg@10"],
                       metrics_from_ranks(b["rank"][:5], [10], per_row=True)["ndcg@10"])
    assert pos.t != pytest.approx(t)
    # the metric is read off the ranks: recall@1 and the full MRR
    assert paired_comparison(a, b, "recall@1")["mean_a"] == pytest.approx(0.2)
    assert paired_comparison(a, b, "mrr")["mean_b"] == pytest.approx(np.mean([1 / 5, 0, 1 / 3, 1 / 13, 1]))


def test_paired_comparison_takes_records_and_per_mode_ranks():
    a = make_rows(["u1", "u2", "u3"], ["X"] * 3, [0, 1, 2])
    gencdr = {"name": "gencdr", "extra": {"rows": {**make_rows(["u3", "u1", "u2"], ["X"] * 3, [0] * 3),
                                                  "rank": {"fused": [5, 0, 1], "universal": [2, 2, 2]},
                                                  "gamma": [0.5]}}}
    assert rows_of(gencdr)["rank"] == [5, 0, 1]  # "fused" by default
    assert align_rows(a, gencdr, mode_b="universal")["rank_b"].tolist() == [2, 2, 2]
    assert align_rows(a, gencdr)["rank_b"].tolist() == [0, 1, 5]
    with pytest.raises(ValueError, match="pass mode="):
        rows_of({"rank": {"x": [1], "y": [2]}, "user_key": ["u"], "domain": ["X"]})
    with pytest.raises(ValueError, match="no per-row ranks"):
        rows_of({"name": "r", "extra": {}})


def test_paired_comparison_refuses_rows_that_do_not_match():
    a = make_rows(["u1", "u2"], ["X", "X"], [0, 1], targets=["A", "B"])
    with pytest.raises(ValueError, match="target 'B' in a but 'C' in b"):
        align_rows(a, make_rows(["u2", "u1"], ["X", "X"], [0, 1], targets=["C", "A"]))
    with pytest.raises(ValueError, match="twice"):
        align_rows(a, make_rows(["u1", "u1"], ["X", "X"], [0, 1], targets=["A", "A"]))
    with pytest.raises(ValueError, match="unknown metric"):
        paired_comparison(a, a, "auc")


def test_the_rows_of_tigers_benchmark_are_those_tiger_is_tested_on(world):
    """A set that only TIGER's benchmark evaluates: its domains and its own rows per domain, the rows
    :func:`xdrec.tiger.experiment.build` tests on (``evaluation_rows`` of the chosen domains' split)."""
    from xdrec.comparison import generative_test_rows
    from xdrec.generative import evaluation_rows

    ds, _ = world
    prof = profiles.PROFILES["unit"]
    prof["gencdr_tokenizer"]["datasets"] = {}
    prof["tiger_benchmark"].update(dataset="synthetic", domains=["Books"], eval={"test_rows_per_domain": 25})
    rows = generative_test_rows("synthetic", profile="unit", seed=1)
    want = evaluation_rows(leave_last_out(ds.subset(["Books"])).test, 25, 1)
    assert len(rows) == 25 and rows["user"].tolist() == want["user"].tolist()
    assert set(rows["domain_name"]) == {"Books"}
    rec = baseline_on_rows("pop", "synthetic", "Books", profile="unit", seed=1)
    assert rec["extra"]["rows"]["user"] == want["user"].tolist() and rec["metrics"]["n"] == 25
    with pytest.raises(ValueError, match="TIGER's benchmark on 'synthetic', not 'other-set'"):
        baseline_on_rows("pop", "other-set", "Books", profile="unit")

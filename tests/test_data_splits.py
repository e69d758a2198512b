"""k-core, leave-last-out and the X-Cross user split, on hand-built data with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xdrec import data
from xdrec.data import LeaveLastOutSplit, UserSplit, assemble


def test_kcore_cascades_until_stable():
    df = pd.DataFrame([("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2"),
                       ("u3", "i1"), ("u3", "i3"), ("u4", "i3")], columns=["user", "item"])
    # u4 (1 row) goes -> i3 drops to 1 -> goes -> u3 drops to 1 -> goes; i1 keeps 2
    out = data.kcore(df, 2)
    assert list(map(tuple, out.to_numpy())) == [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2")]
    assert len(data.kcore(df, 1)) == 7
    assert data.kcore(df, 3).empty
    renamed = df.rename(columns={"user": "who", "item": "what"})
    assert len(data.kcore(renamed, 2, user_col="who", item_col="what")) == 4
    with pytest.raises(ValueError):
        data.kcore(df, 0)


A = ["a1", "a2", "a3", "a4"]       # item ids 0..3 (domain A)
B = ["b1", "b2", "b3"]             # item ids 4..6 (domain B)
ID = {k: i for i, k in enumerate(A + B)}


def timeline_dataset():
    """u1: a1 b1 a2 b2 a3 b3 a4 | u2: b1 a1 a2 b2 (too short everywhere) | u3: a2 a3 a4 b1."""
    timelines = {"u1": ["a1", "b1", "a2", "b2", "a3", "b3", "a4"],
                 "u2": ["b1", "a1", "a2", "b2"],
                 "u3": ["a2", "a3", "a4", "b1"]}
    events = pd.DataFrame([(u, 0 if k[0] == "a" else 1, k) for u, seq in timelines.items() for k in seq],
                          columns=["user_key", "domain", "item_key"])
    items = pd.DataFrame([(0, k, k) for k in A] + [(1, k, k) for k in B], columns=["domain", "item_key", "text"])
    return assemble("timeline", ["A", "B"], events, items, timeline="given")


def ids(*keys):
    return [ID[k] for k in keys]


def rows(df):
    return [(r.user, r.domain, list(r.history), r.target) for r in df.itertuples()]


def test_leave_last_out_exact_rows():
    split = data.leave_last_out(timeline_dataset())
    assert rows(split.valid) == [
        (0, 0, ids("a1", "b1", "a2", "b2"), ID["a3"]),
        (0, 1, ids("a1", "b1", "a2"), ID["b2"]),
        (2, 0, ids("a2"), ID["a3"]),
    ]
    assert rows(split.test) == [
        (0, 0, ids("a1", "b1", "a2", "b2", "a3", "b3"), ID["a4"]),
        (0, 1, ids("a1", "b1", "a2", "b2", "a3"), ID["b3"]),
        (2, 0, ids("a2", "a3"), ID["a4"]),
    ]
    assert {u: s.tolist() for u, s in split.train.items()} == {
        0: ids("a1", "b1", "a2"),
        1: ids("b1", "a1", "a2", "b2"),       # < 3 items in each domain: all in train
        2: ids("a2", "b1"),
    }
    # no validation or test target leaks into its user's training sequence
    for part in (split.valid, split.test):
        for r in part.itertuples():
            assert r.target not in split.train[r.user].tolist()
    assert all(len(h) for h in split.test["history"])


def test_leave_last_out_no_leak_by_position():
    ds = timeline_dataset()
    split = data.leave_last_out(ds)
    seqs = ds.sequences()
    for u, full in seqs.items():
        removed = [r.target for part in (split.valid, split.test) for r in part.itertuples() if r.user == u]
        expected = list(full)
        for t in removed:                  # each target occurs once in these timelines
            expected.remove(t)
        assert split.train[u].tolist() == expected


def test_leave_last_out_single_target_domain():
    split = data.leave_last_out(timeline_dataset(), target_domains=["B"])
    assert rows(split.valid) == [(0, 1, ids("a1", "b1", "a2"), ID["b2"])]
    assert rows(split.test) == [(0, 1, ids("a1", "b1", "a2", "b2", "a3"), ID["b3"])]
    assert split.train[0].tolist() == ids("a1", "b1", "a2", "a3", "a4")
    assert split.target_domains == [1]


def test_leave_last_out_summary_and_round_trip(tmp_path):
    split = data.leave_last_out(timeline_dataset())
    s = split.summary()
    assert s.loc["all", ["train_users", "train_interactions", "valid", "test"]].tolist() == [3, 9, 3, 3]
    assert s.loc["A", ["valid", "test", "train_interactions"]].tolist() == [2, 2, 5]
    assert s.loc["B", ["valid", "test", "train_interactions"]].tolist() == [1, 1, 4]
    split.save(tmp_path / "llo")
    back = LeaveLastOutSplit.load(tmp_path / "llo")
    assert rows(back.valid) == rows(split.valid) and rows(back.test) == rows(split.test)
    assert {u: s.tolist() for u, s in back.train.items()} == {u: s.tolist() for u, s in split.train.items()}
    assert back.domains == split.domains and back.target_domains == split.target_domains
    assert back.test["history"].map(type).eq(list).all()


def test_user_split_ratios_determinism_and_rows(tmp_path):
    ds = data.make_synthetic(n_users=100, seed=3)
    split = data.user_split(ds, "Movies", seed=7)
    assert (len(split.train), len(split.valid), len(split.test)) == (60, 20, 20)
    parts = [set(split.train["user"]), set(split.valid["user"]), set(split.test["user"])]
    assert set.union(*parts) == set(range(100)) and sum(map(len, parts)) == 100
    again = data.user_split(ds, 1, seed=7)
    assert again.test["user"].tolist() == split.test["user"].tolist()
    assert data.user_split(ds, 1, seed=8).test["user"].tolist() != split.test["user"].tolist()
    seqs = ds.sequences("Movies")
    for r in split.test.itertuples():
        assert list(r.history) + [r.target] == seqs[r.user].tolist() and r.domain == 1
    assert all(np.array_equal(split.train_sequences[u], seqs[u]) for u in split.train["user"])
    assert split.summary()["train_users"] == 60
    split.save(tmp_path / "us")
    back = UserSplit.load(tmp_path / "us")
    assert rows(back.test) == rows(split.test) and back.summary() == split.summary()


def test_user_split_uneven_ratios_and_short_users():
    ds = timeline_dataset()
    split = data.user_split(ds, "B", ratios=(1, 1, 1), seed=0)
    # u1 (3 B-items) and u2 (2) qualify; u3 has a single B-item
    assert split.skipped_users == 1
    assert sorted(set(split.train["user"]) | set(split.valid["user"]) | set(split.test["user"])) == [0, 1]
    with pytest.raises(ValueError):
        data.user_split(ds, "B", ratios=(1, 1))

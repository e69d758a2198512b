"""The synthetic generator: determinism and the planted structure."""
from __future__ import annotations

import numpy as np
import pandas as pd

from xdrec import data


def test_synthetic_is_deterministic():
    a, b = data.make_synthetic(seed=5), data.make_synthetic(seed=5)
    for attr in ("items", "interactions", "users"):
        pd.testing.assert_frame_equal(getattr(a, attr), getattr(b, attr))
    assert a.meta == b.meta
    c = data.make_synthetic(seed=6)
    assert not a.interactions["item"].equals(c.interactions["item"])


def test_synthetic_shape():
    ds = data.make_synthetic(n_users=50, n_domains=3, items_per_domain=30, n_clusters=3, seq_len=(4, 5))
    assert ds.domains == ["Books", "Movies", "Music"]
    assert ds.n_users == 50 and ds.n_items <= 90
    counts = ds.user_domain_counts().to_numpy()
    assert counts.min() >= 4 and counts.max() <= 5          # seq_len per domain
    user_cluster, item_cluster, item_rank = data.ground_truth(ds)
    assert len(user_cluster) == ds.n_users and len(item_cluster) == len(item_rank) == ds.n_items


def test_synthetic_planted_structure():
    ds = data.make_synthetic(n_users=300, noise=0.1, seed=0)
    user_cluster, item_cluster, item_rank = data.ground_truth(ds)
    in_cluster = successor = steps = 0
    for u, seq in ds.sequences().items():
        in_cluster += int((item_cluster[seq] == user_cluster[u]).sum())
    for d in range(ds.n_domains):
        size = np.bincount(item_cluster[ds.domain_items(d)])
        for u, seq in ds.sequences(d).items():
            prev, nxt = seq[:-1], seq[1:]
            same = (item_cluster[prev] == item_cluster[nxt]) & (item_cluster[nxt] == user_cluster[u])
            successor += int((same & (item_rank[nxt] == (item_rank[prev] + 1) % size[item_cluster[prev]])).sum())
            steps += len(nxt)
    assert in_cluster / ds.n_interactions > 0.8
    assert successor / steps > 0.5
    # the text reveals the cluster
    assert all(t.startswith(f"cluster-{c} ") for t, c in zip(ds.items["text"], item_cluster))
    # domains are interleaved on the timeline, not one block after the other
    switches = ds.interactions.groupby("user")["domain"].apply(lambda s: int((s.diff().fillna(0) != 0).sum()))
    assert (switches > 1).mean() > 0.9


def test_synthetic_round_trips_ground_truth(tmp_path):
    ds = data.make_synthetic(n_users=20)
    ds.save(tmp_path / "syn")
    back = data.MultiDomainDataset.load(tmp_path / "syn")
    for x, y in zip(data.ground_truth(ds), data.ground_truth(back)):
        assert np.array_equal(x, y)

"""A small synthetic multi-domain dataset with a known, planted structure.

Used by tests and the book to check that a model can learn what it should:

* the items of every domain are split into ``n_clusters`` latent clusters, and inside a
  cluster they sit on a ring (rank ``0, 1, ..., m-1``);
* every user prefers one cluster, the same one in every domain;
* a user's next item in a domain is, with probability ``1 - noise``, from their cluster:
  mostly (probability ``follow``) the ring successor of their previous item in that domain,
  otherwise a uniformly chosen item of the cluster; with probability ``noise`` it is any
  item of the domain;
* each user's domains are interleaved at random on one timeline;
* item text names the cluster and uses words from the cluster's own vocabulary, so a text
  encoder can see the cluster.

The ground truth is stored in ``meta["ground_truth"]``; :func:`ground_truth` returns it as
arrays.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from xdrec.data.dataset import MultiDomainDataset, assemble

#: Domain names used in order (``domain<k>`` beyond these).
DOMAIN_NAMES = ("Books", "Movies", "Music", "Games", "Sports", "Garden", "Kitchen", "Toys")

#: One vocabulary per cluster; clusters beyond these get made-up words.
CLUSTER_WORDS = (
    ("ocean", "wave", "sail", "harbor", "tide", "coral", "anchor", "shore"),
    ("forest", "pine", "moss", "trail", "cabin", "fern", "oak", "camp"),
    ("galaxy", "rocket", "orbit", "planet", "comet", "lunar", "star", "nebula"),
    ("kitchen", "spice", "bake", "bread", "garlic", "soup", "pastry", "herb"),
    ("castle", "knight", "dragon", "sword", "quest", "kingdom", "shield", "wizard"),
    ("engine", "racing", "motor", "turbo", "garage", "tire", "speed", "circuit"),
    ("piano", "melody", "violin", "chorus", "rhythm", "jazz", "opera", "drum"),
    ("desert", "cactus", "dune", "canyon", "oasis", "sand", "mesa", "camel"),
)


def _cluster_words(c: int) -> tuple[str, ...]:
    if c < len(CLUSTER_WORDS):
        return CLUSTER_WORDS[c]
    return tuple(f"c{c}word{k}" for k in range(8))


def make_synthetic(
    n_users: int = 300,
    n_domains: int = 2,
    items_per_domain: int = 60,
    n_clusters: int = 4,
    seq_len: tuple[int, int] = (6, 12),
    noise: float = 0.1,
    seed: int = 0,
    *,
    follow: float = 0.8,
) -> MultiDomainDataset:
    """Generate a synthetic dataset with a planted cluster and ring structure.

    Args:
        n_users: number of users; every user is active in every domain.
        n_domains: number of domains.
        items_per_domain: items per domain (at least ``n_clusters``); they are split into
            ``n_clusters`` contiguous, near-equal blocks.
        n_clusters: latent clusters (shared meaning across domains: cluster ``c`` has the
            same vocabulary in every domain).
        seq_len: inclusive range of the number of items a user has *in each domain*.
        noise: probability that a step ignores the user's cluster (uniform over the domain).
        seed: the generator is fully determined by it.
        follow: within the cluster, probability of taking the ring successor of the user's
            previous item in that domain (else a uniform item of the cluster).

    The ground truth is in ``meta["ground_truth"]``: ``user_cluster`` (per user id),
    ``item_cluster`` and ``item_rank`` (per item id: cluster and place on the ring).
    """
    if items_per_domain < n_clusters:
        raise ValueError("items_per_domain must be >= n_clusters")
    lo, hi = seq_len
    if not 1 <= lo <= hi:
        raise ValueError(f"seq_len must be (lo, hi) with 1 <= lo <= hi, got {seq_len}")
    if not 0.0 <= noise <= 1.0 or not 0.0 <= follow <= 1.0:
        raise ValueError("noise and follow must be probabilities")
    rng = np.random.default_rng(seed)
    domains = [DOMAIN_NAMES[d] if d < len(DOMAIN_NAMES) else f"domain{d}" for d in range(n_domains)]

    # ---- items: contiguous near-equal cluster blocks, each a ring
    local_cluster = np.repeat(np.arange(n_clusters), np.diff(np.linspace(0, items_per_domain, n_clusters + 1).round().astype(int)))
    block_start = np.r_[0, np.cumsum(np.bincount(local_cluster, minlength=n_clusters))[:-1]]
    block_size = np.bincount(local_cluster, minlength=n_clusters)
    local_rank = np.arange(items_per_domain) - block_start[local_cluster]

    item_rows = []
    for d, dname in enumerate(domains):
        for j in range(items_per_domain):
            c = int(local_cluster[j])
            words = rng.choice(_cluster_words(c), size=3, replace=False)
            item_rows.append((d, f"{dname[:3].upper()}{j:04d}",
                              f"cluster-{c} {' '.join(words)} {dname} item {int(local_rank[j])}"))
    item_table = pd.DataFrame(item_rows, columns=["domain", "item_key", "text"])

    # ---- users and their timelines
    user_cluster = rng.integers(n_clusters, size=n_users)
    events = []
    for u in range(n_users):
        c = int(user_cluster[u])
        lengths = rng.integers(lo, hi + 1, size=n_domains)
        per_domain = []
        for d in range(n_domains):
            seq, prev_rank = [], None
            for _ in range(int(lengths[d])):
                if rng.random() < noise:
                    j = int(rng.integers(items_per_domain))
                else:
                    if prev_rank is not None and rng.random() < follow:
                        rank = (prev_rank + 1) % int(block_size[c])
                    else:
                        rank = int(rng.integers(block_size[c]))
                    j = int(block_start[c] + rank)
                # the ring continues from wherever the user is in their cluster
                prev_rank = int(local_rank[j]) if local_cluster[j] == c else prev_rank
                seq.append(j)
            per_domain.append(seq)
        # interleave the domains at random, keeping each domain's order
        order = rng.permutation(np.repeat(np.arange(n_domains), lengths))
        cursor = [0] * n_domains
        for d in order:
            j = per_domain[d][cursor[d]]
            cursor[d] += 1
            events.append((f"u{u:05d}", int(d), f"{domains[d][:3].upper()}{j:04d}"))
    events_df = pd.DataFrame(events, columns=["user_key", "domain", "item_key"])

    ds = assemble("synthetic", domains, events_df, item_table, timeline="given", meta={
        "source": "synthetic",
        "params": {"n_users": n_users, "n_domains": n_domains, "items_per_domain": items_per_domain,
                   "n_clusters": n_clusters, "seq_len": [lo, hi], "noise": noise, "seed": seed, "follow": follow},
    })
    # Items unused by every user would be dropped by assemble; keep the ground truth aligned
    # with the final item ids through the item keys.
    local_index = ds.items["item_key"].str[3:].astype(int).to_numpy()
    users_order = ds.users["user_key"].str[1:].astype(int).to_numpy()
    ds.meta["ground_truth"] = {
        "user_cluster": user_cluster[users_order].tolist(),
        "item_cluster": local_cluster[local_index].tolist(),
        "item_rank": local_rank[local_index].tolist(),
    }
    return ds


def ground_truth(ds: MultiDomainDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user_cluster, item_cluster, item_rank)`` of a dataset made by :func:`make_synthetic`."""
    try:
        gt = ds.meta["ground_truth"]
    except KeyError:
        raise ValueError(f"{ds.name!r} has no planted ground truth (not made by make_synthetic)") from None
    return (np.asarray(gt["user_cluster"], dtype=np.int64), np.asarray(gt["item_cluster"], dtype=np.int64),
            np.asarray(gt["item_rank"], dtype=np.int64))

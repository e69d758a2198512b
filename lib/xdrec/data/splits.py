"""k-core filtering and the two evaluation splits used by the papers.

* :func:`leave_last_out` (GenCDR, UTGRec and most sequential recommenders): per user and
  target domain, the last item is the test target and the one before it the validation
  target; training sees everything else.
* :func:`user_split` (X-Cross): the users of a domain are split 3:1:1 into train,
  validation and test users; a validation/test user is scored on predicting the last item
  of their history from the rest.

Both split objects can be saved to and loaded from a folder of Parquet files and give a
``summary()`` of their counts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from xdrec.data.dataset import MultiDomainDataset, _group_by_user
from xdrec.io import read_json, write_json, write_parquet

SPLIT_COLUMNS = ["user", "domain", "history", "target"]


# ====================================================================== k-core

def kcore(interactions: pd.DataFrame, k: int, *, user_col: str = "user", item_col: str = "item") -> pd.DataFrame:
    """The ``k``-core of an interaction table: every user and every item has >= ``k`` rows.

    Users and items below ``k`` are removed repeatedly until none is left (removing an item
    can push a user below ``k`` and the other way round). Each row counts once, so a
    repeated (user, item) pair counts twice. Row order is kept; the index is reset.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    df = interactions
    while True:
        user_counts = df.groupby(user_col, sort=False)[user_col].transform("size").to_numpy()
        item_counts = df.groupby(item_col, sort=False)[item_col].transform("size").to_numpy()
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return df.reset_index(drop=True)
        df = df[keep]


# ====================================================================== helpers

def _history_frame(rows: list[tuple[int, int, list[int], int]]) -> pd.DataFrame:
    return pd.DataFrame({
        "user": np.asarray([r[0] for r in rows], dtype=np.int64),
        "domain": np.asarray([r[1] for r in rows], dtype=np.int64),
        "history": pd.Series([r[2] for r in rows], dtype=object),
        "target": np.asarray([r[3] for r in rows], dtype=np.int64),
    })


def _write_sequences(path: Path, sequences: dict[int, np.ndarray]) -> None:
    users = sorted(sequences)
    write_parquet(path, pd.DataFrame({
        "user": np.asarray(users, dtype=np.int64),
        "items": pd.Series([sequences[u].tolist() for u in users], dtype=object),
    }))


def _read_sequences(path: Path) -> dict[int, np.ndarray]:
    df = pd.read_parquet(path)
    return {int(u): np.asarray(s, dtype=np.int64) for u, s in zip(df["user"], df["items"])}


def _read_rows(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df["history"] = pd.Series([[int(x) for x in h] for h in df["history"]], dtype=object, index=df.index)
    for c in ("user", "domain", "target"):
        df[c] = df[c].astype(np.int64)
    return df


# ====================================================================== leave-last-out

@dataclass
class LeaveLastOutSplit:
    """A leave-last-out split of a multi-domain dataset.

    Attributes:
        train: ``{user: merged chronological sequence of global item ids}`` with every
            validation and test target (of every target domain) removed.
        valid, test: one row per (user, target domain) with columns ``user``, ``domain``,
            ``history`` (list of item ids: the user's whole merged timeline before the
            target; for test rows it includes the validation target) and ``target``.
        target_domains: ids of the domains that have valid/test rows.
        domains: all domain names of the dataset.
        item_domain: domain id of every item (for per-domain counts).
    """

    train: dict[int, np.ndarray]
    valid: pd.DataFrame
    test: pd.DataFrame
    target_domains: list[int]
    domains: list[str]
    item_domain: np.ndarray = field(repr=False)

    def summary(self) -> pd.DataFrame:
        """Per domain (and ``"all"``): train users/interactions, valid and test rows, mean test history."""
        train_items = np.concatenate(list(self.train.values())) if self.train else np.zeros(0, dtype=np.int64)
        train_dom = self.item_domain[train_items]
        train_user_dom = [np.unique(self.item_domain[s]) for s in self.train.values()]
        rows = []
        for d, name in enumerate(self.domains):
            test_d = self.test[self.test["domain"] == d]
            rows.append({
                "domain": name,
                "train_users": sum(1 for doms in train_user_dom if d in doms),
                "train_interactions": int((train_dom == d).sum()),
                "valid": int((self.valid["domain"] == d).sum()),
                "test": len(test_d),
                "mean_test_history": float(test_d["history"].map(len).mean()) if len(test_d) else float("nan"),
            })
        rows.append({
            "domain": "all",
            "train_users": len(self.train),
            "train_interactions": len(train_items),
            "valid": len(self.valid),
            "test": len(self.test),
            "mean_test_history": float(self.test["history"].map(len).mean()) if len(self.test) else float("nan"),
        })
        return pd.DataFrame(rows).set_index("domain")

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``train/valid/test.parquet`` and ``split.json`` (written last) into ``directory``."""
        directory = Path(directory)
        _write_sequences(directory / "train.parquet", self.train)
        write_parquet(directory / "valid.parquet", self.valid)
        write_parquet(directory / "test.parquet", self.test)
        write_json(directory / "split.json", {"kind": "leave_last_out", "target_domains": self.target_domains,
                                              "domains": self.domains, "item_domain": self.item_domain.tolist()})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "LeaveLastOutSplit":
        directory = Path(directory)
        head = read_json(directory / "split.json")
        if head.get("kind") != "leave_last_out":
            raise ValueError(f"{directory}: not a leave-last-out split ({head.get('kind')!r})")
        return cls(train=_read_sequences(directory / "train.parquet"),
                   valid=_read_rows(directory / "valid.parquet"),
                   test=_read_rows(directory / "test.parquet"),
                   target_domains=[int(d) for d in head["target_domains"]],
                   domains=list(head["domains"]),
                   item_domain=np.asarray(head["item_domain"], dtype=np.int64))


def leave_last_out(ds: MultiDomainDataset, target_domains: Sequence[int | str] | None = None) -> LeaveLastOutSplit:
    """Leave-last-out split on each user's merged cross-domain timeline.

    For every user and target domain ``d`` (default: all domains) with at least 3 items in
    ``d``: the last ``d``-item is the test target, the second-to-last the validation
    target. Users with fewer than 3 items in ``d`` get no row for ``d`` and keep their
    ``d``-items in training. The training sequence of a user is their merged timeline with
    all validation and test targets removed, so no target leaks into training.
    """
    targets = list(range(ds.n_domains)) if target_domains is None else [ds.domain_id(d) for d in target_domains]
    inter = ds.interactions
    grp = inter.groupby(["user", "domain"], sort=False)
    from_end = grp.cumcount(ascending=False).to_numpy()
    in_domain = grp["item"].transform("size").to_numpy()
    eligible = np.isin(inter["domain"].to_numpy(), targets) & (in_domain >= 3)
    is_test = eligible & (from_end == 0)
    is_valid = eligible & (from_end == 1)

    users = inter["user"].to_numpy()
    items = inter["item"].to_numpy()
    keep = ~(is_test | is_valid)
    train = _group_by_user(users[keep], items[keep])
    timelines = _group_by_user(users, items)

    def rows(mask: np.ndarray) -> pd.DataFrame:
        sel = inter[mask]
        out = [(u, d, timelines[u][:p].tolist(), t)
               for u, d, p, t in zip(sel["user"].tolist(), sel["domain"].tolist(),
                                     sel["position"].tolist(), sel["item"].tolist())]
        return _history_frame(out).sort_values(["user", "domain"], kind="stable").reset_index(drop=True)

    return LeaveLastOutSplit(train=train, valid=rows(is_valid), test=rows(is_test), target_domains=targets,
                             domains=list(ds.domains), item_domain=ds.items["domain"].to_numpy())


# ====================================================================== user split (X-Cross)

@dataclass
class UserSplit:
    """Users of one domain split into train / validation / test users (X-Cross protocol).

    Attributes:
        domain: the domain id; ``domain_name`` its name.
        train, valid, test: one row per user with columns ``user``, ``domain``,
            ``history`` (the user's items of this domain, all but the last) and ``target``
            (the last one).
        train_sequences: the whole in-domain sequences of the training users.
        ratios, seed: how the split was drawn.
        skipped_users: users of the domain with fewer than 2 items (no history/target).
    """

    domain: int
    domain_name: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    train_sequences: dict[int, np.ndarray]
    ratios: tuple[float, ...]
    seed: int
    skipped_users: int = 0

    def summary(self) -> dict:
        """Counts of users (and interactions) in each part."""
        return {
            "domain": self.domain_name,
            "train_users": len(self.train),
            "valid_users": len(self.valid),
            "test_users": len(self.test),
            "train_interactions": int(sum(len(s) for s in self.train_sequences.values())),
            "skipped_users": self.skipped_users,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        write_parquet(directory / "train.parquet", self.train)
        write_parquet(directory / "valid.parquet", self.valid)
        write_parquet(directory / "test.parquet", self.test)
        _write_sequences(directory / "train_sequences.parquet", self.train_sequences)
        write_json(directory / "split.json", {"kind": "user_split", "domain": self.domain, "domain_name": self.domain_name,
                                              "ratios": list(self.ratios), "seed": self.seed,
                                              "skipped_users": self.skipped_users})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "UserSplit":
        directory = Path(directory)
        head = read_json(directory / "split.json")
        if head.get("kind") != "user_split":
            raise ValueError(f"{directory}: not a user split ({head.get('kind')!r})")
        return cls(domain=int(head["domain"]), domain_name=head["domain_name"],
                   train=_read_rows(directory / "train.parquet"), valid=_read_rows(directory / "valid.parquet"),
                   test=_read_rows(directory / "test.parquet"),
                   train_sequences=_read_sequences(directory / "train_sequences.parquet"),
                   ratios=tuple(head["ratios"]), seed=int(head["seed"]), skipped_users=int(head["skipped_users"]))


def user_split(ds: MultiDomainDataset, domain: int | str, ratios: Sequence[float] = (3, 1, 1), seed: int = 0) -> UserSplit:
    """Split the users of ``domain`` into train / validation / test users (X-Cross).

    The users with at least 2 items in the domain are sorted, shuffled with
    ``numpy.random.default_rng(seed)`` and cut in the proportions ``ratios`` (rounded
    cumulatively). Each row's history is the user's in-domain sequence but the last item;
    the target is the last item. Training users also get their full sequences.
    """
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers with a positive sum, got {ratios}")
    d = ds.domain_id(domain)
    sequences = ds.sequences(d)
    eligible = np.asarray(sorted(u for u, s in sequences.items() if len(s) >= 2), dtype=np.int64)
    shuffled = np.random.default_rng(seed).permutation(eligible)
    cuts = np.round(np.cumsum(ratios)[:2] / float(sum(ratios)) * len(shuffled)).astype(int)
    parts = np.split(shuffled, cuts)

    def rows(part: np.ndarray) -> pd.DataFrame:
        return _history_frame([(int(u), d, sequences[u][:-1].tolist(), int(sequences[u][-1])) for u in np.sort(part)])

    train_users = np.sort(parts[0])
    return UserSplit(domain=d, domain_name=ds.domains[d], train=rows(parts[0]), valid=rows(parts[1]),
                     test=rows(parts[2]), train_sequences={int(u): sequences[int(u)] for u in train_users},
                     ratios=tuple(float(r) for r in ratios), seed=seed,
                     skipped_users=len(sequences) - len(eligible))

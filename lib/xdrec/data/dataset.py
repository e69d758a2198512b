"""The one canonical form every dataset in xdrec takes: :class:`MultiDomainDataset`.

Whatever the source (the processed research sets in ``shared/data``, the official Amazon
raw dumps, or the synthetic generator), a loader ends by building one of these. Models,
splits and metrics only ever see this form.

The form, in words:

* a **domain** is a product category (``"Sports"``, ``"Toys"``); its id is its index in
  ``domains``;
* an **item** is a (domain, raw item key) pair with a global integer id ``0..n_items-1``;
  items are numbered domain by domain, so each domain's items form one contiguous block.
  The same ASIN in two domains is two different items;
* a **user** has a global integer id ``0..n_users-1`` shared by all domains (users are
  matched across domains by their raw key, e.g. the Amazon reviewerID);
* an **interaction** is one (user, item) event; ``position`` orders a user's events on one
  merged, cross-domain timeline (``0, 1, 2, ...``), and ``timestamp`` holds unix seconds
  where the source has them (``-1`` where it does not).

:func:`assemble` turns a "long" table of raw events (raw keys, per-domain order or
timestamps) into this form; :func:`apply_missing_text_policy` decides what happens to items
without any text.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from xdrec.io import read_json, write_json, write_parquet

#: Bumped whenever the on-disk layout written by :meth:`MultiDomainDataset.save` changes.
FORMAT_VERSION = 1

ITEM_COLUMNS = ["item", "item_key", "domain", "text"]
INTERACTION_COLUMNS = ["user", "item", "domain", "position", "timestamp"]
USER_COLUMNS = ["user", "user_key"]

#: What to do with items that have no text (see :func:`apply_missing_text_policy`).
MISSING_TEXT_POLICIES = ("fallback", "drop", "empty")

#: How :func:`assemble` orders a user's events across domains.
TIMELINE_MODES = ("given", "timestamp", "interleave")


@dataclass
class MultiDomainDataset:
    """Users, items and interactions of several domains, in one canonical form.

    Attributes:
        name: dataset name (e.g. ``"amazon18-xcross"``).
        domains: domain names; a domain id is an index into this list.
        items: one row per item; columns ``item`` (int64, ``0..n-1`` in row order),
            ``item_key`` (str, raw ASIN), ``domain`` (int64), ``text`` (str, ``""`` if none).
        interactions: one row per event, sorted by (user, position); columns ``user``,
            ``item``, ``domain``, ``position`` (order on the user's merged timeline,
            ``0..``), ``timestamp`` (unix seconds, ``-1`` if unknown), all int64.
        users: one row per user; columns ``user`` (int64, ``0..U-1`` in row order) and
            ``user_key`` (str: raw reviewerID, or the source's user index as a string).
        meta: provenance (source files, policies applied and their counts, ...). Must be
            JSON-serialisable: it is saved as JSON.
    """

    name: str
    domains: list[str]
    items: pd.DataFrame
    interactions: pd.DataFrame
    users: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.domains = [str(d) for d in self.domains]
        self.items = _coerce(self.items, ITEM_COLUMNS, {"item_key", "text"})
        self.interactions = _coerce(self.interactions, INTERACTION_COLUMNS, set())
        self.users = _coerce(self.users, USER_COLUMNS, {"user_key"})
        self.validate()

    # ------------------------------------------------------------------ sizes and views
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_domains(self) -> int:
        return len(self.domains)

    @property
    def n_interactions(self) -> int:
        return len(self.interactions)

    def domain_id(self, domain: int | str) -> int:
        """The id of a domain given by name or id (raises ``KeyError`` if unknown)."""
        if isinstance(domain, (int, np.integer)):
            if not 0 <= int(domain) < self.n_domains:
                raise KeyError(f"domain id {domain} out of range 0..{self.n_domains - 1}")
            return int(domain)
        try:
            return self.domains.index(str(domain))
        except ValueError:
            raise KeyError(f"unknown domain {domain!r}; this dataset has {self.domains}") from None

    def domain_items(self, domain: int | str) -> np.ndarray:
        """Global ids of the items of one domain (a contiguous, increasing range)."""
        d = self.domain_id(domain)
        return self.items["item"].to_numpy()[self.items["domain"].to_numpy() == d]

    def item_texts(self) -> list[str]:
        """Item texts indexed by global item id."""
        return self.items["text"].tolist()

    def sequences(self, domain: int | str | None = None) -> dict[int, np.ndarray]:
        """Each user's items in timeline order: ``{user: array of global item ids}``.

        With ``domain`` given, only that domain's items are kept and users without any
        item in it are left out.
        """
        inter = self.interactions
        if domain is not None:
            inter = inter[inter["domain"].to_numpy() == self.domain_id(domain)]
        return _group_by_user(inter["user"].to_numpy(), inter["item"].to_numpy())

    def user_domain_counts(self) -> pd.DataFrame:
        """A users x domains table of interaction counts (columns are domain names)."""
        counts = np.zeros((self.n_users, self.n_domains), dtype=np.int64)
        np.add.at(counts, (self.interactions["user"].to_numpy(), self.interactions["domain"].to_numpy()), 1)
        return pd.DataFrame(counts, columns=self.domains)

    # ------------------------------------------------------------------ statistics
    def stats(self) -> pd.DataFrame:
        """One row per domain plus an ``"all"`` row.

        Columns: ``users`` (users with >= 1 interaction there), ``items``, ``interactions``,
        ``sparsity`` (``1 - interactions / (users * items)``), ``avg_seq_len``
        (interactions per user) and ``overlap_users`` (of those users, how many are active
        in at least two domains).
        """
        counts = self.user_domain_counts().to_numpy()
        active = counts > 0
        multi = active.sum(axis=1) >= 2
        item_domain = self.items["domain"].to_numpy()
        rows = []
        for d, name in enumerate(self.domains):
            rows.append(_stats_row(name, int(active[:, d].sum()), int((item_domain == d).sum()),
                                   int(counts[:, d].sum()), int((active[:, d] & multi).sum())))
        rows.append(_stats_row("all", self.n_users, self.n_items, self.n_interactions, int(multi.sum())))
        return pd.DataFrame(rows).set_index("domain")

    def overlap(self) -> pd.DataFrame:
        """Domains x domains table: number of users active in both (diagonal: in that one)."""
        active = (self.user_domain_counts().to_numpy() > 0).astype(np.int64)
        return pd.DataFrame(active.T @ active, index=self.domains, columns=self.domains)

    # ------------------------------------------------------------------ restriction
    def filter_items(self, keep: np.ndarray, *, name: str | None = None, meta: dict | None = None) -> "MultiDomainDataset":
        """A new dataset with only the items where ``keep`` (bool, per item id) is true.

        Interactions on removed items go; users left with no interaction go; items and
        users are renumbered contiguously (order kept) and positions are recomputed so that
        each user's timeline is again ``0, 1, 2, ...`` in the same relative order.
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_items,):
            raise ValueError(f"keep must have one entry per item ({self.n_items}), got shape {keep.shape}")
        inter = self.interactions[keep[self.interactions["item"].to_numpy()]]
        return _renumber(self, self.items[keep], inter, domains=self.domains,
                         name=name or self.name, meta=self.meta if meta is None else meta)

    def sample_users(self, per_domain: int, seed: int = 0) -> "MultiDomainDataset":
        """A new dataset with at most ``per_domain`` users of each domain (drawn with ``seed``
        from the users active there), all their events, and only the items they touched;
        renumbered as in :meth:`filter_items`. ``meta["user_sample"]`` says so."""
        if per_domain < 1:
            raise ValueError(f"per_domain must be >= 1, got {per_domain}")
        rng = np.random.default_rng(seed)
        active = self.user_domain_counts().to_numpy() > 0
        keep = np.zeros(self.n_users, dtype=bool)
        for d in range(self.n_domains):
            users = np.flatnonzero(active[:, d])
            keep[rng.choice(users, min(per_domain, len(users)), replace=False)] = True
        inter = self.interactions[keep[self.interactions["user"].to_numpy()]]
        items = self.items[np.isin(self.items["item"].to_numpy(), inter["item"].to_numpy())]
        meta = {**self.meta, "user_sample": {"per_domain": int(per_domain), "seed": int(seed), "of_users": self.n_users}}
        return _renumber(self, items, inter, domains=self.domains, name=self.name, meta=meta)

    def subset(self, domains: Sequence[int | str]) -> "MultiDomainDataset":
        """Keep only the given domains (by name or id), in the order given.

        The new domain ids follow the order of ``domains``; items, users and positions are
        renumbered as in :meth:`filter_items`.
        """
        ids = [self.domain_id(d) for d in domains]
        if len(set(ids)) != len(ids):
            raise ValueError(f"domains listed twice: {list(domains)}")
        if not ids:
            raise ValueError("subset needs at least one domain")
        remap = np.full(self.n_domains, -1, dtype=np.int64)
        remap[ids] = np.arange(len(ids))
        items = self.items[remap[self.items["domain"].to_numpy()] >= 0].copy()
        items["domain"] = remap[items["domain"].to_numpy()]
        # Items are numbered domain by domain in the new order; stable sort keeps the old
        # order inside each domain.
        items = items.sort_values("domain", kind="stable")
        inter = self.interactions[remap[self.interactions["domain"].to_numpy()] >= 0].copy()
        inter["domain"] = remap[inter["domain"].to_numpy()]
        meta = dict(self.meta)
        meta["subset"] = {"domains": [self.domains[i] for i in ids], "from": list(self.domains)}
        return _renumber(self, items, inter, domains=[self.domains[i] for i in ids], name=self.name, meta=meta)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``items/interactions/users.parquet`` and ``dataset.json`` into ``directory``.

        Each file is written atomically; ``dataset.json`` is written last, so its presence
        marks a complete save.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_parquet(directory / "items.parquet", self.items)
        write_parquet(directory / "interactions.parquet", self.interactions)
        write_parquet(directory / "users.parquet", self.users)
        write_json(directory / "dataset.json", {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "domains": self.domains,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.n_interactions,
            "meta": self.meta,
        })
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "MultiDomainDataset":
        """Read a dataset written by :meth:`save` (checks format version and row counts)."""
        directory = Path(directory)
        head = read_json(directory / "dataset.json")
        if head.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: dataset format {head.get('format_version')}, expected {FORMAT_VERSION}")
        ds = cls(
            name=head["name"],
            domains=head["domains"],
            items=pd.read_parquet(directory / "items.parquet"),
            interactions=pd.read_parquet(directory / "interactions.parquet"),
            users=pd.read_parquet(directory / "users.parquet"),
            meta=head.get("meta", {}),
        )
        found = (ds.n_users, ds.n_items, ds.n_interactions)
        expected = (head["n_users"], head["n_items"], head["n_interactions"])
        if found != expected:
            raise ValueError(f"{directory}: (users, items, interactions) {found} != {expected} in dataset.json")
        return ds

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` if any invariant of the canonical form is broken."""
        it, inter, us = self.items, self.interactions, self.users
        problems = []
        if not np.array_equal(it["item"].to_numpy(), np.arange(len(it))):
            problems.append("items.item must be 0..n_items-1 in row order")
        if not np.array_equal(us["user"].to_numpy(), np.arange(len(us))):
            problems.append("users.user must be 0..n_users-1 in row order")
        dom = it["domain"].to_numpy()
        if len(dom) and (dom.min() < 0 or dom.max() >= len(self.domains)):
            problems.append("items.domain out of range")
        if len(dom) > 1 and np.any(np.diff(dom) < 0):
            problems.append("items must be numbered domain by domain (items.domain non-decreasing)")
        if it.duplicated(["domain", "item_key"]).any():
            problems.append("duplicate (domain, item_key) in items")
        if us["user_key"].duplicated().any():
            problems.append("duplicate user_key in users")
        if len(inter):
            u, i, p = (inter[c].to_numpy() for c in ("user", "item", "position"))
            if u.min() < 0 or u.max() >= len(us) or i.min() < 0 or i.max() >= len(it):
                problems.append("interactions refer to unknown users or items")
            elif not np.array_equal(inter["domain"].to_numpy(), dom[i]):
                problems.append("interactions.domain disagrees with the item's domain")
            if np.any(np.diff(u) < 0):
                problems.append("interactions must be sorted by user")
            elif not np.array_equal(p, _ranks_within_groups(u)):
                problems.append("positions must be 0, 1, 2, ... within each user, in row order")
            if np.unique(u).size != len(us):
                problems.append("every user must have at least one interaction")
        elif len(us):
            problems.append("users without interactions")
        if problems:
            raise ValueError(f"invalid MultiDomainDataset {self.name!r}: " + "; ".join(problems))

    def __repr__(self) -> str:
        return (f"MultiDomainDataset(name={self.name!r}, domains={self.domains}, users={self.n_users}, "
                f"items={self.n_items}, interactions={self.n_interactions})")


# ====================================================================== building

def assemble(
    name: str,
    domains: Sequence[str],
    events: pd.DataFrame,
    item_table: pd.DataFrame,
    *,
    timeline: str,
    meta: dict | None = None,
) -> MultiDomainDataset:
    """Build a :class:`MultiDomainDataset` from raw events and a raw item table.

    Args:
        name: dataset name.
        domains: domain names, in id order.
        events: one row per event with columns ``user_key`` (str), ``domain`` (int),
            ``item_key`` (str) and optionally ``timestamp`` (int, unix seconds). Row order
            matters: it is the order within each (user, domain) (and, for
            ``timeline="given"``, the order of the user's merged timeline).
        item_table: columns ``domain``, ``item_key`` and ``text`` (``""`` or missing for no
            text), in the order items should be numbered within their domain. Items that
            occur in ``events`` but not here are added (without text) after the listed
            ones; listed items without any event are dropped.
        timeline: how a user's events of different domains are merged:

            * ``"given"``: the row order of ``events`` already is each user's timeline;
            * ``"timestamp"``: stable sort by timestamp (ties keep row order);
            * ``"interleave"``: for sources without timestamps. Each domain's history is
              spread evenly over the same time span: the ``i``-th of ``n`` events of a
              domain sits at ``(i + 0.5) / n``; ties go to the lower domain id. Order inside
              each domain is never changed.
        meta: provenance to store; ``timeline`` is added to it.

    Users are numbered in order of first appearance in ``events``; items domain by domain.
    """
    if timeline not in TIMELINE_MODES:
        raise ValueError(f"timeline must be one of {TIMELINE_MODES}, got {timeline!r}")
    domains = [str(d) for d in domains]
    ev = pd.DataFrame({
        "user_key": events["user_key"].astype(str).to_numpy(),
        "domain": events["domain"].to_numpy(dtype=np.int64),
        "item_key": events["item_key"].astype(str).to_numpy(),
        "timestamp": (events["timestamp"].to_numpy(dtype=np.int64) if "timestamp" in events
                      else np.full(len(events), -1, dtype=np.int64)),
    })
    if len(ev) and (ev["domain"].min() < 0 or ev["domain"].max() >= len(domains)):
        raise ValueError("events.domain out of range")

    # ---- items: listed ones first (in the given order), then unlisted ones seen in events
    listed = pd.DataFrame({
        "domain": item_table["domain"].to_numpy(dtype=np.int64),
        "item_key": item_table["item_key"].astype(str).to_numpy(),
        "text": item_table["text"].fillna("").astype(str).to_numpy() if "text" in item_table else "",
    }).drop_duplicates(["domain", "item_key"], keep="first")
    seen = ev[["domain", "item_key"]].drop_duplicates()
    unlisted = seen.merge(listed[["domain", "item_key"]], how="left", indicator=True)
    unlisted = unlisted[unlisted["_merge"] == "left_only"].drop(columns="_merge").assign(text="")
    items = pd.concat([listed, unlisted], ignore_index=True)
    items = items.merge(seen.assign(_used=True), how="left", on=["domain", "item_key"])
    items = items[items["_used"].eq(True)].drop(columns="_used")
    items = items.sort_values("domain", kind="stable").reset_index(drop=True)
    items.insert(0, "item", np.arange(len(items), dtype=np.int64))

    item_index = pd.MultiIndex.from_frame(items[["domain", "item_key"]])
    ev["item"] = item_index.get_indexer(pd.MultiIndex.from_frame(ev[["domain", "item_key"]])).astype(np.int64)

    # ---- users in order of first appearance
    user_codes, user_keys = pd.factorize(ev["user_key"], sort=False)
    ev["user"] = user_codes.astype(np.int64)
    users = pd.DataFrame({"user": np.arange(len(user_keys), dtype=np.int64), "user_key": np.asarray(user_keys, dtype=object)})

    # ---- the merged timeline
    ev["_row"] = np.arange(len(ev))
    if timeline == "given":
        order_keys = ["user", "_row"]
    elif timeline == "timestamp":
        order_keys = ["user", "timestamp", "_row"]
    else:
        grp = ev.groupby(["user", "domain"], sort=False)
        idx = grp.cumcount().to_numpy()
        size = grp["item"].transform("size").to_numpy()
        ev["_spread"] = (idx + 0.5) / size
        order_keys = ["user", "_spread", "domain", "_row"]
    ev = ev.sort_values(order_keys, kind="stable")
    inter = pd.DataFrame({
        "user": ev["user"].to_numpy(),
        "item": ev["item"].to_numpy(),
        "domain": ev["domain"].to_numpy(),
        "position": _ranks_within_groups(ev["user"].to_numpy()),
        "timestamp": ev["timestamp"].to_numpy(),
    })
    meta = dict(meta or {})
    meta["timeline"] = timeline
    return MultiDomainDataset(name=name, domains=domains, items=items, interactions=inter, users=users, meta=meta)


def apply_missing_text_policy(ds: MultiDomainDataset, policy: str = "fallback") -> MultiDomainDataset:
    """Decide what happens to items whose text is empty, and record it in ``meta``.

    Policies:

    * ``"fallback"`` (default): text becomes ``"<domain name> item <ASIN>"``;
    * ``"drop"``: those items and their interactions are removed, then users left without
      any interaction; ids and positions are renumbered;
    * ``"empty"``: keep the items with text ``""`` (for ID-only models).

    ``meta["missing_text"]`` records the policy and, per domain, the number of items
    without text and the number of interactions on them (for ``"drop"`` also how many
    users were removed). Raises ``ValueError`` for an unknown policy, or when ``"drop"``
    would leave a domain with no item at all.
    """
    if policy not in MISSING_TEXT_POLICIES:
        raise ValueError(f"missing_text must be one of {list(MISSING_TEXT_POLICIES)}, got {policy!r}")
    missing = ds.items["text"].str.strip().eq("").to_numpy()
    item_domain = ds.items["domain"].to_numpy()
    inter_missing = missing[ds.interactions["item"].to_numpy()]
    inter_domain = ds.interactions["domain"].to_numpy()
    per_domain = {
        name: {
            "items": int((item_domain == d).sum()),
            "items_without_text": int((missing & (item_domain == d)).sum()),
            "interactions": int((inter_domain == d).sum()),
            "interactions_on_items_without_text": int((inter_missing & (inter_domain == d)).sum()),
        }
        for d, name in enumerate(ds.domains)
    }
    record: dict[str, Any] = {"policy": policy, "per_domain": per_domain,
                              "items_without_text": int(missing.sum()),
                              "interactions_on_items_without_text": int(inter_missing.sum())}
    meta = dict(ds.meta)
    meta["missing_text"] = record
    if policy == "fallback":
        record["fallback_format"] = "{domain} item {item_key}"
        items = ds.items.copy()
        names = np.asarray(ds.domains, dtype=object)[item_domain[missing]]
        keys = items["item_key"].to_numpy()[missing]
        text = items["text"].to_numpy(dtype=object).copy()
        text[missing] = [f"{d} item {k}" for d, k in zip(names, keys)]
        items["text"] = text
        return MultiDomainDataset(ds.name, ds.domains, items, ds.interactions, ds.users, meta)
    if policy == "empty":
        return MultiDomainDataset(ds.name, ds.domains, ds.items, ds.interactions, ds.users, meta)
    emptied = [name for name, c in per_domain.items() if c["items"] and c["items"] == c["items_without_text"]]
    if emptied:
        raise ValueError(
            f"missing_text='drop' would remove every item of {emptied} in {ds.name!r} (no item text there); "
            "use missing_text='fallback' or 'empty'")
    out = ds.filter_items(~missing, meta=meta)
    was_active = ds.user_domain_counts().to_numpy() > 0
    removed = ~ds.users["user_key"].isin(set(out.users["user_key"])).to_numpy()
    record["users_removed"] = int(removed.sum())
    for d, name in enumerate(ds.domains):
        per_domain[name]["users_removed"] = int((removed & was_active[:, d]).sum())
    return out


# ====================================================================== helpers

def _coerce(df: pd.DataFrame, columns: list[str], string_cols: set[str]) -> pd.DataFrame:
    """Check the columns are present and give them their canonical dtypes (copying only if needed)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"missing columns {missing}; expected {columns}")
    out = {}
    for c in columns:
        col = df[c]
        if c in string_cols:
            out[c] = col.fillna("").astype(str).to_numpy(dtype=object)
        else:
            out[c] = col.to_numpy(dtype=np.int64)
    return pd.DataFrame(out)


def _ranks_within_groups(sorted_groups: np.ndarray) -> np.ndarray:
    """For an array sorted by group, the index of each element within its group (0, 1, ...)."""
    n = len(sorted_groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)


def _group_by_user(users: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    """``{user: values of that user}`` for arrays already sorted by user."""
    if len(users) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return {int(u): chunk for u, chunk in zip(users[starts], np.split(values, starts[1:]))}


def _renumber(ds: MultiDomainDataset, items: pd.DataFrame, inter: pd.DataFrame, *,
              domains: list[str], name: str, meta: dict) -> MultiDomainDataset:
    """Renumber items and users contiguously (order kept) and recompute positions."""
    item_map = np.full(ds.n_items, -1, dtype=np.int64)
    item_map[items["item"].to_numpy()] = np.arange(len(items))
    items = items.assign(item=np.arange(len(items), dtype=np.int64))

    kept_users = np.unique(inter["user"].to_numpy())
    user_map = np.full(ds.n_users, -1, dtype=np.int64)
    user_map[kept_users] = np.arange(len(kept_users))
    users = ds.users.iloc[kept_users].assign(user=np.arange(len(kept_users), dtype=np.int64))

    inter = inter.sort_values(["user", "position"], kind="stable")
    new_users = user_map[inter["user"].to_numpy()]
    inter = pd.DataFrame({
        "user": new_users,
        "item": item_map[inter["item"].to_numpy()],
        "domain": inter["domain"].to_numpy(),
        "position": _ranks_within_groups(new_users),
        "timestamp": inter["timestamp"].to_numpy(),
    })
    return MultiDomainDataset(name=name, domains=domains, items=items, interactions=inter, users=users, meta=meta)


def _stats_row(domain: str, users: int, items: int, interactions: int, overlap: int) -> dict:
    cells = users * items
    return {
        "domain": domain,
        "users": users,
        "items": items,
        "interactions": interactions,
        "sparsity": 1.0 - interactions / cells if cells else float("nan"),
        "avg_seq_len": interactions / users if users else float("nan"),
        "overlap_users": overlap,
    }


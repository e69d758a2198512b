"""Readers for the three processed research sets found in the shared data folder.

Each reader takes the set's folder and returns a :class:`MultiDomainDataset` whose item
texts are cleaned but *not yet* completed: items without text have ``text == ""``, and
:func:`xdrec.data.load` then applies the chosen missing-text policy.

* ``amazon18-xcross``: Amazon 2018, Electronics / Sports / Tools / Toys, item titles, no
  timestamps (X-Cross, via ``guy-hadad/RecFormer``).
* ``amazon14-food-kitchen``: Amazon 2014, Grocery & Gourmet Food and Home & Kitchen, users
  active in both, timestamps, partial titles (``DiMarzioBian/ABXI`` +
  ``xhran2010/LLMCDSR``).
* ``amazon14-5core-sequences``: Amazon 2014 5-core Sports / Beauty / Toys sequences, no
  timestamps (``zhaodong-liu/GRAM``); item text (title and category paths) for Beauty only
  (``Linxyhaha/TransRec``'s maps, aligned to GRAM's ASINs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from xdrec.data.dataset import MultiDomainDataset, assemble
from xdrec.data.text import clean_text
from xdrec.io import BadInput, read_json, read_text


@dataclass(frozen=True)
class SharedSet:
    """How to find and read one of the shared processed sets."""

    name: str
    domains: tuple[str, ...]
    reader: Callable[..., MultiDomainDataset]
    files: Callable[[Sequence[str]], list[str]]   # relative paths needed for the given domains
    layout: str                                   # the expected folder layout, for error messages
    origin: str                                   # where the processed files come from
    optional_files: Callable[[Sequence[str]], list[str]] = lambda domains: []  # read when present


# ====================================================================== amazon18-xcross

XCROSS_DOMAINS = ("Electronics", "Sports", "Tools", "Toys")
_XCROSS_FILES = ("meta_data.json", "smap.json", "umap.json", "train.json", "test.json")


def _xcross_files(domains: Sequence[str]) -> list[str]:
    return [f"{d}/{f}" for d in domains for f in _XCROSS_FILES]


def _title(titles: dict, asin: str, path: Path) -> str:
    """An item's cleaned title: a string, a number, or missing (``None``, NaN); a list, object or set
    (no title a reader could show) names the item."""
    value = titles.get(asin)
    if isinstance(value, (list, dict, set, tuple, bool)):
        raise BadInput(f"{path}: item {asin!r}: the title must be a string, got {type(value).__name__} {value!r:.60}")
    return clean_text(value)


def _inverse_index(mapping: dict[str, int], what: Path) -> np.ndarray:
    """``{key: index}`` with indices ``0..n-1`` -> array of keys by index."""
    if not isinstance(mapping, dict) or not mapping:
        raise BadInput(f"{what}: expected a non-empty JSON object {{key: index}}")
    keys = np.empty(len(mapping), dtype=object)
    for key, idx in mapping.items():
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise BadInput(f"{what}: key {key!r}: the index must be an integer, got {idx!r}")
        if not 0 <= idx < len(mapping) or keys[idx] is not None:
            raise ValueError(f"{what}: indices are not a permutation of 0..{len(mapping) - 1} (at {key!r})")
        keys[idx] = key
    return keys


def read_amazon18_xcross(folder: str | Path, domains: Sequence[str] | None = None) -> MultiDomainDataset:
    """Read ``amazon18-xcross`` (one sub-folder per domain).

    Each user's history in ``train.json``/``test.json`` is a domain's whole history, oldest
    first. Users are matched across domains by raw reviewerID (``umap.json``). There are no
    timestamps, so a user's domains are merged with ``timeline="interleave"`` (see
    :func:`~xdrec.data.dataset.assemble`). Titles are HTML-unescaped.
    """
    folder = Path(folder)
    domains = list(domains or XCROSS_DOMAINS)
    event_frames, item_frames, per_domain = [], [], {}
    for d, dom in enumerate(domains):
        sub = folder / dom
        titles = read_json(sub / "meta_data.json", expect=dict)
        asin_by_index = _inverse_index(read_json(sub / "smap.json", expect=dict), sub / "smap.json")
        user_by_index = _inverse_index(read_json(sub / "umap.json", expect=dict), sub / "umap.json")
        train = read_json(sub / "train.json", expect=dict)
        test = read_json(sub / "test.json", expect=dict)
        if set(train) & set(test):
            raise ValueError(f"{sub}: users present in both train.json and test.json")
        histories = {}
        n_users, n_items = len(user_by_index), len(asin_by_index)
        for part, part_path in ((train, sub / "train.json"), (test, sub / "test.json")):
            for u, seq in part.items():
                user = int(u) if u.isdigit() else -1
                if not 0 <= user < n_users:
                    raise BadInput(f"{part_path}: user {u!r}: not a user index in 0..{n_users - 1} (umap.json)")
                if not isinstance(seq, list) or not seq:
                    raise BadInput(f"{part_path}: user {u!r}: the history must be a non-empty list of item indices")
                for pos, i in enumerate(seq):
                    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_items:
                        raise BadInput(f"{part_path}: user {u!r}, position {pos}: item index {i!r} is not in "
                                       f"0..{n_items - 1} (smap.json)")
                histories[user] = seq
        if not histories:
            raise BadInput(f"{sub / 'train.json'}: no users in train.json or test.json")
        order = sorted(histories)
        users = np.asarray(order, dtype=np.int64)
        lengths = np.fromiter((len(histories[u]) for u in order), dtype=np.int64, count=len(order))
        flat = np.fromiter((i for u in order for i in histories[u]), dtype=np.int64, count=int(lengths.sum()))
        event_frames.append(pd.DataFrame({
            "user_key": np.repeat(user_by_index[users], lengths),
            "domain": d,
            "item_key": asin_by_index[flat],
        }))
        item_frames.append(pd.DataFrame({
            "domain": d,
            "item_key": asin_by_index,
            "text": [_title(titles, a, sub / "meta_data.json") for a in asin_by_index],
        }))
        per_domain[dom] = {"train_users": len(train), "test_users": len(test)}
    return assemble(
        "amazon18-xcross", domains, pd.concat(event_frames, ignore_index=True),
        pd.concat(item_frames, ignore_index=True), timeline="interleave",
        meta={"source": "amazon18-xcross", "folder": str(folder),
              "origin": SHARED_SETS["amazon18-xcross"].origin,
              "original_user_split": per_domain,
              "text": "title (HTML-unescaped, cut to about 10 words by the processed set)"},
    )


# ====================================================================== amazon14-food-kitchen

FOOD_KITCHEN_DOMAINS = ("Food", "Kitchen")
_FOOD_KITCHEN_FILES = ["afk_50_preprocessed.txt", "map_item_50.txt", "map_user_50.txt",
                       "titles_food.json", "titles_kitchen.json"]


def read_food_kitchen(folder: str | Path, domains: Sequence[str] | None = None) -> MultiDomainDataset:
    """Read ``amazon14-food-kitchen``: Grocery & Gourmet Food (``Food``) and Home & Kitchen.

    Lines of ``afk_50_preprocessed.txt`` are ``user item|unixtime item|unixtime ...`` and
    already chronological across both domains; ties in time keep the file order. Item
    ``domain`` comes from ``map_item_50.txt``; titles are joined by ASIN (many items have
    none). ``domains`` may restrict to one of the two domains.
    """
    folder = Path(folder)
    item_path = folder / "map_item_50.txt"
    item_map = read_json(item_path, expect=dict)
    user_map = read_json(folder / "map_user_50.txt", expect=dict)
    title_files = [folder / f for f in ("titles_food.json", "titles_kitchen.json")]
    titles = [read_json(f, expect=dict) for f in title_files]
    if not item_map:
        raise BadInput(f"{item_path}: no items")
    for asin, entry in item_map.items():
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in entry)) \
                or entry[0] < 0 or entry[1] not in (0, 1):
            raise BadInput(f"{item_path}: item {asin!r}: expected [index >= 0, domain 0 or 1], got {entry!r:.60}")

    n_items = max(idx for idx, _ in item_map.values()) + 1
    asin_by_index = np.empty(n_items, dtype=object)
    domain_by_index = np.full(n_items, -1, dtype=np.int64)
    for asin, (idx, dom) in item_map.items():
        if asin_by_index[idx] is not None:
            raise BadInput(f"{item_path}: item {asin!r}: index {idx} is already item {asin_by_index[idx]!r}")
        asin_by_index[idx] = asin
        domain_by_index[idx] = dom
    reviewer_by_index = _inverse_index(user_map, folder / "map_user_50.txt")

    users, items, times = [], [], []
    path = folder / "afk_50_preprocessed.txt"
    # the lines of a UTF-8 file (a BadInput names a byte that is not)
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            user = int(tokens[0])
            pairs = [t.split("|") for t in tokens[1:]]
            line_items = [int(i) for i, _ in pairs]
            line_times = [int(t) for _, t in pairs]
        except ValueError as e:
            raise BadInput(f"{path}, line {line_no}: expected 'user item|time item|time ...' ({e})") from None
        if not pairs:
            raise BadInput(f"{path}, line {line_no}: user {user} has no events")
        if not 0 <= user < len(reviewer_by_index):
            raise BadInput(f"{path}, line {line_no}: user index {user} is outside 0..{len(reviewer_by_index) - 1} "
                           "(map_user_50.txt)")
        for i in line_items:
            if not 0 <= i < n_items or domain_by_index[i] < 0:
                raise BadInput(f"{path}, line {line_no}: item index {i} is not in map_item_50.txt")
        items.extend(line_items)
        times.extend(line_times)
        users.extend([user] * len(pairs))
    if not users:
        raise BadInput(f"{path}: no events: the file is empty or blank")
    items_arr = np.asarray(items, dtype=np.int64)
    events = pd.DataFrame({
        "user_key": reviewer_by_index[np.asarray(users, dtype=np.int64)],
        "domain": domain_by_index[items_arr],
        "item_key": asin_by_index[items_arr],
        "timestamp": np.asarray(times, dtype=np.int64),
    })
    known = domain_by_index >= 0
    order = np.lexsort((np.arange(n_items), domain_by_index))
    order = order[known[order]]
    item_table = pd.DataFrame({
        "domain": domain_by_index[order],
        "item_key": asin_by_index[order],
        "text": [_title(titles[d], a, title_files[d]) for d, a in zip(domain_by_index[order], asin_by_index[order])],
    })
    ds = assemble("amazon14-food-kitchen", FOOD_KITCHEN_DOMAINS, events, item_table, timeline="timestamp",
                  meta={"source": "amazon14-food-kitchen", "folder": str(folder),
                        "origin": SHARED_SETS["amazon14-food-kitchen"].origin,
                        "text": "title (HTML-unescaped), where LLMCDSR had one"})
    if domains is not None and list(domains) != list(FOOD_KITCHEN_DOMAINS):
        ds = ds.subset(domains)
    return ds


# ====================================================================== amazon14-5core-sequences

FIVECORE_DOMAINS = ("Sports", "Beauty", "Toys")


def read_5core_sequences(folder: str | Path, domains: Sequence[str] | None = None) -> MultiDomainDataset:
    """Read ``amazon14-5core-sequences``: ``<Domain>/user_sequence.txt``, lines ``reviewerID ASIN ...``.

    Sequences are chronological, without timestamps. Users are matched across domains by
    reviewerID and merged with ``timeline="interleave"``. Items are numbered in order of first
    appearance in each file. Beauty has item text where ``Beauty/item_text.json`` is present
    (title and category paths, see :func:`beauty_item_text`); Sports and Toys have none.
    """
    folder = Path(folder)
    domains = list(domains or FIVECORE_DOMAINS)
    frames, texts = [], []
    for d, dom in enumerate(domains):

        user_keys, item_keys = [], []
        path = folder / dom / "user_sequence.txt"
        # the lines of a UTF-8 file (a BadInput names a byte that is not)
        for line_no, line in enumerate(read_text(path).split("\n"), start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) < 2:
                raise BadInput(f"{path}, line {line_no}: a user with no item")
            user_keys.extend([tokens[0]] * (len(tokens) - 1))
            item_keys.extend(tokens[1:])
        if not user_keys:
            raise BadInput(f"{path}: no sequences: the file is empty or blank")
        frames.append(pd.DataFrame({"user_key": user_keys, "domain": d, "item_key": item_keys}))
        if dom in FIVECORE_TEXT and (folder / dom / FIVECORE_TEXT[dom]).is_file():  # numbered as without text
            text = _read_item_text(folder / dom / FIVECORE_TEXT[dom], d).set_index("item_key")["text"]
            order = pd.unique(pd.Series(item_keys, dtype=object))
            texts.append(pd.DataFrame({"domain": d, "item_key": order, "text": text.reindex(order).fillna("").to_numpy()}))
    events = pd.concat(frames, ignore_index=True)
    items = pd.concat(texts, ignore_index=True) if texts else pd.DataFrame({"domain": [], "item_key": [], "text": []})
    return assemble("amazon14-5core-sequences", domains, events, items, timeline="interleave",
                    meta={"source": "amazon14-5core-sequences", "folder": str(folder),
                          "origin": SHARED_SETS["amazon14-5core-sequences"].origin,
                          "text": ("Beauty: title and category paths (TransRec's title and category maps); "
                                   "no brand or price. Sports, Toys: none in the source")
                          if texts else "none in the source"})


# Domains of amazon14-5core-sequences that come with item text, and its file.
FIVECORE_TEXT = {"Beauty": "item_text.json"}


def beauty_item_text(title: str, categories: Sequence[Sequence[str]]) -> str:
    """An item's text: its title, then each category path (TIGER's Beauty text also had brand and
    price, which this source lacks), e.g. ``"Prada Candy ... Spray. Category: Beauty > Fragrance >
    Women's > Eau de Parfum"``."""
    paths = [" > ".join(clean_text(c) for c in path if clean_text(c)) for path in categories]
    paths = [p for p in paths if p]
    text = clean_text(title)
    return f"{text}. Category: {'; '.join(paths)}" if paths else text


def _read_item_text(path: Path, domain: int) -> pd.DataFrame:
    """``{ASIN: {"title": str, "categories": [[str, ...], ...]}}`` as an item table with text."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected an object {{ASIN: {{title, categories}}}}, got {type(table).__name__}")
    keys, rows = [], []
    for asin, entry in table.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("title"), str) \
                or not isinstance(entry.get("categories", []), list):
            raise ValueError(f"{path}: item {asin!r} needs a string 'title' and a list 'categories', got {entry!r:.80}")
        keys.append(asin)
        rows.append(beauty_item_text(entry["title"], entry.get("categories", [])))
    return pd.DataFrame({"domain": domain, "item_key": keys, "text": rows})


# ====================================================================== registry

SHARED_SETS: dict[str, SharedSet] = {
    "amazon18-xcross": SharedSet(
        name="amazon18-xcross",
        domains=XCROSS_DOMAINS,
        reader=read_amazon18_xcross,
        files=_xcross_files,
        layout=("amazon18-xcross/<Domain>/{meta_data.json, smap.json, umap.json, train.json, test.json}"
                " for <Domain> in Electronics, Sports, Tools, Toys"),
        origin="X-Cross processed Amazon 2018 (github.com/guy-hadad/RecFormer, commit b70c594); "
               "Ni, Li & McAuley, EMNLP 2019",
    ),
    "amazon14-food-kitchen": SharedSet(
        name="amazon14-food-kitchen",
        domains=FOOD_KITCHEN_DOMAINS,
        reader=read_food_kitchen,
        files=lambda domains: list(_FOOD_KITCHEN_FILES),
        layout="amazon14-food-kitchen/{" + ", ".join(_FOOD_KITCHEN_FILES) + "}",
        origin="ABXI 'afk' set (github.com/DiMarzioBian/ABXI, commit 72e52c9) with titles from "
               "LLMCDSR (github.com/xhran2010/LLMCDSR, commit 5825e99); McAuley et al., SIGIR 2015",
    ),
    "amazon14-5core-sequences": SharedSet(
        name="amazon14-5core-sequences",
        domains=FIVECORE_DOMAINS,
        reader=read_5core_sequences,
        files=lambda domains: [f"{d}/user_sequence.txt" for d in domains],
        optional_files=lambda domains: [f"{d}/{FIVECORE_TEXT[d]}" for d in domains if d in FIVECORE_TEXT],
        layout="amazon14-5core-sequences/<Domain>/user_sequence.txt for <Domain> in Sports, Beauty, Toys "
               "(and, when present, Beauty/item_text.json)",
        origin="GRAM sequences (github.com/zhaodong-liu/GRAM, commit 2c168a4); McAuley et al., SIGIR 2015",
    ),
}

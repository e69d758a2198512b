"""Loaders of the official Amazon 2014 / 2018 / 2023 raw formats, on tiny files written here."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from xdrec import data
from xdrec.data.amazon_raw import item_text
from xdrec.data.text import clean_text, join_fields, truncate


def write_lines(path: Path, lines: list[str], gz: bool) -> Path:
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def review(user, item, t, user_field="reviewerID", item_field="asin", time_field="unixReviewTime", **extra):
    return json.dumps({user_field: user, item_field: item, time_field: t, "overall": 5.0, **extra})


# ---------------------------------------------------------------- Amazon 2014

@pytest.fixture
def amazon2014(tmp_path):
    beauty_reviews = write_lines(tmp_path / "reviews_Beauty_5.json.gz", [
        review("U1", "B1", 300), review("U1", "B2", 100), review("U2", "B1", 50),
        review("U1", "B1", 300),                                        # exact duplicate
    ], gz=True)
    # 2014 metadata: Python literals, single quotes, nested category lists
    beauty_meta = write_lines(tmp_path / "meta_Beauty.json.gz", [
        "{'asin': 'B1', 'title': 'Rose &amp; Oud  Cream', 'brand': 'Acme', "
        "'categories': [['Beauty', 'Skin Care'], ['Beauty']], 'description': 'Soft.\\nFor <b>face</b>.', 'price': 9.5}",
        "{'asin': 'B9', 'title': 'never reviewed'}",
        "{'asin': 'B2', 'salesRank': {'Beauty': 12}}",                  # no text at all
    ], gz=True)
    toys_reviews = write_lines(tmp_path / "reviews_Toys_5.json", [
        review("U1", "T1", 200), review("U3", "T1", 10), review("U1", "B1", 100),   # B1 also a Toys ASIN
    ], gz=False)
    toys_meta = write_lines(tmp_path / "meta_Toys.json", [
        "{'asin': 'T1', 'title': 'Robot', 'categories': [['Toys & Games']]}",
        "{'asin': 'B1', 'title': 'Ball'}",
    ], gz=False)
    return [("Beauty", beauty_reviews, beauty_meta), ("Toys", toys_reviews, toys_meta)]


def test_amazon2014_parsing_text_and_order(amazon2014):
    ds = data.load_amazon2014(amazon2014, name="tiny2014")
    assert ds.name == "tiny2014" and ds.domains == ["Beauty", "Toys"]
    items = ds.items.set_index(["domain", "item_key"])["text"]
    assert items[(0, "B1")] == "Rose & Oud Cream. Acme. Beauty, Skin Care. Soft. For face."
    assert items[(0, "B2")] == "Beauty item B2"                   # fallback
    assert items[(1, "B1")] == "Ball"                             # same ASIN, other domain: another item
    assert items[(1, "T1")] == "Robot. Toys & Games"
    assert ds.n_items == 4                                        # B9 never reviewed
    assert ds.meta["per_domain"]["Beauty"]["duplicates_dropped"] == 1
    assert ds.meta["missing_text"]["per_domain"]["Beauty"]["items_without_text"] == 1
    # U1's merged timeline by time; tie at t=100 keeps file order (Beauty file read first)
    u1 = ds.users.index[ds.users["user_key"] == "U1"][0]
    seq = ds.interactions[ds.interactions["user"] == u1]
    keys = ds.items["item_key"].to_numpy()
    assert list(zip(seq["domain"], keys[seq["item"]], seq["timestamp"])) == [
        (0, "B2", 100), (1, "B1", 100), (1, "T1", 200), (0, "B1", 300)]
    assert seq["position"].tolist() == [0, 1, 2, 3]


def test_amazon2014_meta_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    reviews = write_lines(tmp_path / "r.json", [review("U1", "A1", 1)], gz=False)
    meta = write_lines(tmp_path / "m.json", [
        "{'asin': 'A1', 'title': 'ok'}",
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
    ], gz=False)
    with pytest.raises(data.MalformedLineError) as info:
        data.load_amazon2014([("A", reviews, meta)])
    assert not marker.exists()
    assert info.value.line_number == 2 and info.value.path == meta
    assert "m.json, line 2" in str(info.value) and "Python literal" in str(info.value)


# ---------------------------------------------------------------- Amazon 2018

@pytest.mark.parametrize("gz", [True, False])
def test_amazon2018_gz_and_plain(tmp_path, gz):
    reviews = write_lines(tmp_path / "Sports_5.json", [
        review("U1", "S2", 20, vote="2"), review("U1", "S1", 10), review("U2", "S1", 5)], gz=gz)
    meta = write_lines(tmp_path / "meta_Sports.json", [json.dumps({
        "asin": "S1", "title": "Yoga Mat", "brand": "Flex", "category": ["Sports &amp; Outdoors", "Fitness"],
        "feature": ["Non-slip", "6 mm"], "description": ["Great mat.", "Easy clean."], "price": "$20"}),
        json.dumps({"asin": "S2", "title": "", "description": []})], gz=gz)
    ds = data.load_amazon2018([("Sports", reviews, meta)])
    assert ds.items["text"].tolist() == [
        "Sports item S2", "Yoga Mat. Flex. Sports & Outdoors, Fitness. Non-slip, 6 mm. Great mat. Easy clean."]
    keys = ds.items["item_key"].to_numpy()
    assert keys[ds.sequences()[0]].tolist() == ["S1", "S2"]
    assert ds.meta["source"] == "amazon2018"


def test_amazon2018_kcore_and_drop_policy(tmp_path):
    lines = [review(u, i, t) for t, (u, i) in enumerate(
        [("U1", "A"), ("U1", "B"), ("U2", "A"), ("U2", "B"), ("U3", "A"), ("U3", "C"), ("U4", "C")])]
    reviews = write_lines(tmp_path / "X_5.json", lines, gz=False)
    meta = write_lines(tmp_path / "meta_X.json", [json.dumps({"asin": a, "title": a.lower()}) for a in "AB"], gz=False)
    ds = data.load_amazon2018([("X", reviews, meta)], kcore=2)
    assert sorted(ds.users["user_key"]) == ["U1", "U2"] and sorted(ds.items["item_key"]) == ["A", "B"]
    assert ds.meta["per_domain"]["X"]["removed_by_kcore"] == 3
    dropped = data.load_amazon2018([("X", reviews, meta)], missing_text="drop")
    assert "C" not in set(dropped.items["item_key"]) and "U4" not in set(dropped.users["user_key"])
    assert dropped.meta["missing_text"]["per_domain"]["X"]["interactions_on_items_without_text"] == 2


@pytest.mark.parametrize("line, problem", [
    ('{"reviewerID": "U9", "asin": "A1", "unixReviewTime": 1', "not a valid JSON object"),
    ('{"reviewerID": "U9", "unixReviewTime": 1}', "missing field 'asin'"),
    ('{"reviewerID": "U9", "asin": "A1", "unixReviewTime": "soon"}', "integer time"),
    ('["U9", "A1", 1]', "expected an object"),
])
def test_malformed_review_lines_name_file_and_line(tmp_path, line, problem):
    reviews = write_lines(tmp_path / "Bad_5.json.gz", [review("U1", "A1", 1), "", line], gz=True)
    with pytest.raises(data.MalformedLineError, match=problem) as info:
        data.load_amazon2018([("Bad", reviews, None)])
    assert isinstance(info.value, ValueError)
    assert f"{tmp_path / 'Bad_5.json.gz'}, line 3" in str(info.value)


# ---------------------------------------------------------------- Amazon 2023

def test_amazon2023_parent_asin_and_millisecond_timestamps(tmp_path):
    reviews = write_lines(tmp_path / "Toys.jsonl", [
        review("U1", "P2", 1_600_000_000_500, "user_id", "parent_asin", "timestamp", asin="V2"),
        review("U1", "P1", 1_500_000_000_000, "user_id", "parent_asin", "timestamp", asin="V1"),
    ], gz=False)
    meta = write_lines(tmp_path / "meta_Toys.jsonl.gz", [
        json.dumps({"parent_asin": "P1", "title": "Puzzle", "features": ["1000 pieces"],
                    "categories": ["Toys & Games", "Puzzles"], "description": [], "store": "Ravens"}),
        json.dumps({"parent_asin": "P2", "title": "Kite " * 200}),
    ], gz=True)
    ds = data.load_amazon2023([("Toys", reviews, meta)], max_text_chars=40)
    texts = dict(zip(ds.items["item_key"], ds.items["text"]))
    assert texts["P1"] == "Puzzle. Toys & Games, Puzzles. 1000"   # cut at a word boundary; no 'store'
    assert len(texts["P2"]) <= 40 and texts["P2"].endswith("Kite")
    assert ds.interactions["timestamp"].tolist() == [1_500_000_000, 1_600_000_000]
    keys = ds.items["item_key"].to_numpy()
    assert keys[ds.sequences()[0]].tolist() == ["P1", "P2"]


def test_amazon2023_malformed_meta_line(tmp_path):
    reviews = write_lines(tmp_path / "A.jsonl", [review("U1", "P1", 1, "user_id", "parent_asin", "timestamp")], gz=False)
    meta = write_lines(tmp_path / "meta_A.jsonl", [json.dumps({"title": "no key"})], gz=False)
    with pytest.raises(data.MalformedLineError, match="line 1: missing field 'parent_asin'"):
        data.load_amazon2023([("A", reviews, meta)])


# ---------------------------------------------------------------- text helpers

def test_text_helpers():
    assert clean_text("Barnes &amp;amp; Noble&nbsp;<br/>Nook") == "Barnes & Noble Nook"
    assert clean_text(float("nan")) == "" and clean_text(None) == ""
    assert truncate("one two three", 9) == "one two"
    assert join_fields(["T", None, [], [["a", "b"], ["a"]], "d"]) == "T. a, b. d"
    assert item_text({"title": "X", "categories": [["C"]], "feature": ["f"], "features": ["g"]}) == "X. C. g"

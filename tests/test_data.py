"""The canonical dataset form, missing-text policies, shared-set readers, load() and its cache."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

import xdrec.paths
from xdrec import data
from xdrec.data import MultiDomainDataset, assemble
from xdrec.data.dataset import apply_missing_text_policy


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never write into the project's .cache from tests."""
    monkeypatch.setenv("XDREC_CACHE", str(tmp_path / "cache"))


def tiny_dataset(timeline: str = "given") -> MultiDomainDataset:
    """Two domains, three users; item b2 has no text; the same ASIN X1 exists in both domains."""
    events = pd.DataFrame(
        [("u1", 0, "a1", 10), ("u1", 1, "X1", 20), ("u1", 0, "a2", 30),
         ("u2", 1, "b2", 5), ("u2", 1, "X1", 6),
         ("u3", 0, "X1", 7), ("u3", 0, "a1", 8), ("u1", 1, "b2", 40)],
        columns=["user_key", "domain", "item_key", "timestamp"])
    items = pd.DataFrame([(0, "a1", "Alpha &amp; one"), (0, "a2", "alpha two"), (0, "X1", "shared asin in A"),
                          (1, "X1", "shared asin in B"), (1, "b2", ""), (1, "unused", "never bought")],
                         columns=["domain", "item_key", "text"])
    return assemble("tiny", ["A", "B"], events, items, timeline=timeline, meta={"source": "test"})


# ---------------------------------------------------------------- canonical form

def test_assemble_builds_canonical_form():
    ds = tiny_dataset()
    assert ds.domains == ["A", "B"]
    assert ds.n_users == 3 and ds.n_items == 5 and ds.n_interactions == 8   # "unused" item dropped
    assert ds.items["item_key"].tolist() == ["a1", "a2", "X1", "X1", "b2"]
    assert ds.items["domain"].tolist() == [0, 0, 0, 1, 1]
    assert ds.items["item"].tolist() == [0, 1, 2, 3, 4]
    assert ds.users["user_key"].tolist() == ["u1", "u2", "u3"]
    # same ASIN in two domains = two items
    assert ds.domain_items("A").tolist() == [0, 1, 2] and ds.domain_items(1).tolist() == [3, 4]
    # interactions sorted by (user, position), positions contiguous
    inter = ds.interactions
    assert list(inter.columns) == ["user", "item", "domain", "position", "timestamp"]
    assert inter["user"].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    assert inter["position"].tolist() == [0, 1, 2, 3, 0, 1, 0, 1]
    assert all(inter[c].dtype == np.int64 for c in inter.columns)
    seqs = ds.sequences()
    assert seqs[0].tolist() == [0, 3, 1, 4]
    assert {u: s.tolist() for u, s in ds.sequences("B").items()} == {0: [3, 4], 1: [4, 3]}
    assert set(ds.sequences("A")) == {0, 2}


def test_timestamp_timeline_is_stable_sort():
    events = pd.DataFrame([("u", 1, "b", 5), ("u", 0, "a", 5), ("u", 0, "c", 1)],
                          columns=["user_key", "domain", "item_key", "timestamp"])
    ds = assemble("t", ["A", "B"], events, pd.DataFrame(columns=["domain", "item_key", "text"]), timeline="timestamp")
    keys = ds.items["item_key"].to_numpy()
    assert keys[ds.sequences()[0]].tolist() == ["c", "b", "a"]   # tie at t=5 keeps file order
    assert ds.interactions["timestamp"].tolist() == [1, 5, 5]


def test_interleave_timeline_spreads_domains_evenly():
    events = pd.DataFrame([("u", 0, f"s{i}") for i in range(1, 5)] + [("u", 1, f"b{i}") for i in range(1, 3)],
                          columns=["user_key", "domain", "item_key"])
    ds = assemble("t", ["S", "B"], events, pd.DataFrame(columns=["domain", "item_key", "text"]), timeline="interleave")
    keys = ds.items["item_key"].to_numpy()
    # s at .125 .375 .625 .875, b at .25 .75
    assert keys[ds.sequences()[0]].tolist() == ["s1", "b1", "s2", "s3", "b2", "s4"]
    assert (ds.interactions["timestamp"] == -1).all()


def test_validate_rejects_broken_invariants():
    ds = tiny_dataset()
    bad = ds.interactions.copy()
    bad.loc[0, "position"] = 5
    with pytest.raises(ValueError, match="positions"):
        MultiDomainDataset("x", ds.domains, ds.items, bad, ds.users)
    bad = ds.interactions.copy()
    bad.loc[0, "domain"] = 1
    with pytest.raises(ValueError, match="domain"):
        MultiDomainDataset("x", ds.domains, ds.items, bad, ds.users)


def test_stats_and_overlap():
    ds = tiny_dataset()
    st = ds.stats()
    assert list(st.index) == ["A", "B", "all"]
    assert st.loc["A", ["users", "items", "interactions", "overlap_users"]].tolist() == [2, 3, 4, 1]
    assert st.loc["B", ["users", "items", "interactions", "overlap_users"]].tolist() == [2, 2, 4, 1]
    assert st.loc["all", ["users", "items", "interactions", "overlap_users"]].tolist() == [3, 5, 8, 1]
    assert st.loc["A", "sparsity"] == pytest.approx(1 - 4 / 6)
    assert st.loc["all", "avg_seq_len"] == pytest.approx(8 / 3)
    assert ds.overlap().loc["A", "B"] == 1 and ds.overlap().loc["A", "A"] == 2


def test_subset_reindexes_and_recomputes_positions():
    ds = tiny_dataset()
    b = ds.subset(["B"])
    assert b.domains == ["B"] and b.n_items == 2 and b.n_users == 2    # u3 had only A items
    assert b.items["item"].tolist() == [0, 1] and b.items["domain"].tolist() == [0, 0]
    assert b.users["user_key"].tolist() == ["u1", "u2"]
    assert b.interactions["position"].tolist() == [0, 1, 0, 1]
    keys = b.items["item_key"].to_numpy()
    assert keys[b.sequences()[0]].tolist() == ["X1", "b2"]
    # reordering domains renumbers them in the order given
    ba = ds.subset(["B", "A"])
    assert ba.domains == ["B", "A"] and ba.items["domain"].tolist() == [0, 0, 1, 1, 1]
    assert ba.stats().loc["A", "interactions"] == 4
    with pytest.raises(KeyError, match="unknown domain"):
        ds.subset(["C"])


def test_sample_users_keeps_whole_timelines_and_only_touched_items():
    from xdrec.data.synthetic import make_synthetic

    ds = make_synthetic(n_users=300, items_per_domain=80, seed=3)
    small = ds.sample_users(25, seed=1)
    per_domain = (small.user_domain_counts().to_numpy() > 0).sum(0)
    active = (ds.user_domain_counts().to_numpy() > 0).sum(0)
    assert (per_domain >= np.minimum(25, active)).all()  # each domain keeps at least its draw ...
    assert small.n_users <= 25 * ds.n_domains  # ... and users are drawn per domain, nothing more
    # every kept user keeps every event, in order, on the items' original keys
    keys = dict(zip(ds.users.user_key, ds.users.user))
    for u, key in zip(small.users.user, small.users.user_key):
        orig = ds.items.item_key.to_numpy()[ds.sequences()[keys[key]]]
        assert small.items.item_key.to_numpy()[small.sequences()[u]].tolist() == orig.tolist()
    touched = set(small.interactions.item)
    assert touched == set(range(small.n_items))  # no item without an event
    assert small.meta["user_sample"] == {"per_domain": 25, "seed": 1, "of_users": ds.n_users}
    again = ds.sample_users(25, seed=1)  # seeded: the same sample
    assert again.users.user_key.tolist() == small.users.user_key.tolist()
    with pytest.raises(ValueError, match="per_domain"):
        ds.sample_users(0)


def test_save_load_round_trip(tmp_path):
    ds = apply_missing_text_policy(tiny_dataset(), "fallback")
    ds.save(tmp_path / "ds")
    back = MultiDomainDataset.load(tmp_path / "ds")
    assert back.name == ds.name and back.domains == ds.domains and back.meta == json.loads(json.dumps(ds.meta))
    for attr in ("items", "interactions", "users"):
        pd.testing.assert_frame_equal(getattr(back, attr), getattr(ds, attr))
    assert sorted(os.listdir(tmp_path / "ds")) == ["dataset.json", "interactions.parquet", "items.parquet", "users.parquet"]


# ---------------------------------------------------------------- missing text

def test_missing_text_fallback_counts():
    ds = apply_missing_text_policy(tiny_dataset(), "fallback")
    assert ds.items.loc[ds.items["item_key"] == "b2", "text"].item() == "B item b2"
    assert ds.n_items == 5 and ds.n_interactions == 8
    rec = ds.meta["missing_text"]
    assert rec["policy"] == "fallback"
    assert rec["per_domain"]["B"]["items_without_text"] == 1
    assert rec["per_domain"]["B"]["interactions_on_items_without_text"] == 2
    assert rec["per_domain"]["A"]["items_without_text"] == 0


def test_missing_text_drop_removes_items_interactions_and_users():
    events = pd.DataFrame([("u1", 0, "a1"), ("u1", 1, "b1"), ("u1", 0, "a2"), ("u2", 1, "b1"), ("u3", 1, "b2")],
                          columns=["user_key", "domain", "item_key"])
    items = pd.DataFrame([(0, "a1", "x"), (0, "a2", "y"), (1, "b1", "  "), (1, "b2", "z")],
                         columns=["domain", "item_key", "text"])
    raw = assemble("t", ["A", "B"], events, items, timeline="given")
    ds = apply_missing_text_policy(raw, "drop")
    assert ds.n_items == 3 and ds.n_interactions == 3 and ds.users["user_key"].tolist() == ["u1", "u3"]
    assert ds.interactions["position"].tolist() == [0, 1, 0]
    assert ds.items["item_key"].tolist() == ["a1", "a2", "b2"] and ds.items["item"].tolist() == [0, 1, 2]
    rec = ds.meta["missing_text"]
    assert rec["per_domain"]["B"] == {"items": 2, "items_without_text": 1, "interactions": 3,
                                      "interactions_on_items_without_text": 2, "users_removed": 1}
    assert rec["per_domain"]["A"]["users_removed"] == 0
    assert rec["users_removed"] == 1
    # a domain that would lose every item is an error, not a silently empty domain
    no_text_b = apply_missing_text_policy(raw, "empty").filter_items(np.array([True, True, True, False]))
    with pytest.raises(ValueError, match="every item of \\['B'\\]"):
        apply_missing_text_policy(no_text_b, "drop")


def test_missing_text_empty_and_unknown_policy():
    ds = apply_missing_text_policy(tiny_dataset(), "empty")
    assert ds.items.loc[ds.items["item_key"] == "b2", "text"].item() == ""
    with pytest.raises(ValueError, match="fallback.*drop.*empty"):
        apply_missing_text_policy(tiny_dataset(), "guess")


# ---------------------------------------------------------------- shared-set readers on tiny copies

def write_xcross(root, domains=("Sports", "Tools")):
    """A tiny amazon18-xcross: reviewer R1 in both domains."""
    for d, dom in enumerate(domains):
        sub = root / "amazon18-xcross" / dom
        sub.mkdir(parents=True)
        asins = [f"{dom[0]}{i}" for i in range(4)]
        (sub / "meta_data.json").write_text(json.dumps(
            {asins[0]: "Tom &amp; Jerry", asins[1]: "x  y", asins[2]: float("nan"), asins[3]: "last"}))
        (sub / "smap.json").write_text(json.dumps({a: i for i, a in enumerate(asins)}))
        (sub / "umap.json").write_text(json.dumps({"R1": 0, f"R{dom}": 1}))
        (sub / "train.json").write_text(json.dumps({"0": [2, 0, 1]}))
        (sub / "test.json").write_text(json.dumps({"1": [3, 3, 0]}))


def test_read_amazon18_xcross_layout(tmp_path):
    write_xcross(tmp_path)
    ds = data.read_amazon18_xcross(tmp_path / "amazon18-xcross", ["Sports", "Tools"])
    assert ds.users["user_key"].tolist() == ["R1", "RSports", "RTools"]
    assert ds.items["text"].tolist()[:4] == ["Tom & Jerry", "x y", "", "last"]
    keys = ds.items["item_key"].to_numpy()
    # R1: Sports S2 S0 S1 and Tools T2 T0 T1 interleaved (ties go to the lower domain)
    assert keys[ds.sequences()[0]].tolist() == ["S2", "T2", "S0", "T0", "S1", "T1"]
    assert keys[ds.sequences()[1]].tolist() == ["S3", "S3", "S0"]   # repeats kept
    assert ds.meta["original_user_split"]["Sports"] == {"train_users": 1, "test_users": 1}


def test_read_food_kitchen_and_5core_layouts(tmp_path):
    fk = tmp_path / "amazon14-food-kitchen"
    fk.mkdir()
    (fk / "map_item_50.txt").write_text(json.dumps({"F1": [1, 0], "K1": [2, 1], "F2": [3, 0]}))
    (fk / "map_user_50.txt").write_text(json.dumps({"RA": 0, "RB": 1}))
    (fk / "titles_food.json").write_text(json.dumps({"F1": "Tea &quot;green&quot;", "ZZ": "not ours"}))
    (fk / "titles_kitchen.json").write_text(json.dumps({"K1": "Pan"}))
    (fk / "afk_50_preprocessed.txt").write_text("0 2|100 1|100 3|200\n1 1|50 2|60\n")
    ds = data.read_food_kitchen(fk)
    assert ds.domains == ["Food", "Kitchen"]
    assert ds.items["item_key"].tolist() == ["F1", "F2", "K1"]
    assert ds.items["text"].tolist() == ['Tea "green"', "", "Pan"]
    assert ds.users["user_key"].tolist() == ["RA", "RB"]
    keys = ds.items["item_key"].to_numpy()
    assert keys[ds.sequences()[0]].tolist() == ["K1", "F1", "F2"]
    assert ds.interactions["timestamp"].tolist() == [100, 100, 200, 50, 60]

    fc = tmp_path / "amazon14-5core-sequences"
    for dom, lines in {"Sports": "U1 s1 s2 s3 s4\nU2 s2 s1\n", "Beauty": "U1 b1 b2\n"}.items():
        (fc / dom).mkdir(parents=True)
        (fc / dom / "user_sequence.txt").write_text(lines)
    ds = data.read_5core_sequences(fc, ["Sports", "Beauty"])
    keys = ds.items["item_key"].to_numpy()
    assert keys[ds.sequences()[0]].tolist() == ["s1", "b1", "s2", "s3", "b2", "s4"]
    assert (ds.items["text"] == "").all()


# ---------------------------------------------------------------- load(): roots, errors, cache

@pytest.fixture
def no_default_roots(tmp_path, monkeypatch):
    """Point the project root at an empty folder so ./data and ../shared/data do not exist."""
    fake_project = tmp_path / "project"
    fake_project.mkdir()
    monkeypatch.setattr(xdrec.paths, "project_root", lambda: fake_project)
    monkeypatch.delenv("XDREC_DATA", raising=False)
    return fake_project


def test_dataset_not_found_lists_every_place_looked(tmp_path, monkeypatch, no_default_roots):
    env_root = tmp_path / "from_env"
    monkeypatch.setenv("XDREC_DATA", str(env_root))
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load("amazon18-xcross")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for place in (env_root, no_default_roots / "data", no_default_roots.parent / "shared" / "data"):
        assert str(place / "amazon18-xcross") in msg
    for needle in ("XDREC_DATA", "jmcauley.ucsd.edu/data/amazon/", "nijianmo.github.io/amazon/",
                   "amazon-reviews-2023.github.io", "guy-hadad/RecFormer", "meta_data.json"):
        assert needle in msg


def test_a_root_given_is_the_only_place_looked(tmp_path, monkeypatch, no_default_roots):
    """A root= that does not exist, or lacks the set, is refused: never silently replaced by $XDREC_DATA."""
    write_xcross(tmp_path / "env")
    monkeypatch.setenv("XDREC_DATA", str(tmp_path / "env"))
    with pytest.raises(data.DatasetNotFoundError, match=r"given: no such data folder"):
        data.load("amazon18-xcross", root=tmp_path / "given", domains=["Sports"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError, match=r"empty/amazon18-xcross"):
        data.load("amazon18-xcross", root=tmp_path / "empty", domains=["Sports"])
    assert data.load("amazon18-xcross", domains=["Sports"]).n_users > 0  # without root= the environment's


def test_load_rejects_unknown_name_policy_and_domain(tmp_path, no_default_roots):
    with pytest.raises(ValueError, match="known"):
        data.load("movielens", root=tmp_path)
    with pytest.raises(ValueError, match="fallback"):
        data.load("amazon18-xcross", root=tmp_path, missing_text="nope")
    with pytest.raises(ValueError, match="Electronics"):
        data.load("amazon18-xcross", root=tmp_path, domains=["Books"])


def test_load_missing_files_and_root_order(tmp_path, monkeypatch, no_default_roots):
    write_xcross(tmp_path / "second")
    monkeypatch.setenv("XDREC_DATA", str(tmp_path / "second"))
    ds = data.load("amazon18-xcross", domains=["Sports", "Tools"])
    assert ds.meta["folder"] == str(tmp_path / "second" / "amazon18-xcross")
    with pytest.raises(data.DatasetNotFoundError, match="Electronics/meta_data.json"):
        data.load("amazon18-xcross")          # all four domains wanted, two present
    (tmp_path / "first" / "amazon18-xcross").mkdir(parents=True)   # the first root wins, even if incomplete
    with pytest.raises(data.DatasetNotFoundError, match="missing"):
        data.load("amazon18-xcross", root=tmp_path / "first", domains=["Sports"])


def test_load_applies_policy_and_uses_cache(tmp_path, monkeypatch, no_default_roots):
    write_xcross(tmp_path)
    cold = data.load("amazon18-xcross", tmp_path, domains=["Tools", "Sports"], missing_text="drop")
    assert cold.domains == ["Tools", "Sports"]
    assert cold.meta["missing_text"]["per_domain"]["Sports"]["items_without_text"] == 1
    assert "" not in cold.items["text"].tolist()
    entries = list((tmp_path / "cache" / "datasets").iterdir())
    assert len(entries) == 1 and (entries[0] / "dataset.json").is_file()

    spec = data.SHARED_SETS["amazon18-xcross"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setitem(data.SHARED_SETS, "amazon18-xcross", dataclasses.replace(spec, reader=must_not_run))
    warm = data.load("amazon18-xcross", tmp_path, domains=["Tools", "Sports"], missing_text="drop")
    pd.testing.assert_frame_equal(warm.interactions, cold.interactions)
    pd.testing.assert_frame_equal(warm.items, cold.items)
    # other options or a changed source file give another cache entry
    with pytest.raises(AssertionError, match="cache"):
        data.load("amazon18-xcross", tmp_path, domains=["Tools", "Sports"], missing_text="fallback")
    monkeypatch.setitem(data.SHARED_SETS, "amazon18-xcross", spec)
    (tmp_path / "amazon18-xcross" / "Tools" / "meta_data.json").write_text(json.dumps({"T0": "changed"}))
    changed = data.load("amazon18-xcross", tmp_path, domains=["Tools", "Sports"], missing_text="fallback")
    assert changed.items["text"].tolist()[0] == "changed"
    assert changed.items["text"].tolist()[1] == "Tools item T1"
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2
    uncached = data.load("amazon18-xcross", tmp_path, domains=["Sports"], cache=False)
    assert uncached.n_users == 2 and len(list((tmp_path / "cache" / "datasets").iterdir())) == 2

"""The three shared research sets, checked against the counts in shared/data/README.md."""
from __future__ import annotations

import pytest

from xdrec import data

EXPECTED = {
    "amazon18-xcross": {
        "Electronics": (26_319, 12_031, 165_541),
        "Sports": (19_244, 10_036, 120_122),
        "Tools": (10_962, 5_820, 66_164),
        "Toys": (21_342, 10_457, 131_485),
    },
    "amazon14-food-kitchen": {"Food": (7_144, 11_837, 83_663), "Kitchen": (7_144, 16_258, 89_885)},
    "amazon14-5core-sequences": {
        "Sports": (35_598, 18_357, 296_337),
        "Beauty": (22_363, 12_101, 198_502),
        "Toys": (19_412, 11_924, 167_597),
    },
}


@pytest.mark.realdata
def test_shared_sets_match_readme(tmp_path, monkeypatch):
    monkeypatch.setenv("XDREC_CACHE", str(tmp_path / "cache"))      # a cold load from the raw files
    try:
        for name in EXPECTED:
            data.find_dataset(name)
    except data.DatasetNotFoundError:
        pytest.skip("shared data not found (../shared/data or $XDREC_DATA)")

    for name, per_domain in EXPECTED.items():
        ds = data.load(name)
        stats = ds.stats()
        found = {d: tuple(int(v) for v in stats.loc[d, ["users", "items", "interactions"]]) for d in per_domain}
        assert found == per_domain, name

    xcross = data.load("amazon18-xcross")
    overlap = xcross.overlap()
    assert [overlap.loc[a, b] for a, b in [("Electronics", "Sports"), ("Sports", "Tools"), ("Electronics", "Tools"),
                                           ("Sports", "Toys"), ("Electronics", "Toys"), ("Tools", "Toys")]] == \
        [779, 1_023, 769, 584, 391, 387]
    assert "&amp;" not in " ".join(xcross.items["text"])
    assert xcross.meta["missing_text"]["per_domain"]["Sports"]["items_without_text"] == 3

    fk = data.load("amazon14-food-kitchen")
    assert (fk.n_users, fk.n_interactions) == (7_144, 173_548)
    per = fk.meta["missing_text"]["per_domain"]
    assert per["Food"]["items"] - per["Food"]["items_without_text"] == 7_601
    assert per["Kitchen"]["items"] - per["Kitchen"]["items_without_text"] == 15_756
    assert fk.stats().loc["all", "overlap_users"] == 7_144
    assert fk.interactions["timestamp"].min() > 0


@pytest.mark.realdata
def test_beauty_has_title_and_category_text(tmp_path, monkeypatch):
    """Beauty (the TIGER paper's set) with its item text: every item titled, numbered as without text."""
    monkeypatch.setenv("XDREC_CACHE", str(tmp_path / "cache"))
    try:
        data.find_dataset("amazon14-5core-sequences")
    except data.DatasetNotFoundError:
        pytest.skip("shared data not found (../shared/data or $XDREC_DATA)")
    ds = data.load("amazon14-5core-sequences", domains=["Beauty"])
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (22_363, 12_101, 198_502)
    assert ds.meta["missing_text"]["items_without_text"] == 0
    first = ds.items.iloc[0]
    assert first.item_key == "B004756YJA"  # the first item of the first line: numbering by first appearance
    assert first.text == ("OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce. "
                          "Category: Beauty > Makeup > Nails > Nail Polish")
    assert not ds.items.text.str.contains("&amp;").any()
    # Sports and Toys still have no text of their own
    sports = data.load("amazon14-5core-sequences", domains=["Sports"])
    assert sports.meta["missing_text"]["items_without_text"] == sports.n_items
    from xdrec.data.shared_sets import beauty_item_text

    assert beauty_item_text("A &amp; B", [["Beauty", "Hair"], ["Beauty", "Tools"]]) == \
        "A & B. Category: Beauty > Hair; Beauty > Tools"

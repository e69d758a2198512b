"""Bad input, tried as a new user would: every refusal names the file and the place, nothing is lost.

One table of bad inputs (:data:`CASES`). Each case writes its own bad file under ``tmp_path``
(nothing in ``../shared/data`` is touched), calls the code that reads it, and the test asserts
the error's type, that its message names the file and the place (line, key, item, index), and
that every file under ``tmp_path`` is byte for byte what it was before the call (nothing written,
nothing half-written left behind). The recoveries (a corrupt stored result or embedding cache
recomputed with a warning; a killed write's temporary file removed) are tested after the table.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from xdrec import data
from xdrec.io import BadInput, load_safetensors, load_torch_state, read_json, save_safetensors, write_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("XDREC_REQUIRE_STORED", raising=False)


# ------------------------------------------------------------------ small valid inputs to break
def xcross(root: Path, **override) -> Path:
    """A one-domain amazon18-xcross under ``root`` (Sports); ``override`` replaces a file's text."""
    sub = root / "amazon18-xcross" / "Sports"
    sub.mkdir(parents=True, exist_ok=True)
    files = {"meta_data.json": json.dumps({"S0": "a ball", "S1": "a bat", "S2": "a net"}),
             "smap.json": json.dumps({"S0": 0, "S1": 1, "S2": 2}),
             "umap.json": json.dumps({"R1": 0, "R2": 1}),
             "train.json": json.dumps({"0": [0, 1, 2]}),
             "test.json": json.dumps({"1": [2, 0]})}
    files.update(override)
    for name, text in files.items():
        (sub / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return sub


def food_kitchen(root: Path, **override) -> Path:
    fk = root / "amazon14-food-kitchen"
    fk.mkdir(parents=True, exist_ok=True)
    files = {"map_item_50.txt": json.dumps({"F1": [1, 0], "K1": [2, 1], "F2": [3, 0]}),
             "map_user_50.txt": json.dumps({"RA": 0, "RB": 1}),
             "titles_food.json": json.dumps({"F1": "Tea"}),
             "titles_kitchen.json": json.dumps({"K1": "Pan"}),
             "afk_50_preprocessed.txt": "0 2|100 1|100 3|200\n1 1|50 2|60\n"}
    files.update(override)
    for name, text in files.items():
        (fk / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return fk


def bad_xcross(name: str, text, *names: str):
    """A case: amazon18-xcross's Sports with file ``name`` replaced by ``text``, read; the
    message must name that file and ``names``."""
    def prepare(t):
        xcross(t, **{name: text})
        return ((lambda: data.read_amazon18_xcross(t / "amazon18-xcross", ["Sports"])), BadInput,
                [f"amazon18-xcross/Sports/{name}", *names])
    return prepare


def bad_food_kitchen(name: str, text, *names: str):
    """A case: amazon14-food-kitchen with file ``name`` replaced by ``text``, read."""
    def prepare(t):
        food_kitchen(t, **{name: text})
        return (lambda: data.read_food_kitchen(t / "amazon14-food-kitchen")), BadInput, \
            [f"amazon14-food-kitchen/{name}", *names]
    return prepare


def review(user="U1", item="A1", t=100):
    return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": t})


def raw_2018(tmp: Path, reviews: bytes, meta: bytes | None = None):
    r = tmp / "Sports_5.json"
    r.write_bytes(reviews)
    m = None
    if meta is not None:
        m = tmp / "meta_Sports.json"
        m.write_bytes(meta)
    return lambda: data.load_amazon2018([("Sports", r, m)])


def gz_cut_short(path: Path, lines: list[str]) -> Path:
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    path.write_bytes(whole[: len(whole) // 2])
    return path


class Tiny(torch.nn.Module):
    def __init__(self, width=3):
        super().__init__()
        self.lin = torch.nn.Linear(2, width)

    def forward(self, x, y):
        return torch.nn.functional.cross_entropy(self.lin(x), y)


def batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)


def trained(ckpt: Path, **cfg):
    """A finished 1-epoch run in ``ckpt`` (its files are then broken by a case)."""
    from xdrec.training import TrainConfig, fit

    torch.manual_seed(0)
    fit(Tiny(), batches(), config=TrainConfig(epochs=1, lr=1e-2, patience=None, progress=False,
                                               checkpoint_dir=ckpt, **cfg), loss_fn=lambda m, b: m(*b))
    return ckpt


def refit(ckpt: Path, model=None, **cfg):
    from xdrec.training import TrainConfig, fit

    settings = {"epochs": 2, "lr": 1e-2, "patience": None, "progress": False, **cfg}
    return lambda: fit(model or Tiny(), batches(), config=TrainConfig(checkpoint_dir=ckpt, **settings),
                       loss_fn=lambda m, b: m(*b))


def interrupted(ckpt: Path) -> Path:
    """A run stopped after epoch 1 of 3 (resumable): a ``last.json`` and no ``done.json``."""
    from xdrec.training import TrainConfig, fit

    torch.manual_seed(0)
    fit(Tiny(), batches(), config=TrainConfig(epochs=3, max_steps=4, lr=1e-2, patience=None, progress=False,
                                               checkpoint_dir=ckpt), loss_fn=lambda m, b: m(*b))
    return ckpt


def stored_result(tmp: Path, text: bytes) -> Path:
    path = tmp / "results" / "ci" / "r.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    return path


def quantizer():
    from xdrec.quantization import ResidualQuantizer

    return ResidualQuantizer(n_levels=2, codebook_size=4, dim=3, kmeans_init=False)


def trie():
    from xdrec.decoding import TrieTensors

    return TrieTensors(np.array([[0, 1], [1, 0], [1, 1]]), np.array([0, 0, 1]), 2, codebook_sizes=[2, 2])


def beam(domains, step):
    from xdrec.decoding import constrained_beam_search

    return lambda: constrained_beam_search(step, trie(), torch.tensor(domains), beams=2)


def flat(allowed_shape_fill):
    def step(prefix, allowed):
        return torch.full(allowed.shape, allowed_shape_fill)
    return step


# ------------------------------------------------------------------ the table
def _cases():
    """(id, prepare(tmp) -> (call, error type, [what the message must name]))."""
    X = "amazon18-xcross/Sports"
    return [
        ("xcross user -1", bad_xcross("train.json", '{"-1": [0, 1]}', "user '-1'")),
        ("xcross item -1", bad_xcross("train.json", '{"0": [0, -1]}', "position 1", "index -1")),
        ("xcross item past the end", bad_xcross("test.json", '{"1": [99999999]}', "user '1'", "99999999")),
        ("xcross user past the end", bad_xcross("test.json", '{"7": [1]}', "user '7'")),
        ("train.json invalid JSON", bad_xcross("train.json", '{"0": [0, 1', "line 1 column")),
        ("test.json invalid JSON", bad_xcross("test.json", '{\n"1": [2, 0],,\n}', "line 2")),
        ("meta_data.json a list", bad_xcross("meta_data.json", '["a ball"]', "found a JSON array")),
        ("a title that is a list", bad_xcross("meta_data.json", '{"S0": ["a", "ball"]}', "item 'S0'")),
        ("smap.json not UTF-8", bad_xcross("smap.json", b'{"S0": 0, "S\xff": 1, "S2": 2}', "line 1", "byte 12")),
        ("no users", lambda t: (xcross(t, **{"train.json": "{}", "test.json": "{}"}) and
                                (lambda: data.read_amazon18_xcross(t / "amazon18-xcross", ["Sports"])),
                                BadInput, [f"{X}/train.json", "no users"])),
        ("umap.json empty", bad_xcross("umap.json", "", "empty file")),
        ("afk user -1", bad_food_kitchen("afk_50_preprocessed.txt", "0 2|100\n-1 1|50\n", "line 2", "user index -1")),
        ("afk item past the end", bad_food_kitchen("afk_50_preprocessed.txt", "0 2|100 99|7\n", "line 1", "item index 99")),
        ("afk item -1", bad_food_kitchen("afk_50_preprocessed.txt", "0 2|100\n1 -1|7\n", "line 2", "item index -1")),
        ("afk time 3.9", bad_food_kitchen("afk_50_preprocessed.txt", "0 2|3.9\n", "line 1", "3.9")),
        ("afk empty", bad_food_kitchen("afk_50_preprocessed.txt", "\n\n", "no events")),
        ("afk not UTF-8", bad_food_kitchen("afk_50_preprocessed.txt", b"0 2|100\n1 1|5\xc0\n", "line 2")),
        ("map_item_50.txt invalid JSON", bad_food_kitchen("map_item_50.txt", '{"F1": [1, 0]', "line 1")),
        ("map_item_50.txt domain 2", bad_food_kitchen("map_item_50.txt", '{"F1": [1, 2]}', "item 'F1'")),
        ("titles_kitchen.json invalid", bad_food_kitchen("titles_kitchen.json", "{'K1': 'Pan'}", "line 1")),
        ("5-core sequences empty", lambda t: (
            (t / "fc" / "Sports").mkdir(parents=True) or (t / "fc" / "Sports" / "user_sequence.txt").write_text("\n")
            and (lambda: data.read_5core_sequences(t / "fc", ["Sports"])),
            BadInput, ["fc/Sports/user_sequence.txt", "no sequences"])),
        ("raw reviews not UTF-8", lambda t: (raw_2018(t, (review() + "\n").encode() + b'{"reviewerID": "U\xe9"}\n'),
                                             data.MalformedLineError, ["Sports_5.json", "line 2", "UTF-8"])),
        ("raw gzip cut short", lambda t: (
            (lambda r: lambda: data.load_amazon2018([("Sports", r, None)]))(
                gz_cut_short(t / "Sports_5.json.gz", [review(f"U{i}", f"A{i}", i) for i in range(400)])),
            data.MalformedLineError, ["Sports_5.json.gz", "line", "cut short"])),
        ("raw time Infinity", lambda t: (raw_2018(t, b'{"reviewerID": "U1", "asin": "A1", "unixReviewTime": Infinity}\n'),
                                         data.MalformedLineError, ["Sports_5.json", "line 1", "inf"])),
        ("raw time 1e23", lambda t: (raw_2018(t, (review() + "\n" + review(t=1e23) + "\n").encode()),
                                     data.MalformedLineError, ["Sports_5.json", "line 2", "outside"])),
        ("raw time 3.9", lambda t: (raw_2018(t, (review(t=3.9) + "\n").encode()),
                                    data.MalformedLineError, ["Sports_5.json", "line 1", "3.9"])),
        ("raw reviews empty", lambda t: (raw_2018(t, b"\n"), data.MalformedLineError, ["Sports_5.json", "no reviews"])),
        ("raw meta empty", lambda t: (raw_2018(t, (review() + "\n").encode(), b""),
                                      data.MalformedLineError, ["meta_Sports.json", "no item records"])),
        ("a 2014 title that is a set", lambda t: (
            (lambda r, m: lambda: data.load_amazon2014([("Beauty", r, m)]))(
                (t / "reviews_Beauty_5.json").write_text(review() + "\n") and t / "reviews_Beauty_5.json",
                (t / "meta_Beauty.json").write_text("{'asin': 'A1', 'title': {'Rose', 'Cream'}}\n")
                and t / "meta_Beauty.json"),
            data.MalformedLineError, ["meta_Beauty.json", "line 1", "item 'A1'", "set"])),
        ("load(root=) missing", lambda t: ((lambda: data.load("amazon18-xcross", root=t / "nowhere")),
                                           data.DatasetNotFoundError, ["nowhere", "no such data folder"])),
        ("k-means on NaN", lambda t: ((lambda: __import__("xdrec.quantization", fromlist=["kmeans"]).kmeans(
            torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 1.0]]), 2)), ValueError, [r"rows \[1\]", "NaN"])),
        ("k-means on no points", lambda t: ((lambda: __import__("xdrec.quantization", fromlist=["kmeans"]).kmeans(
            torch.zeros(0, 3), 2)), ValueError, ["non-empty", r"\(0, 3\)"])),
        ("init_kmeans on inf", lambda t: ((lambda: quantizer().init_kmeans(
            torch.tensor([[0.0, 1.0, 2.0], [float("inf"), 0.0, 0.0]] * 4))), ValueError, ["rows \\[1, 3", "inf"])),
        ("an empty batch to quantise", lambda t: ((lambda: quantizer()(torch.zeros(0, 3))), ValueError, ["empty batch"])),
        ("decode_codes -1", lambda t: ((lambda: quantizer().decode_codes(torch.tensor([[0, 1], [2, -1]]))),
                                       ValueError, ["row 1, level 1", "code -1"])),
        ("decode_codes past K", lambda t: ((lambda: quantizer().decode_codes(torch.tensor([[4, 0]]))),
                                           ValueError, ["row 0, level 0", "code 4"])),
        ("resume with another lr", lambda t: ((interrupted(t / "ck") and refit(t / "ck", epochs=3, lr=5e-2)),
                                              ValueError, ["ck/epoch-0001", "lr 0.01 -> 0.05"])),
        ("finished run with another seed", lambda t: ((trained(t / "ck") and refit(t / "ck", epochs=1, seed=3)),
                                                      ValueError, ["ck", "seed 0 -> 3"])),
        ("resume into a model of another size", lambda t: ((interrupted(t / "ck") and
                                                            refit(t / "ck", model=Tiny(width=5), epochs=3)),
                                                           BadInput, ["ck/epoch-0001/model.safetensors", "size"])),
        ("safetensors cut short", lambda t: (
            (lambda p: p.write_bytes(p.read_bytes()[:40]) and (lambda: load_safetensors(p)))(
                save_safetensors(t / "w.safetensors", {"a": torch.arange(64.0)})),
            BadInput, ["w.safetensors", "not a readable safetensors file"])),
        ("safetensors bit flipped", lambda t: (
            (lambda p: p.write_bytes(p.read_bytes()[:-3] + bytes([p.read_bytes()[-3] ^ 1]) + p.read_bytes()[-2:])
             and (lambda: load_safetensors(p)))(save_safetensors(t / "w.safetensors", {"a": torch.arange(64.0)})),
            BadInput, ["w.safetensors", "SHA-256"])),
        ("a pickled trainer_state.pt", lambda t: (
            (lambda p: torch.save({"loop": Path("x")}, p) or (lambda: load_torch_state(p)))(t / "trainer_state.pt"),
            BadInput, ["trainer_state.pt", "never unpickled"])),
        ("a result cut short", lambda t: (
            stored_result(t, b'{"name": "r", "metrics": {"recall') and
            (lambda: __import__("xdrec.results", fromlist=["load_result"]).load_result("r", "ci")),
            BadInput, ["results/ci/r.json", "line 1"])),
        ("a result that is a list", lambda t: (
            stored_result(t, b"[1, 2]") and
            (lambda: __import__("xdrec.results", fromlist=["load_result"]).load_result("r", "ci")),
            BadInput, ["results/ci/r.json", "found a JSON array"])),
        ("a result without metrics", lambda t: (
            stored_result(t, b'{"name": "r", "provenance": {}}') and
            (lambda: __import__("xdrec.results", fromlist=["load_result"]).load_result("r", "ci")),
            BadInput, ["results/ci/r.json", "'metrics'"])),
        ("a result not UTF-8", lambda t: (
            stored_result(t, b'{"name": "r\xff"}') and
            (lambda: __import__("xdrec.results", fromlist=["load_result"]).load_result("r", "ci")),
            BadInput, ["results/ci/r.json", "not UTF-8"])),
        ("a result name with /", lambda t: ((lambda: __import__("xdrec.results", fromlist=["save_result"]).save_result(
            "../../escape", {}, profile="ci", dataset="d", split="s", seed=0)), ValueError, ["'../../escape'"])),
        ("a profile ..", lambda t: ((lambda: __import__("xdrec.results", fromlist=["result_path"]).result_path(
            "r", "..")), ValueError, ["profile '..'"])),
        ("decoding domain -1", lambda t: (beam([0, -1], flat(0.0)), ValueError, ["domain index -1", "0..1"])),
        ("decoding domain past the end", lambda t: (beam([2], flat(0.0)), ValueError, ["domain index 2"])),
        ("NaN scores from a step", lambda t: (beam([0], flat(float("nan"))), ValueError, ["level 0", "NaN", r"rows \[0\]"])),
    ]


CASES = _cases()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_file_and_place_and_changes_nothing(tmp_path, case):
    _, prepare = case
    call, error, names = prepare(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(error) as info:
        call()
    msg = str(info.value)
    for needle in names:  # a needle with a backslash is a regular expression, any other a plain string
        assert re.search(needle if "\\" in needle else re.escape(needle), msg), (needle, msg)
    assert snapshot(tmp_path) == before  # nothing written, nothing half-written left


def test_the_table_covers_at_least_30_bad_inputs():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


# ------------------------------------------------------------------ documented recoveries
def test_a_corrupt_stored_result_is_recomputed_with_a_warning_naming_it(tmp_path, monkeypatch):
    from xdrec.results import StaleResult, load_if_current, stored_or_computed

    path = stored_result(tmp_path, b'{"name": "r", "metrics": {"recall')
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*recomputed"):
        rec = stored_or_computed("r", "ci", "fp", {"a": 1},
                                 lambda: {"metrics": {"recall@10": 0.5}, "dataset": "d", "split": "s", "seed": 0})
    assert rec["metrics"] == {"recall@10": 0.5} and read_json(path)["metrics"] == {"recall@10": 0.5}
    path.write_bytes(b"[]")
    monkeypatch.setenv("XDREC_REQUIRE_STORED", "1")  # a check of stored results refuses instead
    with pytest.warns(UserWarning), pytest.raises(StaleResult, match="unreadable"):
        load_if_current("r", "ci", "fp", {"a": 1})


def test_a_corrupt_embedding_cache_is_recomputed_with_a_warning(tmp_path):
    from xdrec.encoders import embed_item_texts

    class Encoder:
        name, calls = "fake", 0

        def encode(self, texts, batch_size, progress):
            Encoder.calls += 1
            return np.ones((len(texts), 4), dtype=np.float32)

    texts = ["a", "b", "c"]
    first = embed_item_texts(texts, Encoder(), progress=False)
    (cached,) = (tmp_path / "cache" / "embeddings").glob("*.npy")
    bad = first.copy()
    bad[1, 2] = np.nan
    np.save(cached, bad)
    with pytest.warns(UserWarning, match=re.escape(str(cached)) + ".*1 rows hold NaN"):
        again = embed_item_texts(texts, Encoder(), progress=False)
    assert np.isfinite(again).all() and Encoder.calls == 2
    np.save(cached, np.ones((3, 7), dtype=np.float32))  # another width than its record's 4
    with pytest.warns(UserWarning, match="7 columns, its record says 4"):
        embed_item_texts(texts, Encoder(), progress=False)
    assert embed_item_texts(texts, Encoder(), progress=False).shape == (3, 4) and Encoder.calls == 3


def test_k_means_with_more_centroids_than_points_warns():
    from xdrec.quantization import kmeans

    with pytest.warns(UserWarning, match="4 centroids from 3 points"):
        c = kmeans(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), 4)
    assert c.shape == (4, 2) and len(torch.unique(c, dim=0)) <= 3


def test_a_killed_write_leaves_nothing_the_next_write_does_not_remove(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"a": 1})
    leftover = tmp_path / ".r.json.k1ll3d.tmp"  # what a write killed before its rename leaves
    leftover.write_text('{"a": ')
    write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2} and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_writes_are_synced_before_the_rename(tmp_path, monkeypatch):
    import os

    from xdrec import io

    synced = []
    real = os.fsync
    monkeypatch.setattr(io.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    write_json(tmp_path / "r.json", {"a": 1})
    assert any(Path(p).name.startswith(".r.json.") for p in synced)  # the file, under its temporary name
    assert str(tmp_path) in synced  # then the folder that holds the new name

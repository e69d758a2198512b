"""io, results, profiles and encoders: the plumbing every notebook relies on."""
import json
import os

import numpy as np
import pytest
import torch

from xdrec import io, paths, profiles, results


def test_atomic_write_keeps_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "r.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_read_json_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n"a": 1,\n}\n')
    with pytest.raises(ValueError, match=r"bad\.json: line 3"):
        io.read_json(bad)


def test_numpy_and_safetensors_round_trip(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    io.save_numpy(tmp_path / "a.npy", a)
    assert np.array_equal(io.load_numpy(tmp_path / "a.npy"), a)
    t = {"w": torch.randn(3, 2)}
    io.save_safetensors(tmp_path / "w.safetensors", t, metadata={"k": "v"})
    assert torch.equal(io.load_safetensors(tmp_path / "w.safetensors")["w"], t["w"])


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("XDREC_DATA", str(tmp_path / "env"))
    c = paths.data_root_candidates(tmp_path / "arg")
    assert c[0] == tmp_path / "arg" and c[1] == tmp_path / "env"
    assert c[2].name == "data" and c[3].parts[-2:] == ("shared", "data")


def test_results_carry_provenance(monkeypatch, tmp_path):
    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path))
    p = results.save_result("demo", {"recall@10": 0.5}, profile="ci", dataset="synthetic", split="leave-last-out",
                            seed=3, wall_time_s=1.234, trainable_params=10)
    assert p == tmp_path / "ci" / "demo.json"
    rec = results.load_result("demo", "ci")
    assert rec["metrics"] == {"recall@10": 0.5}
    prov = rec["provenance"]
    assert (prov["dataset"], prov["seed"], prov["profile"], prov["wall_time_s"]) == ("synthetic", 3, "ci", 1.23)
    assert prov["git_commit"] and prov["device"].startswith(("cpu", "NVIDIA"))
    with pytest.raises(FileNotFoundError, match="reproduce.sh --profile ci"):
        results.load_result("missing", "ci")


def test_profiles():
    assert set(profiles.PROFILES) == {"ci", "book", "paper"}
    book = profiles.get_profile("book")
    assert book["name"] == "book" and book["id_baselines"]["max_len"] == 50
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.get_profile("huge")


def test_every_profile_sets_the_same_typed_fields_and_paper_is_the_defaults():
    """book and ci are paper with fields replaced: the same sections and fields, nested ones included
    (only a study's override dicts and free-form maps hold different keys), of the declared types."""
    from dataclasses import fields, is_dataclass

    assert profiles.SETTINGS["paper"] == profiles.Profile()  # the dataclasses' defaults are the paper's

    def shape(obj, path=()):
        assert is_dataclass(obj), path
        out = {}
        for f in fields(obj):
            v = getattr(obj, f.name)
            out[f.name] = shape(v, (*path, f.name)) if is_dataclass(v) else type(v).__name__ if v is not None else None
        return out

    def types_of(a, b, path=()):  # None is allowed where another profile sets a value (an optional cap)
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            if isinstance(a[k], dict):
                types_of(a[k], b[k], (*path, k))
            else:
                assert None in (a[k], b[k]) or a[k] == b[k] or {a[k], b[k]} <= {"int", "float"}, (path, k, a[k], b[k])

    paper = shape(profiles.PAPER)
    for name in ("book", "ci"):
        types_of(paper, shape(profiles.SETTINGS[name]), (name,))
        assert set(profiles.PROFILES[name]) == set(profiles.PROFILES["paper"])
    assert profiles.PROFILES["book"]["utgrec_tokenizer"]["lambda"] == 200.0  # the paper's name as the dict key


def test_text_encoder_unit_norm_semantics_and_cache(monkeypatch, tmp_path):
    from xdrec.encoders import TextEncoder, embed_item_texts

    monkeypatch.setenv("XDREC_CACHE", str(tmp_path))
    enc = TextEncoder()
    texts = ["red apple", "green apple fruit", "cordless hammer drill"]
    e = embed_item_texts(texts, enc, progress=False)
    assert e.shape == (3, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]  # two apples are closer than an apple and a drill
    # batching and length-sorting do not change a text's vector
    e_single = enc.encode([texts[2]], progress=False)
    assert np.allclose(e_single[0], e[2], atol=1e-5)
    # the second call is served from the cache, keyed by the texts
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 1
    e2 = embed_item_texts(texts, enc, progress=False)
    assert np.array_equal(e, e2)
    embed_item_texts(texts[:2], enc, progress=False)
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 2
    with pytest.raises(ValueError, match="position 1"):
        enc.encode(["ok", "  "], progress=False)


def test_backbones(tmp_path):
    from xdrec.encoders import load_causal_lm, tiny_causal_lm
    from xdrec.encoders.backbones import resolve_backbone

    m = tiny_causal_lm(vocab_size=50)
    assert m(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 50)
    with pytest.raises(FileNotFoundError, match="Nothing is downloaded"):
        resolve_backbone(tmp_path / "no-model")
    # a local Hugging Face folder loads by path, with fewer layers if asked
    m.save_pretrained(tmp_path / "tiny")
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")),
                                  eos_token="<unk>")
    tok.save_pretrained(tmp_path / "tiny")
    m2, tok2 = load_causal_lm(tmp_path / "tiny", num_hidden_layers=1)
    assert len(m2.model.layers) == 1 and tok2.pad_token is not None


def test_launcher_per_profile(monkeypatch):
    from xdrec.launch import launcher_for, run_stage

    monkeypatch.delenv("XDREC_LAUNCH", raising=False)
    assert launcher_for("book") is None and launcher_for("ci") is None
    assert launcher_for("paper") == ["accelerate", "launch"]
    monkeypatch.setenv("XDREC_LAUNCH", "accelerate launch --num_processes 4")
    assert launcher_for("book") == ["accelerate", "launch", "--num_processes", "4"]
    monkeypatch.setenv("XDREC_LAUNCH", "inprocess")
    assert launcher_for("paper") is None
    assert run_stage("xdrec.nothing", [], "paper", lambda: 42) == 42


def test_stored_result_reused_only_for_same_code_and_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path))
    fp = results.code_fingerprint("xdrec.metrics", "xdrec.data")
    assert fp == results.code_fingerprint("xdrec.data", "xdrec.metrics") and len(fp) == 16
    assert fp != results.code_fingerprint("xdrec.metrics")
    results.save_result("r", {"m": 1.0}, profile="ci", dataset="d", split="s", seed=0,
                        config={"epochs": 3}, code_fingerprint=fp)
    assert results.load_if_current("r", "ci", fp, {"epochs": 3})["metrics"] == {"m": 1.0}
    assert results.load_if_current("r", "ci", fp, {"epochs": 4}) is None  # other settings
    assert results.load_if_current("r", "ci", "0" * 16, {"epochs": 3}) is None  # other code
    assert results.load_if_current("missing", "ci", fp, {}) is None

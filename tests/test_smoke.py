"""The paper profile's smoke path: bad input refused before training, stand-ins, the smoke reduction."""
from __future__ import annotations

import json

import pytest
import torch

from xdrec import preflight, smoke
from xdrec.preflight import BadInputError, check_model_folder


def _tiny_folder(path, model_type: str):
    """A minimal model folder (random tiny weights, a real tokenizer) of ``model_type``."""
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model, Qwen2Config, Qwen2ForCausalLM

    from xdrec.encoders import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    if model_type == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    else:
        model = DebertaV2Model(DebertaV2Config(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=32))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"qwen2": _tiny_folder(root / "qwen2", "qwen2"), "deberta": _tiny_folder(root / "deberta", "deberta-v2")}


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        check_model_folder(tmp_path / "nowhere", "causal-lm", "XDREC_BACKBONE")


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="is empty"):
        check_model_folder(tmp_path / "empty", "causal-lm", "XDREC_BACKBONE")


def test_folder_without_config_or_weights_is_refused(tmp_path, folders):
    d = tmp_path / "half"
    d.mkdir()
    (d / "tokenizer.json").write_text("{}")
    with pytest.raises(BadInputError, match="config.json is missing"):
        check_model_folder(d, "causal-lm")
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(BadInputError, match="no weights"):
        check_model_folder(d, "causal-lm")


def test_wrong_architecture_is_refused(folders):
    # a DeBERTa folder passed as the causal LM (XDREC_BACKBONE), and a Qwen2 one as X-Cross's encoder
    with pytest.raises(BadInputError, match="model_type 'deberta-v2'.*causal language model"):
        check_model_folder(folders["deberta"], "causal-lm", "XDREC_BACKBONE")
    with pytest.raises(BadInputError, match="model_type 'qwen2'.*bidirectional encoder"):
        check_model_folder(folders["qwen2"], "encoder", "XDREC_ENCODER")
    assert check_model_folder(folders["qwen2"], "causal-lm") == folders["qwen2"]
    assert check_model_folder(folders["qwen2"], "content-lm") == folders["qwen2"]
    assert check_model_folder(folders["deberta"], "encoder") == folders["deberta"]


def test_env_variables_are_checked_by_preflight(monkeypatch, folders):
    monkeypatch.delenv("XDREC_DEVICE", raising=False)
    monkeypatch.setenv("XDREC_BACKBONE", str(folders["deberta"]))
    with pytest.raises(BadInputError, match="XDREC_BACKBONE"):
        preflight.check_paper_run()
    with pytest.raises(SystemExit):
        preflight.main([])
    monkeypatch.setenv("XDREC_BACKBONE", str(folders["qwen2"]))
    monkeypatch.setenv("XDREC_ENCODER", str(folders["deberta"]))
    assert preflight.check_paper_run()["XDREC_ENCODER"] == str(folders["deberta"])


def test_library_loaders_refuse_a_wrong_folder(monkeypatch, folders):
    from xdrec.encoders.backbones import load_causal_lm
    from xdrec.xcross.experiment import load_backbone

    with pytest.raises(BadInputError, match="causal language model"):
        load_causal_lm(folders["deberta"])
    with pytest.raises(BadInputError, match="bidirectional encoder"):
        load_backbone(str(folders["qwen2"]))
    lm, tok = load_causal_lm(folders["qwen2"])
    assert type(lm).__name__ == "Qwen2ForCausalLM" and tok.pad_token is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setenv("XDREC_DEVICE", "cuda")
    with pytest.raises(BadInputError, match="sees no GPU"):
        preflight.check_device()
    from xdrec.xcross.experiment import run_device

    with pytest.raises(BadInputError, match="XDREC_DEVICE=cuda"):
        run_device()
    monkeypatch.setenv("XDREC_DEVICE", "cpu")
    assert preflight.check_device() == "cpu"


def test_smoke_reduction(monkeypatch):
    monkeypatch.delenv(smoke.ENV, raising=False)
    assert (smoke.steps(None), smoke.rows(None), smoke.rows(500), smoke.provenance()) == (None, None, 500, None)
    monkeypatch.setenv(smoke.ENV, "1")
    assert smoke.steps(None) == smoke.STEPS and smoke.steps(1) == 1
    assert smoke.rows(None) == smoke.ROWS and smoke.rows(500) == smoke.ROWS


def test_smoke_profile_caps_batches_and_grids_only(monkeypatch):
    import copy

    from xdrec.profiles import PROFILES, get_profile

    monkeypatch.delenv(smoke.ENV, raising=False)
    real = get_profile("paper")
    assert {k: v for k, v in real.items() if k != "name"} == copy.deepcopy(PROFILES["paper"])  # untouched outside a smoke
    monkeypatch.setenv(smoke.ENV, "1")
    red = get_profile("paper")
    assert red["tiger"]["batch_size"] == smoke.BATCH and real["tiger"]["batch_size"] == 256
    assert red["utgrec_tokenizer"]["pretrain"]["batch_size"] == smoke.BATCH
    assert red["xcross"]["train"]["batch_size"] == min(real["xcross"]["train"]["batch_size"], smoke.BATCH)
    assert red["text_encoder"] == real["text_encoder"]  # an inference batch, not a training one
    assert red["tiger"]["seeds"] == real["tiger"]["seeds"][:smoke.SEEDS]
    sweeps = red["gencdr_studies"]["sweeps"]
    assert sweeps.keys() == real["gencdr_studies"]["sweeps"].keys()
    for axis, values in sweeps.items():  # a few of the paper's values, the main run's among them
        assert len(values) == smoke.GRID and set(values) <= set(real["gencdr_studies"]["sweeps"][axis])
    assert real["gencdr_recommender"]["domain_lora"]["r"] in sweeps["r"] and 64 not in real["gencdr_studies"]["sweeps"]["r"][:2]
    assert red["xcross"]["max_length"] == smoke.TOKENS < real["xcross"]["max_length"]
    assert red["xcross"]["limited"] == {"sizes": real["xcross"]["limited"]["sizes"][:smoke.GRID],
                                        "subsets": smoke.GRID}
    assert red["utgrec_studies"]["targets"] == real["utgrec_studies"]["targets"][:1]
    assert red["xcross"]["domains"] == real["xcross"]["domains"]  # the main runs keep every domain

    def without(d, drop=("batch_size", "seeds", "sweeps", "depths", "layers_study", "limited", "targets", "datasets",
                         "max_length", "max_text_tokens")):
        return {k: without(v, drop) for k, v in d.items() if k not in drop} if isinstance(d, dict) else d

    assert without(red) == without(real)  # architectures, losses, beams, data sets: the profile's


def test_evaluation_rows_are_capped_in_a_smoke_run(monkeypatch):
    import pandas as pd

    from xdrec import generative

    if not hasattr(generative, "evaluation_rows"):
        pytest.skip("xdrec.generative.evaluation_rows is not in this checkout")
    evaluation_rows, sample_rows = generative.evaluation_rows, generative.sample_rows
    monkeypatch.setenv(smoke.ENV, "1")

    rows = pd.DataFrame({"domain": [0] * 30 + [1] * 2, "user": range(32)})
    assert evaluation_rows(rows, None, 0).groupby("domain").size().tolist() == [smoke.ROWS, 2]
    assert len(sample_rows(rows, None, 0)) == 32  # sample_rows itself is what it was


def test_fit_stops_after_the_smoke_steps(monkeypatch):
    from xdrec.training import TrainConfig, fit

    monkeypatch.setenv(smoke.ENV, "1")
    model = torch.nn.Linear(2, 1)
    batches = [torch.randn(4, 2) for _ in range(10)]
    res = fit(model, lambda epoch: batches, None, TrainConfig(epochs=5, progress=False),
              loss_fn=lambda m, b: m(b).pow(2).mean())
    assert (res.global_step, res.epochs_run, res.stop_reason) == (smoke.STEPS, 1, "max_steps")


def test_smoke_results_are_flagged_and_kept_apart(monkeypatch, tmp_path):
    from xdrec import results

    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path))
    monkeypatch.setenv(smoke.ENV, "1")
    results.save_result("r", {"recall@10": 0.5}, profile="paper", dataset="d", split="s", seed=0)
    rec = results.load_result("r", "paper")
    assert smoke.is_smoke(rec) and rec["provenance"]["smoke"] == smoke.provenance()
    monkeypatch.delenv(smoke.ENV)
    with pytest.raises(smoke.SmokeMismatch, match="smoke-run result"):
        results.load_result("r", "paper")
    with pytest.raises(smoke.SmokeMismatch):
        results.load_results("paper")
    # without XDREC_RESULTS a smoke run writes under results/smoke/
    monkeypatch.delenv("XDREC_RESULTS")
    from xdrec.paths import project_root, results_dir

    monkeypatch.setenv(smoke.ENV, "1")
    assert results_dir("paper").parent == project_root() / "results" / "smoke"


def test_standins_load_through_the_paper_paths(tmp_path, monkeypatch):
    """The three stand-ins: their architectures, the paper profile's LoRA targets, the library loaders."""
    from xdrec.encoders import standins

    paths = standins.write_standins(tmp_path)
    assert json.loads((tmp_path / "deberta-v2-tiny" / "config.json").read_text())["model_type"] == "deberta-v2"
    for var, p in paths.items():
        monkeypatch.setenv(var, p)
    assert set(preflight.check_paper_run()) >= set(paths)
    from xdrec.profiles import get_profile
    from xdrec.utgrec import train_tokenizer as tz
    from xdrec.xcross import experiment as xp

    enc, _ = xp.new_encoder("paper")
    assert type(enc.backbone).__name__ == "DebertaV2Model" and enc.n_layers == 12
    model, tok = tz.build(tz.settings("paper"))
    assert type(model.encoder.lm).__name__ == "Qwen2VLForConditionalGeneration"
    from xdrec.encoders.backbones import load_causal_lm

    lm, _ = load_causal_lm(paths["XDREC_BACKBONE"])
    targets = get_profile("paper")["gencdr_recommender"]["target_modules"]
    names = {n.rsplit(".", 1)[-1] for n, _ in lm.named_modules()}
    assert set(targets) <= names


@pytest.mark.parametrize("kind", ["xlora", "meteora"])
def test_adapter_mixtures_run_on_deberta_v3_attention(kind):
    """DeBERTa-v3's query_proj / key_proj also project the relative-position embeddings: the
    per-token mixture weights of XLoRA must not be applied to them (it raised a shape error)."""
    from transformers import DebertaV2Config, DebertaV2Model

    from xdrec.xcross.deberta import DebertaLoRAEncoder
    from xdrec.xcross.integration import AdapterMixture

    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=32, relative_attention=True, position_buckets=8,
                             norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                             max_relative_positions=-1, position_biased_input=False, type_vocab_size=0)
    enc = DebertaLoRAEncoder(DebertaV2Model(config).eval(), ["a", "b", "t"], r=2, alpha=4, dropout=0.0,
                             target_modules=["query_proj", "value_proj"])
    model = AdapterMixture(enc, ["a", "b"], kind)
    ids = torch.randint(1, 50, (2, 3, 7))  # 2 rows x 3 choices x 7 tokens
    scores = model(ids, torch.ones_like(ids))
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()

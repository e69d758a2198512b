"""X-Cross: the multiple-choice task, LoRA adapters, the integrator (Eqs. 3-6) and the baselines.

Oracles: Hugging Face's own forward pass (with LoRA merged into the weights), Eq. 5 written as an
explicit loop over domain pairs, the independent source models (what X-Cross must equal when it
integrates nothing), and hand-computed ranks and losses.
"""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from xdrec.metrics import sampled_ranking
from xdrec.xcross import (AdapterMixture, ChoiceRows, DomainLoRAEncoder, MultiLoRALinear, PoolerScorer,
                          PromptCollator, SourceModel, XCross, choice_rows, cut_title, others_index, prompt_text,
                          refine)
from xdrec.xcross.experiment import choice_loss, summarize

pytestmark = pytest.mark.usefixtures("one_thread")
DOMAINS = ["A", "B", "C"]


def tiny_backbone(layers=3, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertModel(cfg, add_pooling_layer=False).eval()


def tiny_encoder(layers=3, seed=0, randomize=True):
    enc = DomainLoRAEncoder(tiny_backbone(layers, seed), DOMAINS, r=2, alpha=4, dropout=0.0).eval()
    if randomize:  # B starts at zero: give every adapter and head a real effect
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in enc.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return enc


def batch(b=2, c=3, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (b, c, t), generator=g)
    mask = torch.ones(b, c, t, dtype=torch.long)
    mask[0, :, -2:] = 0  # padding in one row
    return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------------------------------- prompts
def test_prompt_is_figure_1_with_titles_cut_to_8_words():
    assert cut_title("one two three four five six seven eight nine ten") == "one two three four five six seven eight"
    assert prompt_text(["SE Shovel Kit", "Whistle."], "Thermal Blankets") == (
        "History: 1: SE Shovel Kit. 2: Whistle. Candidate: Thermal Blankets")


def test_choice_rows_draw_popular_negatives_outside_history_and_target():
    frame = pd.DataFrame({"user": [5, 7, 9], "history": [[0, 1], [2], [3, 4, 5]], "target": [2, 6, 0],
                          "domain": [0, 0, 0]})
    pop = np.array([5, 5, 5, 5, 5, 5, 5, 0, 1, 1, 1, 1], dtype=float)
    rows = choice_rows(frame, pop, n_neg=4, seed=3)
    assert rows.candidates.shape == (3, 5)
    assert rows.candidates[:, 0].tolist() == [2, 6, 0]
    for h, cand in zip(rows.histories, rows.candidates):
        negs = set(cand[1:].tolist())
        assert len(negs) == 4 and cand[0] not in negs and not negs & set(h.tolist()) and 7 not in negs
    again = choice_rows(frame, pop, n_neg=4, seed=3)
    assert (again.candidates == rows.candidates).all()
    sub = choice_rows(frame, pop, n_neg=4, seed=3, max_rows=2)
    assert len(sub) == 2 and set(sub.users) <= {5, 7, 9}


def test_collator_shapes_and_left_truncation_keeps_candidate():
    from xdrec.encoders import minilm_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    titles = [f"item number {i} with a long title" for i in range(10)]
    rows = ChoiceRows(np.array([1, 2]), [np.arange(8), np.array([3])], np.array([[9, 0, 1], [4, 5, 6]]))
    col = PromptCollator(tok, titles, rows, max_history=15, max_length=24)
    out = col([0, 1])
    assert out["input_ids"].shape[:2] == (2, 3) and out["input_ids"].shape[2] <= 24
    first = tok.decode(out["input_ids"][0, 0][out["attention_mask"][0, 0].bool()], skip_special_tokens=True)
    assert first.endswith("candidate : item number 9 with a long title")
    assert col.prompts([1])[0] == "History: 1: item number 3 with a long title. Candidate: item number 4 with a long title"
    assert tok.truncation_side == "right"  # restored


# ---------------------------------------------------------------------------------------- LoRA
def test_multilora_linear_is_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    m = MultiLoRALinear(base, ["a", "b"], r=2, alpha=8, dropout=0.0)
    x = torch.randn(3, 6)
    assert torch.allclose(m(x), base(x))  # B = 0 at init, and no adapter active
    with torch.no_grad():
        for p in list(m.lora_B.values()):
            p.normal_()
    m.active = "a"
    expected = base(x) + 4.0 * x @ (m.lora_B["a"] @ m.lora_A["a"]).T
    assert torch.allclose(m(x), expected, atol=1e-5)
    m.active, m.mix_names = None, ["a", "b"]
    w = torch.tensor([[0.25, 0.75]]).expand(3, 2)
    m.mix = w
    mixed = base(x) + 4.0 * (0.25 * x @ (m.lora_B["a"] @ m.lora_A["a"]).T + 0.75 * x @ (m.lora_B["b"] @ m.lora_A["b"]).T)
    assert torch.allclose(m(x), mixed, atol=1e-5)


def test_encoder_without_adapter_is_the_backbone_and_with_adapter_the_merged_model():
    enc = tiny_encoder()
    b = batch()
    ids, mask = b["input_ids"].flatten(0, 1), b["attention_mask"].flatten(0, 1)
    ref = tiny_backbone()(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = mask.bool()
    assert torch.allclose(enc.encode(ids, mask, adapter=None)[keep], ref[keep], atol=1e-5)
    merged = tiny_backbone()
    with torch.no_grad():
        for layer, lora in zip(merged.encoder.layer, enc.lora_layers):
            for name, m in zip(("query", "value"), lora):
                lin = getattr(layer.attention.self, name)
                lin.weight += m.scale * m.lora_B["B"] @ m.lora_A["B"]
    ref_b = merged(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(enc.encode(ids, mask, adapter="B")[keep], ref_b[keep], atol=1e-4)
    assert not torch.allclose(ref_b[keep], ref[keep], atol=1e-3)


def test_domain_state_round_trip_and_clear_error():
    enc, other = tiny_encoder(seed=0), tiny_encoder(seed=0, randomize=False)
    state = enc.domain_state("A")
    assert any("heads.A" in k for k in state) and all(("A" in k) for k in state)
    other.load_domain_state("A", state)
    b = batch()
    assert torch.allclose(SourceModel(enc, "A")(**b), SourceModel(other, "A")(**b), atol=1e-5)
    with pytest.raises(KeyError, match="adapter 'B'"):
        other.load_domain_state("B", state)


# ---------------------------------------------------------------------------------------- Eq. 5
def refine_loop(h, z, beta, gamma):
    """Eq. 5 as written: for every domain m, a sum over the other domains m'."""
    n = h.shape[-2]
    zz = z.reshape(*z.shape[:-1], n, 2, n - 1)
    out = []
    for m in range(n):
        acc = h[..., m, :].clone()
        for j, mp in enumerate([k for k in range(n) if k != m]):
            acc = acc + beta * zz[..., m, 0, j:j + 1] * h[..., mp, :]
            acc = acc + gamma * zz[..., m, 1, j:j + 1] * (h[..., m, :] - h[..., mp, :])
        out.append(acc)
    return torch.stack(out, dim=-2)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_refine_matches_eq5_loop(n):
    torch.manual_seed(n)
    h, z = torch.randn(3, 5, n, 7), torch.randn(3, 5, 2 * n * (n - 1))
    assert torch.allclose(refine(h, z, 0.5, 0.4), refine_loop(h, z, 0.5, 0.4), atol=1e-5)
    assert others_index(3).tolist() == [[1, 2], [0, 2], [0, 1]]


def test_w_concat_shape_and_paper_parameter_ratio():
    enc = tiny_encoder(layers=3)
    for n, sources in ((2, ["A", "B"]), (3, DOMAINS)):
        x = XCross(enc, sources, n_layers=2)
        assert x.w_concat[0].weight.shape == (2 * n * (n - 1), n * 16)
        assert x.integrator_params() == 2 * 2 * n * (n - 1) * n * 16
    # footnote 3: n = 2, d = 768 -> 4 x 2 x 768 per layer against LoRA's 2 x 16 x 768: 25%
    assert (4 * 2 * 768) / (2 * 16 * 768) == 0.25


def _independent(enc, sources, weights, head, b):
    ids, mask = b["input_ids"].flatten(0, 1), b["attention_mask"].flatten(0, 1)
    h = sum(w * enc.encode(ids, mask, adapter=s) for w, s in zip(weights, sources))
    return head(h).view(b["input_ids"].shape[:2])


@pytest.mark.parametrize("beta,gamma", [(0.0, 0.0), (0.5, 0.4)])
def test_xcross_without_integration_is_the_weighted_sum_of_independent_sources(beta, gamma):
    enc = tiny_encoder()
    x = XCross(enc, ["A", "C"], n_layers=2, beta=beta, gamma=gamma).eval()
    with torch.no_grad():
        x.w_final.copy_(torch.tensor([0.3, 0.9]))
    b = batch()
    # W_concat starts at zero (z = 0), so nothing is mixed yet, whatever beta and gamma are
    assert torch.allclose(x(**b), _independent(enc, ["A", "C"], [0.3, 0.9], x.head, b), atol=1e-5)


def test_xcross_integrates_layer_by_layer():
    enc = tiny_encoder()
    b = batch()
    ids, mask = b["input_ids"].flatten(0, 1), b["attention_mask"].flatten(0, 1)
    x = XCross(enc, ["A", "B"], n_layers=2).eval()
    with torch.no_grad():
        for lin in x.w_concat:
            lin.weight.normal_(std=0.1)
    # the oracle: run both sources layer by layer and apply Eq. 4-5 after each of the top 2 layers
    h, m = enc.embed(ids, mask)
    hs = [h, h]
    for layer in range(3):
        hs = [enc.run_layer(layer, hh, m, s) for hh, s in zip(hs, ["A", "B"])]
        if layer >= 1:
            cat = torch.cat(hs, dim=-1)
            z = cat @ x.w_concat[layer - 1].weight.T
            hs = list(refine_loop(torch.stack(hs, -2), z, 0.5, 0.4).unbind(-2))
    expected = x.head(0.5 * hs[0] + 0.5 * hs[1]).view(2, 3)
    assert torch.allclose(x(**b), expected, atol=1e-5)
    assert not torch.allclose(expected, _independent(enc, ["A", "B"], [0.5, 0.5], x.head, b), atol=1e-4)


def test_xcross_trains_only_integrator_weights_and_head():
    enc = tiny_encoder()
    x = XCross(enc, ["A", "B"], n_layers=2)
    trainable = {n for n, p in x.named_parameters() if p.requires_grad}
    assert trainable == {"w_concat.0.weight", "w_concat.1.weight", "w_final"} | {
        f"head.{k}" for k in ("pooler.weight", "pooler.bias", "scorer.weight", "scorer.bias")}
    choice_loss(x, batch()).backward()
    assert x.w_concat[0].weight.grad.abs().sum() > 0  # zero-initialised, yet it learns
    off = XCross(tiny_encoder(), ["A", "B"], n_layers=2, beta=0.0, gamma=0.0)
    choice_loss(off, batch()).backward()
    assert off.w_concat[0].weight.grad.abs().sum() == 0  # "-Layers": the integrator is cut off
    with pytest.raises(KeyError):
        XCross(enc, ["A", "Z"], n_layers=1)
    with pytest.raises(ValueError):
        XCross(enc, ["A"], n_layers=1)


# ---------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("kind", ["meteora", "xlora"])
def test_mixture_with_a_saturated_gate_is_that_source(kind):
    enc = tiny_encoder()
    mix = AdapterMixture(enc, ["A", "B"], kind).eval()
    with torch.no_grad():
        gates = mix.gates if kind == "meteora" else [mix.classifier]
        for g in gates:
            g.weight.zero_()
            g.bias.copy_(torch.tensor([30.0, -30.0]).repeat(g.bias.numel() // 2))
    b = batch()
    single = SourceModel(enc, "A", adapter="A")
    ids, mask = b["input_ids"].flatten(0, 1), b["attention_mask"].flatten(0, 1)
    expected = mix.head(enc.encode(ids, mask, adapter="A")).view(2, 3)
    assert torch.allclose(mix(**b), expected, atol=1e-4)
    assert all(m.mix is None and m.mix_fn is None for layer in enc.lora_layers for m in layer)
    assert single(**b).shape == (2, 3)


def test_pooler_scorer_trains_only_a_copy_of_the_head():
    enc = tiny_encoder()
    ps = PoolerScorer(enc, "B")
    assert {n for n, p in ps.named_parameters() if p.requires_grad} == {
        "head.pooler.weight", "head.pooler.bias", "head.scorer.weight", "head.scorer.bias"}
    assert torch.allclose(ps(**batch()), SourceModel(enc, "B")(**batch()), atol=1e-5)


# ---------------------------------------------------------------------------------------- loss, ranks
def test_choice_loss_and_ranks_by_hand():
    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 0.0]])

    loss = choice_loss(Fixed(), {"input_ids": None, "attention_mask": None})
    by_hand = np.mean([-math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1)),
                       -math.log(1 / (1 + math.exp(1) + math.exp(3))),
                       -math.log(math.exp(1) / (2 * math.exp(1) + 1))])
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    s = Fixed()(None, None).numpy()
    ranks = np.array([0, 2, 1])  # the tie in row 3 counts against the target
    m = summarize(ranks)
    assert m["hit@1"] == pytest.approx(1 / 3) and m["hit@3"] == 1.0
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert sampled_ranking(s, ks=(1, 3, 10))["mrr@10"] == pytest.approx(m["mrr@10"])


def test_deberta_encoder_runs_layer_by_layer_like_hugging_face():
    from transformers import DebertaV2Config, DebertaV2Model

    from xdrec.xcross.deberta import DebertaLoRAEncoder

    def make():
        torch.manual_seed(0)
        cfg = DebertaV2Config(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=64, relative_attention=True,
                              position_buckets=8, pos_att_type=["p2c", "c2p"], max_relative_positions=16,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, type_vocab_size=0)
        return DebertaV2Model(cfg).eval()

    enc = DebertaLoRAEncoder(make(), ["A", "B"], r=2, alpha=4, dropout=0.0,
                             target_modules=("query_proj", "value_proj")).eval()
    b = batch()
    ids, mask = b["input_ids"].flatten(0, 1), b["attention_mask"].flatten(0, 1)
    keep = mask.bool()
    ref = make()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(enc.encode(ids, mask, adapter="A")[keep], ref[keep], atol=1e-5)  # B = 0: no change yet
    with torch.no_grad():
        for layer in enc.lora_layers:
            for m in layer:
                m.lora_B["A"].normal_(std=0.5)
    assert not torch.allclose(enc.encode(ids, mask, adapter="A")[keep], ref[keep], atol=1e-3)
    x = XCross(enc, ["A", "B"], n_layers=2)
    assert x(**b).shape == (2, 3)


def test_parameter_counts_match_the_models():
    from xdrec.xcross.report import parameter_counts

    enc = tiny_encoder(layers=3)
    counts = parameter_counts(16, 3, r=2, lora_modules=2, n_sources=2, integrated_layers=2)
    assert counts["lora"] == sum(p.numel() for p in enc.adapter_parameters("A"))
    assert counts["head"] == sum(p.numel() for p in enc.heads["A"].parameters())
    x = XCross(enc, ["A", "B"], n_layers=2)
    assert counts["xcross_w_concat"] == x.integrator_params()
    assert sum(p.numel() for p in x.parameters() if p.requires_grad) == (
        counts["xcross_w_concat"] + counts["xcross_w_final"] + counts["head"])


def test_paired_p_aligns_rows_by_user():
    from xdrec.xcross.report import paired_p

    a = {"extra": {"rows": {"user": [1, 2, 3, 4], "rank": [0, 0, 5, 0]}}}
    b = {"extra": {"rows": {"user": [4, 3, 2, 1], "rank": [3, 5, 1, 0]}}}
    diff, p = paired_p(a, b, "hit@1")
    assert diff == pytest.approx(0.5)  # users 2 and 4: hit for a, miss for b
    from scipy import stats
    assert p == pytest.approx(stats.ttest_rel([1, 1, 0, 1], [1, 0, 0, 0]).pvalue)


def test_mean_pooling_ignores_padding():
    from xdrec.xcross import ChoiceHead

    head = ChoiceHead(4, pooling="mean")
    h = torch.tensor([[[1.0, 2, 3, 4], [3, 2, 1, 0], [100, 100, 100, 100]]])
    assert torch.allclose(head.pool(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 2, 2, 2]]))
    with pytest.raises(ValueError):
        ChoiceHead(4, pooling="max")


@pytest.mark.realdata
def test_ci_profile_pipeline_on_real_data(tmp_path, monkeypatch, xcross_data):
    """Sources, zero-shot evaluation, source selection and X-Cross end to end (tiny model, real Tools data)."""
    from xdrec.xcross import experiment as xp

    for var in ("XDREC_RESULTS", "XDREC_CHECKPOINTS"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("XDREC_TORCH_THREADS", "1")
    recs = xp.run_table2(["Tools"], profile="ci", models=("sasrec", "xcross"))
    by_name = {r["name"]: r for r in recs}
    x = by_name["xcross__xcross__Tools__seed0"]
    sources = x["config"]["sources"]
    assert len(sources) == 2 and "Tools" not in sources
    ranks = np.asarray(x["extra"]["rows"]["rank"])
    assert len(ranks) == 12 and ranks.min() >= 0 and ranks.max() <= 29
    users = by_name["xcross__lora__Tools__seed0"]["extra"]["rows"]["user"]
    assert users == x["extra"]["rows"]["user"] == by_name["xcross__sasrec__Tools__seed0"]["extra"]["rows"]["user"]
    assert x["metrics"]["hit@1"] == pytest.approx(np.mean(ranks == 0))
    again = xp.run_target_model("xcross", "Tools", profile="ci")  # read back, not retrained
    assert again["provenance"]["written_at"] == x["provenance"]["written_at"]


def _record(users, ranks, hit1=None):
    ranks = np.asarray(ranks)
    return {"metrics": {"hit@1": float(np.mean(ranks == 0)) if hit1 is None else hit1},
            "extra": {"rows": {"user": list(users), "rank": ranks.tolist()}}}


def test_limited_summary_follows_table_3_definitions():
    from scipy import stats

    from xdrec.xcross.report import limited_summary

    users = list(range(8))
    # size 50: X-Cross hits users 0-5 in subset 0 and 0-3 in subset 1; LoRA hits user 0 in both
    x50 = [_record(users, [0] * 6 + [5] * 2), _record(users, [0] * 4 + [5] * 4)]
    l50 = [_record(users, [0] + [3] * 7), _record(users, [0] + [3] * 7)]
    # size 100: both hit users 0-3 in both subsets (no difference)
    x100 = [_record(users, [0] * 4 + [1] * 4)] * 2
    l100 = [_record(users, [0] * 4 + [2] * 4)] * 2
    curve, t3 = limited_summary({("xcross", 50): x50, ("lora", 50): l50, ("xcross", 100): x100,
                                 ("lora", 100): l100}, reference=0.3)
    assert curve.loc[50, "xcross_mean"] == pytest.approx(0.625)  # (6/8 + 4/8) / 2
    assert curve.loc[50, "xcross_std"] == pytest.approx(np.std([0.75, 0.5], ddof=1))
    assert curve.loc[50, "lora_mean"] == pytest.approx(0.125)
    # per user, averaged over subsets: X-Cross 1,1,1,1,.5,.5,0,0; LoRA 1,0,...,0
    d = np.array([0, 1, 1, 1, .5, .5, 0, 0])
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert curve.loc[50, "diff"] == pytest.approx(d.mean())
    assert curve.loc[50, "p"] == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert curve.loc[100, "p"] == 1.0 and curve.loc[100, "diff"] == 0
    # X-Cross exceeds the reference (.3) at 50, LoRA (.125, then .5) at 100: gap (100 - 50) / 100
    assert t3["xcross_exceeds_reference_at"] == 50 and t3["lora_exceeds_reference_at"] == 100
    assert t3["gap_%"] == 50.0
    assert t3["significant_below_M"] == (50 if curve.loc[50, "p"] < 0.05 else None)


def test_convergence_regression_recovers_a_linear_law_and_matches_normal_equations():
    from xdrec.xcross.report import convergence_regression

    rng = np.random.default_rng(0)
    a, b = rng.normal(30, 5, 12), rng.normal(8, 2, 12)
    exact = pd.DataFrame({"prompt_length": a, "prompt_diversity": b, "hit@1": 1 + 2 * a - 3 * b})
    fit = convergence_regression(exact)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["coef"]["prompt_length"] == pytest.approx(2) and fit["coef"]["prompt_diversity"] == pytest.approx(-3)
    sy = exact["hit@1"].std()
    assert fit["coef_standardised"]["prompt_length"] == pytest.approx(2 * a.std(ddof=1) / sy)
    noisy = exact.assign(**{"hit@1": exact["hit@1"] + rng.normal(0, 3, 12)})
    A = np.column_stack([np.ones(12), a, b])
    beta = np.linalg.solve(A.T @ A, A.T @ noisy["hit@1"].to_numpy())  # normal equations
    res = noisy["hit@1"] - A @ beta
    fit = convergence_regression(noisy)
    assert [fit["intercept"], *fit["coef"].values()] == pytest.approx(beta)
    assert fit["r2"] == pytest.approx(1 - (res ** 2).sum() / ((noisy["hit@1"] - noisy["hit@1"].mean()) ** 2).sum())
    # F-test from the nested models' residual sums of squares (intercept only vs both regressors)
    from scipy import stats

    rss0, rss1 = ((noisy["hit@1"] - noisy["hit@1"].mean()) ** 2).sum(), (res ** 2).sum()
    F = ((rss0 - rss1) / 2) / (rss1 / (12 - 3))
    assert fit["f_p"] == pytest.approx(stats.f.sf(F, 2, 9), rel=1e-6)
    with pytest.raises(ValueError, match="cannot fit"):
        convergence_regression(exact.head(3))


def test_prompt_features_count_the_positive_prompt_as_the_model_reads_it():
    from xdrec.xcross.report import prompt_features

    class Words:  # a whitespace tokenizer
        def __call__(self, texts):
            return {"input_ids": [t.split() for t in texts]}

    titles = ["a b", "c", "d e f"]
    rows = ChoiceRows(users=np.array([0, 1]), histories=[np.array([0, 1, 2]), np.array([1])],
                      candidates=np.array([[2, 0], [0, 1]]))
    # "History: 1: c. 2: d e f. Candidate: d e f" (max_history 2) -> 11 words; "History: 1: c. Candidate: a b" -> 6
    f = prompt_features(titles, rows, Words(), max_history=2)
    assert f["prompt_length"] == pytest.approx(8.5)
    assert f["prompt_diversity"] == pytest.approx(np.std([11, 6], ddof=1))
    assert prompt_features(titles, rows, Words(), max_history=2, max_length=7)["prompt_length"] == pytest.approx(6.5)

"""TIGER baseline: prompts, training examples, step function vs. teacher forcing, beam search vs.
exhaustive scoring, domain constraint, overfitting a planted next-item rule, bad input."""
import numpy as np
import pytest
import torch

from xdrec.decoding import constrained_beam_search, masked_log_softmax, score_all_items
from xdrec.generative import SemanticIdVocab
from xdrec.tiger import START, TIGER, NextItemExamples, TIGERConfig


pytestmark = pytest.mark.usefixtures("one_thread")


TINY = TIGERConfig(d_model=16, n_layers=1, n_heads=2, d_kv=8, d_ff=32, dropout=0.0, max_items=3, beams=6)
DOMAINS = ["Sports", "Tools"]


def synthetic_ids(n=20, seed=0):
    """``n`` unique 4-level IDs (the last level numbers items sharing the first three codes) and two domains."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, size=(n, 3))
    extra = np.zeros(n, dtype=np.int64)
    seen: dict[tuple, int] = {}
    for i, c in enumerate(map(tuple, codes)):
        extra[i] = seen.get(c, 0)
        seen[c] = extra[i] + 1
    ids = np.concatenate([codes, extra[:, None]], 1)
    domain = (np.arange(n) >= n // 2).astype(np.int64)
    return ids, domain


def tiny_model(seed=0, n=20, config=TINY):
    ids, domain = synthetic_ids(n)
    torch.manual_seed(seed)
    return TIGER(ids, domain, DOMAINS, config).eval()


# ---- inputs ---------------------------------------------------------------------------------------
def test_prompt_layout_and_truncation():
    m = tiny_model()
    v = SemanticIdVocab(tuple(m.vocab.codebook_sizes), tuple(DOMAINS), offset=3)
    hist = [1, 12, 3, 15, 7]
    ids, mask = m.prompts([hist, [4]], [1, 0])
    # by hand: the last max_items = 3 items, each <d><a><b><c><e>, then the target marker
    want = []
    for i in hist[-3:]:
        want.append(v.domain_token(int(m.item_domain[i])))
        want.extend(int(c) + o for c, o in zip(m.ids[i], v.level_offsets))
    want.append(v.domain_token(1))
    assert ids[0].tolist() == want and mask[0].tolist() == [1] * len(want)
    short = [v.domain_token(int(m.item_domain[4]))] + [int(c) + o for c, o in zip(m.ids[4], v.level_offsets)] + [v.domain_token(0)]
    assert ids[1, : len(short)].tolist() == short and ids[1, len(short):].eq(0).all()
    assert mask[1].tolist() == [1] * len(short) + [0] * (len(want) - len(short))


def test_next_item_examples_cover_every_target_once():
    m = tiny_model()
    timelines = [[0, 11, 2, 13, 4], [5, 6], [7]]
    ex = NextItemExamples(timelines, m, batch_size=3, seed=1, bucket=2)
    assert len(ex) == 4 + 1  # every item after the first; a 1-item timeline gives none
    got = []
    for epoch in (1, 2):
        seen = []
        for b in ex(epoch):
            for row in range(len(b["codes"])):
                seen.append((b["input_ids"][row][b["attention_mask"][row].bool()].tolist(), b["codes"][row].tolist()))
        got.append(seen)
        # independent construction: history = up to max_items (3) items before the target, target's marker last
        want = []
        for s in timelines:
            for j in range(1, len(s)):
                h, t = s[max(0, j - 3): j], s[j]
                toks = m.items.history(h, int(m.item_domain[t])).tolist()
                want.append((toks, m.ids[t].tolist()))
        assert sorted(map(str, seen)) == sorted(map(str, want))
    assert got[0] != got[1]  # reshuffled every epoch
    # a token budget per epoch: a different sample of whole examples each epoch, never over the budget
    width = m.n_levels + 1
    cost = {e: min(int(ex.position[e]), 3) * width + 1 for e in range(len(ex))}
    capped = NextItemExamples(timelines, m, batch_size=2, seed=1, tokens_per_epoch=30)
    samples = [sorted(int(e) for b in capped.order(epoch) for e in b) for epoch in range(1, 8)]
    for s in samples:
        used = sum(cost[e] for e in s)
        assert len(s) == len(set(s)) and 30 - max(cost.values()) < used <= 30
    assert len({tuple(s) for s in samples}) > 1
    assert sum(int(b["attention_mask"].sum()) for b in capped(1)) == sum(cost[e] for e in samples[0])


# ---- the step function is the teacher-forced decoder ----------------------------------------------
def test_step_fn_matches_teacher_forced_forward():
    """Scores from the step function (cached cross-attention, all beams at once) equal the plain forward pass."""
    m = tiny_model(seed=3)
    rows = [([0, 12, 5], 0), ([17], 1), ([3, 4, 15, 9, 1], 1)]
    for hist, d in rows:
        inp, mask = m.prompts([hist], [d])
        items = np.flatnonzero(m.item_domain == d)
        codes = torch.from_numpy(m.ids[items])
        oracle = torch.zeros(len(items))
        with torch.no_grad():
            logits = m.code_logits(inp.expand(len(items), -1), mask.expand(len(items), -1), codes)
        doms = torch.full((len(items),), d)
        for level in range(m.n_levels):
            allowed = m.trie.allowed(m.trie.walk(doms, codes[:, :level]), level)
            lp = masked_log_softmax(logits[level], allowed)
            oracle += lp.gather(1, codes[:, level: level + 1]).squeeze(1)
        scored = score_all_items(m.step_fn(inp, mask), m.trie, d, codes)[0]
        torch.testing.assert_close(scored, oracle, rtol=1e-5, atol=1e-5)


def test_step_reuses_cross_attention_keys():
    m = tiny_model()
    calls = []
    hooks = [b.layer[1].EncDecAttention.k.register_forward_hook(lambda *a: calls.append(1)) for b in m.t5.decoder.block]
    inp, mask = m.prompts([[1, 2], [13]], [0, 1])
    step = m.step_fn(inp, mask)
    built = len(calls)
    constrained_beam_search(step, m.trie, torch.tensor([0, 1]), beams=5)
    for h in hooks:
        h.remove()
    assert built == len(m.t5.decoder.block) and len(calls) == built


def test_beam_search_with_enough_beams_is_exhaustive_scoring():
    m = tiny_model(seed=1)
    hist, doms = [[0, 12, 5], [17], [3, 4, 15, 9, 1], []], [0, 1, 1, 0]
    inp, mask = m.prompts(hist, doms)
    res = constrained_beam_search(m.step_fn(inp, mask), m.trie, torch.tensor(doms), beams=20)
    for r, d in enumerate(doms):
        items = np.flatnonzero(m.item_domain == d)
        scores = score_all_items(m.step_fn(inp[r:r + 1], mask[r:r + 1]), m.trie, d, torch.from_numpy(m.ids[items]))[0]
        order = items[np.argsort(-scores.numpy(), kind="stable")]
        assert res.items[r, : len(items)].tolist() == order.tolist()
        assert (res.items[r, len(items):] == -1).all()
        torch.testing.assert_close(res.scores[r, : len(items)], scores.sort(descending=True).values, rtol=1e-5, atol=1e-5)
    # recommend is the same search, cut to k
    np.testing.assert_array_equal(m.recommend(hist, doms, 4, beams=20), res.items[:, :4].numpy())


def test_recommendations_stay_in_the_target_domain():
    m = tiny_model(seed=2)
    rng = np.random.default_rng(0)
    hist = [rng.integers(0, 20, size=rng.integers(0, 6)).tolist() for _ in range(40)]
    doms = rng.integers(0, 2, size=40).tolist()
    out = m.recommend(hist, doms, 6)
    assert out.shape == (40, 6) and (out >= 0).all()  # 10 items per domain >= 6
    assert (m.item_domain[out] == np.asarray(doms)[:, None]).all()
    assert all(len(set(r)) == len(r) for r in out.tolist())


# ---- learning a planted rule --------------------------------------------------------------------
def test_overfits_a_planted_next_item_rule():
    """Next item = f(last item) for a fixed permutation f: the loss falls and f(i) is ranked first."""
    n = 16
    ids, domain = synthetic_ids(n, seed=4)
    nxt = np.random.default_rng(5).permutation(n)
    timelines = []
    for start in range(n):
        s = [start]
        for _ in range(3):
            s.append(int(nxt[s[-1]]))
        timelines.append(s)
    torch.manual_seed(0)
    cfg = TIGERConfig(d_model=32, n_layers=2, n_heads=2, d_kv=16, d_ff=64, dropout=0.0, max_items=2, beams=8)
    m = TIGER(ids, domain, DOMAINS, cfg).train()
    ex = NextItemExamples(timelines, m, batch_size=48, seed=0)  # all 48 examples in one batch
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for epoch in range(1, 121):
        for batch in ex(epoch):
            loss = m(**batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[0] > 0.8 and max(losses[-5:]) < 0.02
    hist = [[int(np.flatnonzero(nxt == i)[0]), i] for i in range(n)]  # any history ending in i
    out = m.recommend(hist, domain[nxt].tolist(), 3)
    np.testing.assert_array_equal(out[:, 0], nxt)


def test_fit_without_a_checkpoint_folder_restores_the_best_epoch():
    """fit keeps the best weights in memory when there is no folder; a T5 ties its embeddings."""
    from xdrec.training import TrainConfig, fit

    m = tiny_model(seed=1).train()
    ex = NextItemExamples([[0, 1, 2, 3], [4, 5, 6], [10, 11, 12, 13]], m, batch_size=4, seed=0)
    scores, snapshots = iter([0.3, 0.8, 0.1]), []

    def validate(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"recall@10": next(scores)}

    cfg = TrainConfig(epochs=3, lr=1e-2, patience=None, checkpoint_dir=None, progress=False)
    res = fit(m, ex, validate, cfg, metric="recall@10")
    assert res.best_epoch == 2
    state = m.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in snapshots[1].items())
    assert not all(torch.equal(v, state[k]) for k, v in snapshots[2].items())


def test_bf16_autocast_keeps_weights_and_beam_search_in_fp32():
    """mixed_precision="bf16" on the CPU: the training forward runs in bf16 (Accelerate's autocast),
    the weights stay fp32 and the beam search of validation stays fp32 and equal to a plain model's."""
    from xdrec.training import TrainConfig, fit

    m = tiny_model(seed=1).train()
    seen = []
    m.t5.encoder.block[0].layer[0].SelfAttention.q.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    ex = NextItemExamples([[0, 1, 2, 3], [4, 5, 6], [10, 11, 12, 13]], m, batch_size=4, seed=0)
    at_validation = []

    def validate(model):
        seen.clear()
        top = model.recommend([[0, 1], [10, 11]], [0, 1], 3)
        at_validation.append(set(seen))
        plain = tiny_model(seed=1)
        plain.load_state_dict(model.state_dict())
        np.testing.assert_array_equal(top, plain.recommend([[0, 1], [10, 11]], [0, 1], 3))
        seen.clear()
        return {"recall@10": 0.0}

    cfg = TrainConfig(epochs=2, lr=1e-2, patience=None, checkpoint_dir=None, progress=False, cpu=True,
                      mixed_precision="bf16")
    fit(m, ex, validate, cfg, metric="recall@10")
    assert at_validation == [{torch.float32}, {torch.float32}]
    m.train()
    fp32 = []
    m.t5.encoder.block[0].layer[0].SelfAttention.q.register_forward_hook(lambda mod, inp, out: fp32.append(out.dtype))
    m(**next(iter(ex(1))))  # outside fit: fp32 again (Accelerate's autocast wrapper is gone)
    assert fp32 and set(fp32) == {torch.float32}
    assert "forward" not in m.__dict__
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_bf16_autocast_runs_the_training_forward_in_bf16():
    """Under mixed_precision="bf16" every training step's attention projections run in bf16; a
    later fit of the same model under "no" runs them in fp32."""
    from xdrec.training import TrainConfig, fit

    m = tiny_model(seed=1).train()
    seen = []
    m.t5.encoder.block[0].layer[0].SelfAttention.q.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    ex = NextItemExamples([[0, 1, 2, 3], [4, 5, 6], [10, 11, 12, 13]], m, batch_size=4, seed=0)
    for precision, dtype in (("bf16", torch.bfloat16), ("no", torch.float32)):
        seen.clear()
        cfg = TrainConfig(epochs=1, lr=1e-2, patience=None, checkpoint_dir=None, progress=False, cpu=True,
                          mixed_precision=precision)
        fit(m, ex, lambda model: {"recall@10": 0.0}, cfg, metric="recall@10")
        assert seen and set(seen) == {dtype}, (precision, seen)


def test_runner_passes_the_precision_to_training(monkeypatch):
    """run_tiger hands the profile's (or an override's) mixed_precision to fit; unset, it stays out
    of the stored settings, so results stored before the option existed stay current."""
    from xdrec.tiger import experiment

    assert "mixed_precision" not in experiment.settings("ci", "amazon18-xcross", 0)["tiger"]
    over = {"epochs": 1, "tokens_per_epoch": 4_000, "mixed_precision": "bf16"}
    assert experiment.settings("ci", "amazon18-xcross", 0, over)["tiger"]["mixed_precision"] == "bf16"
    got = []

    class Stop(Exception):
        pass

    def fake_fit(model, examples, validate, cfg, **kw):
        got.append(cfg.mixed_precision)
        raise Stop

    monkeypatch.setattr(experiment, "fit", fake_fit)
    monkeypatch.setattr(experiment, "stored_or_computed", lambda name, profile, fp, config, compute, force: compute())
    with pytest.raises(Stop):
        experiment.run_tiger("amazon18-xcross", profile="ci", overrides=over, progress=False)
    assert got == ["bf16"]


def test_untrained_model_does_not_know_the_rule():
    """The planted-rule check can fail: an untrained model ranks f(i) first for few rows."""
    n = 16
    ids, domain = synthetic_ids(n, seed=4)
    nxt = np.random.default_rng(5).permutation(n)
    torch.manual_seed(0)
    m = TIGER(ids, domain, DOMAINS, TIGERConfig(d_model=32, n_layers=1, n_heads=2, d_kv=16, d_ff=64, dropout=0.0))
    out = m.recommend([[i] for i in range(n)], domain[nxt].tolist(), 1)
    assert (out[:, 0] == nxt).mean() < 0.5


# ---- bad input ----------------------------------------------------------------------------------
def test_item_without_id_is_named():
    ids, domain = synthetic_ids(10)
    ids[7, 2] = -1
    with pytest.raises(ValueError, match="item 7 "):
        TIGER(ids, domain, DOMAINS, TINY)
    m = tiny_model(n=10)
    with pytest.raises(ValueError, match="item id 12 "):
        m.recommend([[1, 12]], [0], 3)
    with pytest.raises(ValueError, match="item id 10 "):
        m.batch([[1]], [10])
    with pytest.raises(ValueError, match="item id -1 "):
        NextItemExamples([[0, 1], [2, -1]], m, batch_size=4)
    with pytest.raises(ValueError, match="target domain 2"):
        m.recommend([[1]], [2], 3)


def test_decoder_input_starts_with_start_token():
    m = tiny_model()
    seen = []
    hook = m.t5.decoder.embed_tokens.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    b = m.batch([[1, 2]], [13])
    m(**b)
    hook.remove()
    codes = m.ids[13]
    assert seen[0][0].tolist() == [START] + [int(c) + o for c, o in zip(codes[:-1], m.vocab.level_offsets[:-1])]


# ---- the experiment reads a current result back instead of training ------------------------------
def test_current_result_is_read_back_without_training(tmp_path, monkeypatch):
    from xdrec.results import code_fingerprint, save_result
    from xdrec.tiger import experiment

    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path))
    monkeypatch.setattr(experiment, "build", lambda *a, **k: pytest.fail("a current result must not be retrained"))
    config = experiment.settings("ci", "amazon18-xcross", 0, {"epochs": 2})
    name = experiment.result_name("amazon18-xcross", 0)
    save_result(name, {"all": {"recall@10": 0.5}}, profile="ci", dataset="x", split="x", seed=0, config=config,
                code_fingerprint=code_fingerprint(*experiment.FINGERPRINT_MODULES))
    rec = experiment.run_tiger("amazon18-xcross", profile="ci", overrides={"epochs": 2})
    assert rec["metrics"]["all"]["recall@10"] == 0.5

    def build(*a, **k):
        raise RuntimeError("build called")

    monkeypatch.setattr(experiment, "build", build)
    with pytest.raises(RuntimeError, match="build called"):  # other settings: not current, so it trains
        experiment.run_tiger("amazon18-xcross", profile="ci", overrides={"epochs": 3})
    with pytest.raises(ValueError, match="unknown tiger setting"):
        experiment.settings("ci", "amazon18-xcross", 0, {"epoch": 3})


def test_benchmark_is_beauty_with_its_own_overrides():
    """TIGER's own benchmark: the profile's tiger_benchmark picks Beauty's items and overrides the T5 and
    the evaluation for that run only; the cross-domain runs' settings are left as they were."""
    from xdrec.profiles import get_profile
    from xdrec.tiger import experiment
    from xdrec.tiger.semantic_ids import rqvae_settings

    bench = get_profile("book")["tiger_benchmark"]
    cfg = experiment.settings("book", bench["dataset"], 0, bench["tiger"], bench["domains"], bench["eval"])
    assert cfg["rqvae"]["domains"] == ["Beauty"]
    assert cfg["tiger"]["n_layers"] == 4 and cfg["tiger"]["d_ff"] == 1024  # the paper's T5
    assert cfg["eval"]["test_rows_per_domain"] == bench["eval"]["test_rows_per_domain"]
    assert experiment.benchmark_name("book", 0) == "tiger__amazon14-5core-sequences-Beauty__seed0"
    assert experiment.result_name("amazon18-xcross", 1) == "tiger__amazon18-xcross__seed1"
    plain = experiment.settings("book", "amazon18-xcross", 0)
    assert plain["eval"] == get_profile("book")["generative_eval"]
    assert plain["rqvae"] == rqvae_settings("book", "amazon18-xcross")
    assert plain["rqvae"]["domains"] == ["Sports", "Tools"]
    assert "schedule" not in plain["tiger"]  # unset optional settings stay out of stored settings
    with pytest.raises(ValueError, match="unknown generative_eval setting"):
        experiment.settings("ci", "amazon18-xcross", 0, eval_overrides={"beam": 3})


def test_deadline_checkpoints_stores_nothing_and_resumes(tmp_path, monkeypatch):
    """A run stopped at its deadline is checkpointed and not tested; called again it resumes from the
    stopped epoch and stores its result."""
    from xdrec.results import result_path
    from xdrec.tiger import experiment

    monkeypatch.setenv("XDREC_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("XDREC_CHECKPOINTS", str(tmp_path / "checkpoints"))
    over = {"epochs": 2, "tokens_per_epoch": 4_000}
    name = experiment.result_name("amazon18-xcross", 0)
    with pytest.raises(experiment.StoppedAtDeadline, match="resume"):
        experiment.run_tiger("amazon18-xcross", profile="ci", overrides=over, progress=False, deadline=0.0)
    assert not result_path(name, "ci").exists()
    rec = experiment.run_tiger("amazon18-xcross", profile="ci", overrides=over, progress=False)
    training = rec["extra"]["training"]
    assert training["resumed_from"] == 1 and training["epochs_run"] == 2
    assert training["history"][0]["steps"] == 1  # the deadline stopped epoch 1 after its first step
    assert result_path(name, "ci").exists()

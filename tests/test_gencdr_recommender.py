"""GenCDR's recommender (Eqs. 9-12): token layout, LoRA experts, phases, fused constrained decoding."""
import numpy as np
import pytest
import torch

from xdrec.decoding import TrieTensors, masked_log_softmax
from xdrec.encoders.backbones import tiny_causal_lm
from xdrec.gencdr.experts import LoRAExpertsLinear
from xdrec.gencdr.recommender import GenCDRRecommender, add_semantic_id_tokens
from xdrec.generative import IGNORE, ItemTokens, SemanticIdVocab, next_id_batch, prompt_batch

K = [4, 3, 3]


def _setup(seed=0, n_items=30, text_vocab=50):
    torch.manual_seed(seed)
    lm = tiny_causal_lm(vocab_size=text_vocab, hidden_size=32, num_hidden_layers=2, seed=seed)
    vocab = add_semantic_id_tokens(None, lm, K, ["A", "B"])
    rng = np.random.default_rng(seed)
    all_ids = np.array([(a, b, c) for a in range(K[0]) for b in range(K[1]) for c in range(K[2])])
    ids = all_ids[rng.permutation(len(all_ids))[:n_items]]
    dom = (np.arange(n_items) >= n_items // 2).astype(int)
    rec = GenCDRRecommender(lm, vocab, target_modules=["q_proj", "v_proj", "down_proj"],
                            experts=dict(n=3, r=2, alpha=4, dropout=0.0, balance_weight=0.01),
                            domain_lora=dict(r=2, alpha=4, dropout=0.0),
                            router=dict(hidden=8, latent_dim=1, vib_weight=1e-3), prefix_tokens=[5, 6], pad_id=0)
    return rec, ItemTokens.from_ids(vocab, ids, dom), TrieTensors(ids, dom, 2, K), ids, dom


def test_vocab_layout_and_history_tokens():
    v = SemanticIdVocab((4, 3, 3), ("A", "B"), offset=100)
    assert v.level_offsets == [100, 104, 107] and len(v) == 12 and v.domain_token(1) == 111
    assert v.tokens()[:2] == ["<a_0>", "<a_1>"] and v.tokens()[-1] == "<d_B>"
    items = ItemTokens.from_ids(v, np.array([[1, 2, 0], [3, 0, 2]]), np.array([0, 1]))
    toks = items.history([1, 0], target_domain=0)
    assert toks.tolist() == [111, 103, 104, 109, 110, 101, 106, 107, 110]
    assert v.describe(toks[:4]) == "<d_B><a_3><b_0><c_2>"
    with pytest.raises(ValueError, match="item id 7"):
        items.history([0, 7])


def test_next_id_batch_targets_every_code_after_the_first_item():
    v = SemanticIdVocab((4, 3, 3), ("A", "B"), offset=0)
    items = ItemTokens.from_ids(v, np.array([[1, 2, 0], [3, 0, 2], [0, 0, 1]]), np.array([0, 1, 1]))
    b = next_id_batch([[0, 1, 2], [2, 0]], items, max_items=5, prefix=[50], pad_id=99)
    ids, lvl, lab, dom = (b[k][0].tolist() for k in ("input_ids", "label_level", "labels", "label_domain"))
    # prefix | <d_A> a1 b2 c0 | <d_B> a3 b0 c2 | <d_B> a0 b0 c1
    assert ids == [50, 10, 1, 6, 7, 11, 3, 4, 9, 11, 0, 4, 8]
    # position 5 (<d_B>) predicts a3, 6 predicts b0, 7 predicts c2; item 0 is never a target
    assert lvl == [-1, -1, -1, -1, -1, 0, 1, 2, -1, 0, 1, 2, -1]
    assert lab == [IGNORE] * 5 + [3, 0, 2, IGNORE, 0, 0, 1, IGNORE]
    assert dom == [-1] * 5 + [1, 1, 1, -1, 1, 1, 1, -1]
    assert b["attention_mask"][1].tolist() == [1] * 9 + [0] * 4 and b["input_ids"][1, -1] == 99
    for k in range(2):  # the labels are the next tokens themselves
        pos = b["label_level"][k] >= 0
        nxt = b["input_ids"][k, 1:][pos[:-1]] - torch.tensor(v.level_offsets)[b["label_level"][k][pos]]
        assert torch.equal(nxt, b["labels"][k][pos])


def test_lora_experts_linear_matches_explicit_sum():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    m = LoRAExpertsLinear(base, n_experts=3, r=2, alpha=4, dropout=0.0, n_domains=2, domain_r=2, domain_alpha=2,
                          domain_dropout=0.0)
    x = torch.randn(2, 4, 6)
    assert torch.equal(m(x), base(x))  # B = 0: the wrapped model is the backbone
    for p in (m.expert_B, *m.domain_B):
        torch.nn.init.normal_(p)
    m.row_domain = torch.tensor([1, 0])
    y = m(x)
    for b in range(2):
        for t in range(4):
            xi = x[b, t]
            g = torch.softmax(m.gate.weight @ xi, 0)
            want = base(xi) + sum(2.0 * g[i] * m.expert_B[i] @ (m.expert_A[i] @ xi) for i in range(3))
            d = int(m.row_domain[b])
            want = want + 1.0 * m.domain_B[d] @ (m.domain_A[d] @ xi)
            assert torch.allclose(y[b, t], want, atol=1e-5)
    one = m._domain_update(x, torch.tensor([1, 1]))  # one domain for the batch: the no-gather path
    A, B = torch.stack(list(m.domain_A))[[1, 1]], torch.stack(list(m.domain_B))[[1, 1]]
    assert torch.allclose(one, torch.einsum("btr,bor->bto", torch.einsum("bti,bri->btr", x, A), B), atol=1e-6)


def test_fused_beam_search_equals_exhaustive_scoring_for_every_mode():
    rec, items, trie, ids, dom = _setup()
    for m in rec.layers:  # non-trivial experts and adapters
        torch.nn.init.normal_(m.expert_B, std=0.5)
        for b in m.domain_B:
            torch.nn.init.normal_(b, std=0.5)
    for r in rec.user_router:
        torch.nn.init.normal_(r.net[0].weight, std=1.0)
    rec.eval()
    rng = np.random.default_rng(1)
    hist = [list(rng.integers(0, 30, n)) for n in (2, 5, 3)]  # different lengths: left padding + KV cache
    doms = [0, 1, 1]
    for mode in ("fused", "universal", "specific"):
        out = rec.recommend(hist, doms, 40, items=items, trie=trie, beams=40, max_items=5, mode=mode)
        for r in range(3):
            sel = np.where(dom == doms[r])[0]
            prompt = prompt_batch([hist[r]], [doms[r]], items, max_items=5, prefix=[5, 6])["input_ids"][0]
            scores = []
            for it in sel:  # teacher forcing, no cache, no padding
                full = torch.cat([prompt, torch.from_numpy(items.tokens[it])])[None]
                am = torch.ones_like(full)
                with torch.no_grad():
                    hu, _ = rec.hidden(full, am)
                    hs, _ = rec.hidden(full, am, domains=torch.tensor([doms[r]]))
                    g = rec.user_router.gamma(hu[:, len(prompt) - 1], torch.tensor([doms[r]]))[0]
                lp = 0.0
                for lvl in range(3):
                    node = trie.walk(torch.tensor([doms[r]]), torch.tensor(ids[it][:lvl]).view(1, lvl))
                    allowed = trie.allowed(node, lvl)
                    pu = masked_log_softmax(rec.code_logits(hu[:, len(prompt) - 1 + lvl], lvl), allowed).exp()
                    ps = masked_log_softmax(rec.code_logits(hs[:, len(prompt) - 1 + lvl], lvl), allowed).exp()
                    p = {"fused": (1 - g) * pu + g * ps, "universal": pu, "specific": ps}[mode]
                    lp += float(p[0, ids[it][lvl]].detach().log())
                scores.append(lp)
            order = sel[np.argsort(-np.asarray(scores), kind="stable")]
            got = out[r][out[r] >= 0]
            assert got.tolist() == order.tolist(), (mode, r)
            assert set(got) <= set(np.where(dom == doms[r])[0])  # never another domain's item


def test_phases_train_only_their_parameters():
    rec, items, trie, ids, dom = _setup()
    rng = np.random.default_rng(0)
    batch = next_id_batch([rng.integers(0, 30, 6) for _ in range(8)], items, max_items=6, prefix=[5, 6])
    before = {k: v.detach().clone() for k, v in rec.state_dict().items()}

    def steps(loss_fn, n=3):
        opt = torch.optim.AdamW([p for p in rec.parameters() if p.requires_grad], lr=1e-2)
        rec.train()
        for _ in range(n):
            opt.zero_grad()
            loss_fn().backward()
            opt.step()

    rec.train_phase(universal=True)
    steps(lambda: rec.universal_loss(batch))
    after1 = {k: v.detach().clone() for k, v in rec.state_dict().items()}
    moved = {k for k in before if not torch.equal(before[k], after1[k])}
    assert moved and all(("expert_" in k or ".gate." in k or k == "sid_embed") for k in moved)
    assert "sid_embed" in moved and any("expert_B" in k for k in moved)
    rec.train_phase(domain=1)
    steps(lambda: rec.domain_loss(batch, 1))
    after2 = {k: v.detach().clone() for k, v in rec.state_dict().items()}
    moved2 = {k for k in after1 if not torch.equal(after1[k], after2[k])}
    assert moved2 and all(("domain_A.1" in k or "domain_B.1" in k or k.startswith("user_router.1.")) for k in moved2)
    assert any(k.startswith("user_router.1.") for k in moved2) and any("domain_B.1" in k for k in moved2)


def test_router_gamma_in_unit_interval_and_gates_sum_to_one():
    rec, items, trie, ids, dom = _setup()
    rec.eval()
    h = torch.randn(50, 32) * 100
    g, kl = rec.user_router.gamma(h, torch.randint(0, 2, (50,)))
    assert ((g >= 0) & (g <= 1)).all() and (kl >= 0).all()
    usage = rec.gate_usage(next_id_batch([[0, 20, 3, 25]], items, max_items=5, prefix=[5, 6]))
    assert usage.shape == (len(rec.layers), 2, 3)
    assert np.allclose(usage.sum(-1), 1.0, atol=1e-5)


def test_learns_a_planted_next_item():
    """Each item is followed by a fixed successor in the other domain: after training, beam search finds it."""
    rec, items, trie, ids, dom = _setup(seed=3, n_items=12)
    succ = {i: (i + 6) % 12 for i in range(12)}  # item i (domain A for i < 6) -> the same slot in the other domain
    seqs = []
    rng = np.random.default_rng(0)
    for _ in range(64):
        s = [int(rng.integers(0, 12))]
        for _ in range(4):
            s.append(succ[s[-1]])
        seqs.append(s)
    batch = next_id_batch(seqs, items, max_items=5, prefix=[5, 6])
    rec.train_phase(universal=True)
    opt = torch.optim.AdamW([p for p in rec.parameters() if p.requires_grad], lr=3e-2)
    rec.train()
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = rec.universal_loss(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.25 * losses[0]
    rec.eval()
    hist = [[i] for i in range(12)]
    out = rec.recommend(hist, [int(dom[succ[i]]) for i in range(12)], 3, items=items, trie=trie, beams=5, max_items=5,
                        mode="universal")
    assert (out[:, 0] == np.array([succ[i] for i in range(12)])).mean() >= 0.9

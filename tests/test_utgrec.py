"""UTGRec tokenizer pieces against hand-worked maths: Eqs. 3-8 and 11."""
import math

import numpy as np
import pytest
import torch

from xdrec.utgrec import (DiffusionLoss, MaskedImageDecoder, MaskedTextDecoder, TreeCodebooks, alignment_loss,
                          inverse_prefix_residual, prefix_residual, unique_ids)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prefix_residual_by_hand_and_its_inverse():
    h = torch.tensor([[[1.0, 2.0], [4.0, 0.0], [4.0, 5.0]]])
    assert torch.equal(prefix_residual(h), torch.tensor([[[1.0, 2.0], [3.0, -2.0], [0.0, 5.0]]]))
    x = torch.randn(5, 4, 3)
    assert torch.allclose(inverse_prefix_residual(prefix_residual(x)), x, atol=1e-6)


def _tree(seed=0, **kw):
    torch.manual_seed(seed)
    q = TreeCodebooks(n_codes=3, dim=4, root_size=5, leaf_size=7, **kw)
    with torch.no_grad():  # a non-identity W, so that C = E W matters
        q.W_root.add_(0.3 * torch.randn(4, 4))
        q.W_leaf.add_(0.3 * torch.randn(4, 4))
    return q


def test_tree_codebooks_match_a_brute_force_loop():
    q = _tree(beta=0.25)
    h = torch.randn(6, 3, 4, requires_grad=True)
    out = q(h)
    C_r = (q.E_root @ q.W_root).detach().numpy()
    C_f = (q.E_leaf @ q.W_leaf).detach().numpy()
    hn = h.detach().numpy()
    loss_r, loss_f = 0.0, 0.0
    for i in range(6):
        inc = [hn[i, 0], hn[i, 1] - hn[i, 0], hn[i, 2] - hn[i, 1]]  # Eq. 3
        content = np.zeros(4)
        for level, x in enumerate(inc):
            book = C_r if level == 0 else C_f
            d = [float(((x - e) ** 2).sum()) for e in book]
            c = int(np.argmin(d))
            assert out.codes[i, level].item() == c  # Eq. 4
            content = content + book[c]
            assert np.allclose(out.content[i, level].detach().numpy(), content, atol=1e-5)  # Sec. 2.3.1
            # sg[] changes gradients, not values: each term is (1 + beta) ||x - e_c||^2
            if level == 0:
                loss_r += 1.25 * d[c] / 6
            else:
                loss_f += 1.25 * d[c] / 6 / 2
    assert out.loss.item() == pytest.approx(0.5 * (loss_r + loss_f), rel=1e-5)  # Eq. 5
    inc_last = hn[:, 2] - hn[:, 1]
    assert np.allclose(out.last_distances.numpy(), ((inc_last[:, None] - C_f[None]) ** 2).sum(-1), atol=1e-4)
    assert torch.allclose(q.decode_codes(out.codes), out.content.detach(), atol=1e-6)


def test_straight_through_and_stop_gradients():
    q = _tree()
    h = torch.randn(4, 3, 4, requires_grad=True)
    out = q(h)
    (g,) = torch.autograd.grad(out.content.sum(), h)
    assert torch.allclose(g, torch.ones_like(h))  # d content / d h' = identity (straight-through)
    # the codebook term moves only the codebooks, the commitment term only h' (beta ||h~ - sg[e]||^2)
    q.zero_grad()
    out = q(h)
    g_h, g_Er, g_Wr = torch.autograd.grad(out.loss, [h, q.E_root, q.W_root])
    inc = prefix_residual(h.detach())
    e = out.increments.detach()
    # commitment gradient by hand: beta * 2 (h~_l - e_l) / B, scaled by 1/2 (root) and 1/2 * 1/(L-1) (leaf),
    # then pulled back through Eq. 3 (h~_l = h'_l - h'_(l-1))
    w = torch.tensor([0.5, 0.25, 0.25]).view(1, 3, 1)
    d_inc = 0.25 * 2 * (inc - e) / 4 * w
    expect = d_inc.clone()
    expect[:, :-1] -= d_inc[:, 1:]
    assert torch.allclose(g_h, expect, atol=1e-6)
    assert g_Er.abs().sum() > 0 and g_Wr.abs().sum() > 0


def test_fine_tuning_freezes_E_and_trains_W():
    q = _tree()
    q.freeze_codebook_vectors()
    out = q(torch.randn(8, 3, 4))
    out.loss.backward()
    assert q.E_root.grad is None and q.E_leaf.grad is None
    assert q.W_root.grad is not None and q.W_leaf.grad is not None


def test_without_tree_each_level_has_its_own_plain_codebook():
    torch.manual_seed(0)
    q = TreeCodebooks(n_codes=3, dim=2, root_size=4, leaf_size=8, tree=False)
    assert q.sizes == [4, 4, 4]
    h = torch.randn(5, 3, 2)
    out = q(h)
    for level in range(3):
        d = torch.cdist(h[:, level], q.E_levels[level].detach())
        assert torch.equal(out.codes[:, level], d.argmin(-1))  # its own representation, no prefix residual
        assert torch.allclose(out.content[:, level], q.E_levels[level][out.codes[:, level]].detach())
    # fine-tuning ("w/o TreeCode" has no W): the vectors stay where pre-training left them
    q.freeze_codebook_vectors()
    h.requires_grad_(True)
    q(h).loss.backward()
    assert q.E_levels.grad is None and h.grad is not None and h.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="equal codebooks"):
        TreeCodebooks(n_codes=3, root_size=256, leaf_size=511, tree=False)


def test_kmeans_init_quantises_clustered_data_exactly():
    torch.manual_seed(0)
    base = torch.randn(3, 2) * 5
    incs = torch.randn(4, 2) * 5
    # items whose basic representation is one of 3 points and whose increments are one of 4 points
    rows = []
    for i in range(24):
        b, a, c = base[i % 3], incs[i % 4], incs[(i // 4) % 4]
        rows.append(torch.stack([b, b + a, b + a + c]))
    h = torch.stack(rows)
    q = TreeCodebooks(n_codes=3, dim=2, root_size=3, leaf_size=4)
    q.init_kmeans(h)
    out = q(h)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-8)
    assert torch.allclose(out.content, h, atol=1e-5)
    assert q.usage(out.codes) == [1.0, 1.0, 1.0]


def test_unique_ids_move_the_farther_item_to_its_next_nearest_leaf_code():
    codes = np.array([[0, 1, 2], [0, 1, 2], [1, 1, 2]])
    dist = np.array([[9, 9, 1.0, 5, 2], [9, 9, 0.5, 3, 4], [9, 9, 0.0, 9, 9]])
    ids = unique_ids(codes, dist)
    # item 1 is nearer its code (0.5 < 1.0) and keeps it; item 0 moves to its next-nearest code, 4
    assert ids.tolist() == [[0, 1, 4], [0, 1, 2], [1, 1, 2]]
    assert ids.shape == codes.shape  # no extra code is appended


def test_text_decoder_reads_only_codes_and_real_tokens():
    torch.manual_seed(0)
    dec = MaskedTextDecoder(4, vocab_size=11, n_codes=3, max_text_tokens=5, d_model=16, n_heads=2, d_ff=32)
    content = torch.randn(2, 3, 4)
    ids = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    logits = dec.logits(content, mask)
    nll = -torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    expect = (nll * mask).sum() / mask.sum()  # Eq. 8 averaged over the 8 real tokens
    assert dec(content, ids, mask).item() == pytest.approx(expect.item(), rel=1e-6)
    # padding tokens are invisible: changing a padded id changes nothing
    ids2 = ids.clone()
    ids2[0, 4] = 9
    assert dec(content, ids2, mask).item() == pytest.approx(expect.item(), rel=1e-6)
    # the prediction depends on the codes: every text token is masked, so they are its only input
    assert not torch.allclose(dec.logits(content + 1, mask), logits)
    with pytest.raises(ValueError, match="longer"):
        dec.logits(content, torch.ones(2, 6))


def test_text_decoder_learns_to_reconstruct_from_codes():
    torch.manual_seed(0)
    dec = MaskedTextDecoder(4, vocab_size=8, n_codes=2, max_text_tokens=3, d_model=16, n_heads=2, d_ff=32)
    content = torch.randn(4, 2, 4)
    ids = torch.randint(8, (4, 3))
    mask = torch.ones(4, 3)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    first = dec(content, ids, mask).item()
    for _ in range(150):
        opt.zero_grad()
        loss = dec(content, ids, mask)
        loss.backward()
        opt.step()
    assert first > 1.5 and loss.item() < 0.05


def test_alignment_loss_is_infonce_per_level():
    torch.manual_seed(0)
    h, hp = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    tau = 0.5
    total = 0.0
    for level in range(2):
        for i in range(3):
            sims = [float(torch.cosine_similarity(h[i, level], hp[j, level], dim=0)) / tau for j in range(3)]
            total += -(sims[i] - math.log(sum(math.exp(s) for s in sims))) / 3
    assert alignment_loss(h, hp, tau).item() == pytest.approx(total, rel=1e-5)
    aligned = alignment_loss(h, h * 3.0, 0.05).item()  # positives parallel to their items
    assert aligned < alignment_loss(h, hp, 0.05).item()


def test_diffusion_loss_and_image_decoder_on_generated_tensors():
    torch.manual_seed(0)
    diff = DiffusionLoss(target_dim=3, cond_dim=5, hidden=16, steps=100)
    ab = diff.alpha_bar
    assert ab[0] > 0.99 and ab[-1] < 1e-3 and bool((ab[1:] <= ab[:-1]).all())  # cosine schedule, decreasing
    # the loss is the MSE of the noise prediction at the drawn step, checked with the same draws
    z, x = torch.randn(6, 5), torch.randn(6, 3)
    g = torch.Generator().manual_seed(1)
    loss = diff(z, x, generator=g)
    g = torch.Generator().manual_seed(1)
    t = torch.randint(100, (6,), generator=g)
    eps = torch.randn(x.shape, generator=g)
    a = ab[t].unsqueeze(-1)
    expect = ((diff.predict_noise(a.sqrt() * x + (1 - a).sqrt() * eps, t, z) - eps) ** 2).mean()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)
    dec = MaskedImageDecoder(4, patch_dim=3, n_codes=3, n_patches=5, d_model=16, n_heads=2, d_ff=32,
                             diffusion_hidden=16)
    content, patches = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 5, 3)
    out = dec(content, patches, generator=torch.Generator().manual_seed(0))
    out.backward()
    assert torch.isfinite(out) and content.grad.abs().sum() > 0  # the codes condition the denoiser
    with pytest.raises(ValueError, match="patches"):
        dec(content, torch.randn(2, 4, 3))


def test_bad_representations_are_refused_with_the_item():
    q = _tree()
    h = torch.randn(4, 3, 4)
    h[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"items \[2\]"):
        q(h)
    with pytest.raises(ValueError, match="expected"):
        q(torch.randn(4, 2, 4))


def _encoder(lora=True, seed=0):
    from xdrec.encoders.backbones import tiny_causal_lm
    from xdrec.utgrec.encoder import ContentEncoder

    lm = tiny_causal_lm(seed=seed)
    cfg = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]} if lora else None
    torch.manual_seed(seed)
    return ContentEncoder(lm, n_codes=3, code_dim=6, mlp_hidden=16, lora=cfg)


def test_content_encoder_reads_code_tokens_after_the_prompt_and_ignores_left_padding():
    enc = _encoder()
    short = torch.tensor([[5, 6, 7]])
    long_ = torch.tensor([[9, 10, 11, 12, 13]])
    h_alone, hp_alone = enc(short, torch.ones_like(short))
    batch = torch.cat([torch.cat([torch.zeros(1, 2, dtype=torch.long), short], 1), long_])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    h, hp = enc(batch, mask)
    assert h.shape == (2, 3, 32) and hp.shape == (2, 3, 6)
    assert torch.allclose(h[0], h_alone[0], atol=1e-5) and torch.allclose(hp[0], hp_alone[0], atol=1e-5)
    # oracle: the plain LM run on [prompt embeddings; code embeddings] (LoRA's B starts at zero)
    from xdrec.encoders.backbones import tiny_causal_lm

    ref = tiny_causal_lm(seed=0)
    x = torch.cat([ref.get_input_embeddings()(long_), enc.code_embeddings.detach()[None]], 1)
    expect = ref.model(inputs_embeds=x).last_hidden_state[:, -3:]
    assert torch.allclose(h[1], expect[0], atol=1e-5)


def test_content_encoder_trains_lora_code_embeddings_and_mlp_only():
    enc = _encoder()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("code_embeddings", "mlp.")) for n in trainable)
    assert any("lora_" in n for n in trainable)
    ids = torch.tensor([[5, 6, 7, 8]])
    h, hp = enc(ids, torch.ones_like(ids))
    hp.sum().backward()
    assert enc.code_embeddings.grad.abs().sum() > 0


def test_item_prompt_is_the_papers_text_part():
    from xdrec.utgrec.encoder import item_prompt

    assert item_prompt("Red mug", 3) == ('The item\'s information includes: "Red mug". Compress the text '
                                         "information into 3 tokens, representing content from coarse to fine granularity.")


def _tokenizer(**over):
    from xdrec.encoders.backbones import tiny_causal_lm
    from xdrec.utgrec.tokenizer import UniversalItemTokenizer

    s = {"n_codes": 3, "code_dim": 6, "root_size": 4, "leaf_size": 8, "beta": 0.25, "tree": True, "mlp_hidden": 16,
         "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
         "decoder": {"d_model": 16, "n_heads": 2, "d_ff": 32}, "max_text_tokens": 5,
         "lambda": 200.0, "mu": 0.01, "eta": 0.03, "alpha": 3.0, "temperature": 0.07, **over}
    torch.manual_seed(0)
    return UniversalItemTokenizer(tiny_causal_lm(seed=0), 128, s)


def _batch(image=False):
    g = torch.Generator().manual_seed(0)
    b = {"prompt_ids": torch.randint(1, 128, (4, 6), generator=g), "prompt_mask": torch.ones(4, 6, dtype=torch.long),
         "text_ids": torch.randint(1, 128, (4, 5), generator=g), "text_mask": torch.ones(4, 5, dtype=torch.long),
         "pos_prompt_ids": torch.randint(1, 128, (4, 6), generator=g), "pos_prompt_mask": torch.ones(4, 6, dtype=torch.long),
         "pos_text_ids": torch.randint(1, 128, (4, 5), generator=g), "pos_text_mask": torch.ones(4, 5, dtype=torch.long)}
    if image:
        b["image"], b["pos_image"] = torch.randn(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    return b


def test_tokenizer_loss_is_eq_13():
    tok = _tokenizer()
    b = _batch()
    out = tok(b)
    h, hp, q = tok.encode(b["prompt_ids"], b["prompt_mask"])
    h_pos, _ = tok.encoder(b["pos_prompt_ids"], b["pos_prompt_mask"])
    raw = tok.text_decoder(q.content, b["text_ids"], b["text_mask"])
    re = tok.text_decoder(q.content, b["pos_text_ids"], b["pos_text_mask"])
    ali = alignment_loss(h, h_pos, 0.07)
    expect = raw + 200 * q.loss + 0.01 * ali + 0.03 * re
    assert out.total.item() == pytest.approx(expect.item(), rel=1e-5)
    assert set(out.parts) == {"text", "code", "align", "co-reconstruction", "total"}
    # the ablations drop their term (and need no positives for it)
    no_ali = _tokenizer(mu=0.0)(b)
    assert "align" not in no_ali.parts
    assert no_ali.total.item() == pytest.approx((raw + 200 * q.loss + 0.03 * re).item(), rel=1e-5)
    assert "co-reconstruction" not in _tokenizer(eta=0.0)(b).parts


def test_tokenizer_image_branch_and_fine_tuning():
    tok = _tokenizer(image=True, patch_dim=3, n_patches=2)
    tok.fine_tuning()
    out = tok(_batch(image=True))
    assert "image" in out.parts and torch.isfinite(out.total)
    out.total.backward()
    assert tok.codebooks.E_root.grad is None and tok.codebooks.W_root.grad is not None
    lora = [p for n, p in tok.named_parameters() if "lora_A" in n]
    assert lora and all(p.grad is not None for p in lora)


def test_plain_codebook_tokenizer_fine_tunes_its_encoder_only():
    tok = _tokenizer(tree=False)
    before = tok.codebooks.E_levels.detach().clone()
    tok.fine_tuning()
    opt = torch.optim.SGD([p for p in tok.parameters() if p.requires_grad], lr=0.1)
    out = tok(_batch())
    out.total.backward()
    assert tok.codebooks.E_levels.grad is None
    assert tok.encoder.mlp[0].weight.grad is not None
    lora = [p for n, p in tok.named_parameters() if "lora_A" in n]
    assert lora and all(p.grad is not None for p in lora)
    opt.step()
    assert torch.equal(tok.codebooks.E_levels, before)


def test_cooccurring_items_are_one_hop_neighbours():
    from xdrec.utgrec.data import cooccurring_items, sample_positives

    nb = cooccurring_items([[0, 1, 2], [2, 0], [3, 3]], 5)
    assert [x.tolist() for x in nb] == [[1, 2], [0, 2], [0, 1], [], []]
    pos = sample_positives(nb, np.array([0, 1, 3, 0, 0, 0]), np.random.default_rng(0))
    assert pos[2] == 3  # nothing co-occurs with item 3: it is its own positive
    assert set(pos[[0, 3, 4, 5]]) <= {1, 2} and pos[1] in (0, 2)
    with pytest.raises(ValueError, match="outside"):
        cooccurring_items([[0, 7]], 5)


def test_collator_builds_items_and_positives():
    from transformers import AutoTokenizer

    from xdrec.encoders import minilm_path
    from xdrec.utgrec.data import TokenizerCollator, cooccurring_items

    tok = AutoTokenizer.from_pretrained(minilm_path())
    texts = ["red mug", "blue ceramic tea cup with a handle", "spoon"]
    col = TokenizerCollator(tok, texts, cooccurring_items([[0, 1], [1, 2]], 3), n_codes=3, max_text_tokens=4)
    b = col([0, 2])
    assert b["positives"].tolist() == [1, 1]
    assert b["pos_text_mask"].sum(1).tolist() == [4, 4]  # cut to 4 tokens
    assert b["text_mask"].tolist() == [[1, 1], [1, 0]]
    assert tok.decode(b["text_ids"][0, :2]) == "red mug"
    # prompts are left-padded: every row ends with real tokens
    assert b["prompt_mask"][:, -1].tolist() == [1, 1]
    assert "blue ceramic tea cup" in tok.decode(b["pos_prompt_ids"][0], skip_special_tokens=True)


def test_unique_ids_move_up_a_level_when_a_prefix_is_full():
    # two last-level codes; three items share the prefix (0, 0) and code 0
    codes = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 1]])
    last = np.array([[0.1, 1.0], [0.2, 0.5], [0.3, 0.4], [9.0, 0.0]])
    prev = np.array([[0, 5, 1.0], [0, 5, 1.0], [0.0, 2.0, 1.0], [5, 0, 5]])
    with pytest.raises(ValueError, match="no free last-level code"):
        unique_ids(codes, last)
    ids = unique_ids(codes, last, prev)
    # item 0 keeps (0, 0, 0), item 1 takes its next-nearest code 1; item 2 finds (0, 0) full and moves to
    # its nearest level-2 code with room, 2 (distance 1.0 against 2.0 for code 1), and there to its
    # nearest last code, 0
    assert ids.tolist() == [[0, 0, 0], [0, 0, 1], [0, 2, 0], [0, 1, 1]]
    assert len({tuple(r) for r in ids.tolist()}) == 4


@pytest.mark.realdata
def test_ci_tokenizer_pipeline_on_real_data(tmp_path, monkeypatch, xcross_data):
    """Pre-train on Sports, fine-tune on Tools with E frozen, unique IDs for every Tools item, read back."""
    from xdrec.io import load_safetensors, read_json
    from xdrec.utgrec import train_tokenizer as tz

    monkeypatch.setenv("XDREC_CHECKPOINTS", str(tmp_path))
    folder = tz.finetune("Tools", ["Sports"], profile="ci")
    meta = read_json(folder / "ids.json")
    table = __import__("pandas").read_parquet(folder / "ids.parquet")
    ids = table[["id_0", "id_1", "id_2"]].to_numpy()
    assert len(ids) == meta["stats"]["items"] == 5820 and meta["stats"]["unique_after"] == 5820
    assert len({tuple(r) for r in ids.tolist()}) == len(ids)
    assert (table["domain_name"] == "Tools").all()
    pre = load_safetensors(next(tmp_path.glob("utgrec/ci/pretrain-Sports-*")) / "tokenizer.safetensors")
    tuned = load_safetensors(folder / "tokenizer.safetensors")
    # fine-tuning trained W but not the codebook vectors E (Sec. 2.4.2)
    assert "codebooks.E_root" in pre and "codebooks.E_root" not in tuned
    assert not torch.equal(pre["codebooks.W_leaf"], tuned["codebooks.W_leaf"])
    written = (folder / "ids.json").stat().st_mtime_ns
    assert tz.finetune("Tools", ["Sports"], profile="ci") == folder  # read back, not retrained
    assert (folder / "ids.json").stat().st_mtime_ns == written
    # the source domain is capped to its 200 most interacted items (the target never is)
    src = __import__("pandas").read_parquet(tz.source_ids(["Sports"], profile="ci") / "ids.parquet")
    assert len(src) == 200 and (src["domain_name"] == "Sports").all()


def test_source_cap_keeps_each_domains_most_interacted_training_items(monkeypatch):
    """Counts over each user's sequence without its last two items, by hand; ties go to the lower id."""
    from xdrec import data as xdata
    from xdrec.data import make_synthetic
    from xdrec.utgrec import train_tokenizer as tz

    ds = make_synthetic(n_users=30, n_domains=2, items_per_domain=12, seed=3)
    monkeypatch.setattr(xdata, "load", lambda *a, **k: ds)
    capped = tz.load_domains("synthetic", ds.domains, max_items_per_domain=3)
    counts = np.zeros(ds.n_items, int)
    for d in ds.domains:
        for seq in ds.sequences(d).values():
            for i in seq[:-2]:
                counts[i] += 1
    expected = []
    for d in ds.domains:
        items = sorted(ds.domain_items(d).tolist(), key=lambda i: (-counts[i], i))[:3]
        expected += sorted(ds.items.loc[ds.items["item"].isin(items), "item_key"].tolist())
    assert sorted(capped.items["item_key"].tolist()) == sorted(expected)
    assert capped.n_items == 6 and set(capped.interactions["item"]) <= set(range(6))
    assert tz.load_domains("synthetic", ds.domains) is ds


def _tiger(domains, item_domain, seed):
    from xdrec.tiger import TIGER
    from xdrec.tiger.model import TIGERConfig

    torch.manual_seed(seed)
    ids = np.array([[0, 1, 2], [1, 0, 3], [2, 2, 0]])[: len(item_domain)]
    return TIGER(ids, np.array(item_domain), domains, TIGERConfig(d_model=16, n_layers=1, n_heads=2, d_kv=8, d_ff=32),
                 codebook_sizes=[3, 4, 4])


def test_transfer_t5_copies_every_weight_but_the_other_domains_markers():
    from xdrec.utgrec.train_recommender import transfer_t5

    src = _tiger(["Sports", "Toys"], [0, 1, 1], seed=0)
    dst = _tiger(["Tools"], [0, 0, 0], seed=1)
    before = {k: v.clone() for k, v in dst.t5.state_dict().items()}
    partial = transfer_t5(src, dst)
    rows = dst.vocab.offset + dst.vocab.n_code_tokens  # specials + 11 codes
    s, d = src.t5.state_dict(), dst.t5.state_dict()
    assert "shared.weight" in partial
    for k, v in d.items():
        if k in partial:
            assert torch.equal(v[:rows], s[k][:rows]) and torch.equal(v[rows:], before[k][rows:])
        else:
            assert torch.equal(v, s[k])
    other = _tiger(["Tools"], [0, 0, 0], seed=2)
    other.vocab = type(other.vocab)((3, 4, 5), ("Tools",), other.vocab.offset)
    with pytest.raises(ValueError, match="differ"):
        transfer_t5(src, other)


def test_codebook_sizes_of_tree_and_plain_ids():
    from xdrec.utgrec.train_recommender import VARIANTS, codebook_sizes

    assert codebook_sizes({"n_codes": 3, "root_size": 256, "leaf_size": 512}) == [256, 512, 512]
    assert codebook_sizes({"n_codes": 3, "root_size": 256, "leaf_size": 512, "tree": False}) == [256, 256, 256]
    assert set(VARIANTS) == {"full", "no-tree", "no-ali", "no-re", "no-ft-tokenizer", "full-ft", "no-pt-recommender",
                             "no-pt"}


@pytest.mark.realdata
def test_ci_recommender_pipeline_on_real_data(tmp_path, monkeypatch, xcross_data):
    """Tokenizer pre-training on Sports, T5 pre-training, fine-tuning on Tools, test; then read back."""
    from xdrec.utgrec.train_recommender import run_utgrec

    for var in ("XDREC_RESULTS", "XDREC_CHECKPOINTS"):
        monkeypatch.setenv(var, str(tmp_path / var))
    rec = run_utgrec("Tools", ["Sports"], profile="ci")
    ranks = np.asarray(rec["extra"]["rows"]["rank"])
    assert rec["metrics"]["n"] == len(ranks) == 60
    hit10 = np.mean((ranks >= 0) & (ranks < 10))  # rank -1: not among the beams
    assert rec["metrics"]["recall@10"] == pytest.approx(hit10)
    assert rec["extra"]["pretrained_recommender"].startswith("t5-pretrain-Sports")
    assert rec["extra"]["ids"]["unique_after"] == rec["extra"]["ids"]["items"]
    again = run_utgrec("Tools", ["Sports"], profile="ci")
    assert again["provenance"]["written_at"] == rec["provenance"]["written_at"]


@pytest.mark.realdata
def test_baseline_runner_trains_the_shared_t5_on_the_tokenizers_ids_and_tests_utgrecs_rows(tmp_path, monkeypatch,
                                                                                       xcross_data):
    """TIGER's IDs (here: random unique ones, in place of the RQ-VAE) -> the target's T5 -> the same test rows as UTGRec."""
    from types import SimpleNamespace

    from xdrec import data
    from xdrec.generative import sample_rows
    from xdrec.profiles import get_profile
    from xdrec.tiger import semantic_ids
    from xdrec.utgrec import train_recommender as rec_mod

    for var in ("XDREC_RESULTS", "XDREC_CHECKPOINTS"):
        monkeypatch.setenv(var, str(tmp_path / var))
    ds = data.load("amazon18-xcross", domains=["Tools"])
    rng = np.random.default_rng(0)
    ids = np.stack([rng.integers(0, 256, ds.n_items), rng.integers(0, 256, ds.n_items), np.arange(ds.n_items) % 256,
                    np.arange(ds.n_items) // 256], 1)
    calls = []

    def fake_ids(dataset, profile, seed, *, domains=None, data_root=None, **_):
        calls.append((dataset, tuple(domains)))
        return SimpleNamespace(items=ds.items, ids=ids, codebook_sizes=[256, 256, 256, int(ids[:, 3].max()) + 1],
                               rule="extra_level", stats={"all": {"items": ds.n_items}},
                               directory=tmp_path / "XDREC_CHECKPOINTS" / "tiger" / "fake")

    monkeypatch.setattr(semantic_ids, "tiger_semantic_ids", fake_ids)
    out = rec_mod.run_baseline("Tools", "tiger", profile="ci")
    assert calls == [("amazon18-xcross", ("Tools",))]
    ev = {**get_profile("ci")["generative_eval"], **get_profile("ci")["utgrec_recommender"]["eval"]}
    test = sample_rows(data.leave_last_out(ds).test, ev["test_rows_per_domain"], 0)
    assert out["extra"]["rows"]["user"] == test["user"].tolist()
    ranks = np.asarray(out["extra"]["rows"]["rank"])
    assert out["metrics"]["recall@10"] == pytest.approx(np.mean((ranks >= 0) & (ranks < 10)))
    assert out["name"] == "utgrec_baseline__Tools__tiger__seed0"
    assert rec_mod.run_baseline("Tools", "tiger", profile="ci")["provenance"] == out["provenance"]  # read back
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        rec_mod.run_baseline("Tools", "rqvae", profile="ci")
    with pytest.raises(ValueError, match="unknown T5 setting"):
        rec_mod.settings("ci", {"layers": 2})


def test_report_per_row_metrics_groups_and_gains_by_hand():
    from xdrec.utgrec.report import group_gain, paired, per_row, popularity_groups

    ranks = [0, 1, 4, 9, 10, -1]
    assert per_row(ranks, "recall@5").tolist() == [1, 1, 1, 0, 0, 0]
    assert per_row(ranks, "ndcg@10") == pytest.approx([1, 1 / math.log2(3), 1 / math.log2(6), 1 / math.log2(11), 0, 0])
    with pytest.raises(ValueError, match="unknown metric"):
        per_row(ranks, "mrr@10")
    counts = np.array([0, 5, 25, 60, 19])
    groups = popularity_groups(counts, [0, 1, 2, 3, 4, 2], [0, 20, 40, np.inf])
    assert groups == ["[0, 20)", "[0, 20)", "[20, 40)", "[40, inf)", "[0, 20)", "[20, 40)"]
    with pytest.raises(ValueError, match="outside the groups"):
        popularity_groups(counts, [3], [0, 20, 40])

    def rec(name, rk):
        return {"name": name, "extra": {"rows": {"user": list(range(6)), "target": [0, 1, 2, 3, 4, 2], "rank": rk}}}

    tiger, ours = rec("t", [1, -1, 0, 3, -1, 5]), rec("u", [0, 0, 0, 3, 1, -1])
    out = group_gain({"TIGER": tiger, "UTGRec": ours}, "TIGER", groups, "recall@5")
    assert out.index.tolist() == ["[0, 20)", "[20, 40)", "[40, inf)"]
    assert out["rows"].tolist() == [3, 2, 1]
    assert out.loc["[0, 20)", "TIGER"] == pytest.approx(1 / 3) and out.loc["[0, 20)", "UTGRec"] == pytest.approx(1.0)
    assert out.loc["[0, 20)", "UTGRec gain %"] == pytest.approx(200.0)
    assert out.loc["[20, 40)", "UTGRec gain %"] == pytest.approx(0.0)  # rows 2, 5: one hit each
    diff, p = paired(ours, tiger, "recall@5")
    assert diff == pytest.approx((5 - 3) / 6) and 0 < p < 1
    with pytest.raises(ValueError, match="same rows"):
        paired(ours, {**tiger, "extra": {"rows": {**tiger["extra"]["rows"], "user": [9] * 6}}})


def test_tokenizer_workload_counts_items_by_hand():
    from xdrec.utgrec.train_tokenizer import workload

    cfg = {"max_source_items_per_domain": 100, "max_items_per_domain": 30, "pretrain": {"epochs": 2},
           "finetune": {"epochs": 3}}
    n = {"A": 50, "B": 500, "T": 40}
    # sources capped to 50 + 100 items; 30 + 30 of them train; the target trains 30 of its 40
    assert workload(cfg, n, "T") == {"encoded": 60 + 150 + 40, "trained": 60 * 2 + 30 * 3}
    full = {**cfg, "max_source_items_per_domain": None, "max_items_per_domain": None}
    assert workload(full, n, "T") == {"encoded": 550 + 550 + 40, "trained": 550 * 2 + 40 * 3}


def test_studies_reuse_the_main_run_at_the_profiles_own_depth_and_loss_weights(monkeypatch):
    from xdrec.profiles import PROFILES
    from xdrec.utgrec import experiment as ex
    from xdrec.utgrec import train_recommender as rec_mod

    calls = []
    monkeypatch.setattr(rec_mod, "run_utgrec", lambda target, **k: calls.append(("utgrec", k)) or k)
    monkeypatch.setattr(rec_mod, "run_baseline", lambda target, b, **k: calls.append((b, k)) or k)
    monkeypatch.setitem(PROFILES["ci"], "utgrec_studies",
                        {"targets": ["Tools"], "depths": [1, 2], "sweeps": {"alpha": [1, 3], "mu": [0.01, 0.1]}})
    depth = ex.run_depth("Tools", "ci")  # the ci T5 has 1 layer: depth 1 is the main run
    assert depth["utgrec", 1]["n_layers"] is None and depth["utgrec", 2]["n_layers"] == 2
    assert depth["letter", 1]["n_layers"] is None and depth["tiger", 2]["n_layers"] == 2
    calls.clear()
    sweeps = ex.run_sweeps("Tools", "ci")  # no images: alpha is not swept; mu = 0.01 is the main run
    assert set(sweeps) == {("mu", 0.01), ("mu", 0.1)}
    assert "tokenizer_overrides" not in sweeps["mu", 0.01]
    assert sweeps["mu", 0.1]["tokenizer_overrides"] == {"mu": 0.1}
    assert sweeps["mu", 0.1]["name"] == "utgrec__Tools__mu-0.1__seed0"


def test_a_sweep_can_be_split_into_processes_by_point(monkeypatch):
    import argparse

    from xdrec.profiles import PROFILES
    from xdrec.utgrec import experiment as ex
    from xdrec.utgrec import train_recommender as rec_mod

    monkeypatch.setattr(rec_mod, "run_utgrec", lambda target, **k: k)
    monkeypatch.setitem(PROFILES["ci"], "utgrec_studies",
                        {"targets": ["Tools"], "depths": [1], "sweeps": {"mu": [0.01, 0.1], "eta": [0.0, 0.3]}})
    assert ex.parse_point("eta=0.3") == ("eta", 0.3)
    for bad in ("eta", "eta=high"):
        with pytest.raises(argparse.ArgumentTypeError, match="SETTING=VALUE"):
            ex.parse_point(bad)
    assert set(ex.run_sweeps("Tools", "ci", points=[("eta", 0.3), ("mu", 0.01)])) == {("eta", 0.3), ("mu", 0.01)}
    with pytest.raises(ValueError, match=r"\('mu', 0.5\)"):
        ex.run_sweeps("Tools", "ci", points=[("mu", 0.5)])
    seen = []
    monkeypatch.setattr(ex, "run_sweeps", lambda target, profile, root, points=None: seen.append(points))
    ex.main(["sweeps", "--profile", "ci", "--points", "mu=0.1", "eta=0"])
    assert seen == [[("mu", 0.1), ("eta", 0.0)]]


def test_the_seeds_study_runs_tree_and_plain_codebooks_at_each_seed(monkeypatch):
    from xdrec.profiles import PROFILES
    from xdrec.utgrec import experiment as ex
    from xdrec.utgrec import train_recommender as rec_mod

    monkeypatch.setattr(rec_mod, "run_utgrec", lambda target, **k: k)
    studies = {"targets": ["Tools"], "depths": [1], "sweeps": {"mu": [0.01]}}
    monkeypatch.setitem(PROFILES["ci"], "utgrec_studies", studies)
    assert set(ex.run_seeds("Tools", "ci")) == {("full", 0), ("no-tree", 0)}  # no seeds: the profile's one
    monkeypatch.setitem(PROFILES["ci"], "utgrec_studies", {**studies, "seeds": [0, 1]})
    runs = ex.run_seeds("Tools", "ci")
    assert set(runs) == {(v, s) for v in ("full", "no-tree") for s in (0, 1)}
    assert runs["no-tree", 1]["variant"] == "no-tree" and runs["no-tree", 1]["seed"] == 1
    assert set(ex.run_seeds("Tools", "ci", seeds=[1])) == {("full", 1), ("no-tree", 1)}
    with pytest.raises(ValueError, match=r"seed\(s\) \[2\]"):
        ex.run_seeds("Tools", "ci", seeds=[2])


def test_studies_stored_only_leave_out_the_runs_without_a_stored_result(monkeypatch, tmp_path):
    from xdrec.profiles import PROFILES
    from xdrec.utgrec import experiment as ex
    from xdrec.utgrec import train_recommender as rec_mod

    monkeypatch.setattr(rec_mod, "run_utgrec", lambda target, **k: k)
    monkeypatch.setattr(rec_mod, "run_baseline", lambda target, b, **k: k)
    monkeypatch.setattr(ex, "result_path", lambda name, profile: tmp_path / f"{name}.json")
    monkeypatch.setitem(PROFILES["ci"], "utgrec_studies",
                        {"targets": ["Tools"], "depths": [1, 2], "sweeps": {"mu": [0.01, 0.1], "eta": [0.0]}})
    assert ex.run_depth("Tools", "ci", stored_only=True) == {}
    assert ex.run_sweeps("Tools", "ci", stored_only=True) == {}
    for name in ("utgrec__Tools__full__seed0", "utgrec_baseline__Tools__tiger-L2__seed0", "utgrec__Tools__eta-0__seed0"):
        (tmp_path / f"{name}.json").write_text("{}")
    assert set(ex.run_depth("Tools", "ci", stored_only=True)) == {("utgrec", 1), ("tiger", 2)}
    assert set(ex.run_sweeps("Tools", "ci", stored_only=True)) == {("mu", 0.01), ("eta", 0.0)}
    assert set(ex.run_depth("Tools", "ci")) == {(m, n) for m in ("utgrec", "tiger", "letter") for n in (1, 2)}


def test_standardized_mlp_inputs_equal_an_explicit_per_feature_standardisation():
    import copy

    enc = _encoder()
    g = torch.Generator().manual_seed(0)
    # states as a small LM gives them: a large shared vector, small differences between items
    h = 40 * torch.randn(32, generator=g) + 0.05 * torch.randn(50, 3, 32, generator=g)
    h[..., 7] = 3.0  # a constant feature: its spread is floored, not divided by zero
    before = copy.deepcopy(enc.mlp)
    enc.standardize_mlp_inputs(h)
    flat = h.reshape(-1, 32)
    m, s = flat.mean(0), flat.std(0)
    s = s.clamp_min(0.01 * s.mean())
    # float32 throughout: features of size 40 that differ by 0.05 leave ~1e-4 relative error in their
    # spread s and in the folded layer's W h / s - W m / s (terms near 800, difference near 1), which
    # differs between CPUs' kernels; a wrong fold is off by O(1) or more
    torch.testing.assert_close(enc.mlp(h), before((h - m) / s), rtol=1e-3, atol=1e-3)
    spread = lambda out: (out.std(0).norm(dim=-1) / out.mean(0).norm(dim=-1)).mean()
    assert spread(enc.mlp(h)) > 10 * spread(before(h))  # items are told apart before training starts
    with pytest.raises(ValueError, match="width"):
        enc.standardize_mlp_inputs(torch.randn(5, 3, 8))


def test_tables_stored_only_leave_out_the_runs_without_a_stored_result(monkeypatch, tmp_path):
    from xdrec.baselines import experiment as id_ex
    from xdrec.utgrec import experiment as ex
    from xdrec.utgrec import train_recommender as rec_mod

    monkeypatch.setattr(rec_mod, "run_utgrec", lambda target, **k: k)
    monkeypatch.setattr(rec_mod, "run_baseline", lambda target, b, **k: k)
    monkeypatch.setattr(id_ex, "run_id_baseline", lambda m, dataset, target, **k: k)
    monkeypatch.setattr(ex, "result_path", lambda name, profile: tmp_path / f"{name}.json")
    assert ex.run_table2("Tools", "ci", stored_only=True) == {} and ex.run_table3("Tools", "ci", stored_only=True) == {}
    for name in ("id_baseline__amazon18-xcross__Tools__bert4rec__seed0", "utgrec_baseline__Tools__letter__seed0",
                 "utgrec__Tools__no-tree__seed0"):
        (tmp_path / f"{name}.json").write_text("{}")
    assert set(ex.run_table2("Tools", "ci", stored_only=True)) == {"bert4rec", "letter"}
    assert set(ex.run_table3("Tools", "ci", stored_only=True)) == {"no-tree"}
    assert set(ex.run_table2("Tools", "ci")) == {"sasrec-ce", "bert4rec", "tiger", "letter", "utgrec"}
    assert set(ex.run_table3("Tools", "ci")) == set(rec_mod.VARIANTS)


def test_versus_gives_each_runs_paired_difference_from_the_reference_by_hand():
    from xdrec.utgrec import report

    def run(name, ranks):
        r = np.asarray(ranks)
        hit = (r >= 0) & (r < 10)
        return {"name": name, "metrics": {"recall@10": hit.mean(),
                                          "ndcg@10": np.where(hit, 1 / np.log2(np.maximum(r, 0) + 2), 0).mean()},
                "extra": {"rows": {"user": [1, 2, 3, 4], "target": [5, 6, 7, 8], "rank": list(ranks)}}}

    ref = run("main", [0, -1, 3, 12])  # recall@10 per row 1 0 1 0; ndcg 1, 0, 1/log2(5), 0
    other = run("deep", [1, 0, -1, 2])  # recall 1 1 0 1; ndcg 1/log2(3), 1, 0, 1/2
    t = report.versus({"L2": ref, "L4": other}, ref)
    assert np.isnan(t.loc["L2", "recall@10 - ref"]) and np.isnan(t.loc["L2", "p ndcg@10"])
    assert t.loc["L4", "recall@10"] == pytest.approx(0.75)
    assert t.loc["L4", "recall@10 - ref"] == pytest.approx(0.75 - 0.5)
    want = (1 / np.log2(3) + 1 + 0.5) / 4 - (1 + 1 / np.log2(5)) / 4
    assert t.loc["L4", "ndcg@10 - ref"] == pytest.approx(want)
    # recall differences 0, 1, -1, 1: mean 1/4, sd sqrt(11/12), t = 0.25 / (sd / 2)
    from scipy import stats
    tt = 0.25 / (np.sqrt(11 / 12) / 2)
    assert t.loc["L4", "p recall@10"] == pytest.approx(2 * stats.t.sf(tt, df=3))


def test_paired_over_seeds_averages_each_row_over_the_seeds_first():
    from scipy import stats

    from xdrec.utgrec import report

    def run(name, ranks, users=(1, 2, 3)):
        return {"name": name, "extra": {"rows": {"user": list(users), "target": [7, 8, 9], "rank": list(ranks)}}}

    # recall@10 per row: a0 1 1 0, a1 1 0 0 -> mean per row 1, .5, 0; b0 0 1 0, b1 0 0 1 -> 0, .5, .5
    pairs = [(run("a0", [0, 4, -1]), run("b0", [11, 2, -1])), (run("a1", [3, 10, 20]), run("b1", [-1, 15, 9]))]
    diff, p = report.paired_over_seeds(pairs, "recall@10")
    assert diff == pytest.approx((1 + 0.5 + 0) / 3 - (0 + 0.5 + 0.5) / 3)
    assert p == pytest.approx(stats.ttest_rel([1, 0.5, 0], [0, 0.5, 0.5]).pvalue)
    assert report.paired(*pairs[0], "recall@10") == report.paired_over_seeds(pairs[:1], "recall@10")
    with pytest.raises(ValueError, match="a0 and b1 were not tested on the same rows"):
        report.paired_over_seeds([pairs[0], (pairs[1][0], run("b1", [0, 0, 0], users=(1, 2, 4)))], "recall@10")

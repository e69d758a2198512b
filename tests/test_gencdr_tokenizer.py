"""GenCDR's domain-adaptive tokenizer: MTM, adapters, router, semantic IDs, prefix trees, bad input."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from xdrec.decoding import PrefixTree
from xdrec.gencdr import DomainAdaptiveTokenizer, MaskedCodeModel, UniversalTokenizer, VIBRouter, gaussian_kl
from xdrec.encoders.items import check_embeddings, check_texts
from xdrec.gencdr.train_tokenizer import pretrain_universal, train_adapters
from xdrec.quantization import RQVAE, ResidualQuantizer, codes_and_residuals, id_statistics, resolve_collisions

SMALL = {
    "hidden": [32], "latent_dim": 8, "n_levels": 2, "codebook_size": 8, "beta": 0.25, "quant_weight": 1.0,
    "mtm_weight": 0.1, "mtm": {"d_model": 16, "n_layers": 1, "n_heads": 2, "mask_prob": 0.5},
    "kmeans_init_items": 256, "revive_dead_codes": True,
    "pretrain": {"epochs": 3, "lr": 1e-3, "batch_size": 64},
    "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
    "router": {"hidden": 16, "latent_dim": 1, "vib_weight": 1e-3},
    "adapters": {"epochs": 2, "lr": 1e-2, "batch_size": 64},
}


def clustered(n=400, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, dim, generator=g)
    x = centres[torch.randint(8, (n,), generator=g)] + 0.1 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=-1)


# ---- residual codes and last-level distances on hand-built codebooks -------------------------------
def test_codes_and_residuals_exact():
    rq = ResidualQuantizer(n_levels=2, codebook_size=3, dim=2, kmeans_init=False)
    rq.codebooks.data = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]],
                                      [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    z = torch.tensor([[11.0, 0.2], [0.5, 9.0]])
    codes, residuals = codes_and_residuals(rq, z)
    # item 0: c0 = 1 (10,0), r1 = (1, .2) -> c1 = 0 (distances .04, 1 + .64, 4.04)
    # item 1: c0 = 2 (0,10), r1 = (.5,-1) -> distances 1.25, 4.25, 3.25 -> c1 = 0
    assert codes.tolist() == [[1, 0], [2, 0]]
    np.testing.assert_allclose(residuals, [[[11.0, 0.2], [1.0, 0.2]], [[0.5, 9.0], [0.5, -1.0]]], rtol=1e-6)
    last = ((residuals[:, -1, None] - rq.codebooks[-1].detach().numpy()[None]) ** 2).sum(-1)
    np.testing.assert_allclose(last, [[0.04, 1.64, 4.04], [1.25, 4.25, 3.25]], rtol=1e-5)


# ---- masked token modelling (Eq. 3) -------------------------------------------------------------
def _mtm_loss_after_training(planted: bool, steps=150, k=16, m=3, seed=0):
    torch.manual_seed(seed)
    codebooks = torch.randn(m, k, 8)
    model = MaskedCodeModel(m, 8, d_model=32, n_layers=1, n_heads=4, mask_prob=0.4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def sample(n):
        c0 = torch.randint(k, (n,))
        if planted:  # c1 and c2 are functions of c0: any one code determines the others
            codes = torch.stack([c0, (3 * c0 + 1) % k, (5 * c0 + 7) % k], 1)
        else:
            codes = torch.randint(k, (n, m))
        vectors = torch.stack([codebooks[d][codes[:, d]] for d in range(m)], 1)
        return vectors, codes

    for _ in range(steps):
        v, c = sample(128)
        loss = model(v, c, codebooks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    v, c = sample(2048)
    return float(model.pseudo_log_likelihood(v, c, codebooks))


def test_mtm_learns_planted_structure_below_chance():
    chance = math.log(16)
    assert _mtm_loss_after_training(planted=True) < 0.25 * chance
    # the control: independent codes leave nothing to learn, the loss stays near chance
    assert _mtm_loss_after_training(planted=False) > 0.9 * chance


def test_mtm_mask_has_at_least_one_position():
    model = MaskedCodeModel(3, 4, d_model=8, n_layers=1, n_heads=2, mask_prob=0.0)
    mask = model.sample_mask(100, torch.device("cpu"))
    assert (mask.sum(1) == 1).all()


def test_mtm_gradient_reaches_codebooks_and_encoder():
    torch.manual_seed(0)
    tok = UniversalTokenizer(16, [32], 8, 2, 8, mtm_weight=1.0, mtm=SMALL["mtm"])
    x = clustered(64)
    tok.quantizer.init_kmeans(tok.rqvae.encoder(x).detach())
    out = tok.rqvae(x)
    # as in UniversalTokenizer.forward: scored against detached codebooks, so the gradient comes from the input side
    mtm = tok.mtm(tok.code_vectors(out.quant.residuals, out.codes), out.codes, tok.quantizer.codebooks.detach())
    mtm.backward()
    assert tok.quantizer.codebooks.grad.abs().sum() > 0
    assert tok.rqvae.encoder[0].weight.grad.abs().sum() > 0


# ---- the router (Eqs. 6-8) ------------------------------------------------------------------------
def test_kl_is_zero_for_the_prior_and_matches_torch():
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0
    torch.manual_seed(0)
    mu, logvar = torch.randn(50, 4) * 2, torch.randn(50, 4) * 2
    ours = gaussian_kl(mu, logvar)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(ours, torch.distributions.kl_divergence(q, p).sum(-1))
    assert (ours >= 0).all()


@pytest.mark.parametrize("latent", [1, 4])
def test_router_alpha_in_unit_interval_even_for_extreme_inputs(latent):
    torch.manual_seed(0)
    router = VIBRouter(8, hidden=16, latent_dim=latent)
    x = torch.cat([torch.randn(100, 8), 1e4 * torch.randn(10, 8)])
    for mode in (True, False):
        router.train(mode)
        out = router(x)
        assert out.alpha.shape == (110, 1)
        assert ((out.alpha >= 0) & (out.alpha <= 1)).all()
        assert (out.kl >= 0).all() and torch.isfinite(out.kl).all()
    router.eval()
    torch.testing.assert_close(router(x).alpha, router(x).alpha)  # the mean at inference: deterministic


# ---- adapters leave the universal tokenizer untouched -------------------------------------------------
def test_adapter_training_leaves_encoder_and_codebooks_bit_identical():
    x = clustered(400)
    domain = torch.arange(400) % 2
    universal, _, _ = pretrain_universal(x, SMALL, mtm=True, seed=0, ckpt=None, progress=False)
    before = {k: v.clone() for k, v in universal.state_dict().items()}
    z_before = universal.rqvae.encoder(x).detach()
    adaptive, result = train_adapters(universal, x, domain, ["A", "B"], SMALL, seed=0, ckpt=None, progress=False)
    after = universal.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # ... while the adapters did learn something, differently per domain
    with torch.no_grad():
        lat = adaptive.latents(x, domain)
    assert torch.equal(lat["z_uni"], z_before)
    assert not torch.allclose(lat["z_spec"], lat["z_uni"])
    lora_b = [p for n, p in adaptive.named_parameters() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # every domain's adapter moved away from its zero init
    assert result.trainable_params == sum(p.numel() for n, p in adaptive.named_parameters() if "lora_" in n or "router" in n)


def test_unknown_domain_is_named():
    x = clustered(64)
    universal = UniversalTokenizer(16, [32], 8, 2, 8, mtm_weight=0.0)
    adaptive = DomainAdaptiveTokenizer(universal, ["Food", "Kitchen"], r=2, lora_alpha=4, lora_dropout=0.0)
    with pytest.raises(ValueError, match="unknown domain index 2.*Food"):
        adaptive(x, torch.tensor([0] * 63 + [2]))


# ---- semantic IDs: the two collision rules ----------------------------------------------------------
def test_reassign_hand_case():
    codes = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 2], [1, 2, 3], [0, 0, 1]])
    dist = np.array([[5.0, 0.9, 0.5, 0.7],   # item 0: own code 1 at 0.9
                     [3.0, 0.2, 0.3, 0.6],   # item 1: closest to code 1 -> keeps it
                     [1.0, 1.0, 0.1, 1.0],
                     [1.0, 1.0, 1.0, 0.0],
                     [0.1, 0.95, 0.2, 0.3]])  # item 4: own code at 0.95 -> last to choose
    ids = resolve_collisions(codes, "reassign", dist)
    # item 1 keeps (0,0,1); item 0 (0.9 < 0.95) chooses first: nearest codes 2 (taken by item 2), 3 -> 3
    # item 4 then: nearest 0 (free) -> 0
    assert ids.tolist() == [[0, 0, 3], [0, 0, 1], [0, 0, 2], [1, 2, 3], [0, 0, 0]]


def test_extra_level_hand_case():
    codes = np.array([[0, 1], [0, 1], [2, 2], [0, 1]])
    dist = np.array([[0, 0.5, 0], [0, 0.1, 0], [0, 0, 0.3], [0, 0.2, 0]])
    ids = resolve_collisions(codes, "extra_level", dist)
    assert ids.tolist() == [[0, 1, 2], [0, 1, 0], [2, 2, 0], [0, 1, 1]]


@pytest.mark.parametrize("rule", ["reassign", "extra_level"])
def test_collision_rules_give_unique_ids_and_keep_what_they_promise(rule):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(300, 3))  # 64 tuples for 300 items: many collisions
    codes[:, 2] = rng.integers(0, 64, size=300)
    dist = rng.random((300, 64))
    ids = resolve_collisions(codes, rule, dist)
    assert len(np.unique(ids, axis=0)) == 300
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    alone = counts[inv.reshape(-1)] == 1
    assert (ids[alone, :3] == codes[alone]).all()  # items without a collision keep their codes
    if rule == "reassign":
        assert ids.shape == codes.shape and (ids[:, :2] == codes[:, :2]).all()  # only the last code moves
    else:
        assert ids.shape == (300, 4) and (ids[:, :3] == codes).all()


def test_reassign_cascades_to_the_level_above_when_a_prefix_is_full():
    codebooks = np.array([[[0.0, 0.0], [10.0, 0.0]], [[1.0, 0.0], [-1.0, 0.0]]])  # M = 2, K = 2
    z = np.array([[1.0, 0.0], [-1.0, 0.0], [1.1, 0.0]])
    codes = np.array([[0, 0], [0, 1], [0, 0]])  # prefix (0,) is full once items 0 and 1 hold both codes
    residuals = np.stack([z, z - codebooks[0][codes[:, 0]]], 1)
    ids = resolve_collisions(codes, "reassign", residuals=residuals, codebooks=codebooks)
    # item 2 (farther from (1,0) than item 0) moves: level 0 -> code 1 (10,0), residual (-8.9, 0)
    # whose nearest last code is 1 (-1, 0)
    assert ids.tolist() == [[0, 0], [0, 1], [1, 1]]


def test_reassign_fails_clearly_when_a_prefix_overflows():
    codes = np.zeros((5, 2), dtype=int)
    with pytest.raises(ValueError, match=r"prefix \(0,\) holds more than 4 items"):
        resolve_collisions(codes, "reassign", np.random.default_rng(0).random((5, 4)))


def test_id_statistics_hand_computed():
    codes = np.array([[0, 1], [0, 1], [1, 2]])
    st = id_statistics(codes, 4, ids=np.array([[0, 1, 0], [0, 1, 1], [1, 2, 0]]))
    assert st["collision_rate"] == pytest.approx(2 / 3)
    assert st["unique_tuples"] == pytest.approx(2 / 3)
    assert st["level_usage"] == [0.5, 0.5]
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert st["level_perplexity"][0] == pytest.approx(math.exp(h))
    assert st["items_per_prefix"][1] == {"prefixes": 2, "mean_items": 1.5, "max_items": 2}
    assert st["final_unique"] and st["id_length"] == 3


# ---- prefix trees ------------------------------------------------------------------------------------
def test_prefix_tree_accepts_exactly_its_ids(tmp_path):
    rng = np.random.default_rng(1)
    k, m = 5, 3
    ids = {tuple(int(c) for c in rng.integers(0, k, m)) for _ in range(40)}
    tree = PrefixTree(sorted(ids))
    assert len(tree) == len(ids)
    for seq in itertools.product(range(k), repeat=m):  # brute force over the whole ID space
        assert (seq in tree) == (seq in ids)
    for length in range(m):
        for prefix in itertools.product(range(k), repeat=length):
            expected = sorted({s[length] for s in ids if s[:length] == prefix})
            assert tree.next_codes(prefix) == expected
    assert list(tree.sequences()) == sorted(ids)
    loaded = PrefixTree.load(tree.save(tmp_path / "t.json"))
    assert list(loaded.sequences()) == sorted(ids)


def test_prefix_tree_rejects_bad_ids():
    with pytest.raises(ValueError, match="has 2 codes"):
        PrefixTree([[1, 2, 3], [1, 2]])
    with pytest.raises(ValueError, match="twice"):
        PrefixTree([[1, 2], [1, 2]])


# ---- bad input ---------------------------------------------------------------------------------------
def test_nan_embedding_is_refused():
    vae = RQVAE(16, [32], 8, 2, 8)
    x = clustered(10)
    x[3, 5] = float("nan")
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        vae(x)
    items = pd.DataFrame({"item_key": [f"A{i}" for i in range(10)], "domain_name": ["Food"] * 10})
    with pytest.raises(ValueError, match="item A3 \\(Food, row 3\\)"):
        check_embeddings(x.numpy(), items, "toy")


def test_item_without_text_is_named():
    items = pd.DataFrame({"item_key": ["A1", "A2"], "domain_name": ["Food", "Kitchen"], "text": ["tea", "  "]})
    with pytest.raises(ValueError, match="item A2 \\(Kitchen\\) has no text"):
        check_texts(items, "toy")


# ---- resumable training: a finished phase is read back, not retrained ----------------------------------
def test_pretraining_resumes_and_skips(tmp_path):
    x = clustered(300)
    a, res_a, _ = pretrain_universal(x, SMALL, mtm=True, seed=0, ckpt=tmp_path / "p1", progress=False)
    b, res_b, _ = pretrain_universal(x, SMALL, mtm=True, seed=0, ckpt=tmp_path / "p1", progress=False)
    assert not res_a.skipped and res_b.skipped
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert len(res_a.history) == SMALL["pretrain"]["epochs"]

"""LETTER's regularisers against hand-worked values and brute-force loops (LETTER Eqs. 5-7)."""
import math

import numpy as np
import pytest
import torch

from xdrec.letter import LETTERTokenizer, balanced_kmeans, collaborative_loss, diversity_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_collaborative_loss_is_infonce_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # logits <z_i, h_j> = [[1, 0], [0, 2]]; the positives are on the diagonal
    expected = (-math.log(math.e / (math.e + 1)) - math.log(math.e ** 2 / (1 + math.e ** 2))) / 2
    assert collaborative_loss(z, h).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        collaborative_loss(z, torch.zeros(2, 3))


def test_balanced_kmeans_respects_capacity_and_finds_separated_groups():
    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(6, 2, generator=g) * 0.1 + c for c in (torch.tensor([0.0, 0.0]),
                                                                          torch.tensor([10.0, 0.0]),
                                                                          torch.tensor([0.0, 10.0]))])
    labels = balanced_kmeans(blobs, 3, seed=1)
    assert sorted(np.bincount(labels.numpy()).tolist()) == [6, 6, 6]
    for b in range(3):  # each blob is one cluster
        assert len(set(labels[6 * b: 6 * b + 6].tolist())) == 1
    # an unbalanced cloud is still split into clusters of at most ceil(n / k)
    lopsided = torch.cat([torch.zeros(9, 2) + torch.randn(9, 2, generator=g) * 0.01, torch.ones(1, 2) * 5])
    counts = np.bincount(balanced_kmeans(lopsided, 3).numpy(), minlength=3)
    assert counts.max() <= 4 and counts.sum() == 10
    with pytest.raises(ValueError, match="cannot make 5 clusters of 3"):
        balanced_kmeans(torch.zeros(3, 2), 5)


def test_diversity_loss_matches_a_brute_force_loop():
    torch.manual_seed(0)
    book = torch.randn(6, 3)
    clusters = torch.tensor([0, 0, 1, 1, 2, 2])  # every code has exactly one other code in its cluster
    codes = torch.tensor([0, 3, 4, 4, 1])
    partner = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}
    terms = []
    for c in codes.tolist():
        sims = {j: float(book[c] @ book[j]) for j in range(6) if j != c}
        terms.append(math.log(sum(math.exp(s) for s in sims.values())) - sims[partner[c]])
    got = diversity_loss(book, codes, clusters, torch.Generator().manual_seed(0))
    assert got.item() == pytest.approx(np.mean(terms), rel=1e-5)


def test_diversity_loss_skips_codes_alone_in_their_cluster():
    book = torch.randn(4, 2)
    assert diversity_loss(book, torch.tensor([3, 3]), torch.tensor([0, 0, 0, 1])).item() == 0.0
    both = diversity_loss(book, torch.tensor([0, 3]), torch.tensor([0, 1, 1, 2]), torch.Generator().manual_seed(0))
    alone = diversity_loss(book, torch.tensor([0]), torch.tensor([0, 1, 1, 2]), torch.Generator().manual_seed(0))
    assert both.item() == 0.0 and alone.item() == 0.0  # code 0 is alone too
    pair = diversity_loss(book, torch.tensor([1, 3]), torch.tensor([0, 1, 1, 2]), torch.Generator().manual_seed(0))
    only = diversity_loss(book, torch.tensor([1]), torch.tensor([0, 1, 1, 2]), torch.Generator().manual_seed(0))
    assert pair.item() == pytest.approx(only.item())


def _letter(**kw):
    torch.manual_seed(0)
    m = LETTERTokenizer(8, [16], 4, n_levels=2, codebook_size=6, n_clusters=2, **kw)
    with torch.no_grad():
        m.quantizer.init_kmeans(m.rqvae.encoder(torch.randn(40, 8)))
    m.recluster(seed=0)
    return m


def test_letter_loss_is_eq_7_and_reaches_encoder_and_codebooks():
    m = _letter(alpha=0.5, div_weight=0.1, quant_weight=1.0)
    x, cf = torch.randn(10, 8), torch.randn(10, 4)
    out = m(x, cf)
    p = out.parts
    assert out.total.item() == pytest.approx(p["rec"] + p["quant"] + 0.5 * p["cf"] + 0.1 * p["div"], rel=1e-5)
    assert p["cf"] > 0 and p["div"] > 0
    # L_CF alone: gradient reaches the encoder (straight through) but not the codebooks
    m.zero_grad()
    collaborative_loss(m.rqvae(x).quant.z_q, cf).backward()
    assert m.rqvae.encoder[0].weight.grad.abs().sum() > 0
    assert m.quantizer.codebooks.grad is None or m.quantizer.codebooks.grad.abs().sum() == 0
    # L_Div alone: gradient on the code vectors only
    m.zero_grad()
    codes = m.rqvae(x).codes
    diversity_loss(m.quantizer.codebooks[0], codes[:, 0], m.clusters[0]).backward()
    assert m.quantizer.codebooks.grad[0].abs().sum() > 0 and m.quantizer.codebooks.grad[1].abs().sum() == 0


def test_recluster_gives_balanced_clusters_per_codebook():
    m = _letter()
    for d in range(2):
        assert sorted(np.bincount(m.clusters[d].numpy(), minlength=2).tolist()) == [3, 3]


def test_collaborative_regularisation_aligns_quantised_embeddings_with_cf():
    """2 CF groups of 32 items whose text embeddings mark the group only weakly: ``L_CF`` of the trained
    tokenizer's ``z_hat`` approaches its floor, log 32 (each item is told apart from its group), with
    ``alpha > 0``, and stays far above it without."""
    from xdrec.letter.semantic_ids import train_letter

    g = torch.Generator().manual_seed(0)
    n = 64
    group = torch.arange(n) % 2
    x = 0.1 * torch.randn(n, 8, generator=g)
    x[:, 0] += 3.0 * torch.sign(torch.randn(n, generator=g))  # the dominant, CF-unrelated direction
    x[:, 1] += 0.5 * (2 * group - 1)  # the weak trace of the group
    cf = torch.stack([torch.tensor([3.0, 0, 0, 0]), torch.tensor([0, 3.0, 0, 0])])[group] + 0.1 * torch.randn(n, 4, generator=g)
    cfg = {"rqvae": {"hidden": [16], "latent_dim": 4, "n_levels": 2, "codebook_size": 2, "beta": 0.25,
                     "quant_weight": 1.0, "kmeans_init_items": 64, "revive_dead_codes": False,
                     "pretrain": {"epochs": 200, "lr": 1e-2, "batch_size": 64}},
           "letter": {"alpha": 5.0, "beta": 0.0, "n_clusters": 1}}

    def l_cf(alpha):
        model, _ = train_letter(x, cf, {**cfg, "letter": {**cfg["letter"], "alpha": alpha}}, seed=0, ckpt=None,
                                progress=False)
        with torch.no_grad():
            return collaborative_loss(model.rqvae(x).quant.z_q, cf).item()

    floor = math.log(32)
    assert l_cf(5.0) < floor + 0.1
    assert l_cf(0.0) > floor + 1.0


def test_cf_embeddings_come_from_a_sasrec_of_the_latent_size():
    from xdrec.data import make_synthetic
    from xdrec.letter.semantic_ids import cf_embeddings

    ds = make_synthetic(n_users=60, n_domains=1, items_per_domain=20, seed=0)
    cfg = {"max_len": 10, "layers": 1, "sasrec_heads": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 32,
           "max_valid_rows": None, "epochs": 1, "patience": None}
    h = cf_embeddings(ds, 4, cfg, seed=0, ckpt=None)
    assert h.shape == (ds.n_items, 4) and torch.isfinite(h).all()

"""Residual quantisation against hand-computed codes, residuals, losses and gradients (GenCDR Eq. 2)."""
import pytest
import torch

from xdrec.quantization import ResidualQuantizer, kmeans


def hand_built():
    rq = ResidualQuantizer(n_levels=2, codebook_size=3, dim=2, beta=0.25, kmeans_init=False)
    rq.codebooks.data = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]],     # C_0
                                      [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])    # C_1
    return rq


def test_exact_codes_residuals_and_reconstruction():
    rq = hand_built()
    z = torch.tensor([[11.0, 0.2]])
    out = rq(z)
    # level 0: ||(11,.2)-(10,0)||^2 = 1.04 is the smallest -> c_0 = 1, r_1 = (1, 0.2)
    # level 1: ||(1,.2)-(1,0)||^2 = 0.04 is the smallest -> c_1 = 0, r_2 = (0, 0.2)
    assert out.codes.tolist() == [[1, 0]]
    assert torch.allclose(out.residuals[0], torch.tensor([[11.0, 0.2], [1.0, 0.2]]))
    assert torch.allclose(out.z_q, torch.tensor([[11.0, 0.0]]))  # z_hat = e_1 + e_0 = (10,0) + (1,0)
    assert torch.equal(rq.encode(z), out.codes)
    assert torch.allclose(rq.decode_codes(out.codes), out.z_q)
    # Eq. 2 value: (1 + beta) * sum_d ||r_d - e_{c_d}||^2 = 1.25 * (1.04 + 0.04)
    assert out.loss.item() == pytest.approx(1.25 * 1.08)


def test_gradients_straight_through_and_commitment():
    rq = hand_built()
    z = torch.tensor([[11.0, 0.2]], requires_grad=True)
    out = rq(z)
    (g_st,) = torch.autograd.grad(out.z_q.sum(), z, retain_graph=True)
    assert torch.equal(g_st, torch.ones_like(z))  # straight-through
    out.loss.backward()
    # only the commitment term reaches z: beta * 2 * sum_d (r_d - e_{c_d}) = 0.25 * 2 * ((1, .2) + (0, .2))
    assert torch.allclose(z.grad, torch.tensor([[0.5, 0.2]]))
    # only the codebook term reaches the codebooks, and only the chosen codes: 2 * (e - r_d)
    expected = torch.zeros(2, 3, 2)
    expected[0, 1] = 2 * (torch.tensor([10.0, 0.0]) - torch.tensor([11.0, 0.2]))
    expected[1, 0] = 2 * (torch.tensor([1.0, 0.0]) - torch.tensor([1.0, 0.2]))
    assert torch.allclose(rq.codebooks.grad, expected)


def test_kmeans_init_recovers_planted_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [0.0, -6.0]])
    labels = torch.arange(300) % 3
    z = centres[labels] + 0.3 * torch.randn(300, 2, generator=g)
    found = kmeans(z, 3)
    assert torch.cdist(found, centres).min(1).values.max() < 0.2
    rq = ResidualQuantizer(n_levels=2, codebook_size=3, dim=2)  # k-means on the first training batch
    rq.train()
    codes = rq(z).codes[:, 0]
    # the level-0 code is the planted cluster, up to a relabelling
    for c in range(3):
        assert len(set(labels[codes == c].tolist())) == 1
    # the second level quantises what the first left: residuals shrink
    assert rq(z).residuals[:, 1].norm(dim=1).mean() < 0.6


def test_dead_codes_are_moved_onto_residuals():
    rq = hand_built()
    rq.train()
    z = torch.tensor([[11.0, 0.2], [10.5, -0.1]])
    rq(z)  # uses code 1 at level 0 and code 0 at level 1 only
    assert rq.usage.sum().item() == 4
    moved = rq.reset_dead_codes(z)
    assert moved == 4  # two unused codes per level
    assert rq.usage.sum().item() == 0
    level0 = rq.codebooks.data[0]
    assert torch.equal(level0[1], torch.tensor([10.0, 0.0]))  # a used code stays
    for dead in (0, 2):
        assert any(torch.equal(level0[dead], row) for row in z)  # a dead one now sits on an item


def test_non_finite_latents_are_refused():
    rq = hand_built()
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        rq(torch.tensor([[1.0, 0.0], [float("nan"), 0.0]]))

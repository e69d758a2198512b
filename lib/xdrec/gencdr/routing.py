"""VIB-regularised routers of GenCDR: the item-level semantic router (Eqs. 6-8) and the user-level
interest router (Eq. 11, :class:`UserRouter`).

A router ``R_phi`` maps its input to a Gaussian ``q(z_r | x) = N(mu(x), diag(sigma(x)^2))``
(a two-layer MLP, 128 hidden units in the paper), samples ``z_r`` with the reparameterisation
trick while training (uses the mean at inference), and turns it into the gate
``alpha = sigmoid(z_r)`` (Eq. 6; with ``latent_dim > 1`` a linear head maps ``z_r`` to the gate
logit first).  The variational information bottleneck (Alemi et al., 2017) adds

    L_VIB = KL( q(z_r | x) || N(0, I) )                                            (Eq. 8)

to the training loss, so the gate depends on the input only as much as the task pays for.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per row (summed over the last dimension); always >= 0."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


@dataclass
class RouterOutput:
    alpha: torch.Tensor  # [B, n_gates] in [0, 1]
    kl: torch.Tensor  # [B] KL of q(z_r|x) to the prior
    mu: torch.Tensor  # [B, latent_dim]
    logvar: torch.Tensor  # [B, latent_dim]


class VIBRouter(nn.Module):
    """``x -> alpha in [0, 1]`` through a reparameterised Gaussian bottleneck (GenCDR Eqs. 6 and 8)."""

    def __init__(self, in_dim: int, hidden: int = 128, latent_dim: int = 1, n_gates: int = 1):
        super().__init__()
        self.latent_dim, self.n_gates = latent_dim, n_gates
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
        self.head = nn.Identity() if latent_dim == n_gates else nn.Linear(latent_dim, n_gates)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        mu, logvar = self.net(x).chunk(2, dim=-1)
        logvar = logvar.clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return RouterOutput(torch.sigmoid(self.head(z)), gaussian_kl(mu, logvar), mu, logvar)


class UserRouter(nn.ModuleList):
    """GenCDR's user-level interest router (Eq. 11): one :class:`VIBRouter` per domain.

    For a user whose history representation is ``h_t`` (the universal network's last hidden state
    at the target-domain marker), the target domain's router gives ``gamma = sigma(z_r)`` with
    ``z_r ~ q(z_r | h_t)``, and decoding follows

        P_final = (1 - gamma) * P_uni + gamma * P_spec                                   (Eq. 11)

    at every step. Fitted in phase 2 on ``-log P_final(y)`` of the true next code with ``P_spec``
    detached (so Eq. 10 alone trains the domain adapter), plus ``vib_weight * KL(q || N(0, 1))``.
    """

    def __init__(self, in_dim: int, n_domains: int, *, hidden: int, latent_dim: int, vib_weight: float):
        super().__init__([VIBRouter(in_dim, hidden, latent_dim, 1) for _ in range(n_domains)])
        self.vib_weight = float(vib_weight)

    def train_domain(self, domain: int | None) -> None:
        """Only ``domain``'s router trains (``None``: none)."""
        for d, router in enumerate(self):
            router.requires_grad_(domain == d)

    def gamma(self, h_t: torch.Tensor, domains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``gamma [n]`` and the KL ``[n]`` of each row's own domain router."""
        g = h_t.new_zeros(len(h_t))
        kl = h_t.new_zeros(len(h_t))
        for d in domains.unique().tolist():
            sel = domains == d
            out = self[d](h_t[sel].float())
            g[sel], kl[sel] = out.alpha.squeeze(-1).to(g.dtype), out.kl.to(kl.dtype)
        return g, kl

    @staticmethod
    def fuse(p_uni: torch.Tensor, p_spec: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """``P_final`` (Eq. 11): ``gamma [n]`` weighs the rows (leading dimension) of ``p_uni`` and ``p_spec``."""
        shape = (-1, *([1] * (p_uni.dim() - 1)))
        return (1 - gamma).reshape(shape) * p_uni + gamma.reshape(shape) * p_spec

    def route_nll(self, z_uni: torch.Tensor, z_spec: torch.Tensor, gamma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``-sum log P_final(y)`` over rows, from code logits ``[n, K]`` (``P_spec`` detached)."""
        p = self.fuse(z_uni.softmax(-1), z_spec.detach().softmax(-1), gamma)
        return -p.gather(-1, y.unsqueeze(-1)).clamp_min(1e-12).log().sum()

    def vib_term(self, kl: torch.Tensor) -> torch.Tensor:
        """``vib_weight * KL`` averaged over the rows (Eq. 8 applied to the user router)."""
        return self.vib_weight * kl.mean()

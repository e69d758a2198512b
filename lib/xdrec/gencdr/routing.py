"""VIB-regularised routers of GenCDR: the item-level semantic router (Eqs. 6-8) and the user-level interest router.

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

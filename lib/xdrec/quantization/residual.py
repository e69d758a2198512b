"""Residual quantisation (RQ; Lee et al., CVPR 2022), as GenCDR's universal encoder uses it (Eq. 2).

An item's latent ``z`` is quantised level by level with ``M`` codebooks ``C_0 .. C_{M-1}``::

    r_0 = z
    c_d = argmin_k ||r_d - e_k||^2          (e_k in C_d)
    r_{d+1} = r_d - e_{c_d}
    z_hat = sum_d e_{c_d}

and trained with the quantisation loss of Eq. 2 (van den Oord et al., 2017)::

    L_Q = sum_d ||sg(r_d) - e_{c_d}||^2 + beta * ||r_d - sg(e_{c_d})||^2,   beta = 0.25

The first term moves the chosen code towards the residual (codebook loss), the second keeps the
encoder committed to its codes. Gradients reach the encoder through ``z_hat`` by the
straight-through estimator. Inside the residual chain the codes are detached, so codebook ``C_d``
is trained only by its own level's term.

Two practical additions: codebooks initialised by k-means(++) on the first batch
(level by level, on that level's residuals), and *dead-code* re-initialisation — codes no item
chose since the last reset are moved onto random residuals of the current batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class QuantizerOutput:
    codes: torch.Tensor  # [B, M] chosen code per level
    z_q: torch.Tensor  # [B, D] quantised latent (value z_hat, gradient straight through to z)
    residuals: torch.Tensor  # [B, M, D] the residual r_d entering level d
    loss: torch.Tensor  # Eq. 2, summed over levels, averaged over the batch


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """k-means on rows of ``x`` -> centroids [k, D]: k-means++ seeding, then Lloyd iterations.

    k-means++ (Arthur & Vassilvitskii, 2007) draws each new seed with probability proportional
    to its squared distance from the seeds so far, which avoids the local optima of uniformly
    drawn seeds. An empty cluster takes a random point. Rows with NaN or inf, or no rows at all,
    raise a ``ValueError``; asking for more centroids than there are points warns and returns ``k``
    centroids of which only ``n`` can be distinct (the others repeat points).
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty [n, D] matrix of points, got shape {tuple(x.shape)}")
    ResidualQuantizer.check_finite(x)
    n = x.shape[0]
    if k > n:
        import warnings

        warnings.warn(f"k-means asked for {k} centroids from {n} points: at most {n} of them are distinct",
                      stacklevel=2)
    g = torch.Generator(device="cpu").manual_seed(seed)
    centroids = x.new_empty(k, x.shape[1])
    centroids[0] = x[torch.randint(n, (1,), generator=g)][0]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        centroids[j] = x[torch.multinomial(probs.cpu(), 1, generator=g).to(x.device)][0]
        d2 = torch.minimum(d2, ((x - centroids[j]) ** 2).sum(1))
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        for j in range(k):
            members = x[assign == j]
            centroids[j] = members.mean(0) if len(members) else x[torch.randint(n, (1,), generator=g)][0]
    return centroids


class ResidualQuantizer(nn.Module):
    """``n_levels`` codebooks of ``codebook_size`` vectors of size ``dim`` (GenCDR Eq. 2)."""

    def __init__(self, n_levels: int = 3, codebook_size: int = 256, dim: int = 32, beta: float = 0.25,
                 kmeans_init: bool = True):
        super().__init__()
        self.n_levels, self.codebook_size, self.dim, self.beta = n_levels, codebook_size, dim, beta
        self.codebooks = nn.Parameter(torch.randn(n_levels, codebook_size, dim) / dim ** 0.5)
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        self.register_buffer("usage", torch.zeros(n_levels, codebook_size, dtype=torch.long))

    @staticmethod
    def check_finite(z: torch.Tensor) -> None:
        if z.ndim >= 1 and z.shape[0] == 0:
            raise ValueError("an empty batch of latents: there is nothing to quantise")
        bad = (~torch.isfinite(z)).any(-1).nonzero().flatten()
        if len(bad):
            raise ValueError(f"latent rows {bad[:10].tolist()} hold NaN or inf: quantising them would corrupt the codebooks")

    def nearest(self, r: torch.Tensor, level: int) -> torch.Tensor:
        """``argmin_k ||r - e_k||^2`` over codebook ``level`` (ties go to the lowest index)."""
        return torch.cdist(r, self.codebooks[level].detach()).argmin(-1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        self.check_finite(z)
        if not bool(self.initialised) and self.training:
            self.init_kmeans(z.detach())
        r = z
        codes, residuals, loss = [], [], z.new_zeros(())
        z_hat = torch.zeros_like(z)
        for d in range(self.n_levels):
            c = self.nearest(r.detach(), d)
            e = self.codebooks[d][c]
            residuals.append(r)
            # Eq. 2: codebook term + beta * commitment term, per item, then mean over the batch
            loss = loss + ((r.detach() - e) ** 2).sum(-1).mean() + self.beta * ((r - e.detach()) ** 2).sum(-1).mean()
            z_hat = z_hat + e
            r = r - e.detach()
            codes.append(c)
        codes = torch.stack(codes, 1)
        if self.training:
            self.usage += torch.nn.functional.one_hot(codes, self.codebook_size).sum(0)
        z_q = z + (z_hat - z).detach()  # straight-through: value z_hat, gradient d z_q / d z = I
        return QuantizerOutput(codes, z_q, torch.stack(residuals, 1), loss)

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [B, M] of ``z`` (no loss, no usage counting)."""
        self.check_finite(z)
        r, codes = z, []
        for d in range(self.n_levels):
            c = self.nearest(r, d)
            r = r - self.codebooks[d][c]
            codes.append(c)
        return torch.stack(codes, 1)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``z_hat = sum_d e_{c_d}`` for codes [B, M] (a ``ValueError`` names a code outside ``0..K-1``)."""
        if codes.ndim != 2 or codes.shape[1] != self.n_levels:
            raise ValueError(f"codes must be [B, {self.n_levels}], got shape {tuple(codes.shape)}")
        bad = ((codes < 0) | (codes >= self.codebook_size)).nonzero()
        if len(bad):
            row, level = (int(v) for v in bad[0])
            raise ValueError(f"row {row}, level {level}: code {int(codes[row, level])} is not in "
                             f"0..{self.codebook_size - 1}")
        return sum(self.codebooks[d][codes[:, d]] for d in range(self.n_levels))

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, iters: int = 25, seed: int = 0) -> None:
        """Set each codebook to the k-means centroids of its level's residuals on ``z``."""
        self.check_finite(z)
        r = z
        for d in range(self.n_levels):
            self.codebooks.data[d] = kmeans(r, self.codebook_size, iters=iters, seed=seed + d)
            r = r - self.codebooks[d][self.nearest(r, d)]
        self.initialised.fill_(True)

    @torch.no_grad()
    def reset_dead_codes(self, z: torch.Tensor, seed: int = 0) -> int:
        """Move every code unused since the last reset onto a random residual of ``z``; returns how many."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        r, moved = z, 0
        for d in range(self.n_levels):
            dead = (self.usage[d] == 0).nonzero().flatten()
            if len(dead):
                pick = torch.randint(len(r), (len(dead),), generator=g)
                self.codebooks.data[d, dead] = r[pick]
                moved += len(dead)
            r = r - self.codebooks[d][self.nearest(r, d)]
        self.usage.zero_()
        return moved


@torch.no_grad()
def codes_and_residuals(quantizer, z: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Codes [N, M] of ``z`` and the residuals ``r_d`` entering each level [N, M, D]."""
    codes = quantizer.encode(z)
    r, residuals = z, []
    for d in range(quantizer.n_levels):
        residuals.append(r)
        r = r - quantizer.codebooks[d][codes[:, d]]
    return codes.cpu().numpy(), torch.stack(residuals, 1).cpu().numpy()

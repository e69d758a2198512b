"""LETTER's tokenizer: TIGER's RQ-VAE with collaborative and diversity regularisation (LETTER Eq. 7).

    L_LETTER = L_Sem + alpha L_CF + beta L_Div,      L_Sem = L_REC + mu L_Q

``L_Sem`` is exactly the RQ-VAE loss TIGER's tokenizer trains on here
(:class:`xdrec.quantization.RQVAE`: reconstruction of the item's text embedding, and the
codebook/commitment loss of every level); ``L_CF`` and ``L_Div`` are
:mod:`xdrec.letter.regularization`. ``L_CF`` reads the straight-through quantised latent, so its
gradient reaches the encoder (and moves items between codes); ``L_Div`` moves the code vectors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..quantization import RQVAE
from .regularization import balanced_kmeans, collaborative_loss, diversity_loss


@dataclass
class LetterLoss:
    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)
    codes: torch.Tensor | None = None


class LETTERTokenizer(nn.Module):
    """An RQ-VAE ``in_dim -> hidden -> latent_dim`` with ``n_levels`` codebooks, trained with Eq. 7.

    Args:
        alpha: weight of ``L_CF``; div_weight: ``beta`` of Eq. 7 (weight of ``L_Div``);
        n_clusters: clusters per codebook for ``L_Div``; quant_weight: ``mu`` of ``L_Sem``;
        beta: the commitment weight inside ``L_Q`` (0.25).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], latent_dim: int, n_levels: int, codebook_size: int, *,
                 beta: float = 0.25, quant_weight: float = 1.0, alpha: float = 0.02, div_weight: float = 1e-4,
                 n_clusters: int = 10):
        super().__init__()
        self.rqvae = RQVAE(in_dim, hidden, latent_dim, n_levels, codebook_size, beta)
        self.quant_weight, self.alpha, self.div_weight, self.n_clusters = quant_weight, alpha, div_weight, n_clusters
        self.register_buffer("clusters", torch.arange(n_levels * codebook_size).view(n_levels, codebook_size)
                             % n_clusters)
        self._generator = torch.Generator().manual_seed(0)

    @property
    def quantizer(self):
        return self.rqvae.quantizer

    @torch.no_grad()
    def recluster(self, seed: int = 0) -> None:
        """Balanced k-means of every codebook's current vectors; also reseeds the positives' sampler."""
        for d, book in enumerate(self.quantizer.codebooks):
            self.clusters[d] = balanced_kmeans(book, self.n_clusters, seed=seed + d).to(self.clusters.device)
        self._generator.manual_seed(seed)

    def forward(self, x: torch.Tensor, cf: torch.Tensor) -> LetterLoss:
        out = self.rqvae(x)
        l_cf = collaborative_loss(out.quant.z_q, cf) if self.alpha else x.new_zeros(())
        l_div = x.new_zeros(())
        if self.div_weight:
            for d, book in enumerate(self.quantizer.codebooks):
                l_div = l_div + diversity_loss(book, out.codes[:, d], self.clusters[d], self._generator)
        total = out.rec_loss + self.quant_weight * out.quant.loss + self.alpha * l_cf + self.div_weight * l_div
        parts = {"rec": out.rec_loss.item(), "quant": out.quant.loss.item(), "cf": l_cf.item(), "div": l_div.item()}
        return LetterLoss(total, parts, out.codes)

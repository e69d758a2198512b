"""RQ-VAE (Lee et al., CVPR 2022; as TIGER and GenCDR use it): MLP encoder, residual quantiser, MLP decoder.

    z = E(x)                      item text embedding -> latent
    z_hat, codes = RQ(z)          M levels of residual quantisation (:mod:`.residual`, GenCDR Eq. 2)
    x_hat = D(z_hat)              latent -> reconstructed embedding

Losses (GenCDR, "Domain-Universal Semantic Token Generation")::

    L_REC = ||x - x_hat||^2       summed over dimensions, averaged over the batch
    L_Q   = Eq. 2                 codebook + beta * commitment, summed over levels

The gradient of ``L_REC`` reaches the encoder through the straight-through estimator of the
quantiser. The encoder is a plain ``nn.Sequential`` of ``Linear`` layers (named ``"0"``, ``"2"``,
...) so that PEFT can put LoRA adapters on them (GenCDR Eq. 4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .residual import QuantizerOutput, ResidualQuantizer


def mlp(dims: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU (-> Dropout)`` between consecutive ``dims``; no activation after the last layer."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@dataclass
class RQVAEOutput:
    x_hat: torch.Tensor  # [B, in_dim] reconstruction
    z: torch.Tensor  # [B, latent] encoder output
    quant: QuantizerOutput  # codes, z_q, residuals, loss (Eq. 2)
    rec_loss: torch.Tensor  # L_REC (scalar)

    @property
    def codes(self) -> torch.Tensor:
        return self.quant.codes


class RQVAE(nn.Module):
    """Encoder ``in_dim -> hidden... -> latent_dim``, ``n_levels`` codebooks of ``codebook_size``, mirrored decoder."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (512, 256, 128), latent_dim: int = 32,
                 n_levels: int = 3, codebook_size: int = 256, beta: float = 0.25, dropout: float = 0.0):
        super().__init__()
        self.config = dict(in_dim=in_dim, hidden=list(hidden), latent_dim=latent_dim, n_levels=n_levels,
                           codebook_size=codebook_size, beta=beta, dropout=dropout)
        self.encoder = mlp([in_dim, *hidden, latent_dim], dropout)
        self.decoder = mlp([latent_dim, *reversed(hidden), in_dim], dropout)
        self.quantizer = ResidualQuantizer(n_levels, codebook_size, latent_dim, beta=beta)

    @staticmethod
    def check_input(x: torch.Tensor) -> None:
        bad = (~torch.isfinite(x)).any(-1).nonzero().flatten()
        if len(bad):
            raise ValueError(f"input embedding rows {bad[:10].tolist()} hold NaN or inf")

    def decode_latent(self, z: torch.Tensor, encoder_input: torch.Tensor) -> RQVAEOutput:
        """Quantise a latent ``z`` (from any encoder) and decode it; ``encoder_input`` is the target ``x``."""
        quant = self.quantizer(z)
        x_hat = self.decoder(quant.z_q)
        rec = ((encoder_input - x_hat) ** 2).sum(-1).mean()
        return RQVAEOutput(x_hat, z, quant, rec)

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        self.check_input(x)
        return self.decode_latent(self.encoder(x), x)

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.quantizer.encode(self.encoder(x))

"""GenCDR's Domain-adaptive Tokenization (Hu et al., AAAI 2026, Eqs. 2-8).

Phase 1, universal semantic tokens. An RQ-VAE (:class:`xdrec.quantization.RQVAE`) is trained
on the text embeddings of the items of *all* domains with

    L_pretrain = L_REC + mu * L_Q + lambda * L_MTM

where ``L_MTM`` (Eq. 3) is a masked token modelling loss: a small transformer
(:class:`MaskedCodeModel`, parameters ``theta_ctx``) reads an item's code sequence with some
codes masked and predicts them.  Afterwards the encoder ``E`` and the codebooks are frozen.

Phase 2, domain-specific adapters and the item router. For every domain ``d`` a LoRA adapter
``theta_d`` (PEFT, on every ``Linear`` of a copy of the frozen encoder, Eq. 4) gives
``z_spec = E_{theta_d}(x)``; the router (:class:`~xdrec.gencdr.routing.VIBRouter`) gives
``alpha`` and ``z_fused = (1 - alpha) z_uni + alpha z_spec`` (Eqs. 6-7).  Adapters and router
train together on

    L_phase2 = ||x - D(Q(z_spec))||^2 + mu C(z_spec)  +  ||x - D(Q(z_fused))||^2 + mu C(z_fused)  +  w_VIB * KL
                                                                                    (Eqs. 5, 7, 8)

with ``Q`` and ``D`` frozen (the straight-through estimator carries the gradient through ``Q``)
and ``C(z) = beta sum_d ||r_d - sg(e_{c_d})||^2`` the commitment half of Eq. 2 (its codebook
half has no gradient here: the codebooks are frozen).
The item's semantic ID is the code sequence of ``Q(z_fused)``, after collision handling
(:mod:`xdrec.quantization.semantic_ids`).

What the paper leaves open, and what we chose:

- ``mu`` and ``lambda`` are not reported: ``mu = 1`` (the weight VQ-VAE and TIGER use) and
  ``lambda`` from the profile.
- The MTM transformer reads the *code vectors* ``e_{c_d}`` (plus a level embedding) and scores a
  masked position against every code of that level's codebook by negative squared distance, so
  ``L_MTM`` shapes the codebooks and, through a straight-through path, the encoder; a transformer
  over discrete code indices alone would receive no gradient from the tokenizer and could not
  make the codes "contextually coherent".
- Phase 2 adds the fused reconstruction term to Eq. 5 so that the router has a training signal
  (the paper trains the router "jointly" in the second phase with the VIB weight), and keeps
  the commitment term: with Eq. 5 alone the adapted latents drift away from the frozen
  codebooks (on Food-Kitchen the reconstruction through ``Q`` rose from 0.53 to 0.93 in ten
  epochs).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..quantization import RQVAE
from .routing import VIBRouter


# ----------------------------------------------------------------------------------------------
# Masked token modelling over code sequences (Eq. 3)
# ----------------------------------------------------------------------------------------------
class MaskedCodeModel(nn.Module):
    """``theta_ctx``: predicts masked codes ``c_i`` of an item from the others (GenCDR Eq. 3)."""

    def __init__(self, n_levels: int, latent_dim: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 mask_prob: float = 0.3, dropout: float = 0.0):
        super().__init__()
        self.n_levels, self.mask_prob = n_levels, mask_prob
        self.in_proj = nn.Linear(latent_dim, d_model)
        self.level = nn.Embedding(n_levels, d_model)
        self.mask_token = nn.Parameter(torch.zeros(d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.out_proj = nn.Linear(d_model, latent_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def sample_mask(self, batch: int, device: torch.device) -> torch.Tensor:
        """Bernoulli(mask_prob) positions, at least one per item (drawn from torch's global RNG)."""
        mask = torch.rand(batch, self.n_levels, device=device) < self.mask_prob
        empty = ~mask.any(1)
        if empty.any():
            pick = torch.randint(self.n_levels, (int(empty.sum()),), device=device)
            mask[empty.nonzero().flatten(), pick] = True
        return mask

    def logits(self, code_vectors: torch.Tensor, mask: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
        """``log P(c_d = k | S_masked)`` up to a constant: [B, M, K] (negative squared distances)."""
        b, m, _ = code_vectors.shape
        h = self.in_proj(code_vectors)
        h = torch.where(mask.unsqueeze(-1), self.mask_token.expand_as(h), h)
        h = h + self.level.weight[:m].unsqueeze(0)
        out = self.out_proj(self.encoder(h))  # [B, M, D]
        # -||out_d - e_k||^2 for the codebook of each level d
        return -(out.pow(2).sum(-1, keepdim=True) - 2 * torch.einsum("bmd,mkd->bmk", out, codebooks)
                 + codebooks.pow(2).sum(-1).unsqueeze(0))

    def forward(self, code_vectors: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of the masked codes (Eq. 3). ``code_vectors`` [B, M, D], ``codes`` [B, M]."""
        if mask is None:
            mask = self.sample_mask(codes.shape[0], codes.device)
        logits = self.logits(code_vectors, mask, codebooks)
        return F.cross_entropy(logits[mask], codes[mask])

    @torch.no_grad()
    def pseudo_log_likelihood(self, code_vectors: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
        """Deterministic MTM loss for evaluation: mask each level alone, average the cross-entropies."""
        losses = []
        for d in range(self.n_levels):
            mask = torch.zeros_like(codes, dtype=torch.bool)
            mask[:, d] = True
            losses.append(F.cross_entropy(self.logits(code_vectors, mask, codebooks)[:, d], codes[:, d]))
        return torch.stack(losses).mean()


# ----------------------------------------------------------------------------------------------
# Phase 1: the universal tokenizer
# ----------------------------------------------------------------------------------------------
@dataclass
class TokenizerLosses:
    loss: torch.Tensor
    rec: torch.Tensor
    quant: torch.Tensor
    mtm: torch.Tensor
    codes: torch.Tensor


class UniversalTokenizer(nn.Module):
    """RQ-VAE + masked code model, trained on ``L_REC + mu L_Q + lambda L_MTM`` (GenCDR phase 1)."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (512, 256, 128), latent_dim: int = 32,
                 n_levels: int = 3, codebook_size: int = 256, beta: float = 0.25, quant_weight: float = 1.0,
                 mtm_weight: float = 0.1, mtm: dict | None = None):
        super().__init__()
        self.rqvae = RQVAE(in_dim, hidden, latent_dim, n_levels, codebook_size, beta)
        self.quant_weight, self.mtm_weight = quant_weight, mtm_weight
        self.mtm = MaskedCodeModel(n_levels, latent_dim, **(mtm or {})) if mtm_weight > 0 else None

    @property
    def quantizer(self):
        return self.rqvae.quantizer

    def code_vectors(self, residuals: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The MTM input ``e_{c_d}``: value of the code vector, gradient to codebooks and (straight through) to ``r_d``."""
        cb = self.quantizer.codebooks
        e = torch.stack([cb[d][codes[:, d]] for d in range(codes.shape[1])], 1)
        return e + (residuals - residuals.detach())

    def forward(self, x: torch.Tensor) -> TokenizerLosses:
        out = self.rqvae(x)
        mtm = x.new_zeros(())
        if self.mtm is not None:
            # scored against the codebooks without moving them: MTM's gradient on the output side would drag
            # the codes away from the residuals they quantise (we measured the quantisation loss climbing
            # from 0.01 to 4 at lr 1e-3); its input side still shapes the codebooks and the encoder
            mtm = self.mtm(self.code_vectors(out.quant.residuals, out.codes), out.codes, self.quantizer.codebooks.detach())
        loss = out.rec_loss + self.quant_weight * out.quant.loss + self.mtm_weight * mtm
        return TokenizerLosses(loss, out.rec_loss.detach(), out.quant.loss.detach(), mtm.detach(), out.codes)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
        """Losses on ``x`` without sampling (MTM as the mean leave-one-level-out cross-entropy) and the codes."""
        was = self.training
        self.eval()
        sums = {"rec": 0.0, "quant": 0.0, "mtm": 0.0}
        codes = []
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            out = self.rqvae(xb)
            n = len(xb)
            sums["rec"] += float(out.rec_loss) * n
            sums["quant"] += float(out.quant.loss) * n
            if self.mtm is not None:
                sums["mtm"] += float(self.mtm.pseudo_log_likelihood(
                    self.code_vectors(out.quant.residuals, out.codes), out.codes, self.quantizer.codebooks)) * n
            codes.append(out.codes)
        self.train(was)
        res = {k: v / len(x) for k, v in sums.items()}
        res["loss"] = res["rec"] + self.quant_weight * res["quant"] + self.mtm_weight * res["mtm"]
        res["codes"] = torch.cat(codes)
        return res

    def freeze(self) -> "UniversalTokenizer":
        """Phase 1 is over: no gradient, no code statistics, no re-initialisation from here on."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        return self


# ----------------------------------------------------------------------------------------------
# Phase 2: domain adapters and the item-level router
# ----------------------------------------------------------------------------------------------
@dataclass
class AdaptiveOutput:
    loss: torch.Tensor
    rec_spec: torch.Tensor
    rec_fused: torch.Tensor
    kl: torch.Tensor
    alpha: torch.Tensor


class DomainAdaptiveTokenizer(nn.Module):
    """The frozen universal tokenizer + one LoRA adapter per domain + the VIB item router."""

    def __init__(self, universal: UniversalTokenizer, domains: Sequence[str], *, r: int = 64, lora_alpha: int = 32,
                 lora_dropout: float = 0.05, router_hidden: int = 128, router_latent: int = 1, vib_weight: float = 1e-3):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.universal = universal.freeze()
        self.domains = list(domains)
        if len(set(self.domains)) != len(self.domains) or not self.domains:
            raise ValueError(f"domains must be distinct and non-empty, got {self.domains}")
        self.vib_weight, self.quant_weight = vib_weight, universal.quant_weight
        encoder = copy.deepcopy(universal.rqvae.encoder)
        targets = [name for name, m in encoder.named_modules() if isinstance(m, nn.Linear)]
        config = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets)
        self.adapted = get_peft_model(encoder, config, adapter_name=self.adapter_name(0))
        for i in range(1, len(self.domains)):
            self.adapted.add_adapter(self.adapter_name(i), config)
        self._lora = [p for n, p in self.adapted.named_parameters() if "lora_" in n]
        for p in self._lora:
            p.requires_grad_(True)
        self.router = VIBRouter(universal.rqvae.config["in_dim"], router_hidden, router_latent)

    @staticmethod
    def adapter_name(domain_index: int) -> str:
        return f"domain_{domain_index}"

    def train(self, mode: bool = True) -> "DomainAdaptiveTokenizer":
        super().train(mode)
        self.universal.eval()  # frozen: its quantiser must neither count usage nor re-initialise
        return self

    def _check_domains(self, domain: torch.Tensor) -> None:
        bad = ((domain < 0) | (domain >= len(self.domains))).nonzero().flatten()
        if len(bad):
            raise ValueError(f"unknown domain index {int(domain[bad[0]])} at row {int(bad[0])}: "
                             f"the tokenizer has adapters for {dict(enumerate(self.domains))}")

    def z_uni(self, x: torch.Tensor) -> torch.Tensor:
        return self.universal.rqvae.encoder(x)

    def z_spec(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        """``E_{theta_d}(x)`` with each row's own domain adapter."""
        self._check_domains(domain)
        out = x.new_zeros(len(x), self.universal.rqvae.config["latent_dim"])
        for d in domain.unique().tolist():
            rows = (domain == d).nonzero().flatten()
            self.adapted.base_model.set_adapter(self.adapter_name(d))
            if self.training:  # set_adapter freezes the inactive adapters; all of them stay trainable
                for p in self._lora:
                    p.requires_grad_(True)
            out = out.index_copy(0, rows, self.adapted(x[rows]))
        return out

    def latents(self, x: torch.Tensor, domain: torch.Tensor) -> dict[str, torch.Tensor]:
        z_uni, z_spec = self.z_uni(x), self.z_spec(x, domain)
        r = self.router(x)
        z_fused = (1 - r.alpha) * z_uni + r.alpha * z_spec  # Eq. 7
        return {"z_uni": z_uni, "z_spec": z_spec, "z_fused": z_fused, "alpha": r.alpha.squeeze(-1), "kl": r.kl}

    def _reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``||x - D(Q(z))||^2`` and the commitment term of ``z`` (the codebooks get no gradient)."""
        out = self.universal.rqvae.decode_latent(z, x)
        return out.rec_loss, out.quant.loss

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> AdaptiveOutput:
        RQVAE.check_input(x)
        lat = self.latents(x, domain)
        rec_spec, commit_spec = self._reconstruction(lat["z_spec"], x)  # Eq. 5
        rec_fused, commit_fused = self._reconstruction(lat["z_fused"], x)
        kl = lat["kl"].mean()  # Eq. 8
        loss = rec_spec + rec_fused + self.quant_weight * (commit_spec + commit_fused) + self.vib_weight * kl
        return AdaptiveOutput(loss, rec_spec.detach(), rec_fused.detach(), kl.detach(), lat["alpha"].detach())

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, domain: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
        was = self.training
        self.eval()
        sums = {f"{w}_{z}": 0.0 for w in ("rec", "quant") for z in ("spec", "fused", "uni")}
        sums.update(kl=0.0, alpha=0.0)
        for s in range(0, len(x), batch_size):
            xb, db = x[s:s + batch_size], domain[s:s + batch_size]
            lat = self.latents(xb, db)
            n = len(xb)
            for z in ("spec", "fused", "uni"):
                rec, quant = self._reconstruction(lat[f"z_{z}"], xb)
                sums[f"rec_{z}"] += float(rec) * n
                sums[f"quant_{z}"] += float(quant) * n
            sums["kl"] += float(lat["kl"].sum())
            sums["alpha"] += float(lat["alpha"].sum())
        self.train(was)
        res = {k: v / len(x) for k, v in sums.items()}
        # the training loss, with the full Eq. 2 value in place of its commitment half
        res["loss"] = (res["rec_spec"] + res["rec_fused"] + self.quant_weight * (res["quant_spec"] + res["quant_fused"])
                       + self.vib_weight * res["kl"])
        return res

"""UTGRec's content reconstruction and collaborative losses (Sec. 2.3).

- :class:`MaskedTextDecoder` (Eq. 8): a one-layer bidirectional transformer reads the item's ``L``
  discrete content representations followed by ``|T|`` copies of a mask embedding and predicts
  every token of the item text at the mask positions (masked language modelling with every token
  masked), so the text can only come from the codes.
- :class:`MaskedImageDecoder` with :class:`DiffusionLoss` (Eq. 9): the same decoder over image
  patches, whose outputs condition a small denoising MLP trained with the diffusion loss of Li et
  al. (2024) on each patch vector. None of this project's datasets has item images: the branch is
  switched off in every profile and tested on generated tensors only.
- :func:`alignment_loss` (Eq. 11): InfoNCE between the content representations of an item and of a
  co-occurring item, per code level, with the batch's other positives as negatives.
- The co-occurring item reconstruction (Eq. 12) is the same decoders' loss with the *positive*
  item's text (and image) as target: :meth:`MaskedTextDecoder.forward` takes any target text.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _MaskedDecoder(nn.Module):
    """The decoders' shared body: ``[proj(H^); mask x n] + positions`` through one bidirectional
    transformer layer; :meth:`states` returns the states at the ``n`` mask positions."""

    def __init__(self, code_dim: int, *, n_codes: int, n_masks: int, d_model: int, n_heads: int, d_ff: int,
                 dropout: float):
        super().__init__()
        self.n_codes = n_codes
        self.proj = nn.Linear(code_dim, d_model)
        self.mask = nn.Parameter(torch.randn(d_model) * 0.02)
        self.pos = nn.Parameter(torch.randn(n_codes + n_masks, d_model) * 0.02)
        self.layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=dropout, batch_first=True,
                                                norm_first=True, activation="gelu")

    def states(self, content: torch.Tensor, n: int, mask_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, n, d_model]``; ``mask_keep`` ``[B, n]`` (1 = real position) hides padded mask positions."""
        b = content.shape[0]
        x = torch.cat([self.proj(content), self.mask.expand(b, n, -1)], dim=1) + self.pos[: self.n_codes + n]
        pad = None
        if mask_keep is not None:
            keep = torch.cat([torch.ones(b, self.n_codes, dtype=torch.bool, device=x.device), mask_keep.bool()], dim=1)
            pad = ~keep
        return self.layer(x, src_key_padding_mask=pad)[:, self.n_codes:]  # bidirectional: no causal mask


class MaskedTextDecoder(_MaskedDecoder):
    """``Dec^t``: content representations ``[B, L, d_c]`` + text ids -> mean token NLL (Eq. 8).

    Args:
        code_dim: ``d_c``; a linear projection maps it to ``d_model`` ("a linear projection for
            dimension adaptation", Sec. 2.3.1).
        vocab_size: the text tokenizer's vocabulary.
        n_codes: ``L``; max_text_tokens: the longest text (learned positions cover ``L + T``).
    """

    def __init__(self, code_dim: int, vocab_size: int, *, n_codes: int, max_text_tokens: int, d_model: int = 256,
                 n_heads: int = 4, d_ff: int = 1024, dropout: float = 0.0):
        super().__init__(code_dim, n_codes=n_codes, n_masks=max_text_tokens, d_model=d_model, n_heads=n_heads,
                         d_ff=d_ff, dropout=dropout)
        self.max_text_tokens = max_text_tokens
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def logits(self, content: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, vocab]`` predictions at the ``T`` mask positions (``text_mask``: 1 = real token)."""
        t = text_mask.shape[1]
        if t > self.max_text_tokens:
            raise ValueError(f"text of {t} tokens is longer than the decoder's {self.max_text_tokens}")
        return self.out(self.norm(self.states(content, t, text_mask)))

    def forward(self, content: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the real tokens of ``text_ids`` (``[B, T]``)."""
        logits = self.logits(content, text_mask)
        nll = F.cross_entropy(logits.transpose(1, 2), text_ids, reduction="none")
        m = text_mask.to(nll.dtype)
        return (nll * m).sum() / m.sum().clamp_min(1)


class DiffusionLoss(nn.Module):
    """The diffusion loss of Li et al. (2024) on vectors ``x`` ``[N, c]`` conditioned on ``z`` ``[N, d]``.

    A DDPM noise-prediction objective with a cosine schedule of ``steps`` steps: draw ``t`` and
    ``eps``, form ``x_t = sqrt(a_t) x + sqrt(1 - a_t) eps`` and regress ``eps`` with an MLP of
    ``(x_t, t, z)``.
    """

    def __init__(self, target_dim: int, cond_dim: int, hidden: int = 256, steps: int = 1000):
        super().__init__()
        self.steps = steps
        s = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        self.register_buffer("alpha_bar", (f[1:] / f[0]).clamp(1e-5, 1.0).float())
        self.time = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.net = nn.Sequential(nn.Linear(target_dim + cond_dim + hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, target_dim))

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        te = self.time((t.float() / self.steps).unsqueeze(-1))
        return self.net(torch.cat([x_t, z, te], dim=-1))

    def forward(self, z: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        t = torch.randint(self.steps, (n,), device=x.device, generator=generator)
        eps = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        a = self.alpha_bar[t].unsqueeze(-1)
        x_t = a.sqrt() * x + (1 - a).sqrt() * eps
        return F.mse_loss(self.predict_noise(x_t, t, z), eps)


class MaskedImageDecoder(_MaskedDecoder):
    """``Dec^v`` (Eq. 9): content representations + ``P`` mask positions -> a condition per image patch,
    scored by :class:`DiffusionLoss` against the patch vectors ``[B, P, c]`` of the item's image."""

    def __init__(self, code_dim: int, patch_dim: int, *, n_codes: int, n_patches: int, d_model: int = 256,
                 n_heads: int = 4, d_ff: int = 1024, diffusion_hidden: int = 256):
        super().__init__(code_dim, n_codes=n_codes, n_masks=n_patches, d_model=d_model, n_heads=n_heads, d_ff=d_ff,
                         dropout=0.0)
        self.n_patches = n_patches
        self.diffusion = DiffusionLoss(patch_dim, d_model, hidden=diffusion_hidden)

    def forward(self, content: torch.Tensor, patches: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        b, p, _ = patches.shape
        if p != self.n_patches:
            raise ValueError(f"expected {self.n_patches} patches per image, got {p}")
        cond = self.states(content, p)
        return self.diffusion(cond.reshape(b * p, -1), patches.reshape(b * p, -1), generator)


def alignment_loss(h: torch.Tensor, h_pos: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Eq. 11: ``-sum_l log softmax_j(cos(h_l, h+_{j,l}) / tau)[own]``, averaged over the batch.

    ``h``, ``h_pos``: ``[B, L, d]`` content representations of the items and of their co-occurring
    items; row ``i`` of ``h_pos`` is item ``i``'s positive and the other rows are its negatives.
    """
    if h.shape != h_pos.shape:
        raise ValueError(f"items and positives differ in shape: {list(h.shape)} vs {list(h_pos.shape)}")
    a, b = F.normalize(h, dim=-1), F.normalize(h_pos, dim=-1)
    sim = torch.einsum("ild,jld->lij", a, b) / temperature  # [L, B, B]
    target = torch.arange(h.shape[0], device=h.device)
    return sum(F.cross_entropy(sim[level], target) for level in range(h.shape[1]))

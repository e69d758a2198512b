"""X-Cross's integrator (Sec. 3.2, Eqs. 3-6) and the two mixture-of-LoRA baselines of Table 2.

X-Cross runs the ``n`` frozen source-domain models (backbone + their LoRA) side by side. After each
of the top ``n_layers`` transformer layers ``l`` it refines every domain's activations ``h_m``:

    z        = W_concat [h_1; ...; h_n]                           (Eq. 4, per token; 2n(n-1) values)
    h~_m     = h_m + sum_{m' != m} ( beta  * z_[m']^(m)   * h_m'
                                   + gamma * z_[m,m']^(m) * (h_m - h_m') )          (Eq. 5)

and feeds ``h~_m`` to layer ``l+1`` of domain ``m``. After the last layer
``h_final = sum_m w_m h~_m`` (Eq. 6) goes through the pooler and scorer (Eqs. 7-8). Only
``W_concat`` (one per integrated layer), ``w`` and the head train. ``W_concat`` starts at zero, so
training starts from the average of the independent source models; the scalings may be negative
(no softmax), as the paper stresses. ``beta = gamma = 0`` is the "-Layers" ablation, ``gamma = 0``
"-Interactions", ``beta = 0`` "-Experts" (Table 4).

Baselines (Sec. 4.1.3), mixing the same frozen source adapters inside one forward pass:

- ``"meteora"``: MeteoRA-style, a gate per layer, ``softmax(W_g^(l) x)`` over the adapters from the
  layer's input activations, applied per token to every adapted projection of the layer.
- ``"xlora"``: XLoRA-style, a first pass of the pre-trained model (no adapters); a classifier on its
  last hidden states gives per-token scalings of every adapter at every layer (softmax over
  adapters), used in a second pass.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from .encoder import DomainLoRAEncoder, flatten_choices

BETA, GAMMA = 0.5, 0.4  # Sec. 4.1.2, tuned on a holdout set by the paper


def others_index(n: int) -> torch.Tensor:
    """``[n, n-1]``: for each domain ``m`` the other domains ``m'`` in increasing order."""
    return torch.tensor([[j for j in range(n) if j != m] for m in range(n)], dtype=torch.long)


def refine(h: torch.Tensor, z: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Eq. 5 for all domains at once.

    Args:
        h: ``[..., n, d]`` the domains' activations at one layer.
        z: ``[..., 2n(n-1)]`` from Eq. 4, laid out as ``[n, 2, n-1]``: for domain ``m``, first the
            ``n-1`` scalings ``z_[m']^(m)`` of the other domains, then the ``n-1`` interaction
            weights ``z_[m,m']^(m)``.
    Returns:
        ``[..., n, d]`` refined activations ``h~``.
    """
    n = h.shape[-2]
    zz = z.reshape(*z.shape[:-1], n, 2, n - 1)
    others = h[..., others_index(n).to(h.device), :]  # [..., n, n-1, d]
    direct = (zz[..., 0, :].unsqueeze(-1) * others).sum(-2)
    interaction = (zz[..., 1, :].unsqueeze(-1) * (h.unsqueeze(-2) - others)).sum(-2)
    return h + beta * direct + gamma * interaction


class XCross(nn.Module):
    """X-Cross over the source domains ``sources`` of ``encoder`` (a :class:`DomainLoRAEncoder`).

    Args:
        n_layers: how many of the top layers are integrated (the paper: the top 9 of 12).
        beta, gamma: Eq. 5's weights.
        head_from: the source whose head initialises the trained head (the best zero-shot source).
    """

    def __init__(self, encoder: DomainLoRAEncoder, sources: Sequence[str], *, n_layers: int,
                 beta: float = BETA, gamma: float = GAMMA, head_from: str | None = None):
        super().__init__()
        if len(sources) < 2:
            raise ValueError("X-Cross integrates n >= 2 source domains")
        if not 0 <= n_layers <= encoder.n_layers:
            raise ValueError(f"n_layers must be in 0..{encoder.n_layers}, got {n_layers}")
        unknown = [s for s in sources if s not in encoder.domains]
        if unknown:
            raise KeyError(f"no adapter for source domain(s) {unknown}; the encoder has {encoder.domains}")
        encoder.freeze()
        self.encoder, self.sources = encoder, list(sources)
        self.n, self.n_layers, self.beta, self.gamma = len(sources), n_layers, beta, gamma
        d = encoder.hidden
        self.w_concat = nn.ModuleList(nn.Linear(self.n * d, 2 * self.n * (self.n - 1), bias=False)
                                      for _ in range(n_layers))
        for lin in self.w_concat:
            nn.init.zeros_(lin.weight)
        self.w_final = nn.Parameter(torch.full((self.n,), 1.0 / self.n))
        self.head = copy.deepcopy(encoder.heads[head_from or self.sources[0]])
        for p in self.head.parameters():
            p.requires_grad_(True)

    @property
    def first_integrated(self) -> int:
        return self.encoder.n_layers - self.n_layers

    def integrator_params(self) -> int:
        """``W_concat`` of every integrated layer: what the paper counts (its footnote 3)."""
        return sum(p.numel() for p in self.w_concat.parameters())

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """``h_final`` ``[B*C, T, d]`` for flattened inputs (Eqs. 3-6)."""
        enc = self.encoder
        h0, mask = enc.embed(input_ids, attention_mask, token_type_ids)
        hs = [h0] * self.n
        first = self.first_integrated
        with torch.no_grad():  # below the first integrated layer nothing trains
            for layer in range(first):
                hs = [enc.run_layer(layer, h, mask, s) for h, s in zip(hs, self.sources)]
        for layer in range(first, enc.n_layers):
            hs = [enc.run_layer(layer, h, mask, s) for h, s in zip(hs, self.sources)]
            stacked = torch.stack(hs, dim=-2)  # [N, T, n, d]
            z = self.w_concat[layer - first](stacked.flatten(-2))  # Eq. 4 on [h_1; ...; h_n]
            refined = refine(stacked, z, self.beta, self.gamma)
            hs = list(refined.unbind(-2))
        return sum(w * h for w, h in zip(self.w_final, hs))  # Eq. 6

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        (ids, mask, types), (b, c) = flatten_choices(input_ids, attention_mask, token_type_ids)
        return self.head(self.hidden_states(ids, mask, types), mask).view(b, c)


class AdapterMixture(nn.Module):
    """The XLoRA-style (``kind="xlora"``) or MeteoRA-style (``kind="meteora"``) integration baseline."""

    KINDS = ("xlora", "meteora")

    def __init__(self, encoder: DomainLoRAEncoder, sources: Sequence[str], kind: str, *, head_from: str | None = None):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        encoder.freeze()
        self.encoder, self.sources, self.kind = encoder, list(sources), kind
        n, d, L = len(sources), encoder.hidden, encoder.n_layers
        if kind == "meteora":
            self.gates = nn.ModuleList(nn.Linear(d, n) for _ in range(L))
        else:
            self.classifier = nn.Linear(d, L * n)
        for lin in (self.gates if kind == "meteora" else [self.classifier]):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.head = copy.deepcopy(encoder.heads[head_from or self.sources[0]])
        for p in self.head.parameters():
            p.requires_grad_(True)

    def _set(self, layer: int, *, gate=None, mix=None) -> None:
        for m in self.encoder.lora_layers[layer]:
            m.mix_names = self.sources if (gate is not None or mix is not None) else []
            m.mix_fn = gate
            m.mix = mix

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        enc = self.encoder
        h, mask = enc.embed(input_ids, attention_mask, token_type_ids)
        n = len(self.sources)
        if self.kind == "xlora":
            with torch.no_grad():
                base = h
                for layer in range(enc.n_layers):
                    base = enc.run_layer(layer, base, mask, None)
            scalings = torch.softmax(self.classifier(base).view(*base.shape[:-1], enc.n_layers, n), dim=-1)
        try:
            for layer in range(enc.n_layers):
                if self.kind == "meteora":
                    gate = self.gates[layer]
                    self._set(layer, gate=lambda x, g=gate: torch.softmax(g(x), dim=-1))
                else:
                    self._set(layer, mix=scalings[..., layer, :])
                h = enc.run_layer(layer, h, mask, None)
        finally:
            for layer in range(enc.n_layers):
                self._set(layer)
        return h

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        (ids, mask, types), (b, c) = flatten_choices(input_ids, attention_mask, token_type_ids)
        return self.head(self.hidden_states(ids, mask, types), mask).view(b, c)

"""GenCDR's LoRA on the LLM: a mixture of universal experts and one adapter per domain (Eqs. 9-10).

:class:`LoRAExpertsLinear` wraps one frozen projection ``W0`` of the backbone::

    y = W0 x + (alpha_u / r_u) * sum_i g_i(x) B_i A_i drop(x)          universal experts, Theta_uni
             + (alpha_d / r_d) * B_d A_d drop(x)                        the adapter theta_spec_d of
                                                                        the row's domain d (if any)

``g(x) = softmax(W_g x)`` is the trainable MoE gate over the ``N`` experts, per token (a dense
mixture, as in MixLoRA's gate without its top-k). ``B`` starts at zero, so a freshly wrapped
model computes exactly what the backbone computes. Each row of a batch can use its own domain's
adapter (decoding mixes target domains in one batch), or none (``P_uni``).

What trains when (set by :func:`set_trainable`): phase 1 the experts and their gates (and the
semantic-ID token embeddings, which belong to the recommender); phase 2 only domain ``d``'s
adapter (and its router). The backbone never trains. :class:`AverageGate` replaces ``W_g`` by
the plain average of the experts (Table 3's ablation of the gate).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..lora import LoRALinear, replace_linears


class LoRAExpertsLinear(LoRALinear):
    """A frozen ``nn.Linear`` plus ``n_experts`` gated LoRA experts and one LoRA per domain."""

    def __init__(self, base: nn.Linear, *, n_experts: int, r: int, alpha: float, dropout: float,
                 n_domains: int, domain_r: int, domain_alpha: float, domain_dropout: float):
        if n_experts < 1 or r < 1 or domain_r < 1:
            raise ValueError("n_experts, r and domain_r must be >= 1")
        super().__init__(base)
        d_in, d_out = base.in_features, base.out_features
        self.n_experts, self.r, self.scale = n_experts, r, alpha / r
        self.expert_A = nn.Parameter(torch.empty(n_experts, r, d_in))
        self.expert_B = nn.Parameter(torch.zeros(n_experts, d_out, r))
        self.gate = nn.Linear(d_in, n_experts, bias=False)
        self.domain_A = nn.ParameterList([nn.Parameter(torch.empty(domain_r, d_in)) for _ in range(n_domains)])
        self.domain_B = nn.ParameterList([nn.Parameter(torch.zeros(d_out, domain_r)) for _ in range(n_domains)])
        self.domain_scale = domain_alpha / domain_r
        self.dropout = nn.Dropout(dropout)
        self.domain_dropout = nn.Dropout(domain_dropout)
        for i in range(n_experts):  # the LoRA paper's init: A ~ Kaiming-uniform, B = 0
            self.init_A_(self.expert_A.data[i])
        for a in self.domain_A:
            self.init_A_(a)
        nn.init.normal_(self.gate.weight, std=0.02)
        self.row_domain: torch.Tensor | None = None  # [B] domain of each row, or None (no domain adapter)
        self.record_gates = False
        self.last_gates: torch.Tensor | None = None  # [B, T, N] gate of the last forward, when record_gates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        lead = x.shape[:-1]
        h = self.dropout(x)
        g = torch.softmax(self.gate(x), dim=-1)  # [..., N]
        if self.record_gates:
            self.last_gates = g  # kept with its graph: the balance loss trains the gate
        N, r = self.n_experts, self.r
        a = (h @ self.expert_A.reshape(N * r, -1).T).view(*lead, N, r) * g.unsqueeze(-1)
        y = y + self.scale * (a.reshape(*lead, N * r) @ self.expert_B.permute(0, 2, 1).reshape(N * r, -1))
        if self.row_domain is not None:
            y = y + self.domain_scale * self._domain_update(self.domain_dropout(x), self.row_domain)
        return y

    def _domain_update(self, x: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        first = int(domains[0])
        if bool((domains == first).all()):  # one domain for the whole batch (training): no gather
            return (x @ self.domain_A[first].T) @ self.domain_B[first].T
        A = torch.stack(list(self.domain_A))[domains]  # [B, r, d_in]
        B = torch.stack(list(self.domain_B))[domains]  # [B, d_out, r]
        return torch.einsum("btr,bor->bto", torch.einsum("bti,bri->btr", x, A), B)

    def balance_loss(self) -> torch.Tensor:
        """``N * sum_i mean_i(g)^2`` over the last forward's tokens: 1 for equal use, N if one expert takes all."""
        if self.last_gates is None:
            raise RuntimeError("balance_loss needs record_gates=True during the forward pass")
        mean = self.last_gates.flatten(0, -2).mean(0)
        return self.n_experts * (mean ** 2).sum()

    def extra_repr(self) -> str:
        return (f"experts={self.n_experts}, r={self.r}, scale={self.scale:g}, domains={len(self.domain_A)}, "
                f"domain_scale={self.domain_scale:g}")


def wrap_linears(model: nn.Module, target_modules: Iterable[str], **kwargs) -> list[LoRAExpertsLinear]:
    """Replace every ``nn.Linear`` whose attribute name is in ``target_modules`` by a :class:`LoRAExpertsLinear`."""
    return replace_linears(model, target_modules, lambda linear: LoRAExpertsLinear(linear, **kwargs))


def set_domain(layers: Iterable[LoRAExpertsLinear], row_domain: torch.Tensor | None) -> None:
    for m in layers:
        m.row_domain = row_domain


def set_trainable(layers: Iterable[LoRAExpertsLinear], *, experts: bool, domain: int | None) -> None:
    """Phase 1: ``experts=True, domain=None``; phase 2: ``experts=False, domain=d``; inference: neither."""
    for m in layers:
        for p in (m.expert_A, m.expert_B, m.gate.weight):
            p.requires_grad_(experts)
        for d, (a, b) in enumerate(zip(m.domain_A, m.domain_B)):
            a.requires_grad_(domain == d)
            b.requires_grad_(domain == d)


class AverageGate(nn.Module):
    """Drop-in for an expert layer's gate ``W_g``: constant logits, so ``softmax`` gives every expert ``1/N``.

    Its ``weight`` is an empty buffer (not a parameter): switching it trainable trains nothing.
    """

    def __init__(self, n_experts: int):
        super().__init__()
        self.n_experts = n_experts
        self.register_buffer("weight", torch.zeros(n_experts, 0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.n_experts)

"""A language-model encoder with one LoRA adapter per domain and a multiple-choice head per domain.

- :class:`MultiLoRALinear` wraps a frozen projection ``W`` with several LoRA adapters
  ``(A_m, B_m)`` (Eq. 2; ``B`` starts at zero). A forward pass uses one adapter
  (``active``), none, or a per-token mixture ``sum_m g_m(x) * scale * B_m A_m x`` (the XLoRA- and
  MeteoRA-style baselines).
- :class:`ChoiceHead` is Eqs. 7-8: first-token pooling, ``GELU(W_p h + b_p)``, then a linear scorer.
- :class:`DomainLoRAEncoder` holds the frozen backbone (any BERT-like encoder of ``transformers``:
  MiniLM here, DeBERTa-v3 in the paper) with the adapters and one head per domain, and runs it
  layer by layer so that X-Cross can act between layers.

The backbone never trains. A source-domain model ``m`` is (backbone, adapter ``m``, head ``m``).
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..lora import LoRALinear, replace_linears

TARGET_MODULES = ("query", "value")  # LoRA's choice for attention (Hu et al. 2022, Sec. 7.1)


class MultiLoRALinear(LoRALinear):
    """``y = W x + (alpha / r) * B_m A_m dropout(x)`` for the active adapter ``m`` (or a mixture)."""

    def __init__(self, base: nn.Linear, names: Sequence[str], r: int, alpha: float, dropout: float):
        if r < 1:
            raise ValueError("LoRA rank r must be >= 1")
        super().__init__(base)
        self.names = list(names)
        self.r, self.scale = r, alpha / r
        self.lora_A = nn.ParameterDict({n: nn.Parameter(torch.empty(r, base.in_features)) for n in self.names})
        self.lora_B = nn.ParameterDict({n: nn.Parameter(torch.zeros(base.out_features, r)) for n in self.names})
        for a in self.lora_A.values():  # LoRA's init: A Kaiming-uniform, B = 0
            self.init_A_(a)
        self.dropout = nn.Dropout(dropout)
        self.active: str | None = None
        # Mixtures (baselines): per-token weights [..., len(mix_names)] over these adapters, given
        # either directly (``mix``) or computed from this layer's input by ``mix_fn``, a function the
        # integrator sets (its gate modules stay the integrator's, not submodules of this layer).
        self.mix_names: list[str] = []
        self.mix: torch.Tensor | None = None
        self.mix_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def delta(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self.update(self.dropout(x), self.lora_A[name], self.lora_B[name], self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.mix_fn is not None or self.mix is not None:
            weights = self.mix_fn(x) if self.mix_fn is not None else self.mix
            if weights.shape[:-1] != x.shape[:-1]:
                # per-token weights given for the token sequence, applied to another input: DeBERTa's
                # query_proj / key_proj also project the relative-position embeddings ([1, 2k, d],
                # share_att_key), which no token's weights belong to. They get the uniform mixture.
                weights = x.new_full((*x.shape[:-1], len(self.mix_names)), 1.0 / len(self.mix_names))
            for j, name in enumerate(self.mix_names):
                y = y + weights[..., j:j + 1] * self.delta(x, name)
        elif self.active is not None:
            y = y + self.delta(x, self.active)
        return y

    def extra_repr(self) -> str:
        return f"adapters={self.names}, r={self.r}, scale={self.scale:g}"


class ChoiceHead(nn.Module):
    """Eqs. 7-8: ``score = V_c^T GELU(W_p h + b_p) + b_c`` on a pooled hidden state ``h``.

    ``pooling="first"`` is the paper's contextual token pooling (``h_[CLS]``, DeBERTa's pooler);
    ``"mean"`` averages the real tokens, the pooling all-MiniLM-L6-v2 was trained with (its
    ``[CLS]`` state was never trained to summarise a text).
    """

    POOLINGS = ("first", "mean")

    def __init__(self, hidden: int, pooling: str = "first"):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.pooler = nn.Linear(hidden, hidden)
        self.act = nn.GELU()
        self.scorer = nn.Linear(hidden, 1)

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pooling == "first":
            return hidden_states[..., 0, :]
        if attention_mask is None:
            return hidden_states.mean(-2)
        m = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * m).sum(-2) / m.sum(-2).clamp(min=1.0)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.scorer(self.act(self.pooler(self.pool(hidden_states, attention_mask)))).squeeze(-1)


class DomainLoRAEncoder(nn.Module):
    """A frozen encoder with a LoRA adapter and a :class:`ChoiceHead` per domain.

    Args:
        backbone: a ``transformers`` encoder with ``embeddings`` and ``encoder.layer`` (BERT,
            MiniLM, RoBERTa, DeBERTa-v2/v3 follow this layout).
        domains: adapter names.
        r, alpha, dropout: LoRA settings (the paper: r = 16, alpha = 32).
        target_modules: names of the wrapped ``nn.Linear`` projections.
        pooling: of every head (:class:`ChoiceHead`).
    """

    def __init__(self, backbone: nn.Module, domains: Sequence[str], *, r: int = 16, alpha: float = 32,
                 dropout: float = 0.1, target_modules: Iterable[str] = TARGET_MODULES, pooling: str = "first"):
        super().__init__()
        self.backbone = backbone
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.domains = list(domains)
        self.hidden = backbone.config.hidden_size
        self.lora_layers: list[list[MultiLoRALinear]] = [
            replace_linears(layer, target_modules, lambda linear: MultiLoRALinear(linear, self.domains, r, alpha, dropout),
                            where="a layer of the backbone")
            for layer in self.layers]
        self.heads = nn.ModuleDict({d: ChoiceHead(self.hidden, pooling) for d in self.domains})

    @property
    def layers(self) -> nn.ModuleList:
        return self.backbone.encoder.layer

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    # ---------------------------------------------------------------- layer-by-layer forward
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened ``[B*C, T]`` inputs -> (embeddings ``[B*C, T, d]``, the layers' attention mask)."""
        from transformers.masking_utils import create_bidirectional_mask

        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        h = self.backbone.embeddings(input_ids=input_ids, **kwargs)
        mask = create_bidirectional_mask(config=self.backbone.config, inputs_embeds=h, attention_mask=attention_mask)
        return h, mask

    def set_adapter(self, layer: int, name: str | None) -> None:
        for m in self.lora_layers[layer]:
            m.active = name

    def run_layer(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor, adapter: str | None) -> torch.Tensor:
        """Transformer layer ``layer`` with ``adapter``'s LoRA (``None``: the pre-trained weights)."""
        self.set_adapter(layer, adapter)
        try:
            out = self.layers[layer](hidden, attention_mask=mask)
        finally:
            self.set_adapter(layer, None)
        return out[0] if isinstance(out, tuple) else out

    def encode(self, input_ids, attention_mask, token_type_ids=None, adapter: str | None = None) -> torch.Tensor:
        """Last hidden states ``[B*C, T, d]`` of the model with ``adapter`` (flattened inputs)."""
        h, mask = self.embed(input_ids, attention_mask, token_type_ids)
        for layer in range(self.n_layers):
            h = self.run_layer(layer, h, mask, adapter)
        return h

    # ---------------------------------------------------------------- parameters
    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        return [p for layer in self.lora_layers for m in layer for p in (m.lora_A[name], m.lora_B[name])]

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)

    def domain_state(self, name: str) -> dict[str, torch.Tensor]:
        """Adapter ``name`` and head ``name`` (what a source-domain model adds to the backbone)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if k.endswith(f"lora_A.{name}") or k.endswith(f"lora_B.{name}") or k.startswith(f"heads.{name}.")}

    def load_domain_state(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        own = self.domain_state(name)
        if set(tensors) != set(own):
            missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
            raise KeyError(f"adapter {name!r}: missing {missing[:3]}, unexpected {extra[:3]}")
        state = self.state_dict()
        with torch.no_grad():
            for k, v in tensors.items():
                state[k].copy_(v)


def flatten_choices(input_ids, attention_mask, token_type_ids=None):
    """``[B, C, T]`` -> ``[B*C, T]`` tensors and ``(B, C)``."""
    b, c = input_ids.shape[:2]
    flat = [t.reshape(b * c, -1) if t is not None else None for t in (input_ids, attention_mask, token_type_ids)]
    return flat, (b, c)


class SourceModel(nn.Module):
    """One domain's model: backbone + adapter ``domain`` + head ``domain`` (``adapter=None``: no LoRA)."""

    def __init__(self, encoder: DomainLoRAEncoder, domain: str, adapter: str | None | bool = True):
        super().__init__()
        self.encoder, self.domain = encoder, domain
        self.adapter = domain if adapter is True else (adapter or None)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        (ids, mask, types), (b, c) = flatten_choices(input_ids, attention_mask, token_type_ids)
        h = self.encoder.encode(ids, mask, types, adapter=self.adapter)
        return self.encoder.heads[self.domain](h, mask).view(b, c)


class PoolerScorer(nn.Module):
    """The "Pooler + Scorer" baseline: the best source model, only a copy of its head trains."""

    def __init__(self, encoder: DomainLoRAEncoder, source: str):
        super().__init__()
        encoder.freeze()
        self.encoder, self.source = encoder, source
        self.head = copy.deepcopy(encoder.heads[source])
        for p in self.head.parameters():
            p.requires_grad_(True)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        (ids, mask, types), (b, c) = flatten_choices(input_ids, attention_mask, token_type_ids)
        with torch.no_grad():
            h = self.encoder.encode(ids, mask, types, adapter=self.source)
        return self.head(h, mask).view(b, c)

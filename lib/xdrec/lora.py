"""LoRA (Hu et al. 2022): ``y = W x + (alpha / r) * B A dropout(x)``, ``W`` frozen, ``B`` starting at zero.

One mechanism, in two forms:

- **PEFT** where it can express the model, one adapter (or a switchable set of them) per layer:
  GenCDR's tokenizer adapters on the text encoder (:mod:`xdrec.gencdr.tokenizer`) and UTGRec's
  content encoder (:mod:`xdrec.utgrec.encoder`).
- **:class:`LoRALinear`** where the papers mix adapters inside a layer, which PEFT cannot: GenCDR's
  gated universal experts plus each row's domain adapter (Eqs. 9-10,
  :class:`xdrec.gencdr.experts.LoRAExpertsLinear`) and X-Cross's per-domain adapters with the
  XLoRA / MeteoRA mixtures (:class:`xdrec.xcross.encoder.MultiLoRALinear`). Subclasses own their
  adapters' parameters (their names are those of the stored checkpoints); the frozen base, LoRA's
  initialisation, the low-rank update and the wrapping of a model's projections are here.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` ``base``; subclasses add the adapters and their mixture in ``forward``."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)

    @staticmethod
    def init_A_(A: torch.Tensor) -> torch.Tensor:
        """LoRA's initialisation of ``A`` (Kaiming-uniform, as ``nn.Linear``); ``B`` starts at zero."""
        return nn.init.kaiming_uniform_(A, a=math.sqrt(5))

    @staticmethod
    def update(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
        """``scale * B A x`` for ``A [r, d_in]``, ``B [d_out, r]`` and ``x [..., d_in]``."""
        return scale * ((x @ A.T) @ B.T)


def replace_linears(model: nn.Module, target_modules: Iterable[str], make: Callable[[nn.Linear], LoRALinear],
                    where: str = "the model") -> list[LoRALinear]:
    """Replace every ``nn.Linear`` of ``model`` whose attribute name is in ``target_modules`` by
    ``make(linear)``, in module order; returns the new layers (a ``ValueError`` if there is none)."""
    targets = set(target_modules)
    wrapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                new = make(child)
                setattr(parent, name, new)
                wrapped.append(new)
    if not wrapped:
        raise ValueError(f"no nn.Linear named any of {sorted(targets)} in {where}")
    return wrapped

"""Layer-by-layer running of DeBERTa-v2/v3 (the paper's backbone) inside :class:`DomainLoRAEncoder`.

BERT-style layers take ``(hidden, attention_mask)``; DeBERTa's also need the relative positions and
the relative-position embeddings, and its first layer may be followed by a convolution. This
subclass computes them once per batch in :meth:`embed` and hands them to every layer; X-Cross and
the mixtures pass that context through without looking at it. LoRA wraps DeBERTa's
``query_proj`` and ``value_proj``.
"""
from __future__ import annotations

import torch

from .encoder import DomainLoRAEncoder


def is_deberta(backbone) -> bool:
    return getattr(backbone.config, "model_type", "") in ("deberta-v2", "deberta")


class DebertaLoRAEncoder(DomainLoRAEncoder):
    """:class:`DomainLoRAEncoder` for ``DebertaV2Model`` backbones (DeBERTa-v3-base in the paper)."""

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        enc = self.backbone.encoder
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, mask=attention_mask)
        context = {"attention_mask": enc.get_attention_mask(attention_mask), "relative_pos": enc.get_rel_pos(h),
                   "rel_embeddings": enc.get_rel_embedding(), "input_mask": attention_mask, "embeddings": h}
        return h, context

    def run_layer(self, layer, hidden, mask, adapter):
        self.set_adapter(layer, adapter)
        try:
            out, _ = self.layers[layer](hidden, mask["attention_mask"], relative_pos=mask["relative_pos"],
                                        rel_embeddings=mask["rel_embeddings"])
            conv = self.backbone.encoder.conv
            if layer == 0 and conv is not None:
                out = conv(mask["embeddings"], out, mask["input_mask"])
        finally:
            self.set_adapter(layer, None)
        return out

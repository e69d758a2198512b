"""BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from
Transformer (Sun et al., CIKM 2019).

A bidirectional Transformer trained with the Cloze task: random items of the sequence are
replaced by ``[MASK]`` and predicted from both sides.  Paper sections and equations:

- Sec. 3.5, embedding layer: ``h⁰_i = v_i + p_i`` — item embedding plus learned positional
  embedding; as in BERT (and the authors' code) followed by LayerNorm and dropout.
- Sec. 3.3-3.4, Transformer layer (Eq. 1-5): multi-head self-attention without a causal mask,
  then a position-wise feed-forward network with GELU and inner size ``4d``; each sub-layer is
  wrapped **post-LN** as in BERT: ``LN(x + Dropout(sublayer(x)))``.
- Sec. 3.6, output layer (Eq. 7): ``P(v) = softmax(GELU(h W^P + b^P) Eᵀ + b^O)`` — a projection
  with GELU, the *shared* item embedding ``E`` and an output bias.
- Sec. 3.6, model learning (Eq. 8): negative log-likelihood of the masked items, a full softmax
  over all items; the mask proportion ``ρ`` defaults to 0.2 (the paper's choice for sparse data).
- Sec. 3.6, test: ``[MASK]`` is appended to the history and its output scores the next item.

Defaults: ``d = 64``, 2 layers, 2 heads, ``max_len = 50``, dropout 0.1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import MultiHeadSelfAttention, SequentialRecommender, attention_mask
from .data import IGNORE_INDEX, BERT4RecCollator, left_pad, mask_id, pad_id


class BERT4RecLayer(nn.Module):
    """One Transformer layer, post-LN (Sec. 3.3, Eq. 1-5)."""

    def __init__(self, hidden: int, n_heads: int, dropout: float, inner: int):
        super().__init__()
        self.attn = MultiHeadSelfAttention(hidden, n_heads, dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, hidden), nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.attn_dropout(self.attn(x, allowed)))
        return self.ffn_norm(x + self.ffn(x))


class BERT4Rec(SequentialRecommender):
    """BERT4Rec over items ``0 .. n_items - 1`` (``PAD = n_items``, ``MASK = n_items + 1``).

    ``forward(input_ids)`` returns hidden states ``[B, L, d]``; with ``labels`` (the masked
    items, ``IGNORE_INDEX`` elsewhere) it returns the Cloze loss (Eq. 8), averaged over the
    masked positions of the batch.  ``length_groups`` only changes speed (see
    :class:`~xdrec.baselines.base.SequentialRecommender`).
    """

    def __init__(
        self,
        n_items: int,
        hidden: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        max_len: int = 50,
        dropout: float = 0.1,
        mask_prob: float = 0.2,
        inner: int | None = None,
        length_groups: int = 8,
    ):
        super().__init__()
        self.n_items, self.max_len, self.hidden, self.mask_prob = n_items, max_len, hidden, mask_prob
        self.length_groups = length_groups  # a speed-up only, see SequentialRecommender
        self.item_emb = nn.Embedding(n_items + 2, hidden, padding_idx=pad_id(n_items))
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.emb_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            BERT4RecLayer(hidden, n_heads, dropout, inner or 4 * hidden) for _ in range(n_layers)
        )
        self.out_proj = nn.Linear(hidden, hidden)  # W^P, b^P of Eq. 7
        self.out_bias = nn.Parameter(torch.zeros(n_items))  # b^O of Eq. 7
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT initialisation: truncated normal (std 0.02) weights, zero biases, zero padding row."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_emb.weight[pad_id(self.n_items)].zero_()
        nn.init.zeros_(self.out_bias)

    def collator(self) -> BERT4RecCollator:
        """The collator that builds this model's Cloze training batches."""
        return BERT4RecCollator(self.n_items, self.max_len, self.mask_prob)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, d]`` of left-padded ``input_ids`` ``[B, L]`` (L <= max_len)."""
        length = input_ids.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence width {length} exceeds max_len {self.max_len}")
        valid = input_ids != pad_id(self.n_items)
        positions = torch.arange(self.max_len - length, self.max_len, device=input_ids.device)
        x = self.emb_dropout(self.emb_norm(self.item_emb(input_ids) + self.pos_emb(positions)))
        allowed = attention_mask(valid, causal=False)
        for layer in self.layers:
            x = layer(x, allowed)
        return x

    def output_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Eq. 7 before the softmax: ``GELU(h W^P + b^P) Eᵀ + b^O`` over the ``n_items`` items."""
        return F.gelu(self.out_proj(h)) @ self.item_emb.weight[: self.n_items].T + self.out_bias

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            return self.encode(input_ids)
        total = torch.zeros((), device=input_ids.device)
        for rows, width in self.split_by_length(input_ids):
            hidden = self.encode(input_ids[rows, -width:])
            group_labels = labels[rows, -width:]
            masked = group_labels != IGNORE_INDEX
            total = total + F.cross_entropy(self.output_logits(hidden[masked]), group_labels[masked], reduction="sum")
        return total / (labels != IGNORE_INDEX).sum().clamp(min=1)

    def prepare_histories(self, histories) -> torch.Tensor:
        """Append ``[MASK]`` to each history (keeping its last ``max_len - 1`` items), left-pad."""
        keep = self.max_len - 1
        with_mask = [list(h)[-keep:] + [mask_id(self.n_items)] if keep > 0 else [mask_id(self.n_items)]
                     for h in histories]
        return left_pad(with_mask, self.max_len, pad_id(self.n_items))

    def next_item_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items]`` at the appended ``[MASK]`` (the last slot)."""
        return self.output_logits(self.encode(input_ids)[:, -1])

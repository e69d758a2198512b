"""SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018).

A causal Transformer over the user's item sequence; the output at position ``t`` predicts the
item at ``t + 1``.  Paper sections and equations:

- Sec. 3.1, embedding layer: ``Ê = M_s + P`` — item embeddings (scaled by ``sqrt(d)`` as in the
  authors' code) plus *learned* positional embeddings, with dropout; padding rows are zeroed.
- Sec. 3.2, self-attention block (Eq. 2-3) and point-wise feed-forward network (Eq. 4,
  ``ReLU(S W1 + b1) W2 + b2``), with causality: query ``t`` sees only keys ``<= t``.
- Sec. 3.3, stacking blocks with ``g(x) = x + Dropout(g(LayerNorm(x)))`` — this implementation
  follows that **pre-LN** layout literally (the authors' TF code differs slightly: keys and values
  of the attention are not normalised and the residual adds the normalised queries), plus a final
  LayerNorm before prediction, as in the code.
- Sec. 3.4, prediction with the *shared* item embedding: ``r_{i,t} = F_t · M_i`` (Eq. 6).
- Sec. 3.5, loss (Eq. 7): binary cross-entropy on the true next item and one sampled negative per
  position — ``loss="bce"``.  ``loss="ce"`` is the full softmax cross-entropy over all items, the
  common modern variant (e.g. Klenitskiy & Vasilev, RecSys 2023, "Turning Dross Into Gold Loss"),
  usually markedly stronger; it is our default.

Defaults follow the paper's setting for the sparse Amazon data: ``d = 64``, 2 blocks, 1 head,
``max_len = 50``, dropout 0.2 (the paper uses 0.5 on the dense MovieLens-1M).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import MultiHeadSelfAttention, SequentialRecommender, attention_mask
from .data import IGNORE_INDEX, SASRecCollator, pad_id

LOSSES = ("ce", "bce")


class SASRecBlock(nn.Module):
    """One self-attention block (Sec. 3.2-3.3): pre-LN attention then pre-LN feed-forward."""

    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.attn = MultiHeadSelfAttention(hidden, n_heads, dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), allowed))
        return x + self.ffn(self.ffn_norm(x))


class SASRec(SequentialRecommender):
    """SASRec over items ``0 .. n_items - 1`` (``PAD = n_items``; see :mod:`.data`).

    ``forward(input_ids)`` returns the hidden states ``F`` ``[B, L, d]``; with ``labels`` (and
    ``negatives`` for BCE) it returns the training loss instead — the mean over all target
    positions of the batch — so that :func:`xdrec.training.fit` can call ``model(**batch)``.
    ``length_groups`` only changes speed (see
    :class:`~xdrec.baselines.base.SequentialRecommender`); 1 encodes the batch in one piece.
    """

    def __init__(
        self,
        n_items: int,
        hidden: int = 64,
        n_blocks: int = 2,
        n_heads: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        loss: str = "ce",
        length_groups: int = 8,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.n_items, self.max_len, self.hidden, self.loss_type = n_items, max_len, hidden, loss
        self.length_groups = length_groups  # a speed-up only, see SequentialRecommender
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=pad_id(n_items))
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(hidden, n_heads, dropout) for _ in range(n_blocks))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-8)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal init of every matrix (as in the widely used PyTorch port), zero padding row."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[pad_id(self.n_items)].zero_()

    def collator(self) -> SASRecCollator:
        """The collator that builds this model's training batches."""
        return SASRecCollator(self.n_items, self.max_len, negatives=self.loss_type == "bce")

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states ``F`` ``[B, L, d]`` of left-padded ``input_ids`` ``[B, L]`` (L <= max_len)."""
        length = input_ids.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence width {length} exceeds max_len {self.max_len}")
        valid = input_ids != pad_id(self.n_items)
        positions = torch.arange(self.max_len - length, self.max_len, device=input_ids.device)
        x = self.item_emb(input_ids) * self.hidden**0.5 + self.pos_emb(positions)
        keep = valid.unsqueeze(-1).to(x.dtype)
        x = self.emb_dropout(x) * keep
        allowed = attention_mask(valid, causal=True)
        for block in self.blocks:
            x = block(x, allowed) * keep
        return self.final_norm(x)

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        if labels is None:
            return self.encode(input_ids)
        if self.loss_type == "bce" and negatives is None:
            raise ValueError("loss='bce' needs 'negatives' in the batch (use model.collator())")
        total = torch.zeros((), device=input_ids.device)
        for rows, width in self.split_by_length(input_ids):
            hidden = self.encode(input_ids[rows, -width:])
            negs = None if negatives is None else negatives[rows, -width:]
            total = total + self.loss_sum(hidden, labels[rows, -width:], negs)
        return total / (labels != IGNORE_INDEX).sum().clamp(min=1)

    def item_weights(self) -> torch.Tensor:
        """The shared item embedding ``M`` (without the padding row), used for prediction (Eq. 6)."""
        return self.item_emb.weight[: self.n_items]

    def loss_sum(self, hidden: torch.Tensor, labels: torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 7 (``bce``) or full softmax cross-entropy (``ce``), summed over target positions."""
        target = labels != IGNORE_INDEX
        h = hidden[target]  # [N, d]: only positions with a next item
        pos_ids = labels[target]
        if self.loss_type == "ce":
            return F.cross_entropy(h @ self.item_weights().T, pos_ids, reduction="sum")
        pos_logit = (h * self.item_emb(pos_ids)).sum(-1)
        neg_logit = (h * self.item_emb(negatives[target])).sum(-1)
        # -log σ(r_pos) - log(1 - σ(r_neg)) per position (softplus is the stable form).
        return F.softplus(-pos_logit).sum() + F.softplus(neg_logit).sum()

    def next_item_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items]`` from the last position (the most recent item)."""
        return self.encode(input_ids)[:, -1] @ self.item_weights().T

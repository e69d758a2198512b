"""Pieces shared by SASRec and BERT4Rec: self-attention with an explicit mask, and the
:class:`SequentialRecommender` interface (``score_all``) that evaluation relies on."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import left_pad, pad_id


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention with ``n_heads`` heads (Vaswani et al. 2017, Eq. 1).

    ``allowed`` is a boolean ``[B, 1, L, L]`` mask, True where query ``i`` may attend to key
    ``j``.  Dropout is applied to the attention weights during training.
    """

    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(o.transpose(1, 2).reshape(b, length, d))


def attention_mask(valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """``[B, 1, L, L]`` mask: keys must be real items (and not in the future if ``causal``).

    Every position may also attend to itself, so a padding query never sees an all-masked row
    (which would give NaN); padding outputs are zeroed or ignored afterwards.
    """
    length = valid.shape[1]
    allowed = valid[:, None, None, :].expand(-1, 1, length, -1)
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    return allowed | eye


class SequentialRecommender(nn.Module):
    """A model that scores every item as the next one for each history.

    Subclasses set ``n_items``, ``max_len`` and ``length_groups`` and implement
    :meth:`next_item_logits` on a left-padded ``[n, L]`` batch of histories.

    Training batches are padded to their longest sequence, and Amazon sequences are short with
    a long tail (Sports: median 4 training items, a few near ``max_len``), so most of a batch
    would be padding.  :meth:`length_groups` splits a batch into groups of similar length that
    the models encode separately, each trimmed to its own width; since every row is encoded
    independently and the loss is a sum over target positions divided by their total count,
    the loss and gradient are exactly those of the whole batch (up to float rounding).
    """

    n_items: int
    max_len: int
    length_groups: int = 1

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare_histories(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Left-pad (and truncate to ``max_len``) histories into model input ids (width >= 1)."""
        width = max(1, min(self.max_len, max((len(h) for h in histories), default=0)))
        return left_pad(histories, self.max_len, pad_id(self.n_items), width=width)

    def next_item_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def split_by_length(self, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """Row indices of up to ``length_groups`` groups of similar length, with their widths."""
        lengths = (input_ids != pad_id(self.n_items)).sum(dim=1)
        order = torch.argsort(lengths)
        groups = []
        for rows in torch.tensor_split(order, max(1, min(self.length_groups, len(order)))):
            if len(rows):
                groups.append((rows, max(1, int(lengths[rows].max()))))
        return groups

    @torch.no_grad()
    def score_all(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores ``[n, n_items]`` of every item as the next item after each history.

        Runs in eval mode (the previous mode is restored).  An empty history is allowed: the
        model then scores from position embeddings alone.
        """
        was_training = self.training
        self.eval()
        try:
            input_ids = self.prepare_histories(histories).to(self.device)
            return self.next_item_logits(input_ids).float()
        finally:
            self.train(was_training)

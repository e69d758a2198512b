"""UTGRec's universal item tokenizer: encoder, tree-structured codebooks, decoders and the loss of Eq. 13.

    L_T = L_Raw + lambda L_Code + mu L_Ali + eta L_Re
    L_Raw = L^t + alpha L^v          (the item's own text and image from its codes, Eqs. 8-10)
    L_Re  = L^t+ + alpha L^v+        (the co-occurring item's text and image from the item's codes, Eq. 12)
    L_Ali = InfoNCE(H, H+)           (the LM's code-token states of the item and its co-occurring item, Eq. 11)

The image terms exist only with ``image=True`` (no dataset here has item images). Each ablation of
Table 3 that concerns the tokenizer is a setting: ``mu = 0`` (w/o L_Ali), ``eta = 0`` (w/o L_Re),
``tree=False`` (w/o TreeCode).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .codebooks import TreeCodebooks
from .encoder import ContentEncoder
from .reconstruction import MaskedImageDecoder, MaskedTextDecoder, alignment_loss


@dataclass
class TokenizerLosses:
    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)  # each term's value, for logging
    codes: torch.Tensor | None = None  # [B, L] the items' codes


class UniversalItemTokenizer(nn.Module):
    """Args:
        lm: the causal LM of the content encoder; lm_vocab: the size of its tokenizer's vocabulary
            (the text decoder predicts those tokens).
        settings: ``n_codes``, ``code_dim``, ``root_size``, ``leaf_size``, ``beta``, ``tree``,
            ``mlp_hidden``, ``lora`` (dict or None), ``decoder`` (``d_model``, ``n_heads``, ``d_ff``),
            ``max_text_tokens``, loss weights ``lambda``, ``mu``, ``eta``, ``alpha``, ``temperature``,
            and ``image`` (with ``patch_dim``, ``n_patches``) for the image branch.
    """

    def __init__(self, lm: nn.Module, lm_vocab: int, settings: dict):
        super().__init__()
        s = self.settings = dict(settings)
        self.encoder = ContentEncoder(lm, n_codes=s["n_codes"], code_dim=s["code_dim"], mlp_hidden=s["mlp_hidden"],
                                      lora=s.get("lora"))
        self.codebooks = TreeCodebooks(s["n_codes"], s["code_dim"], s["root_size"], s["leaf_size"], s["beta"],
                                       tree=s.get("tree", True))
        dec = s["decoder"]
        self.text_decoder = MaskedTextDecoder(s["code_dim"], lm_vocab, n_codes=s["n_codes"],
                                              max_text_tokens=s["max_text_tokens"], **dec)
        self.image_decoder = (MaskedImageDecoder(s["code_dim"], s["patch_dim"], n_codes=s["n_codes"],
                                                 n_patches=s["n_patches"], **dec) if s.get("image") else None)

    def fine_tuning(self) -> None:
        """Sec. 2.4.2: the codebook vectors ``E^r``, ``E^f`` stay fixed; everything else keeps training."""
        self.codebooks.freeze_codebook_vectors()

    def encode(self, input_ids, attention_mask):
        """``(H, H', quantiser output)`` of a batch of item prompts."""
        h, hp = self.encoder(input_ids, attention_mask)
        return h, hp, self.codebooks(hp)

    def forward(self, batch: dict) -> TokenizerLosses:
        """Eq. 13 on a batch of items and their co-occurring items.

        ``batch``: ``prompt_ids/prompt_mask`` and ``text_ids/text_mask`` of the items, the same four
        with a ``pos_`` prefix for their positives, and ``image``/``pos_image`` patches with the
        image branch.
        """
        s = self.settings
        h, _, q = self.encode(batch["prompt_ids"], batch["prompt_mask"])
        l_text = self.text_decoder(q.content, batch["text_ids"], batch["text_mask"])
        total = l_text + s["lambda"] * q.loss
        parts = {"text": l_text.item(), "code": q.loss.item()}
        if self.image_decoder is not None:
            l_img = self.image_decoder(q.content, batch["image"])
            total = total + s["alpha"] * l_img
            parts["image"] = l_img.item()
        if s["mu"] > 0:
            h_pos, _ = self.encoder(batch["pos_prompt_ids"], batch["pos_prompt_mask"])
            l_ali = alignment_loss(h.float(), h_pos.float(), s["temperature"])
            total = total + s["mu"] * l_ali
            parts["align"] = l_ali.item()
        if s["eta"] > 0:
            l_re = self.text_decoder(q.content, batch["pos_text_ids"], batch["pos_text_mask"])
            if self.image_decoder is not None:
                l_re = l_re + s["alpha"] * self.image_decoder(q.content, batch["pos_image"])
            total = total + s["eta"] * l_re
            parts["co-reconstruction"] = l_re.item()
        parts["total"] = total.item()
        return TokenizerLosses(total, parts, q.codes)

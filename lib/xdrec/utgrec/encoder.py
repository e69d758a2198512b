"""UTGRec's item content encoder (Sec. 2.2.1): a causal LM compresses an item into ``L`` code tokens.

The item's text goes into the prompt of the paper (the image part left out: no dataset here has
item images), followed by ``L`` added code tokens ``<CODE_1> .. <CODE_L>``::

    The item's information includes: "<TEXT>". Compress the text information into L tokens,
    representing content from coarse to fine granularity. <CODE_1> ... <CODE_L>

The last layer's hidden states at the code tokens are ``H = [h_1 .. h_L]`` (Eq. 2; the alignment
loss of Eq. 11 reads them) and an MLP maps them to the codebook dimension, ``H'`` (Sec. 2.2.2). The
LM is adapted with LoRA; the code tokens' embeddings are new trainable parameters (the same as
adding them to the vocabulary, without resizing the LM's embedding matrix).

Prompts are left-padded, so that the code tokens are the last ``L`` positions of every row, and
positions are counted from each row's first real token.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

PROMPT = ('The item\'s information includes: "{text}". Compress the text information into {n} tokens, '
          "representing content from coarse to fine granularity.")


def item_prompt(text: str, n_codes: int) -> str:
    """The prompt of Sec. 2.2.1 without its image part (the code tokens follow it)."""
    return PROMPT.format(text=text, n=n_codes)


def tokenize_prompts(tokenizer, texts: Sequence[str], n_codes: int, max_text_tokens: int) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids`` / ``attention_mask`` of the items' prompts, each text cut to
    ``max_text_tokens`` tokens first (so the instruction is never truncated)."""
    cut = []
    for t in texts:
        ids = tokenizer(str(t), add_special_tokens=False)["input_ids"][:max_text_tokens]
        cut.append(tokenizer.decode(ids))
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer([item_prompt(t, n_codes) for t in cut], padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def add_lora(lm: nn.Module, *, r: int, alpha: int, dropout: float, target_modules: Sequence[str]) -> nn.Module:
    """LoRA adapters injected into ``lm`` in place; everything else frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    lm = inject_adapter_in_model(config, lm)
    for name, p in lm.named_parameters():
        p.requires_grad_("lora_" in name)
    return lm


class ContentEncoder(nn.Module):
    """``(prompt ids, mask) -> (H [B, L, d], H' [B, L, d_c])`` over a causal LM with LoRA.

    Args:
        lm: a Hugging Face causal LM (its decoder is read through ``lm.base_model``); LoRA is added
            when ``lora`` is given (``r``, ``alpha``, ``dropout``, ``target_modules``).
        n_codes: ``L``; code_dim: ``d_c``; mlp_hidden: the MLP's hidden width.
    """

    def __init__(self, lm: nn.Module, *, n_codes: int, code_dim: int, mlp_hidden: int = 512,
                 lora: dict | None = None):
        super().__init__()
        for p in lm.parameters():
            p.requires_grad_(False)
        self.lm = add_lora(lm, **lora) if lora else lm
        d = lm.config.get_text_config().hidden_size  # a vision-language model (Qwen2-VL) keeps it in text_config
        self.n_codes, self.hidden = n_codes, d
        emb = lm.get_input_embeddings().weight
        self.code_embeddings = nn.Parameter(emb.detach().mean(0) + emb.detach().std() * torch.randn(n_codes, d))
        self.mlp = nn.Sequential(nn.Linear(d, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, code_dim))

    @torch.no_grad()
    def standardize_mlp_inputs(self, h: torch.Tensor, floor: float = 0.01) -> None:
        """Data-dependent initialisation of the MLP: its first layer reads ``H`` centred and scaled per feature.

        ``h``: code-token states ``[N, L, d]`` of a sample of items. The states of a small LM differ
        little between items (SmolLM2 cut to 2 layers: cosine 0.9995 between two items' ``h_1``, the
        between-item spread 2.5% of the norm), so a randomly initialised MLP maps every item to
        nearly the same ``h'`` and the codebooks collapse. The per-feature mean ``m`` and standard
        deviation ``s`` (floored at ``floor`` times its mean) are folded into the first linear layer,
        ``W ((h - m) / s) + b = (W / s) h + (b - W (m / s))``, so the architecture stays the MLP of the
        paper and every weight keeps training.
        """
        h = h.reshape(-1, h.shape[-1]).float()
        if h.shape[-1] != self.hidden or len(h) < 2:
            raise ValueError(f"expected at least 2 states of width {self.hidden}, got {list(h.shape)}")
        m, s = h.mean(0), h.std(0)
        s = s.clamp_min(floor * s.mean())
        first = self.mlp[0]
        first.bias.sub_(first.weight @ (m / s))
        first.weight.div_(s)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = input_ids.shape[0]
        words = self.lm.get_input_embeddings()(input_ids)
        x = torch.cat([words, self.code_embeddings.to(words.dtype).expand(b, -1, -1)], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(b, self.n_codes)], dim=1)
        position_ids = (mask.long().cumsum(-1) - 1).clamp_min(0)
        out = self.lm.base_model(inputs_embeds=x, attention_mask=mask, position_ids=position_ids)
        h = out.last_hidden_state[:, -self.n_codes:]
        return h, self.mlp(h.float())

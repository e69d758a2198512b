"""TIGER's generative retriever (Rajput et al., NeurIPS 2023, Sec. 3.2): a small T5 trained from scratch.

TIGER writes every item as its semantic ID (RQ-VAE codes ``(c_0, c_1, c_2)`` plus a collision
level ``c_3``, Sec. 3.1) and trains a Transformer encoder-decoder to read a user's history of IDs and
write the ID of the next item, code by code. At test time the decoder runs a beam search over
valid IDs.

Here the history is the user's *cross-domain* timeline in the token layout every generative
recommender of this project shares (:class:`~xdrec.generative.SemanticIdVocab`)::

    encoder:  <d_Sports><a_12><b_7><c_3><e_0>  <d_Tools><a_200><b_15><c_9><e_1> ... <d_Tools>
    decoder:  [start] <a_?> <b_?> <c_?>            ->  <a_?> <b_?> <c_?> <e_?>

so TIGER is compared with GenCDR on identical inputs; the last marker names the target domain,
and the prefix tree of that domain constrains the search (GenCDR Eq. 12), so every recommendation
is an item of the target domain. The T5 follows Sec. 4 of the paper: 4 encoder and 4 decoder layers,
6 heads of 64, MLP 1024 (ReLU), d_model 128, dropout 0.1, T5's relative position buckets.

Differences from the paper, all deliberate:

- no user-ID token (TIGER hashes users into 2000 tokens): GenCDR's prompts have none either;
- the output softmax at step ``l`` is over the codes of level ``l`` only. The original decodes over
  the whole vocabulary; tokens of other levels or markers can never be correct at step ``l``, so
  this only removes mass the constrained search would discard anyway (it is the softmax of
  GenCDR Eq. 12 without the prefix tree during training, with it during decoding);
- optimiser and schedule come from the profile (AdamW, constant lr) instead of Adagrad with an
  inverse-square-root decay over 200k steps.

Decoding encodes each prompt once and projects the encoder states to the cross-attention keys and
values once; every step then runs the decoder on ``[start] + prefix`` for all beams (IDs have at
most four codes, so no self-attention cache is kept).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..decoding import TrieTensors, constrained_beam_search, masked_log_softmax
from ..decoding.beam_search import StepFn
from ..generative import ItemTokens, SemanticIdVocab

PAD, EOS, START = 0, 1, 2
"""Special tokens before the semantic-ID vocabulary. IDs have a fixed length, so EOS is never trained."""
N_SPECIAL = 3


@dataclass
class TIGERConfig:
    """The T5 of TIGER (Rajput et al. 2023, Sec. 4 "Implementation details") and the prompt/search sizes."""

    d_model: int = 128  # "input dimension 128"
    n_layers: int = 4  # "4 layers each" in encoder and decoder
    n_heads: int = 6  # "self-attention heads of dimension 64": 6 heads
    d_kv: int = 64
    d_ff: int = 1024  # "MLP ... of dimension 1024", ReLU
    dropout: float = 0.1
    max_items: int = 20  # items of history in a prompt (TIGER keeps at most 20)
    beams: int = 20  # beams of the constrained search (generative_eval)
    relative_attention_num_buckets: int = 32  # T5 defaults (Raffel et al. 2020)
    relative_attention_max_distance: int = 128

    @classmethod
    def from_profile(cls, tiger: Mapping[str, Any], generative_eval: Mapping[str, Any] | None = None) -> "TIGERConfig":
        """From a profile's ``tiger`` section (and ``generative_eval`` for ``max_items`` and ``beams``)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in tiger.items() if k in names}
        for k in ("max_items", "beams"):
            if generative_eval is not None and k in generative_eval:
                kw[k] = generative_eval[k]
        return cls(**kw)


def check_ids(ids: np.ndarray, codebook_sizes: Sequence[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """``ids [n_items, L]`` as int64 and the codebook sizes; a ``ValueError`` names the first item without a valid ID."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"ids must be a non-empty [n_items, L] array, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        bad = ~np.isfinite(ids.astype(float)).all(1) | (ids != np.round(ids)).any(1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"item {i} has no semantic ID: its codes are {ids[i].tolist()}")
    ids = ids.astype(np.int64)
    sizes = [int(ids[:, l].max()) + 1 for l in range(ids.shape[1])] if codebook_sizes is None else [int(k) for k in codebook_sizes]
    if len(sizes) != ids.shape[1]:
        raise ValueError(f"{len(sizes)} codebook sizes for IDs of {ids.shape[1]} levels")
    bad = ((ids < 0) | (ids >= np.asarray(sizes))).any(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"item {i} has no valid semantic ID: codes {ids[i].tolist()}, codebook sizes {sizes} "
                         f"({int(bad.sum())} such items)")
    return ids, sizes


class TIGER(nn.Module):
    """T5 encoder-decoder over semantic-ID tokens (Rajput et al. 2023), with trie-constrained beam search.

    Args:
        ids: ``[n_items, L]`` semantic ID of every item (item id = row).
        item_domain: ``[n_items]`` domain id of every item.
        domains: domain names (one marker token each).
        config: :class:`TIGERConfig`.
        codebook_sizes: ``K_l`` of every level (default: the largest code + 1 per level).

    Vocabulary: ``PAD, EOS, START``, then the codes of each level and one marker per domain
    (:class:`~xdrec.generative.SemanticIdVocab` with ``offset = 3``).
    """

    def __init__(self, ids: np.ndarray, item_domain: np.ndarray, domains: Sequence[str],
                 config: TIGERConfig | None = None, codebook_sizes: Sequence[int] | None = None):
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        self.config = config = config or TIGERConfig()
        ids, sizes = check_ids(ids, codebook_sizes)
        item_domain = np.asarray(item_domain, dtype=np.int64)
        if item_domain.shape != (len(ids),):
            raise ValueError(f"item_domain must have one entry per item ({len(ids)}), got shape {item_domain.shape}")
        if item_domain.min() < 0 or item_domain.max() >= len(domains):
            i = int(np.flatnonzero((item_domain < 0) | (item_domain >= len(domains)))[0])
            raise ValueError(f"item {i} has domain {int(item_domain[i])}, not one of the {len(domains)} domains")
        self.vocab = SemanticIdVocab(tuple(sizes), tuple(domains), offset=N_SPECIAL)
        self.ids = ids
        self.item_domain = item_domain
        self.items = ItemTokens.from_ids(self.vocab, ids, item_domain)
        self.trie = TrieTensors(ids, item_domain, len(domains), sizes)
        t5 = T5Config(
            vocab_size=N_SPECIAL + len(self.vocab), d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
            num_layers=config.n_layers, num_decoder_layers=config.n_layers, num_heads=config.n_heads,
            dropout_rate=config.dropout, feed_forward_proj="relu",
            relative_attention_num_buckets=config.relative_attention_num_buckets,
            relative_attention_max_distance=config.relative_attention_max_distance,
            pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=START, use_cache=False,
        )
        self.t5 = T5ForConditionalGeneration(t5)
        self.register_buffer("level_offsets", torch.as_tensor(self.vocab.level_offsets, dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ sizes
    @property
    def n_levels(self) -> int:
        return self.vocab.n_levels

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @property
    def device(self) -> torch.device:
        return self.level_offsets.device

    # ------------------------------------------------------------------ inputs
    def _check_domains(self, domains: Sequence[int]) -> list[int]:
        domains = [int(d) for d in domains]
        bad = [d for d in domains if not 0 <= d < len(self.vocab.domains)]
        if bad:
            raise ValueError(f"target domain {bad[0]} is not one of the {len(self.vocab.domains)} domains {list(self.vocab.domains)}")
        return domains

    def prompts(self, histories: Sequence[Sequence[int]], domains: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded encoder inputs ``history <d_target>`` (last ``max_items`` items) and their attention mask.

        Raises a ``ValueError`` naming an item id that has no semantic ID.
        """
        domains = self._check_domains(domains)
        if len(histories) != len(domains):
            raise ValueError(f"{len(histories)} histories but {len(domains)} target domains")
        seqs = [self.items.history(h, d, self.config.max_items) for h, d in zip(histories, domains)]
        return pad_right(seqs)

    def targets(self, items: Sequence[int]) -> torch.Tensor:
        """``[B, L]`` codes of the target items; a ``ValueError`` names an item id without a semantic ID."""
        items = np.asarray(items, dtype=np.int64)
        bad = (items < 0) | (items >= self.n_items)
        if bad.any():
            raise ValueError(f"target item id {int(items[bad][0])} has no semantic ID (items 0..{self.n_items - 1})")
        return torch.from_numpy(self.ids[items])

    def batch(self, histories: Sequence[Sequence[int]], targets: Sequence[int]) -> dict[str, torch.Tensor]:
        """A training batch: prompts ending with each target's domain marker, and the targets' codes."""
        targets = np.asarray(targets, dtype=np.int64)
        codes = self.targets(targets)
        input_ids, mask = self.prompts(histories, self.item_domain[targets].tolist())
        return {"input_ids": input_ids, "attention_mask": mask, "codes": codes}

    # ------------------------------------------------------------------ the network
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.t5.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Logits over the ``K_level`` codes of ``level`` from decoder states ``[..., d]``.

        The rows of T5's (tied) output embedding that belong to the level's codes, with T5's
        ``d_model ** -0.5`` rescaling of tied output embeddings.
        """
        start = self.vocab.level_offsets[level]
        w = self.t5.lm_head.weight[start: start + self.vocab.codebook_sizes[level]]
        return (hidden * self.config.d_model ** -0.5) @ w.T

    def code_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, codes: torch.Tensor) -> list[torch.Tensor]:
        """Teacher-forced logits of every level: ``[B, K_l]`` for ``l = 0..L-1`` (decoder input ``[start] + codes[:-1]``)."""
        enc = self.encode(input_ids, attention_mask)
        dec_in = torch.cat([codes.new_full((len(codes), 1), START), codes[:, :-1] + self.level_offsets[:-1]], 1)
        h = self.t5.decoder(input_ids=dec_in, encoder_hidden_states=enc, encoder_attention_mask=attention_mask).last_hidden_state
        return [self.level_logits(h[:, l], l) for l in range(self.n_levels)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Next-ID loss: cross-entropy of every code of the target's ID given the history and the codes before it."""
        logits = self.code_logits(input_ids, attention_mask, codes)
        return torch.stack([F.cross_entropy(lg.float(), codes[:, l]) for l, lg in enumerate(logits)]).mean()

    # ------------------------------------------------------------------ decoding
    def step_fn(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> StepFn:
        """The decoder as a step function of :func:`~xdrec.decoding.constrained_beam_search` for these prompts.

        The prompts are encoded once, and each decoder layer's cross-attention keys and values are
        computed once (as T5's ``EncDecAttention`` does) and shared by all beams of a row. A step
        runs the decoder on ``[start] + prefix`` of every beam and returns the masked log-softmax
        over the allowed codes of the next level (GenCDR Eq. 12).
        """
        from transformers import DynamicCache, EncoderDecoderCache

        enc = self.encode(input_ids, attention_mask)
        B, T, _ = enc.shape
        H, dk = self.config.n_heads, self.config.d_kv
        cross = []
        for block in self.t5.decoder.block:
            att = block.layer[1].EncDecAttention
            cross.append((att.k(enc).view(B, T, H, dk).transpose(1, 2), att.v(enc).view(B, T, H, dk).transpose(1, 2)))

        def step(prefix: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
            b, n, t = prefix.shape
            if b != B:
                raise ValueError(f"the step function was built for {B} prompts, got a prefix of {b}")
            toks = (prefix.to(enc.device) + self.level_offsets[:t]).reshape(b * n, t)
            dec_in = torch.cat([toks.new_full((b * n, 1), START), toks], 1)
            past = EncoderDecoderCache(DynamicCache(), DynamicCache(ddp_cache_data=[
                (k.repeat_interleave(n, 0), v.repeat_interleave(n, 0)) for k, v in cross]))
            h = self.t5.decoder(input_ids=dec_in, encoder_hidden_states=enc.repeat_interleave(n, 0),
                                encoder_attention_mask=attention_mask.repeat_interleave(n, 0), past_key_values=past,
                                use_cache=True).last_hidden_state[:, -1]
            logits = self.level_logits(h, t).view(b, n, -1)
            return masked_log_softmax(logits, allowed.to(logits.device))

        return step

    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[int]], domains: Sequence[int], k: int,
                  beams: int | None = None) -> np.ndarray:
        """Top-``k`` items of each row's target domain by constrained beam search: ``[n, k]`` item ids (-1 padding).

        The search keeps ``max(beams, k)`` beams (``config.beams`` by default); beams are ranked by
        the log-probability of the whole ID.
        """
        was = self.training
        self.eval()
        try:
            input_ids, mask = self.prompts(histories, domains)
            dev = self.device
            trie = self.trie if self.trie.child.device == dev else self.trie.to(dev)
            res = constrained_beam_search(self.step_fn(input_ids.to(dev), mask.to(dev)), trie,
                                          torch.as_tensor(list(domains), dtype=torch.long, device=dev),
                                          max(beams or self.config.beams, k))
        finally:
            self.train(was)
        return res.items[:, :k].cpu().numpy()


def pad_right(seqs: Sequence[np.ndarray], pad_id: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences as a right-padded ``[B, T]`` batch and its attention mask."""
    if not len(seqs):
        raise ValueError("no sequences to batch")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask

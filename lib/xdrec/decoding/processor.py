"""The domain-aware prefix tree as a Hugging Face ``LogitsProcessor`` for ``model.generate``.

:class:`PrefixTreeLogitsProcessor` keeps, for every row of the batch x beams, only the vocabulary
tokens of the codes its target domain's trie allows after the codes generated so far (and EOS
once an ID is complete). It reads the generated tokens from ``input_ids``, walks the trie for all
rows at once (one gather per level already generated) and masks the level's block of columns in place: no Python
loop over beams, unlike ``prefix_allowed_tokens_fn`` (:func:`hf_prefix_allowed_tokens_fn` builds
that reference for the benchmark in ``benchmarks/decoding.py``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import LogitsProcessor

from .prefix_tree import PrefixTree
from .trie import TrieTensors


class PrefixTreeLogitsProcessor(LogitsProcessor):
    """Constrain generation to the IDs of each row's target-domain trie.

    Args:
        trie: the tries of all domains.
        level_offsets: vocabulary id of code 0 of each level (code ``c`` of level ``l`` is token
            ``level_offsets[l] + c``).
        prompt_length: length of the (padded) prompt; tokens after it are the generated ID.
        domains: ``[batch]`` target domain of each prompt (repeated over its ``num_beams`` rows).
        num_beams: beams per prompt.
        eos_token_id: the only token allowed after a complete ID.
    """

    def __init__(self, trie: TrieTensors, level_offsets: Sequence[int], prompt_length: int, domains: torch.Tensor,
                 num_beams: int, eos_token_id: int):
        self.trie, self.prompt_length, self.eos = trie, int(prompt_length), int(eos_token_id)
        self.offsets = torch.as_tensor(list(level_offsets), dtype=torch.long)
        self.row_domains = domains.repeat_interleave(num_beams)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # Masks ``scores`` in place: allocating a fresh [rows, vocab] tensor of -inf each step cost
        # ~95% of the processor's time at 64 x 20 rows (see benchmarks/decoding.py).
        t = input_ids.shape[1] - self.prompt_length
        if t >= self.trie.n_levels:
            eos = scores[:, self.eos].clone()
            scores.fill_(float("-inf"))
            scores[:, self.eos] = eos
            return scores
        doms = self.row_domains.to(scores.device)
        codes = input_ids[:, self.prompt_length:] - self.offsets[:t].to(input_ids.device)
        nodes = self.trie.walk(doms, codes)
        allowed = self.trie.allowed(nodes, t)  # [rows, K_t]
        lo = int(self.offsets[t])
        block = scores[:, lo:lo + allowed.shape[1]].masked_fill(~allowed, float("-inf"))
        scores.fill_(float("-inf"))
        scores[:, lo:lo + allowed.shape[1]] = block
        return scores


def hf_prefix_allowed_tokens_fn(trees: dict[int, PrefixTree], level_offsets: Sequence[int], prompt_length: int,
                                domains: Sequence[int], num_beams: int, eos_token_id: int):
    """The same constraint as a ``prefix_allowed_tokens_fn`` (one Python trie walk per row and step)."""
    offsets = list(level_offsets)

    def fn(batch_id: int, sent: torch.Tensor) -> list[int]:
        gen = sent[prompt_length:].tolist()
        t = len(gen)
        tree = trees[int(domains[batch_id])]
        if t >= len(offsets):
            return [eos_token_id]
        prefix = [g - offsets[i] for i, g in enumerate(gen)]
        return [offsets[t] + c for c in tree.next_codes(prefix)]

    return fn

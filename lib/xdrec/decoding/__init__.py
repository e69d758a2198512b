"""Decoding of semantic IDs: prefix trees of valid IDs, their tensor form, constrained beam search.

- :class:`PrefixTree`: one domain's valid IDs as a trie (build, query, save).
- :class:`TrieTensors`: every domain's trie as one child table, for batched decoding;
  :class:`UnconstrainedTrie` the same interface allowing every code (decoding without the tree).
- :func:`constrained_beam_search`: beam search whose every step is a masked softmax over the
  codes the target domain's trie allows (GenCDR Eq. 12); model-agnostic through a step function.
- :class:`PrefixTreeLogitsProcessor`: the same constraint for Hugging Face ``generate``.
"""
from .beam_search import BeamResult, constrained_beam_search, masked_log_softmax, score_all_items
from .prefix_tree import PrefixTree
from .processor import PrefixTreeLogitsProcessor, hf_prefix_allowed_tokens_fn
from .trie import INVALID, TrieTensors, UnconstrainedTrie, keep_valid

__all__ = ["INVALID", "BeamResult", "PrefixTree", "PrefixTreeLogitsProcessor", "TrieTensors", "constrained_beam_search",
           "UnconstrainedTrie", "hf_prefix_allowed_tokens_fn", "keep_valid", "masked_log_softmax",
           "score_all_items"]

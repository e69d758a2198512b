"""Decoding of semantic IDs: prefix trees of valid IDs (and, built on them, constrained beam search)."""
from .prefix_tree import PrefixTree

__all__ = ["PrefixTree"]

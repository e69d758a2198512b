"""TIGER (Rajput et al., NeurIPS 2023): RQ-VAE semantic IDs and a T5 trained from scratch to generate the next ID.

The generative-retrieval baseline of GenCDR and UTGRec, on the same cross-domain prompts and the
same constrained beam search as GenCDR:

- :mod:`xdrec.tiger.semantic_ids`: the items' IDs from a plain RQ-VAE with TIGER's extra collision level;
- :mod:`xdrec.tiger.model`: :class:`TIGER`, the T5 encoder-decoder and its step function for beam search;
- :mod:`xdrec.tiger.examples`: every next item of every training timeline, as batches;
- :mod:`xdrec.tiger.experiment`: ``run_tiger(dataset, profile=...)``, the stored result and the CLI.
"""
from .examples import NextItemExamples
from .model import EOS, N_SPECIAL, PAD, START, TIGER, TIGERConfig, check_ids, pad_right

__all__ = ["EOS", "N_SPECIAL", "NextItemExamples", "PAD", "START", "TIGER", "TIGERConfig", "check_ids", "pad_right"]

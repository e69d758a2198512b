"""UTGRec (Zheng et al.): a universal item tokenizer with tree-structured codebooks and a transferable
generative recommender.

- :mod:`.codebooks`: prefix residual (Eq. 3), tree-structured codebooks ``E W`` (Eqs. 4-7), the
  discrete content representations (Sec. 2.3.1), collision-free identifiers (Sec. 2.4.1).
- :mod:`.reconstruction`: masked text decoder (Eq. 8), image decoder with diffusion loss (Eq. 9,
  behind a switch: no dataset here has images), co-occurring item alignment (Eq. 11).
"""
from .codebooks import TreeCodebooks, TreeQuantizerOutput, inverse_prefix_residual, prefix_residual, unique_ids
from .reconstruction import DiffusionLoss, MaskedImageDecoder, MaskedTextDecoder, alignment_loss

__all__ = ["DiffusionLoss", "MaskedImageDecoder", "MaskedTextDecoder", "TreeCodebooks", "TreeQuantizerOutput",
           "alignment_loss", "inverse_prefix_residual", "prefix_residual", "unique_ids"]

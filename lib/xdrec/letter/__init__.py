"""LETTER (Wang et al., CIKM 2024): TIGER's RQ-VAE tokenizer with collaborative and diversity regularisation.

A baseline of UTGRec (Table 2, Figure 2). LETTER's ranking-guided generation loss (a temperature
on the recommender's softmax) is not part of it here: UTGRec compares tokenizers, and every
generative recommender in the book trains the same T5 with the same loss.

- :mod:`xdrec.letter.regularization`: ``L_CF``, ``L_Div`` and the balanced k-means of the codes;
- :mod:`xdrec.letter.tokenizer`: :class:`LETTERTokenizer` (Eq. 7);
- :mod:`xdrec.letter.semantic_ids`: ``letter_semantic_ids(dataset, domains, profile=...)``, cached.
"""
from .regularization import balanced_kmeans, collaborative_loss, diversity_loss
from .tokenizer import LETTERTokenizer, LetterLoss

__all__ = ["LETTERTokenizer", "LetterLoss", "balanced_kmeans", "collaborative_loss", "diversity_loss"]

"""Codebooks shared by the tokenizers of GenCDR, TIGER, LETTER and UTGRec."""
from .residual import QuantizerOutput, ResidualQuantizer, kmeans

__all__ = ["QuantizerOutput", "ResidualQuantizer", "kmeans"]

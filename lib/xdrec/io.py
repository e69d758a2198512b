"""Atomic, durable writes and safe reads.

Everything xdrec writes goes through a temporary file in the target folder, flushed to disk
(``fsync``), then ``os.replace``-d over the target and the folder synced, so neither a crash nor a
power loss leaves a half-written file where a finished one is expected; a temporary file a killed
write left behind is removed by the next write of the same file. We write JSON, Parquet,
safetensors (with a SHA-256 of their tensors, checked on reading) and NumPy arrays; we never write
or read pickles.

Every read here that meets a bad file raises :class:`BadInput`, whose message starts with the
file's path and names the place (line, key, byte) where that is known.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


class BadInput(ValueError):
    """A file (or value) xdrec cannot use; the message names the file and the place in it."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # a folder on a file system that cannot sync folders
        pass
    finally:
        os.close(fd)


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files an interrupted write of ``path`` left beside it (``.<name>.*.tmp``)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")) if path.parent.is_dir() else []


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced to disk and replaces
    ``path`` atomically (then the folder is synced). Leftovers of an earlier, killed write of
    ``path`` are removed first: one process writes a given file (:func:`is_main_process`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in stale_temporaries(path):
        old.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_text(path: str | os.PathLike) -> str:
    """``path`` as UTF-8 text; a :class:`BadInput` names the file and the first byte that is not UTF-8."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise BadInput(f"{path}: line {line} (byte {e.start}): not UTF-8 text ({e.reason})") from None


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


_JSON_KINDS = {dict: "a JSON object ({...})", list: "a JSON array ([...])", str: "a JSON string"}


def read_json(path: str | os.PathLike, expect: type | None = None) -> Any:
    """The JSON document in ``path``; with ``expect`` (``dict``, ``list``), of that kind.

    A :class:`BadInput` names the file and the line (invalid JSON, bytes that are not UTF-8,
    an empty file) or the kind of document found instead of the expected one.
    """
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise BadInput(f"{path}: empty file (expected a JSON document)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: line {e.lineno} column {e.colno}: invalid JSON ({e.msg})") from None
    if expect is not None and not isinstance(doc, expect):
        found = next((k for t, k in _JSON_KINDS.items() if isinstance(doc, t)), type(doc).__name__)
        raise BadInput(f"{path}: expected {_JSON_KINDS.get(expect, expect.__name__)}, found {found}")
    return doc


CHECKSUM_KEY = "xdrec_sha256"  # safetensors metadata: SHA-256 of the tensors (names, dtypes, shapes, bytes)


def tensors_sha256(tensors: dict) -> str:
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """``tensors`` to ``path`` (atomic, durable), with their SHA-256 in the metadata for :func:`load_safetensors`."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={**(metadata or {}), CHECKSUM_KEY: tensors_sha256(tensors)})
    return Path(path)


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict:
    """The tensors of ``path``. A file cut short or with a broken header, or whose tensors no longer
    match the SHA-256 written with them (a flipped bit), raises :class:`BadInput` naming it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such safetensors file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise BadInput(f"{path}: not a readable safetensors file ({e}); delete it to recompute") from None
    want = meta.get(CHECKSUM_KEY)
    if want is not None and tensors_sha256(tensors) != want:
        raise BadInput(f"{path}: its tensors do not match the SHA-256 written with them (a corrupted "
                       "file); delete it to recompute")
    return {k: v.to(device) for k, v in tensors.items()} if device != "cpu" else tensors


def save_numpy(path: str | os.PathLike, array) -> Path:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    return Path(path)


def load_numpy(path: str | os.PathLike):
    """The array in ``path`` (never a pickle); a :class:`BadInput` names a file cut short or not ``.npy``."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise BadInput(f"{path}: not a readable .npy array ({e})") from None


def load_torch_state(path: str | os.PathLike) -> Any:
    """A torch checkpoint of tensors and plain types (``weights_only=True``). One holding other Python
    objects is refused with a :class:`BadInput` naming it: xdrec never writes such a file and never
    unpickles one (no ``weights_only=False``)."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or isinstance(e, pickle.UnpicklingError):
            first = "it holds Python objects beyond tensors and plain types, which are never unpickled"
        raise BadInput(f"{path}: not a checkpoint xdrec can read ({first}); delete its folder to start "
                       "the run afresh") from None


def write_parquet(path: str | os.PathLike, df) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------
# Several training processes (torchrun, accelerate launch): one writes
# ----------------------------------------------------------------------------------------------
def is_main_process() -> bool:
    """False in every process but the first of a multi-process run (``RANK`` > 0): only the first writes.

    Read from the environment that ``torchrun`` and ``accelerate launch`` set, so it holds before
    any process group exists; a plain process is the main one.
    """
    return int(os.environ.get("RANK", "0") or 0) == 0


def wait_for_main() -> None:
    """Under several processes, wait until every process is here (after the main one has written
    what the others read next); nothing in one process. Every process must call it."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        from accelerate.state import PartialState

        PartialState().wait_for_everyone()

"""One training loop for every model in xdrec: Accelerate, early stopping, checkpoints, resume.

:func:`fit` trains any ``torch.nn.Module`` that yields a scalar loss per batch.  It

- runs through Hugging Face Accelerate, so the same code trains on the CPU, on one GPU, or on
  several processes when started with ``accelerate launch`` or ``torchrun``; a batch is the
  *global* batch and each of the ``n`` processes trains on its ``1/n`` of it (a ``DataLoader`` is
  prepared with ``split_batches``; the batches of a callable are split by :func:`process_share`),
  so ``n`` processes take the optimizer steps of one process with the same batch size;
- validates after every ``eval_every`` epochs and keeps the weights with the best validation
  metric (``recall@10`` by default: checkpoint selection by validation Recall@10, the protocol of
  the papers reproduced here), stopping after ``patience`` validations without improvement;
- when given a ``checkpoint_dir``, saves a resumable checkpoint at the end of every epoch and
  resumes from the last finished epoch when called again with the same directory; a run that has
  finished is not retrained: :func:`fit` loads its best weights and returns the stored result.

Checkpoint layout (all writes atomic, see :mod:`xdrec.io`; nothing is pickled)::

    checkpoint_dir/
      epoch-0007/model.safetensors      weights after the last finished epoch
      epoch-0007/trainer_state.pt       optimizer, LR schedule, RNG states, counters, history
                                        (tensors and plain types only: torch.load(weights_only=True))
      best-epoch0005.safetensors        the best weights so far
      last.json                         pointer to the two above; replaced atomically last, so a
                                        crash mid-save leaves the previous epoch as the resume point
      history.json                      the per-epoch history, for people
      done.json                         written when training finished (the TrainResult)

Reproducibility: a fresh run seeds Python, NumPy and torch with ``config.seed``; shuffling uses a
sampler seeded by ``(seed, epoch)``; the RNG states are saved with each checkpoint and restored on
resume, so that (with the same thread count and hardware) a resumed run continues bit for bit like
an uninterrupted one.  Randomness inside batches (negative sampling, masking) must come from the
global ``torch``/``numpy``/``random`` generators for this to hold.
"""
from __future__ import annotations

import dataclasses
import math
import random
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import smoke
from .io import BadInput, atomic_path, load_safetensors, load_torch_state, read_json, save_safetensors, write_json

SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit`.

    ``batch_size`` is read by the helpers that build a ``DataLoader`` (e.g.
    :func:`xdrec.baselines.train_sasrec`); :func:`fit` itself takes the loader as given. It is the
    global batch: under several processes each takes its share of every batch (see :func:`fit`).
    ``patience`` counts validations (not epochs) without improvement; ``None`` disables early
    stopping.  ``max_steps`` caps the total number of optimizer steps across epochs.
    ``schedule`` is the learning-rate schedule after ``warmup_steps`` of linear warm-up.
    ``checkpoint_trainable_only`` saves only parameters with ``requires_grad`` (LoRA adapters,
    say) instead of the whole state dict.
    """

    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    grad_clip: float | None = 1.0
    patience: int | None = 5
    eval_every: int = 1
    seed: int = 0
    max_steps: int | None = None
    checkpoint_dir: str | Path | None = None
    progress: bool = True
    schedule: str = "constant"
    warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    cpu: bool = False
    checkpoint_trainable_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checkpoint_dir"] = None if self.checkpoint_dir is None else str(self.checkpoint_dir)
        return d


@dataclass
class TrainResult:
    """What :func:`fit` returns (and stores in ``done.json``).

    ``history`` holds one dict per epoch: ``epoch``, ``train_loss``, ``steps``, ``lr``,
    ``train_time``, ``eval_time``, ``wall_time`` and the validation metrics as ``valid/<name>``.
    ``wall_time`` is the total over all sessions (a resumed run includes the earlier epochs).
    ``resumed_from`` is the epoch a checkpoint was resumed from (``None`` for a fresh run);
    ``skipped`` is True when the run had already finished and only its best weights were loaded.
    """

    best_metric: float | None
    best_epoch: int | None
    history: list[dict[str, Any]]
    wall_time: float
    trainable_params: int
    resumed_from: int | None = None
    skipped: bool = False
    stop_reason: str = "epochs"
    metric: str = "recall@10"
    epochs_run: int = 0
    global_step: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# Seeding and RNG state
# ----------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------
# Model weights, with tied / trainable-only handling
# ----------------------------------------------------------------------------------------------
def count_trainable_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_state(model: torch.nn.Module, trainable_only: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors to save and the aliases dropped because they share memory (tied weights).

    safetensors refuses tensors that share storage; for each group of tied entries we keep the
    first name and record ``alias -> kept name`` so :func:`load_model_state` can restore them.
    """
    if trainable_only:
        tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    else:
        tensors = dict(model.state_dict())
    kept: dict[tuple, str] = {}
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() > 0 and key in kept:
            aliases[name] = kept[key]
            continue
        kept[key] = name
        out[name] = t.detach()
    return out, aliases


def save_model_state(path: str | Path, model: torch.nn.Module, trainable_only: bool = False, **metadata: Any) -> Path:
    """Atomically write ``model``'s weights as safetensors (metadata stored as JSON strings)."""
    import json

    tensors, aliases = model_state(model, trainable_only)
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    meta["aliases"] = json.dumps(aliases)
    meta["trainable_only"] = json.dumps(bool(trainable_only))
    return save_safetensors(path, tensors, metadata=meta)


def load_model_state(model: torch.nn.Module, path: str | Path) -> None:
    """Load weights written by :func:`save_model_state` into ``model`` (strict about names)."""
    import json

    from safetensors import safe_open

    tensors = load_safetensors(path)  # a BadInput names a file cut short or corrupted
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    for alias, name in json.loads(meta.get("aliases", "{}")).items():
        tensors[alias] = tensors[name]
    try:
        _load_tensors(model, tensors, trainable_only=json.loads(meta.get("trainable_only", "false")))
    except (KeyError, RuntimeError) as e:  # other names, or another size ("size mismatch for ...")
        detail = str(e).strip().strip('"').splitlines()
        raise BadInput(f"{path}: its weights do not fit this model ({' '.join(detail)[:300]}); a checkpoint "
                       "of another model or size: delete it, or point the run at another checkpoint folder") from None


def _load_tensors(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], trainable_only: bool) -> None:
    missing, unexpected = model.load_state_dict(dict(tensors), strict=False)
    if unexpected:
        raise KeyError(f"checkpoint has weights the model lacks: {sorted(unexpected)[:5]}")
    if not trainable_only and missing:
        raise KeyError(f"checkpoint lacks weights of the model: {sorted(missing)[:5]}")


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
EvaluateFn = Callable[[torch.nn.Module], Mapping[str, Any]]


def default_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """Call the model on the batch (``model(**batch)`` for dicts) and take its loss.

    The model may return the loss tensor itself, a dict with ``"loss"``, or an object with a
    ``.loss`` attribute (Hugging Face ``ModelOutput``).  Calling the (possibly DDP-wrapped) model
    is what keeps gradient synchronisation correct on several GPUs.
    """
    out = model(**batch) if isinstance(batch, Mapping) else model(batch)
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        return out["loss"]
    return out.loss


def make_accelerator(config: TrainConfig):
    """An ``Accelerator`` whose shuffling sampler is seeded by ``(config.seed, epoch)``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    # Accelerate keeps one process-wide state and refuses a second Accelerator of another precision
    # (a GenCDR notebook trains its tokenizer in fp32, then its fp16 recommender in the same kernel):
    # each fit gets its own precision. The process group (PartialState) is kept.
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, config.mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=False)
    # Several processes split each batch of a DataLoader (its batch size is the global batch), so
    # that n processes take the same optimizer steps as one; one process keeps Accelerate's default.
    split = _world_size() > 1
    return Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed,
                                                  **({"split_batches": True} if split else {})),
    )


def _world_size() -> int:
    """Number of training processes: the started process group's, else ``WORLD_SIZE`` (torchrun, accelerate launch)."""
    import os

    from accelerate.state import PartialState

    n = PartialState._shared_state.get("num_processes")
    return int(n) if n else int(os.environ.get("WORLD_SIZE", "1") or 1)


def process_share(batch: Any, index: int, num_processes: int) -> Any:
    """Process ``index``'s part of a global ``batch``, for training with ``num_processes`` processes.

    Tensors and NumPy arrays are cut along their first (example) dimension into ``num_processes``
    contiguous parts (``torch.tensor_split``: sizes differ by at most one, the first parts being
    the larger); dicts, lists, tuples and dataclasses are containers of such fields, split
    field by field; anything else (a number, a string, ``None``) is kept whole. Every split field
    must have the same number of examples, at least ``num_processes``.
    """
    sizes: set[int] = set()

    def count(x):
        if isinstance(x, (torch.Tensor, np.ndarray)):
            if x.ndim == 0:
                raise ValueError("fit cannot split a 0-d tensor of a batch across processes")
            sizes.add(int(x.shape[0]))
        elif isinstance(x, Mapping):
            for v in x.values():
                count(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                count(v)
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            for f in dataclasses.fields(x):
                count(getattr(x, f.name))

    count(batch)
    if len(sizes) > 1:
        raise ValueError(f"fit cannot split a batch across processes: its fields hold {sorted(sizes)} examples")
    n = sizes.pop() if sizes else 0
    if n < num_processes:
        raise ValueError(f"a batch of {n} examples cannot be split across {num_processes} processes")
    lo = index * (n // num_processes) + min(index, n % num_processes)
    hi = lo + n // num_processes + (1 if index < n % num_processes else 0)

    def cut(x):
        if isinstance(x, (torch.Tensor, np.ndarray)):
            return x[lo:hi]
        if isinstance(x, Mapping):
            d = {k: cut(v) for k, v in x.items()}
            return d if type(x) is dict else type(x)(d)
        if isinstance(x, tuple) and hasattr(x, "_fields"):  # a named tuple
            return type(x)(*(cut(v) for v in x))
        if isinstance(x, (list, tuple)):
            return type(x)(cut(v) for v in x)
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return dataclasses.replace(x, **{f.name: cut(getattr(x, f.name)) for f in dataclasses.fields(x) if f.init})
        return x

    return cut(batch)


class _LossModule(torch.nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: what several processes wrap in DDP."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


class _ProcessShares:
    """The process's share of each batch of an epoch (sized when the epoch's batches are)."""

    def __init__(self, batches: Iterable, index: int, num_processes: int):
        self.batches, self.index, self.num_processes = batches, index, num_processes

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self):
        for batch in self.batches:
            yield process_share(batch, self.index, self.num_processes)


def fit(
    model: torch.nn.Module,
    train_data: Iterable | Callable[[int], Iterable],
    evaluate_fn: EvaluateFn | None = None,
    config: TrainConfig | None = None,
    *,
    loss_fn: LossFn | None = None,
    metric: str = "recall@10",
    optimizer_fn: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer] | None = None,
    accelerator: Any = None,
    deadline: float | None = None,
) -> TrainResult:
    """Train ``model`` and leave it holding its best weights.

    Args:
        model: the module; its trainable parameters are optimised.
        train_data: a ``DataLoader`` (prepared by Accelerate: sharded across processes, seeded
            shuffling per epoch) or a function ``epoch -> iterable of batches`` (1-based epoch),
            for data that is rebuilt every epoch; its batches are moved to the device. Either way
            a batch is the global batch: under ``n`` processes (``accelerate launch``, ``torchrun``)
            a DataLoader is prepared with ``split_batches`` (its batch size must be a multiple of
            ``n``; a short last batch is filled up with examples from the start, Accelerate's
            ``even_batches``) and each batch of a callable is cut by :func:`process_share`, so every
            process must yield the same batches (draw their randomness from seeded generators, as
            the callables of xdrec do). A process's loss is the mean over its share and the
            gradients are averaged over processes: equal to one process's when the shares carry
            equal weight (equal numbers of examples, or of target tokens for a per-token mean);
            in-batch terms (contrastive negatives, balance losses) see only the share.
        evaluate_fn: ``model -> dict`` of validation metrics, called on the unwrapped model in
            ``eval()`` mode under ``torch.no_grad()``; every process calls it.  Without it there
            is no early stopping and the last epoch counts as the best.
        config: :class:`TrainConfig`.
        loss_fn: ``(model, batch) -> scalar loss``; default :func:`default_loss`.
        metric: the key of ``evaluate_fn``'s result to maximise (validation Recall@10).
        optimizer_fn: ``params -> optimizer``; default AdamW(lr, weight_decay) on all trainable
            parameters.
        accelerator: an existing ``Accelerator`` (default :func:`make_accelerator`).
        deadline: a wall-clock time (``time.time()``) after which no further optimizer step
            starts. The epoch under way ends there, is validated and checkpointed, and the run
            stops with ``stop_reason="deadline"``; called again, it resumes (a time budget is not
            a setting, so it is not part of the checkpoint's config). Under several processes
            they agree on the stop through an all-reduce, so none waits on another.

    Returns:
        :class:`TrainResult`.
    """
    config = config or TrainConfig()
    if smoke.active():  # a smoke run: a few optimiser steps per stage (xdrec.smoke)
        config = dataclasses.replace(config, max_steps=smoke.steps(config.max_steps))
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    if config.eval_every < 1:
        raise ValueError("eval_every must be >= 1")
    ckpt = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    trainable_params = count_trainable_params(model)
    accelerator = accelerator or make_accelerator(config)
    finished = _finished(model, ckpt, config, metric)
    if finished is not None:
        return finished
    run = _start(model, train_data, config, ckpt, loss_fn or default_loss, optimizer_fn, accelerator)
    from tqdm import tqdm

    while run.loop.stop_reason is None and run.loop.epoch < config.epochs:
        epoch = run.loop.epoch + 1
        record = _train_epoch(run, train_data, epoch, deadline)
        improved = _validate(run, evaluate_fn, epoch, metric, record)
        _keep(run, epoch, improved)
        if run.show:
            tqdm.write(_epoch_line(record, metric, run.loop))
    if run.loop.stop_reason is None:
        run.loop.stop_reason = "epochs"
    return _finish(run, metric, trainable_params)


# ----------------------------------------------------------------------------------------------
# The parts of fit: resume, one epoch, validation, checkpoints, the result
# ----------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """What :func:`fit`'s parts share: the prepared model, optimiser and schedule, the loop's state."""

    model: Any  # as Accelerate prepared it (wrapped in _LossModule when the loss runs in its forward)
    unwrapped: torch.nn.Module
    optimizer: Any
    scheduler: Any
    accelerator: Any
    loader: Any  # the prepared DataLoader, or None for a callable of batches
    loss_fn: LossFn
    in_forward: bool
    config: TrainConfig
    ckpt: Path | None
    loop: _LoopState
    show: bool
    session_start: float
    prior_wall: float
    best_state: dict[str, torch.Tensor] | None = None  # the in-memory best when there is no checkpoint folder


# Settings a checkpoint must have been made with to be resumed or reused: any other value would
# continue (or return) a run of other settings. The budget (epochs, max_steps, patience) may grow.
RESUME_SETTINGS = ("lr", "weight_decay", "batch_size", "grad_clip", "seed", "schedule", "warmup_steps",
                   "gradient_accumulation_steps", "mixed_precision", "eval_every", "checkpoint_trainable_only")


def check_resumable(stored: Mapping[str, Any] | None, config: TrainConfig, where: Path) -> None:
    """Refuse (``ValueError`` naming ``where`` and the settings) a checkpoint made with other
    :data:`RESUME_SETTINGS` than ``config``'s."""
    if not stored:
        return
    now = config.to_dict()
    differ = [f"{k} {stored[k]!r} -> {now[k]!r}" for k in RESUME_SETTINGS if k in stored and stored[k] != now[k]]
    if differ:
        raise ValueError(f"{where}: made with other settings ({'; '.join(differ)}); it is not continued. "
                         "Delete the checkpoint folder, or give this run another one")


def _finished(model: torch.nn.Module, ckpt: Path | None, config: TrainConfig, metric: str) -> TrainResult | None:
    """A run finished in ``ckpt`` with this config: its best weights loaded into ``model``, its result."""
    if ckpt is None:
        return None
    finished = _finished_result(ckpt, config, metric)
    if finished is None:
        return None
    load_model_state(model, ckpt / finished.pop("_best_file"))
    names = {f.name for f in dataclasses.fields(TrainResult)}
    result = TrainResult(**{k: v for k, v in finished.items() if k in names})
    result.skipped = True
    result.resumed_from = result.epochs_run
    return result


def _start(model, train_data, config: TrainConfig, ckpt: Path | None, loss_fn: LossFn, optimizer_fn,
           accelerator) -> _Run:
    """Optimiser and schedule, prepared by Accelerate; restored from the last checkpoint, if any (else seeded)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer_fn(params) if optimizer_fn else torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay
    )
    loop = _LoopState()
    resume = _read_last(ckpt) if ckpt is not None else None
    if resume is None:
        seed_everything(config.seed)
    else:
        check_resumable(resume.get("config"), config, ckpt / resume["dir"])
        load_model_state(model, ckpt / resume["dir"] / "model.safetensors")

    # Distributed (torchrun, accelerate launch of several processes): the loss is computed inside the
    # forward of the wrapped module, so that DistributedDataParallel sees every forward (a loss_fn
    # may call a method of the model, e.g. GenCDR's universal_loss, which DDP neither has nor syncs).
    from accelerate.utils import DistributedType

    in_forward = accelerator.distributed_type != DistributedType.NO
    if in_forward:
        model = _LossModule(model, loss_fn)
    model, optimizer = accelerator.prepare(model, optimizer)
    loader = accelerator.prepare(train_data) if isinstance(train_data, torch.utils.data.DataLoader) else None
    total_steps = _total_optimizer_steps(config, loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
        _lr_lambda(config.schedule, config.warmup_steps, total_steps),
    )
    if resume is not None:
        state = load_torch_state(ckpt / resume["dir"] / "trainer_state.pt")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        loop = _LoopState.from_dict(state["loop"])
        loop.resumed_from = loop.epoch
        if loop.stop_reason == "max_steps" and (config.max_steps is None or config.max_steps > loop.global_step):
            loop.stop_reason = None  # a larger step budget continues the run
        if loop.stop_reason == "deadline":
            loop.stop_reason = None  # a run stopped by a time budget continues in the next one

    unwrapped = accelerator.unwrap_model(model)
    if in_forward:
        unwrapped = unwrapped.model
    return _Run(model=model, unwrapped=unwrapped, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator,
                loader=loader, loss_fn=loss_fn, in_forward=in_forward, config=config, ckpt=ckpt, loop=loop,
                show=config.progress and accelerator.is_main_process, session_start=time.perf_counter(),
                prior_wall=loop.wall_time)


def _train_epoch(run: _Run, train_data, epoch: int, deadline: float | None) -> dict[str, Any]:
    """One pass over the epoch's batches (stopping early at ``max_steps`` or the deadline); the
    epoch's record so far: mean training loss, optimiser steps, learning rate, training time."""
    from .progress import progress

    model, accelerator, loop, config = run.model, run.accelerator, run.loop, run.config
    t0 = time.perf_counter()
    model.train()
    if run.loader is not None:
        batches = run.loader
        if hasattr(run.loader, "set_epoch"):
            run.loader.set_epoch(epoch)
    else:
        batches = train_data(epoch)
        if accelerator.num_processes > 1:
            batches = _ProcessShares(batches, accelerator.process_index, accelerator.num_processes)
    loss_sum, n_batches, steps_before = 0.0, 0, loop.global_step
    bar = progress(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not run.show, leave=False, dynamic_ncols=True)
    for batch in bar:
        if run.loader is None:
            from accelerate.utils import send_to_device

            batch = send_to_device(batch, accelerator.device)
        with accelerator.accumulate(model):
            loss = model(batch) if run.in_forward else run.loss_fn(model, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.grad_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            run.scheduler.step()
            loop.global_step += 1
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"epoch {epoch}: non-finite training loss {loss_value}")
        loss_sum += loss_value
        n_batches += 1
        if run.show and n_batches % 10 == 0:
            bar.set_postfix(loss=f"{loss_sum / n_batches:.4f}")
        if config.max_steps is not None and loop.global_step >= config.max_steps:
            loop.stop_reason = "max_steps"
            break
        if deadline is not None and accelerator.sync_gradients and _past(deadline, accelerator):
            loop.stop_reason = "deadline"
            break
    bar.close()
    train_loss = _mean_across_processes(accelerator, loss_sum, n_batches)
    return {"epoch": epoch, "train_loss": train_loss, "steps": loop.global_step - steps_before,
            "lr": float(run.scheduler.get_last_lr()[0]), "train_time": time.perf_counter() - t0}


def _validate(run: _Run, evaluate_fn: EvaluateFn | None, epoch: int, metric: str, record: dict[str, Any]) -> bool:
    """Validation of epoch ``epoch`` (every ``eval_every`` epochs and the last), early stopping, and
    the epoch's ``record`` completed and appended to the history; whether the epoch is the best yet."""
    loop, config = run.loop, run.config
    t1 = time.perf_counter()
    train_time = record.pop("train_time")
    last_epoch = epoch == config.epochs or loop.stop_reason is not None
    improved = False
    if evaluate_fn is not None and (epoch % config.eval_every == 0 or last_epoch):
        run.model.eval()
        with torch.no_grad():
            metrics = dict(evaluate_fn(run.unwrapped))
        run.model.train()
        if metric not in metrics:
            raise KeyError(f"evaluate_fn returned no {metric!r} (got {sorted(metrics)})")
        record.update({f"valid/{k}": float(v) for k, v in metrics.items() if _is_number(v)})
        value = float(metrics[metric])
        if loop.best_metric is None or value > loop.best_metric:
            loop.best_metric, loop.best_epoch, loop.bad_evals = value, epoch, 0
            improved = True
        else:
            loop.bad_evals += 1
            if config.patience is not None and loop.bad_evals >= config.patience:
                loop.stop_reason = "early_stop"
    elif evaluate_fn is None:
        loop.best_epoch, improved = epoch, True
    record["eval_time"] = time.perf_counter() - t1
    record["train_time"] = train_time
    record["wall_time"] = record["train_time"] + record["eval_time"]
    loop.history.append(record)
    loop.epoch = epoch
    loop.wall_time = run.prior_wall + time.perf_counter() - run.session_start
    return improved


def _keep(run: _Run, epoch: int, improved: bool) -> None:
    """The best weights so far (a file, or in memory without a checkpoint folder), and the epoch's
    checkpoint (weights, optimiser, schedule, RNG and loop state) for a resume."""
    if improved:
        if run.ckpt is not None:
            run.loop.best_file = f"best-epoch{epoch:04d}.safetensors"
            if run.accelerator.is_main_process:
                save_model_state(run.ckpt / run.loop.best_file, run.unwrapped, run.config.checkpoint_trainable_only,
                                 epoch=epoch)
        else:
            tensors, aliases = model_state(run.unwrapped, run.config.checkpoint_trainable_only)
            run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
            for alias, name in aliases.items():  # tied weights: one copy, both names (as load_model_state)
                run.best_state[alias] = run.best_state[name]
    if run.ckpt is not None:
        if run.accelerator.is_main_process:
            _save_checkpoint(run.ckpt, run.unwrapped, run.optimizer, run.scheduler, run.loop, run.config)
        run.accelerator.wait_for_everyone()


def _finish(run: _Run, metric: str, trainable_params: int) -> TrainResult:
    """The best weights loaded, the result recorded (``done.json`` in the checkpoint folder)."""
    loop, ckpt = run.loop, run.ckpt
    if ckpt is not None and loop.best_file is not None:
        load_model_state(run.unwrapped, ckpt / loop.best_file)
    elif run.best_state is not None:
        _load_tensors(run.unwrapped, run.best_state, trainable_only=run.config.checkpoint_trainable_only)
    _drop_autocast(run)
    result = TrainResult(
        best_metric=loop.best_metric,
        best_epoch=loop.best_epoch,
        history=loop.history,
        wall_time=loop.wall_time,
        trainable_params=trainable_params,
        resumed_from=loop.resumed_from,
        stop_reason=loop.stop_reason,
        metric=metric,
        epochs_run=loop.epoch,
        global_step=loop.global_step,
    )
    if ckpt is not None and run.accelerator.is_main_process:
        write_json(
            ckpt / "done.json",
            {"result": result.to_dict(), "best_file": loop.best_file, "config": run.config.to_dict()},
        )
    if ckpt is not None:
        run.accelerator.wait_for_everyone()
    return result


# ----------------------------------------------------------------------------------------------
# Helpers of the loop
# ----------------------------------------------------------------------------------------------
def _drop_autocast(run: _Run) -> None:
    """Give the model back its own ``forward``.

    Under ``mixed_precision`` Accelerate's ``prepare`` replaces the model's ``forward`` by an
    autocast wrapper on the instance, which would outlive :func:`fit`: a later fp32 fit, or the
    caller's own forward calls, would still run in bf16. Removing it leaves the model as it came in.
    """
    if run.config.mixed_precision == "no":
        return
    model = run.accelerator.unwrap_model(run.model, keep_fp32_wrapper=False)
    own = model.__dict__.get("forward")
    if getattr(own, "__func__", None) is type(model).forward:
        del model.__dict__["forward"]


@dataclass
class _LoopState:
    epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_evals: int = 0
    best_file: str | None = None
    stop_reason: str | None = None
    wall_time: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("resumed_from")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "_LoopState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _save_checkpoint(ckpt: Path, model, optimizer, scheduler, loop: _LoopState, config: TrainConfig) -> None:
    """Write ``epoch-XXXX/`` then atomically repoint ``last.json``; then remove stale files."""
    name = f"epoch-{loop.epoch:04d}"
    folder = ckpt / name
    save_model_state(folder / "model.safetensors", model, config.checkpoint_trainable_only, epoch=loop.epoch)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "loop": loop.to_dict(),
        "config": config.to_dict(),
    }
    with atomic_path(folder / "trainer_state.pt") as tmp:
        torch.save(state, tmp)
    write_json(ckpt / "history.json", loop.history)
    write_json(ckpt / "last.json", {"epoch": loop.epoch, "dir": name, "best_file": loop.best_file,
                                    "config": config.to_dict()})
    for old in ckpt.glob("epoch-*"):
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    for old in ckpt.glob("best-epoch*.safetensors"):
        if old.name != loop.best_file:
            old.unlink(missing_ok=True)


def _read_last(ckpt: Path) -> dict[str, Any] | None:
    pointer = ckpt / "last.json"
    if not pointer.exists():
        return None
    last = read_json(pointer, expect=dict)
    if "dir" not in last:
        raise BadInput(f"{pointer}: no 'dir' key (the checkpoint it should point at)")
    folder = ckpt / last["dir"]
    if not (folder / "model.safetensors").exists() or not (folder / "trainer_state.pt").exists():
        raise FileNotFoundError(f"{pointer} points at {folder}, which is incomplete")
    return last


def _finished_result(ckpt: Path, config: TrainConfig, metric: str) -> dict[str, Any] | None:
    """The stored result if the run in ``ckpt`` finished and covers ``config``'s budget."""
    done_file = ckpt / "done.json"
    if not done_file.exists():
        return None
    done = read_json(done_file, expect=dict)
    if not isinstance(done.get("result"), dict):
        raise BadInput(f"{done_file}: no 'result' object (the finished run's result)")
    res = done["result"]
    if res.get("metric") != metric:
        raise ValueError(f"{done_file} selected on {res.get('metric')!r}, asked for {metric!r}")
    reason = res["stop_reason"]
    covers = (
        reason == "early_stop"
        or (reason == "epochs" and config.epochs <= res["epochs_run"])
        or (reason == "max_steps" and config.max_steps is not None and config.max_steps <= res["global_step"])
    )
    if not covers or done.get("best_file") is None:
        return None
    check_resumable(done.get("config"), config, ckpt)  # a finished run is returned only for its own settings
    res = dict(res)
    res["_best_file"] = done["best_file"]
    return res


def _total_optimizer_steps(config: TrainConfig, loader) -> int | None:
    per_epoch = None
    if loader is not None:
        try:
            per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
        except TypeError:
            per_epoch = None
    totals = [t for t in (config.max_steps, per_epoch * config.epochs if per_epoch else None) if t]
    total = min(totals) if totals else None
    if total is None and config.schedule != "constant":
        raise ValueError(f"schedule={config.schedule!r} needs max_steps or a DataLoader with a length")
    return total


def _lr_lambda(schedule: str, warmup_steps: int, total_steps: int | None) -> Callable[[int], float]:
    """Multiplier of the base learning rate after ``step`` optimizer steps."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _past(deadline: float, accelerator) -> bool:
    """True once any process is past ``deadline`` (all processes get the same answer)."""
    late = time.time() >= deadline
    if accelerator.num_processes == 1:
        return late
    flag = accelerator.reduce(torch.tensor([float(late)], device=accelerator.device), reduction="sum")
    return bool(flag.item() > 0)


def _mean_across_processes(accelerator, total: float, count: int) -> float:
    if accelerator.num_processes == 1:
        return total / max(count, 1)
    t = accelerator.reduce(torch.tensor([total, float(count)], device=accelerator.device), reduction="sum")
    return float(t[0] / t[1].clamp(min=1))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _epoch_line(record: Mapping[str, Any], metric: str, loop: _LoopState) -> str:
    line = f"epoch {record['epoch']}: loss {record['train_loss']:.4f}"
    key = f"valid/{metric}"
    if key in record:
        line += f"  {metric} {record[key]:.4f} (best {loop.best_metric:.4f} @ {loop.best_epoch})"
    return line + f"  {record['wall_time']:.1f}s"
